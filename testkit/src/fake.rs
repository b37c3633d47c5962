//! [`FakeWorker`]: a scripted, in-memory [`WorkerApi`] for tests of the code above the workers
//! (the status-file sequence, the gate, the scheduler, reload), without processes or network.
//!
//! - **Commands** are answered from, in order: the queue ([`FakeWorker::queue`]), then the
//!   rules in the order they were added ([`FakeWorker::on_argv`], [`FakeWorker::on_script`],
//!   [`FakeWorker::on_execute`], [`FakeWorker::on_execute_with`], [`FakeWorker::on_call`]),
//!   then the fallback ([`FakeWorker::otherwise`]; by default an error naming the command, so
//!   an unexpected command fails loudly).
//! - **Files** live in memory ([`FakeWorker::with_file`], [`FakeWorker::file`]): a write
//!   stores, a read returns what is stored or `NotFound`. Rules ([`FakeWorker::on_read`],
//!   [`FakeWorker::on_write`], [`FakeWorker::on_call`]) can fail or delay them instead.
//! - An [`Answer`] is an output, any [`WorkerError`], "do the default" ([`Answer::proceed`]) or
//!   a call that never answers ([`Answer::timeout`]), optionally after a delay. A delay that
//!   reaches the call's own timeout ends in [`WorkerError::Timeout`] when that limit expires,
//!   as on a real worker (the waits are tokio sleeps, so paused test time skips them).
//! - **Every call is recorded** ([`FakeWorker::calls`]), answered or not, for assertions.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use quarry_host::workers::{Command, Program, Worker, WorkerError};
//! use quarry_testkit::fake::{Answer, Call, FakeWorker};
//!
//! let fake = Arc::new(
//!     FakeWorker::remote("10.0.0.7")
//!         .on_argv(&["docker", "ps"], Answer::ok("web-1\n"))
//!         .on_script("df -h", Answer::output("", "df: /data: No such file\n", 1))
//!         .on_write("/status/x.json", Answer::error(WorkerError::Other("disk full".into())))
//!         .with_file("/etc/hostname", "w7\n"),
//! );
//! fake.queue(Answer::timeout()); // the first command never answers
//! let worker = Worker::from_arc(fake.clone());
//!
//! let cmd = |argv: &[&str]| Command {
//!     program: Program::Argv(argv.iter().map(|a| a.to_string()).collect()),
//!     cwd: None,
//!     env: vec![],
//!     timeout: Duration::from_millis(50),
//! };
//! let t = Duration::from_secs(1);
//! assert!(matches!(worker.execute(&cmd(&["docker", "ps"])).await, Err(WorkerError::Timeout(_))));
//! assert_eq!(worker.execute(&cmd(&["docker", "ps", "-q"])).await.unwrap().stdout, "web-1\n");
//! assert!(worker.execute(&cmd(&["rm", "-rf", "/"])).await.is_err()); // no rule: an error
//! assert_eq!(worker.read_file("/etc/hostname", t).await.unwrap(), "w7\n");
//! assert!(worker.write_file("/status/x.json", "{}", t).await.is_err());
//! worker.write_file("/status/y.json", "{}", t).await.unwrap();
//! assert_eq!(fake.file("/status/y.json").as_deref(), Some("{}"));
//! assert_eq!(fake.calls().len(), 6);
//! assert!(matches!(&fake.calls()[3], Call::ReadFile { path, .. } if path == "/etc/hostname"));
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use quarry_host::workers::{
    Command, DEFAULT_ROCKLET_PORT, Doing, Output, Program, Worker, WorkerAddr, WorkerApi,
    WorkerError, error_message,
};

/// One call a [`FakeWorker`] received.
#[derive(Clone, Debug)]
pub enum Call {
    /// `execute`.
    Execute(Command),
    /// `read-file`.
    ReadFile {
        /// The path.
        path: String,
        /// The caller's time limit.
        timeout: Duration,
    },
    /// `write-file`.
    WriteFile {
        /// The path.
        path: String,
        /// What was to be written.
        content: String,
        /// The caller's time limit.
        timeout: Duration,
    },
}

