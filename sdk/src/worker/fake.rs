//! A scripted [`Worker`] for native tests (cargo feature `fake`).
//!
//! [`FakeWorker`] answers each command from rules the test sets up (match on the argument
//! vector or any predicate; a fixed answer, successive answers, or a function), records every
//! call, keeps files and logs in memory and has a clock that moves only when the test says so.
//! [`LocalRunner`] runs commands on this machine, for the tests whose commands should meet the
//! real tools: hand it to [`FakeWorker::on_with`].
//!
//! Enable it for the tests only:
//!
//! ```toml
//! [dev-dependencies]
//! quarry-sdk = { path = "…", features = ["fake"] }
//! ```
//!
//! ```
//! use std::time::Duration;
//!
//! use quarry_sdk::host::{Error, LogLevel};
//! use quarry_sdk::worker::Worker;
//! use quarry_sdk::worker::fake::{self, FakeWorker};
//!
//! /// The logic under test: whether the Docker daemon answers, polled three times.
//! fn docker_up(worker: &mut impl Worker) -> bool {
//!     for _ in 0..3 {
//!         match worker.execute_argv(["docker", "info"], Duration::from_secs(5)) {
//!             Ok(out) if out.exit_code == 0 => return true,
//!             Err(Error::NotFound(_)) => return false,
//!             _ => worker.pause(Duration::from_secs(2)),
//!         }
//!     }
//!     worker.log(LogLevel::Warn, "the docker daemon does not answer");
//!     false
//! }
//!
//! let mut w = FakeWorker::new();
//! w.require_timeout(Duration::from_secs(30)).call_cost(Duration::from_millis(100));
//! // Down twice, then up (the last answer repeats).
//! w.on_each(
//!     fake::argv(["docker", "info"]),
//!     [
//!         Ok(fake::output(1, "", "Cannot connect to the Docker daemon")),
//!         Ok(fake::output(1, "", "Cannot connect to the Docker daemon")),
//!         Ok(fake::output(0, "Server Version: 28.2.2\n", "")),
//!     ],
//! );
//! assert!(docker_up(&mut w));
//! assert_eq!(w.argvs(), [["docker", "info"], ["docker", "info"], ["docker", "info"]]);
//! assert_eq!(w.pauses().len(), 2);
//! assert_eq!(w.elapsed(), Duration::from_millis(4300));
//!
//! // A later rule wins over an earlier one for the commands it matches.
//! w.on(fake::program("docker"), Err(Error::NotFound("program \"docker\" not found".into())));
//! assert!(!docker_up(&mut w));
//! assert_eq!(w.count(fake::program("docker")), 4);
//! assert!(w.logs().is_empty());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::Worker;
use crate::host::{Command, Error, LogLevel, Output};

/// A command's answer: what the worker's `execute` returns.
pub type Answer = Result<Output, Error>;

/// Which commands a rule answers.
type Matcher = Box<dyn Fn(&Command) -> bool>;

/// What answers writes instead of the in-memory files.
type WriteHook = Box<dyn FnMut(&str, &str) -> Result<(), Error>>;

/// How a rule answers.
enum Respond {
    /// The same answer every time.
    Always(Answer),
    /// Successive answers; the last one repeats.
    Each(VecDeque<Answer>),
    /// Computed from the command.
    With(Box<dyn FnMut(&Command) -> Answer>),
}

/// A scripted answer to the commands that `matches`.
struct Rule {
    matches: Matcher,
    respond: Respond,
}