impl Call {
    /// The command's argv, for an `execute` of [`Program::Argv`].
    pub fn argv(&self) -> Option<&[String]> {
        match self {
            Call::Execute(Command {
                program: Program::Argv(argv),
                ..
            }) => Some(argv),
            _ => None,
        }
    }

    /// The script, for an `execute` of [`Program::Shell`].
    pub fn script(&self) -> Option<&str> {
        match self {
            Call::Execute(Command {
                program: Program::Shell(s),
                ..
            }) => Some(s),
            _ => None,
        }
    }

    /// The path, for a file call.
    pub fn path(&self) -> Option<&str> {
        match self {
            Call::ReadFile { path, .. } | Call::WriteFile { path, .. } => Some(path),
            Call::Execute(_) => None,
        }
    }

    /// The call's own time limit.
    fn timeout(&self) -> Duration {
        match self {
            Call::Execute(cmd) => cmd.timeout,
            Call::ReadFile { timeout, .. } | Call::WriteFile { timeout, .. } => *timeout,
        }
    }

    /// What the call does, for the context of messages.
    fn doing(&self) -> Doing<'_> {
        match self {
            Call::Execute(cmd) => Doing::Running(&cmd.program),
            Call::ReadFile { path, .. } => Doing::Reading(path),
            Call::WriteFile { path, .. } => Doing::Writing(path),
        }
    }
}

/// What a [`FakeWorker`] does with a call.
#[derive(Clone, Debug)]
pub struct Answer {
    delay: Duration,
    reply: Reply,
}

#[derive(Clone, Debug)]
enum Reply {
    Output(Output),
    Error(WorkerError),
    Proceed,
}

impl Answer {
    /// A command that exits 0 with `stdout` and no stderr.
    pub fn ok(stdout: &str) -> Answer {
        Answer::output(stdout, "", 0)
    }

    /// A command's output and exit status (-N for death by signal N).
    pub fn output(stdout: &str, stderr: &str, exit_code: i32) -> Answer {
        Answer {
            delay: Duration::ZERO,
            reply: Reply::Output(Output {
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
                exit_code,
            }),
        }
    }

    /// A command that exits with `code` and prints nothing.
    pub fn exit(code: i32) -> Answer {
        Answer::output("", "", code)
    }

    /// Fails the call with `error`, as given.
    pub fn error(error: WorkerError) -> Answer {
        Answer {
            delay: Duration::ZERO,
            reply: Reply::Error(error),
        }
    }

    /// Does what the fake does without a rule: files in memory; for a command, the fallback.
    /// With [`Answer::after`], a slow but otherwise normal call.
    pub fn proceed() -> Answer {
        Answer {
            delay: Duration::ZERO,
            reply: Reply::Proceed,
        }
    }

    /// Never answers: the call ends in [`WorkerError::Timeout`] when its own limit expires.
    pub fn timeout() -> Answer {
        Answer::proceed().after(Duration::MAX)
    }

    /// The same answer, given after `delay` (a timeout if `delay` reaches the call's limit).
    pub fn after(self, delay: Duration) -> Answer {
        Answer { delay, ..self }
    }
}

/// A rule: answers the calls it recognises.
type Responder = Box<dyn Fn(&Call) -> Option<Answer> + Send + Sync>;

struct Rule {
    respond: Responder,
    /// Calls it may still answer; `None` = unlimited.
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Answer>,
    rules: Vec<Rule>,
    fallback: Option<Answer>,
    files: BTreeMap<String, String>,
    calls: Vec<Call>,
}

/// A scripted worker; see the [module documentation](self). Build it with the `on_*`/`with_*`
/// methods, share it (`Arc`) and hand [`Worker::from_arc`] of it to the code under test.
pub struct FakeWorker {
    addr: WorkerAddr,
    state: Mutex<State>,
}

impl fmt::Debug for FakeWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("FakeWorker")
            .field("addr", &self.addr)
            .field("rules", &s.rules.len())
            .field("queued", &s.queue.len())
            .field("files", &s.files.keys().collect::<Vec<_>>())
            .field("calls", &s.calls.len())
            .finish()
    }
}

impl FakeWorker {
    /// A fake worker at `addr` with no rules and no files.
    pub fn new(addr: WorkerAddr) -> FakeWorker {
        FakeWorker {
            addr,
            state: Mutex::new(State::default()),
        }
    }

    /// A fake rocklet at `host`:22555.
    pub fn remote(host: &str) -> FakeWorker {
        FakeWorker::new(WorkerAddr::Remote {
            host: host.to_string(),
            port: DEFAULT_ROCKLET_PORT,
        })
    }

    /// A fake rocklet at `host`:22555 that cannot be reached: every call fails with
    /// [`WorkerError::Unreachable`] naming it, as a connection refused does.
    pub fn unreachable(host: &str) -> FakeWorker {
        let fake = FakeWorker::remote(host);
        let message = format!(
            "worker {} unreachable: Connection refused (os error 111)",
            fake.addr
        );
        fake.on_call(|_| true, Answer::error(WorkerError::Unreachable(message)))
    }

    /// A handle to this (shared) fake, as the code under test takes it.
    pub fn worker(self: &Arc<Self>) -> Worker {
        Worker::from_arc(self.clone())
    }

    /// Answers every call for which `matches` is true with `answer` (first matching rule wins).
    pub fn on_call(
        self,
        matches: impl Fn(&Call) -> bool + Send + Sync + 'static,
        answer: Answer,
    ) -> FakeWorker {
        self.rule(Box::new(move |call| matches(call).then(|| answer.clone())))
    }

    /// Answers every command for which `respond` gives an answer (it sees the command, so the
    /// answer can depend on it).
    pub fn on_execute_with(
        self,
        respond: impl Fn(&Command) -> Option<Answer> + Send + Sync + 'static,
    ) -> FakeWorker {
        self.rule(Box::new(move |call| match call {
            Call::Execute(cmd) => respond(cmd),
            _ => None,
        }))
    }

    /// Answers every command for which `matches` is true.
    pub fn on_execute(
        self,
        matches: impl Fn(&Command) -> bool + Send + Sync + 'static,
        answer: Answer,
    ) -> FakeWorker {
        self.on_execute_with(move |cmd| matches(cmd).then(|| answer.clone()))
    }

    /// Answers every argv command that starts with `prefix`.
    pub fn on_argv(self, prefix: &[&str], answer: Answer) -> FakeWorker {
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        self.on_call(
            move |call| call.argv().is_some_and(|argv| argv.starts_with(&prefix)),
            answer,
        )
    }

    /// Answers every shell command whose script contains `needle`.
    pub fn on_script(self, needle: &str, answer: Answer) -> FakeWorker {
        let needle = needle.to_string();
        self.on_call(
            move |call| call.script().is_some_and(|s| s.contains(&needle)),
            answer,
        )
    }

    /// Answers every read of `path` (e.g. an error, or [`Answer::proceed`] after a delay).
    pub fn on_read(self, path: &str, answer: Answer) -> FakeWorker {
        let path = path.to_string();
        self.on_call(
            move |call| matches!(call, Call::ReadFile { path: p, .. } if *p == path),
            answer,
        )
    }

    /// Answers every write to `path` (e.g. an error, or [`Answer::proceed`] after a delay).
    pub fn on_write(self, path: &str, answer: Answer) -> FakeWorker {
        let path = path.to_string();
        self.on_call(
            move |call| matches!(call, Call::WriteFile { path: p, .. } if *p == path),
            answer,
        )
    }

    /// Limits the rule added last to its next `n` matching calls; later ones go on to the
    /// following rules.
    pub fn times(self, n: usize) -> FakeWorker {
        if let Some(rule) = self.lock().rules.last_mut() {
            rule.remaining = Some(n);
        }
        self
    }

    /// The answer to commands that nothing else answers (default: a [`WorkerError::Other`]
    /// naming the command).
    pub fn otherwise(self, answer: Answer) -> FakeWorker {
        self.lock().fallback = Some(answer);
        self
    }