/// A worker for native tests: answers commands from rules, records every call, keeps files,
/// logs and a clock in memory. See the [module docs](self) for an example.
///
/// - Commands: the rules set up with [`on`](Self::on), [`on_each`](Self::on_each) and
///   [`on_with`](Self::on_with) are tried newest first, so a test can override a default set up
///   earlier; a command that no rule matches panics, naming it. Every command is recorded
///   ([`calls`](Self::calls), [`argvs`](Self::argvs), [`count`](Self::count)), also those
///   answered with an error.
/// - Files: [`read_file`](Worker::read_file) reads what [`put_file`](Self::put_file) or a
///   write put there ([`Error::NotFound`] otherwise); every write is recorded
///   ([`writes`](Self::writes)); [`on_write`](Self::on_write) can answer writes instead (an
///   error, or writing through to disk).
/// - Clock: [`elapsed`](Worker::elapsed) starts at zero and moves by
///   [`call_cost`](Self::call_cost) at each command, by each [`pause`](Worker::pause) (recorded
///   in [`pauses`](Self::pauses)) and by [`advance`](Self::advance).
/// - Logs are captured ([`logs`](Self::logs)); [`previous_pid`](Worker::previous_pid) answers
///   what [`set_previous_pid`](Self::set_previous_pid) set (none by default), and
///   [`dry_run`](Worker::dry_run) what [`set_dry_run`](Self::set_dry_run) set (false by
///   default).
#[derive(Default)]
pub struct FakeWorker {
    rules: Vec<Rule>,
    calls: Vec<Command>,
    max_timeout: Option<Duration>,
    files: BTreeMap<String, String>,
    writes: Vec<(String, String)>,
    on_write: Option<WriteHook>,
    logs: Vec<(LogLevel, String)>,
    clock: Duration,
    call_cost: Duration,
    pauses: Vec<Duration>,
    previous_pid: Option<u32>,
    dry_run: bool,
}

impl FakeWorker {
    /// A worker with no rules, no files, a clock at zero and no previous pid.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers every command that `matches` with `answer`.
    pub fn on(
        &mut self,
        matches: impl Fn(&Command) -> bool + 'static,
        answer: Answer,
    ) -> &mut Self {
        self.rule(matches, Respond::Always(answer))
    }

    /// Answers the commands that `matches` with `answers` in turn; the last one repeats.
    ///
    /// # Panics
    ///
    /// When `answers` is empty.
    pub fn on_each(
        &mut self,
        matches: impl Fn(&Command) -> bool + 'static,
        answers: impl IntoIterator<Item = Answer>,
    ) -> &mut Self {
        let answers: VecDeque<Answer> = answers.into_iter().collect();
        assert!(!answers.is_empty(), "FakeWorker::on_each: no answers");
        self.rule(matches, Respond::Each(answers))
    }

    /// Answers the commands that `matches` with what `answer` computes from each: a model of
    /// the worker's tools (share its state with the test through an `Rc<RefCell<_>>`), or a
    /// [`LocalRunner`] that runs them on this machine.
    pub fn on_with(
        &mut self,
        matches: impl Fn(&Command) -> bool + 'static,
        answer: impl FnMut(&Command) -> Answer + 'static,
    ) -> &mut Self {
        self.rule(matches, Respond::With(Box::new(answer)))
    }

    fn rule(
        &mut self,
        matches: impl Fn(&Command) -> bool + 'static,
        respond: Respond,
    ) -> &mut Self {
        self.rules.push(Rule {
            matches: Box::new(matches),
            respond,
        });
        self
    }

    /// Requires every command to carry a time limit above zero and at most `max`: the fake
    /// panics at the first one that does not.
    pub fn require_timeout(&mut self, max: Duration) -> &mut Self {
        self.max_timeout = Some(max);
        self
    }

    /// Puts a file on the fake worker.
    pub fn put_file(&mut self, path: impl Into<String>, content: impl Into<String>) -> &mut Self {
        self.files.insert(path.into(), content.into());
        self
    }

    /// Answers writes with `hook(path, content)` from now on: an error is returned to the task
    /// and stores nothing; `Ok` stores the file as usual. Every write is recorded either way.
    pub fn on_write(
        &mut self,
        hook: impl FnMut(&str, &str) -> Result<(), Error> + 'static,
    ) -> &mut Self {
        self.on_write = Some(Box::new(hook));
        self
    }

    /// Moves the clock by `cost` at each command (before it is answered). Zero by default.
    pub fn call_cost(&mut self, cost: Duration) -> &mut Self {
        self.call_cost = cost;
        self
    }