    /// A file that exists before the test.
    pub fn with_file(self, path: &str, content: &str) -> FakeWorker {
        self.put_file(path, content);
        self
    }

    /// Queues `answer` for the next command, ahead of the rules (answers are used in order).
    pub fn queue(&self, answer: Answer) {
        self.lock().queue.push_back(answer);
    }

    /// Creates or replaces a file.
    pub fn put_file(&self, path: &str, content: &str) {
        self.lock()
            .files
            .insert(path.to_string(), content.to_string());
    }

    /// The file's content, if it exists.
    pub fn file(&self, path: &str) -> Option<String> {
        self.lock().files.get(path).cloned()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The commands executed so far, in order.
    pub fn commands(&self) -> Vec<Command> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Execute(cmd) => Some(cmd.clone()),
                _ => None,
            })
            .collect()
    }

    /// What was written to `path` so far, in order (including writes a rule failed).
    pub fn writes_to(&self, path: &str) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::WriteFile {
                    path: p, content, ..
                } if p == path => Some(content.clone()),
                _ => None,
            })
            .collect()
    }

    fn rule(self, respond: Responder) -> FakeWorker {
        self.lock().rules.push(Rule {
            respond,
            remaining: None,
        });
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `call` and picks its answer (the lock is released before any waiting).
    fn answer_for(&self, call: &Call) -> Answer {
        let mut s = self.lock();
        s.calls.push(call.clone());
        if matches!(call, Call::Execute(_))
            && let Some(queued) = s.queue.pop_front()
        {
            return queued;
        }
        for rule in s.rules.iter_mut() {
            if rule.remaining == Some(0) {
                continue;
            }
            if let Some(answer) = (rule.respond)(call) {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                return answer;
            }
        }
        Answer::proceed()
    }

    /// Answers `call`: waits the answer's delay (at most the call's limit), then replies.
    async fn call(&self, call: Call) -> Result<Reply, WorkerError> {
        let answer = self.answer_for(&call);
        let limit = call.timeout();
        if answer.delay >= limit {
            tokio::time::sleep(limit).await;
            return Err(WorkerError::Timeout(error_message(
                &self.addr,
                call.doing(),
                format!("no reply within {limit:?} (FakeWorker)"),
            )));
        }
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        match answer.reply {
            Reply::Error(e) => Err(e),
            Reply::Proceed if matches!(call, Call::Execute(_)) => {
                let fallback = self.lock().fallback.clone();
                match fallback.map(|a| a.reply) {
                    Some(Reply::Output(out)) => Ok(Reply::Output(out)),
                    Some(Reply::Error(e)) => Err(e),
                    Some(Reply::Proceed) | None => Err(WorkerError::Other(error_message(
                        &self.addr,
                        call.doing(),
                        "the FakeWorker has no answer for this command",
                    ))),
                }
            }
            reply => Ok(reply),
        }
    }
}

impl WorkerApi for FakeWorker {
    fn addr(&self) -> &WorkerAddr {
        &self.addr
    }

    fn execute<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<Output, WorkerError>> {
        Box::pin(async move {
            match self.call(Call::Execute(cmd.clone())).await? {
                Reply::Output(out) => Ok(out),
                _ => unreachable!("FakeWorker::call answers commands with an output or an error"),
            }
        })
    }