    /// Moves the clock by `by` now.
    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.clock += by;
        self
    }

    /// Sets what [`Worker::previous_pid`] answers.
    pub fn set_previous_pid(&mut self, pid: Option<u32>) -> &mut Self {
        self.previous_pid = pid;
        self
    }

    /// Sets what [`Worker::dry_run`] answers.
    pub fn set_dry_run(&mut self, dry_run: bool) -> &mut Self {
        self.dry_run = dry_run;
        self
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> &[Command] {
        &self.calls
    }

    /// The argument vector of every command run so far, in order; a shell script shows as
    /// `["/bin/sh", "-c", script]`, which is how the worker runs it.
    pub fn argvs(&self) -> Vec<Vec<String>> {
        self.calls
            .iter()
            .map(|c| match c.get_script() {
                Some(script) => vec!["/bin/sh".into(), "-c".into(), script.to_string()],
                None => c.get_argv().unwrap_or_default().to_vec(),
            })
            .collect()
    }

    /// How many of the commands run so far `matches`.
    pub fn count(&self, matches: impl Fn(&Command) -> bool) -> usize {
        self.calls.iter().filter(|c| matches(c)).count()
    }

    /// The content of a file on the fake worker.
    pub fn file(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// Every write so far, in order: `(path, content)`.
    pub fn writes(&self) -> &[(String, String)] {
        &self.writes
    }

    /// Every line logged so far, in order.
    pub fn logs(&self) -> &[(LogLevel, String)] {
        &self.logs
    }

    /// Every pause so far, in order.
    pub fn pauses(&self) -> &[Duration] {
        &self.pauses
    }
}

impl Worker for FakeWorker {
    fn execute(&mut self, command: &Command) -> Answer {
        if let Some(max) = self.max_timeout {
            let timeout = command.get_timeout();
            assert!(
                timeout.is_some_and(|t| t > Duration::ZERO && t <= max),
                "FakeWorker: {command:?} has the time limit {timeout:?}, not one in (0, {max:?}]"
            );
        }
        self.calls.push(command.clone());
        self.clock += self.call_cost;
        let Some(rule) = self.rules.iter_mut().rev().find(|r| (r.matches)(command)) else {
            panic!("FakeWorker: no rule answers {command:?}");
        };
        match &mut rule.respond {
            Respond::Always(answer) => answer.clone(),
            Respond::Each(answers) if answers.len() > 1 => answers.pop_front().unwrap(),
            Respond::Each(answers) => answers[0].clone(),
            Respond::With(answer) => answer(command),
        }
    }

    fn read_file(&mut self, path: &str) -> Result<String, Error> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("fake worker: read-file {path}: no such file")))
    }

    fn write_file(&mut self, path: &str, content: &str) -> Result<(), Error> {
        self.writes.push((path.to_string(), content.to_string()));
        if let Some(hook) = &mut self.on_write {
            hook(path, content)?;
        }
        self.files.insert(path.to_string(), content.to_string());
        Ok(())
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_string()));
    }

    fn elapsed(&self) -> Duration {
        self.clock
    }

    fn pause(&mut self, pause: Duration) {
        self.pauses.push(pause);
        self.clock += pause;
    }

    fn previous_pid(&mut self) -> Option<u32> {
        self.previous_pid
    }

    fn dry_run(&self) -> bool {
        self.dry_run
    }
}

/// Matches every command.
pub fn any() -> impl Fn(&Command) -> bool + 'static {
    |_| true
}

/// Matches an argument vector equal to `argv`.
pub fn argv<I, S>(argv: I) -> impl Fn(&Command) -> bool + 'static
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let want: Vec<String> = argv.into_iter().map(Into::into).collect();
    move |c| c.get_argv() == Some(want.as_slice())
}

/// Matches an argument vector that starts with `prefix`.
pub fn prefix<I, S>(prefix: I) -> impl Fn(&Command) -> bool + 'static
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let want: Vec<String> = prefix.into_iter().map(Into::into).collect();
    move |c| c.get_argv().is_some_and(|a| a.starts_with(&want))
}

/// Matches an argument vector whose program (`argv[0]`) is `name`.
pub fn program(name: impl Into<String>) -> impl Fn(&Command) -> bool + 'static {
    let name = name.into();
    move |c| c.get_argv().and_then(<[String]>::first) == Some(&name)
}