    fn read_file<'a>(
        &'a self,
        path: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, WorkerError>> {
        Box::pin(async move {
            let call = Call::ReadFile {
                path: path.to_string(),
                timeout,
            };
            self.call(call).await?;
            self.file(path).ok_or_else(|| {
                WorkerError::NotFound(error_message(
                    &self.addr,
                    Doing::Reading(path),
                    "not found (FakeWorker)",
                ))
            })
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        content: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), WorkerError>> {
        Box::pin(async move {
            let call = Call::WriteFile {
                path: path.to_string(),
                content: content.to_string(),
                timeout,
            };
            self.call(call).await?;
            self.put_file(path, content);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str], timeout: Duration) -> Command {
        Command {
            program: Program::Argv(args.iter().map(|a| a.to_string()).collect()),
            cwd: None,
            env: Vec::new(),
            timeout,
        }
    }

    #[tokio::test]
    async fn delays_and_timeouts_follow_the_calls_limit() {
        let ms = Duration::from_millis;
        let fake = Arc::new(
            FakeWorker::remote("h")
                .on_argv(&["slow"], Answer::ok("late").after(ms(100)))
                .on_read("/slow", Answer::proceed().after(ms(100)))
                .with_file("/slow", "x"),
        );
        let w = fake.worker();
        let started = std::time::Instant::now();
        let got = w.execute(&argv(&["slow"], ms(5000))).await;
        assert_eq!(got.unwrap().stdout, "late");
        assert!(started.elapsed() >= ms(100));
        let started = std::time::Instant::now();
        let got = w.execute(&argv(&["slow"], ms(50))).await;
        assert!(
            matches!(&got, Err(WorkerError::Timeout(m)) if m.starts_with("no reply within") && m.ends_with("while running `slow` on worker h:22555")),
            "{got:?}"
        );
        assert!(started.elapsed() >= ms(50) && started.elapsed() < ms(100));
        let got = w.read_file("/slow", ms(50)).await;
        assert!(matches!(got, Err(WorkerError::Timeout(_))), "{got:?}");
        assert_eq!(w.read_file("/slow", ms(5000)).await.unwrap(), "x");
    }

    #[tokio::test]
    async fn rules_in_order_times_queue_and_fallback() {
        let fake = Arc::new(
            FakeWorker::remote("h")
                .on_write("/s", Answer::error(WorkerError::Rejected("no".into())))
                .times(1)
                .on_execute_with(|cmd| match &cmd.program {
                    Program::Argv(a) if a[0] == "echo" => Some(Answer::ok(&a[1..].join(" "))),
                    _ => None,
                })
                .on_execute(|_| true, Answer::exit(3)),
        );
        let w = fake.worker();
        let t = Duration::from_secs(1);
        assert!(w.write_file("/s", "1", t).await.is_err());
        w.write_file("/s", "2", t).await.unwrap();
        assert_eq!(fake.writes_to("/s"), ["1", "2"]);
        assert_eq!(fake.file("/s").as_deref(), Some("2"));
        fake.queue(Answer::error(WorkerError::Unreachable("gone".into())));
        assert!(w.execute(&argv(&["echo", "a"], t)).await.is_err());
        assert_eq!(
            w.execute(&argv(&["echo", "a", "b"], t))
                .await
                .unwrap()
                .stdout,
            "a b"
        );
        assert_eq!(w.execute(&argv(&["ls"], t)).await.unwrap().exit_code, 3);
        assert_eq!(fake.commands().len(), 3);
        let missing = w.read_file("/nope", t).await;
        assert!(
            matches!(missing, Err(WorkerError::NotFound(_))),
            "{missing:?}"
        );

        let strict = Arc::new(FakeWorker::new(WorkerAddr::Local));
        let got = strict.worker().execute(&argv(&["ls"], t)).await;
        assert!(
            matches!(&got, Err(WorkerError::Other(m)) if m.starts_with("the FakeWorker has no answer") && m.contains("running `ls")),
            "{got:?}"
        );
        let lenient = Arc::new(FakeWorker::new(WorkerAddr::Local).otherwise(Answer::ok("")));
        assert!(lenient.worker().execute(&argv(&["ls"], t)).await.is_ok());
    }

    #[tokio::test]
    async fn unreachable_fails_every_call_and_worker_checks_still_apply() {
        let fake = Arc::new(FakeWorker::unreachable("10.9.9.9"));
        let w = fake.worker();
        let t = Duration::from_secs(1);
        let got = w.read_file("/x", t).await;
        assert!(
            matches!(&got, Err(WorkerError::Unreachable(m)) if m.starts_with("worker 10.9.9.9:22555 unreachable")),
            "{got:?}"
        );
        // Worker's own validation rejects before the fake sees anything.
        assert!(matches!(
            w.read_file("", t).await,
            Err(WorkerError::Rejected(_))
        ));
        assert_eq!(fake.calls().len(), 1);
    }
}