/// Matches every shell script ([`Command::shell`]).
pub fn shell() -> impl Fn(&Command) -> bool + 'static {
    |c| c.get_script().is_some()
}

/// A command's output.
pub fn output(exit_code: i32, stdout: impl Into<String>, stderr: impl Into<String>) -> Output {
    Output {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit_code,
    }
}

/// Runs commands on this machine as a worker would: an argument vector without a shell, a
/// script with `/bin/sh -c`, the command's `cwd` and `env` applied, stdin empty, output decoded
/// as UTF-8 (invalid bytes replaced), a process killed by a signal exiting with -1. The time
/// limit is not enforced. A program that cannot be found is [`Error::NotFound`].
///
/// Set the machine's side with the builder: the working directory when the command gives none,
/// and environment variables set or removed before the command's own are applied (a `PATH`
/// set here is also where the program is looked up).
#[derive(Debug, Clone, Default)]
pub struct LocalRunner {
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
}

impl LocalRunner {
    /// Runs in this process's working directory and environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// The working directory of commands that set none.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets an environment variable of the machine.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes an environment variable of the machine.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Runs `command` and waits for it.
    pub fn run(&self, command: &Command) -> Answer {
        let (program, args): (&str, Vec<&str>) = match command.get_script() {
            Some(script) => ("/bin/sh", vec!["-c", script]),
            None => match command.get_argv().unwrap_or_default() {
                [program, args @ ..] => (program, args.iter().map(String::as_str).collect()),
                [] => return Err(Error::Rejected("execute: an empty argv".into())),
            },
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.envs(command.get_env().iter().map(|(k, v)| (k, v)));
        if let Some(dir) = command.get_cwd().map(PathBuf::from).or(self.cwd.clone()) {
            cmd.current_dir(dir);
        }
        let out = cmd.output().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("this machine: program {program:?} not found: {e}"))
            }
            _ => Error::Other(format!("this machine: {program:?} could not run: {e}")),
        })?;
        Ok(Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            exit_code: out.status.code().unwrap_or(-1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(stdout: &str) -> Answer {
        Ok(output(0, stdout, ""))
    }

    fn stdout(answer: Answer) -> String {
        answer.unwrap().stdout
    }

    #[test]
    fn rules_match_newest_first_and_unmatched_commands_panic() {
        let mut w = FakeWorker::new();
        w.on(any(), ok("any"))
            .on(program("docker"), ok("docker"))
            .on(prefix(["docker", "ps"]), ok("ps"))
            .on(argv(["docker", "ps", "-q"]), ok("ps -q"))
            .on(shell(), ok("sh"));
        let run = |w: &mut FakeWorker, c: Command| stdout(w.execute(&c));
        assert_eq!(run(&mut w, Command::argv(["docker", "ps", "-q"])), "ps -q");
        assert_eq!(run(&mut w, Command::argv(["docker", "ps", "-a"])), "ps");
        assert_eq!(run(&mut w, Command::argv(["docker", "info"])), "docker");
        assert_eq!(run(&mut w, Command::argv(["uv"])), "any");
        assert_eq!(run(&mut w, Command::shell("docker ps")), "sh");
        assert_eq!(w.count(program("docker")), 3);
        assert_eq!(w.argvs()[4], ["/bin/sh", "-c", "docker ps"]);

        let unmatched = std::panic::catch_unwind(|| {
            FakeWorker::new().execute(&Command::argv(["true"])).ok();
        });
        assert!(unmatched.is_err());
    }

    #[test]
    fn successive_answers_repeat_the_last_and_functions_see_the_command() {
        let mut w = FakeWorker::new();
        w.on_each(any(), [ok("1"), ok("2")]);
        let c = Command::argv(["x"]);
        let got: Vec<String> = (0..3).map(|_| stdout(w.execute(&c))).collect();
        assert_eq!(got, ["1", "2", "2"]);

        let mut n = 0;
        w.on_with(program("echo"), move |c| {
            n += 1;
            ok(&format!("{n}:{}", c.get_argv().unwrap()[1..].join(" ")))
        });
        assert_eq!(
            stdout(w.execute(&Command::argv(["echo", "a", "b"]))),
            "1:a b"
        );
        assert_eq!(stdout(w.execute(&Command::argv(["echo"]))), "2:");
        assert_eq!(w.calls().len(), 5);
    }

    #[test]
    fn time_limits_are_checked_when_required() {
        let mut w = FakeWorker::new();
        w.on(any(), ok("")).require_timeout(Duration::from_secs(30));
        let limited = Command::argv(["x"]).timeout(Duration::from_secs(30));
        assert!(w.execute(&limited).is_ok());
        for bad in [
            Command::argv(["x"]),
            Command::argv(["x"]).timeout(Duration::ZERO),
            Command::argv(["x"]).timeout(Duration::from_secs(31)),
        ] {
            let mut w = FakeWorker::new();
            w.on(any(), ok("")).require_timeout(Duration::from_secs(30));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.execute(&bad)));
            assert!(r.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_clock_moves_with_calls_pauses_and_advance() {
        let mut w = FakeWorker::new();
        w.on(any(), ok("")).call_cost(Duration::from_millis(50));
        assert_eq!(w.elapsed(), Duration::ZERO);
        w.execute_argv(["x"], Duration::from_secs(1)).unwrap();
        w.pause(Duration::from_secs(2));
        w.advance(Duration::from_secs(1));
        assert_eq!(w.elapsed(), Duration::from_millis(3050));
        assert_eq!(w.pauses(), [Duration::from_secs(2)]);
    }

    #[test]
    fn files_writes_logs_and_previous_pid() {
        let mut w = FakeWorker::new();
        w.put_file("/etc/a", "A");
        assert_eq!(w.read_file("/etc/a").unwrap(), "A");
        assert!(matches!(w.read_file("/etc/b"), Err(Error::NotFound(_))));
        w.write_file("/etc/b", "B").unwrap();
        assert_eq!(w.read_file("/etc/b").unwrap(), "B");
        w.on_write(|path, _| Err(Error::Rejected(format!("{path}: read-only"))));
        assert!(matches!(
            w.write_file("/etc/c", "C"),
            Err(Error::Rejected(_))
        ));
        assert_eq!(w.file("/etc/c"), None);
        assert_eq!(
            w.writes(),
            [("/etc/b".into(), "B".into()), ("/etc/c".into(), "C".into())]
        );

        w.log(LogLevel::Warn, "careful");
        assert_eq!(w.logs(), [(LogLevel::Warn, "careful".to_string())]);
        assert_eq!(w.previous_pid(), None);
        w.set_previous_pid(Some(42));
        assert_eq!(w.previous_pid(), Some(42));
    }

    #[test]
    fn the_local_runner_runs_argvs_and_scripts_on_this_machine() {
        let dir = std::env::temp_dir();
        let local = LocalRunner::new()
            .cwd(&dir)
            .env("QUARRY_FAKE_A", "a")
            .env_remove("QUARRY_FAKE_UNSET");
        let out = local
            .run(&Command::shell(
                "printf '%s %s' \"$QUARRY_FAKE_A\" \"$PWD\"; echo err >&2; exit 3",
            ))
            .unwrap();
        assert_eq!(out.stdout, format!("a {}", dir.display()));
        assert_eq!((out.stderr.as_str(), out.exit_code), ("err\n", 3));

        let out = local
            .run(&Command::argv(["printf", "%s|", "$(x)", "a b"]).env("QUARRY_FAKE_A", "b"))
            .unwrap();
        assert_eq!(out.stdout, "$(x)|a b|", "an argv is not interpreted");
        let out = local
            .run(&Command::shell("echo \"$QUARRY_FAKE_A\"").env("QUARRY_FAKE_A", "b"))
            .unwrap();
        assert_eq!(out.stdout, "b\n", "the command's env comes last");

        let missing = local.run(&Command::argv(["quarry-no-such-program"]));
        assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

        let mut w = FakeWorker::new();
        w.on_with(any(), move |c| local.run(c));
        assert_eq!(stdout(w.execute(&Command::argv(["echo", "hi"]))), "hi\n");
    }
}
