//! Workers: the machines a task run acts on, and the clients that reach them.
//!
//! A [`Worker`] is a cheap handle (an `Arc<dyn WorkerApi>` inside) with the three operations
//! every task run needs: [`Worker::execute`], [`Worker::read_file`], [`Worker::write_file`]. It
//! checks their arguments, then hands them to a [`WorkerApi`] implementation. Two kinds exist
//! (tests add scripted fakes, see the `quarry-testkit` crate):
//! - [`rocklet::Rocklet`]: a remote machine running ROCK's `rocklet` HTTP agent, spoken to
//!   exactly as docs/rocklet.md describes it;
//! - [`local::LocalWorker`]: this machine, the embedded default worker `local`, with the same
//!   semantics (argv or shell, merged env, process-group kill on timeout, size caps).
//!
//! Errors are [`WorkerError`] kinds the guest sees as typed variants; every message
//! ([`error_message`]) gives the reason first, then what was being done (the command or path,
//! clipped) and on which worker.

pub mod discovery;
pub mod local;
pub mod rocklet;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

/// Port of the rocklet when a worker address gives none (ROCK's `Port.PROXY`).
pub const DEFAULT_ROCKLET_PORT: u16 = 22555;

/// Where a task run acts: this machine, or a rocklet at `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerAddr {
    /// The machine Quarry runs on, without any agent.
    Local,
    /// A rocklet. `host` is a name, an IPv4 address or a bare IPv6 address (no brackets).
    Remote {
        /// Host name or IP address.
        host: String,
        /// TCP port of the rocklet.
        port: u16,
    },
}

impl WorkerAddr {
    /// Parses `local`, `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
    /// `default_port` applies when none is given.
    pub fn parse(s: &str, default_port: u16) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("worker address is empty".into());
        }
        if s == "local" {
            return Ok(WorkerAddr::Local);
        }
        let bad = |why: &str| Err(format!("worker address {s:?} {why}"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((h, after)) = rest.split_once(']') else {
                return bad("has '[' without ']'");
            };
            match after {
                "" => (h, None),
                p if p.starts_with(':') => (h, Some(&p[1..])),
                _ => return bad("has text after ']' that is not ':port'"),
            }
        } else if s.matches(':').count() > 1 {
            (s, None) // bare IPv6
        } else if let Some((h, p)) = s.split_once(':') {
            (h, Some(p))
        } else {
            (s, None)
        };
        if host.is_empty() {
            return bad("has no host");
        }
        if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
            return bad("is not a host name or IP address");
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return bad("has an invalid port (expected 1-65535)"),
            },
        };
        Ok(WorkerAddr::Remote {
            host: host.to_string(),
            port,
        })
    }

    /// The host part, as ROCK's status files and reports call it (`worker_ip`).
    pub fn ip(&self) -> &str {
        match self {
            WorkerAddr::Local => "local",
            WorkerAddr::Remote { host, .. } => host,
        }
    }
}

impl fmt::Display for WorkerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerAddr::Local => f.write_str("local"),
            WorkerAddr::Remote { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            WorkerAddr::Remote { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// An argument vector, no shell. Must not be empty.
    Argv(Vec<String>),
    /// A script for `/bin/sh -c`.
    Shell(String),
}

/// A command for [`Worker::execute`].
#[derive(Clone, Debug)]
pub struct Command {
    /// The program or script.
    pub program: Program,
    /// Working directory on the worker; `None` = the agent's own.
    pub cwd: Option<String>,
    /// Variables merged into the agent's environment (not a replacement).
    pub env: Vec<(String, String)>,
    /// Effective time limit, already capped by the caller. On expiry the command's whole
    /// process group is killed and the call returns [`WorkerError::Timeout`].
    pub timeout: Duration,
}

/// What a finished command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
    /// Exit status; -N for death by signal N.
    pub exit_code: i32,
}

/// Why a worker call produced no answer. Messages name the worker and the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// A file, directory or program is missing.
    #[error("{0}")]
    NotFound(String),
    /// The call ran out of time; its effects are unknown.
    #[error("{0}")]
    Timeout(String),
    /// The worker could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// Refused: size limit, invalid argument, or a request the worker calls malformed.
    #[error("{0}")]
    Rejected(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl WorkerError {
    /// Its kind, for reports' `error_type`.
    pub fn kind(&self) -> crate::error::ErrorType {
        use crate::error::ErrorType;
        match self {
            WorkerError::NotFound(_) => ErrorType::NotFound,
            WorkerError::Timeout(_) => ErrorType::Timeout,
            WorkerError::Unreachable(_) => ErrorType::Unreachable,
            WorkerError::Rejected(_) => ErrorType::Rejected,
            WorkerError::Other(_) => ErrorType::WorkerError,
        }
    }
}

/// Longest command or path quoted in the context of a worker error message; a longer one is
/// clipped with an ellipsis, so the reason, which comes first, is never buried.
pub const CONTEXT_MAX_CHARS: usize = 80;

/// What a worker call was doing, for the context that ends its error messages.
#[derive(Clone, Copy, Debug)]
pub enum Doing<'a> {
    /// `execute` of this program.
    Running(&'a Program),
    /// `read-file` of this path.
    Reading(&'a str),
    /// `write-file` of this path.
    Writing(&'a str),
    /// The rocklet's readiness probe.
    CheckingAlive,
}

impl Doing<'_> {
    /// `running `sh -c "find …"``, `reading "/etc/x"`, `checking that it is alive`: the
    /// command or path clipped to [`CONTEXT_MAX_CHARS`].
    fn describe(&self) -> String {
        match self {
            Doing::Running(program) => format!("running `{}`", local::describe_command(program)),
            Doing::Reading(path) => {
                format!(
                    "reading {}",
                    clip_chars(&format!("{path:?}"), CONTEXT_MAX_CHARS)
                )
            }
            Doing::Writing(path) => {
                format!(
                    "writing {}",
                    clip_chars(&format!("{path:?}"), CONTEXT_MAX_CHARS)
                )
            }
            Doing::CheckingAlive => "checking that it is alive".to_string(),
        }
    }
}

/// A worker error message: the reason first, then what was being done and on which worker,
/// e.g. `exit status 2: find: '/x': No such file or directory — while running `sh -c "find
/// /x …"` on worker 10.0.0.1:22555`.
pub fn error_message(addr: &WorkerAddr, doing: Doing<'_>, reason: impl fmt::Display) -> String {
    format!("{reason} — while {} on worker {addr}", doing.describe())
}

/// `s` cut to `max` characters, with an ellipsis when it was longer.
pub(crate) fn clip_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Size caps applied to every worker call, so a runaway command or file cannot exhaust the
/// host (the rocklet itself has no limits).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Cap on stdout and on stderr of one command, each; more is truncated with a marker.
    pub max_output_bytes: usize,
    /// Cap on a file read or written; a larger file is `Rejected`.
    pub max_file_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_output_bytes: 4 << 20,
            max_file_bytes: 16 << 20,
        }
    }
}

/// The operations of one worker, as each kind implements them: [`local::LocalWorker`],
/// [`rocklet::Rocklet`], and test doubles (the `quarry-testkit` crate's `FakeWorker`).
///
/// Callers never use it directly: they hold a [`Worker`], which checks every argument first
/// (an empty argv, NUL bytes, an empty path, no time left…) and passes on only calls that
/// satisfy those checks. Implementations report failures as [`WorkerError`]s whose messages
/// give the reason first, then the object and the worker ([`error_message`]), and enforce their
/// [`Limits`].
pub trait WorkerApi: Send + Sync + fmt::Debug {
    /// The worker's address, as messages and reports name it.
    fn addr(&self) -> &WorkerAddr;

    /// Runs a command and waits for it, at most `cmd.timeout` (after which the command's
    /// process group is killed and the answer is [`WorkerError::Timeout`]). A non-zero exit
    /// status is an [`Output`], not an error.
    fn execute<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<Output, WorkerError>>;

    /// Reads a UTF-8 text file, within `timeout`.
    fn read_file<'a>(
        &'a self,
        path: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, WorkerError>>;

    /// Writes a text file (missing parents created), within `timeout`.
    fn write_file<'a>(
        &'a self,
        path: &'a str,
        content: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), WorkerError>>;
}

/// Implements [`WorkerApi`] for a worker type by calling its inherent methods of the same names
/// (`addr`, and the `async fn`s `execute`, `read_file` and `write_file`), which keep their own
/// documentation of the errors each kind returns.
macro_rules! impl_worker_api {
    ($worker:ty) => {
        impl $crate::workers::WorkerApi for $worker {
            fn addr(&self) -> &$crate::workers::WorkerAddr {
                <$worker>::addr(self)
            }

            fn execute<'a>(
                &'a self,
                cmd: &'a $crate::workers::Command,
            ) -> futures::future::BoxFuture<
                'a,
                Result<$crate::workers::Output, $crate::workers::WorkerError>,
            > {
                Box::pin(<$worker>::execute(self, cmd))
            }

            fn read_file<'a>(
                &'a self,
                path: &'a str,
                timeout: std::time::Duration,
            ) -> futures::future::BoxFuture<'a, Result<String, $crate::workers::WorkerError>> {
                Box::pin(<$worker>::read_file(self, path, timeout))
            }

            fn write_file<'a>(
                &'a self,
                path: &'a str,
                content: &'a str,
                timeout: std::time::Duration,
            ) -> futures::future::BoxFuture<'a, Result<(), $crate::workers::WorkerError>> {
                Box::pin(<$worker>::write_file(self, path, content, timeout))
            }
        }
    };
}
use impl_worker_api;

/// A handle to one worker: cheap to clone, clones share the worker (and its connection pool).
#[derive(Clone, Debug)]
pub struct Worker(Arc<dyn WorkerApi>);

impl Worker {
    /// A handle to `api`.
    pub fn new(api: impl WorkerApi + 'static) -> Worker {
        Worker(Arc::new(api))
    }

    /// A handle to an already shared `api` (e.g. an `Arc<Rocklet>` the caller keeps to call
    /// [`rocklet::Rocklet::is_alive`]).
    pub fn from_arc(api: Arc<dyn WorkerApi>) -> Worker {
        Worker(api)
    }

    /// The worker's address.
    pub fn addr(&self) -> &WorkerAddr {
        self.0.addr()
    }

    /// Runs a command and waits for it (at most `cmd.timeout`).
    pub async fn execute(&self, cmd: &Command) -> Result<Output, WorkerError> {
        if let Some(err) = check_command(self.addr(), cmd) {
            return Err(err);
        }
        self.0.execute(cmd).await
    }

    /// Reads a UTF-8 text file, within `timeout`.
    pub async fn read_file(&self, path: &str, timeout: Duration) -> Result<String, WorkerError> {
        if path.is_empty() || path.contains('\0') {
            return Err(WorkerError::Rejected(error_message(
                self.addr(),
                Doing::Reading(path),
                "the path is empty or contains NUL",
            )));
        }
        self.0.read_file(path, timeout).await
    }

    /// Writes a text file (parents created), within `timeout`.
    pub async fn write_file(
        &self,
        path: &str,
        content: &str,
        timeout: Duration,
    ) -> Result<(), WorkerError> {
        if path.is_empty() || path.contains('\0') {
            return Err(WorkerError::Rejected(error_message(
                self.addr(),
                Doing::Writing(path),
                "the path is empty or contains NUL",
            )));
        }
        self.0.write_file(path, content, timeout).await
    }
}

/// Handles for `addrs`; all rocklets share one HTTP connection pool.
pub fn connect(addrs: &[WorkerAddr], limits: Limits) -> Vec<Worker> {
    connect_with(addrs, limits, &rocklet::Rocklet::http_client())
}

/// Like [`connect`], with the rocklets sharing `client`'s connection pool.
pub fn connect_with(addrs: &[WorkerAddr], limits: Limits, client: &reqwest::Client) -> Vec<Worker> {
    addrs
        .iter()
        .map(|a| match a {
            WorkerAddr::Local => Worker::new(local::LocalWorker::new(limits)),
            remote => Worker::new(
                rocklet::Rocklet::new(remote.clone())
                    .with_client(client.clone())
                    .with_limits(limits),
            ),
        })
        .collect()
}

/// Validates a command before it reaches any worker; `Some` is the rejection.
fn check_command(addr: &WorkerAddr, cmd: &Command) -> Option<WorkerError> {
    let doing = Doing::Running(&cmd.program);
    let reject = |why: String| Some(WorkerError::Rejected(error_message(addr, doing, why)));
    let has_nul = |s: &str| s.contains('\0');
    match &cmd.program {
        Program::Argv(argv) if argv.is_empty() => return reject("argv is empty".into()),
        Program::Argv(argv) if argv[0].is_empty() => return reject("argv[0] is empty".into()),
        Program::Argv(argv) if argv.iter().any(|a| has_nul(a)) => {
            return reject("an argument contains a NUL byte".into());
        }
        Program::Shell(s) if s.trim().is_empty() => return reject("shell script is empty".into()),
        Program::Shell(s) if has_nul(s) => {
            return reject("shell script contains a NUL byte".into());
        }
        _ => {}
    }
    for (k, v) in &cmd.env {
        if k.is_empty() || k.contains('=') || has_nul(k) || has_nul(v) {
            return reject(format!("environment variable name {k:?} is invalid"));
        }
    }
    if cmd
        .cwd
        .as_deref()
        .is_some_and(|c| c.is_empty() || has_nul(c))
    {
        return reject("cwd is empty or contains NUL".into());
    }
    if cmd.timeout.is_zero() {
        return Some(WorkerError::Timeout(error_message(
            addr,
            doing,
            "no time left in the run",
        )));
    }
    None
}

/// Cuts `s` to at most `max` bytes on a char boundary, appending a marker when it did.
pub(crate) fn truncate_output(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!("\n...[quarry: {dropped} more bytes truncated]"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_give_the_reason_first_and_clip_the_context() {
        let script = format!(
            "find /var/log -name '*.gz' {}-delete",
            "-o -name x ".repeat(100)
        );
        let program = Program::Shell(script);
        let addr = WorkerAddr::Remote {
            host: "10.0.0.1".into(),
            port: 22555,
        };
        let reason = "exit status 2: find: '/var/log': Permission denied";
        let m = error_message(&addr, Doing::Running(&program), reason);
        assert!(
            m.starts_with(&format!(
                "{reason} — while running `sh -c \"find /var/log -name '*.gz' -o"
            )),
            "{m}"
        );
        assert!(m.ends_with("…` on worker 10.0.0.1:22555"), "{m}");
        let bound = reason.chars().count() + CONTEXT_MAX_CHARS + 50;
        assert!(
            m.chars().count() <= bound,
            "{} chars: {m}",
            m.chars().count()
        );
        let path = format!("/data/{}/status.json", "deep/".repeat(50));
        let m = error_message(&WorkerAddr::Local, Doing::Writing(&path), "disk full");
        assert!(
            m.starts_with("disk full — while writing \"/data/deep/"),
            "{m}"
        );
        assert!(m.ends_with("… on worker local"), "{m}");
        assert!(
            m.chars().count() <= "disk full".len() + CONTEXT_MAX_CHARS + 50,
            "{m}"
        );
    }

    #[tokio::test]
    async fn a_long_script_fails_with_its_reason_first() {
        let worker = Worker::new(local::LocalWorker::new(Limits::default()));
        let cmd = Command {
            program: Program::Shell(format!("echo {}", "word ".repeat(500))),
            cwd: Some("/nonexistent-quarry-dir".into()),
            env: vec![],
            timeout: Duration::from_secs(5),
        };
        let e = worker.execute(&cmd).await.unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("cwd \"/nonexistent-quarry-dir\" not found — while running `sh -c"),
            "{m}"
        );
        assert!(m.chars().count() < 200, "{} chars: {m}", m.chars().count());
    }

    #[test]
    fn parses_addresses() {
        let r = |h: &str, p| WorkerAddr::Remote {
            host: h.into(),
            port: p,
        };
        assert_eq!(WorkerAddr::parse("local", 22555), Ok(WorkerAddr::Local));
        assert_eq!(
            WorkerAddr::parse("10.0.0.1", 22555),
            Ok(r("10.0.0.1", 22555))
        );
        assert_eq!(
            WorkerAddr::parse("10.0.0.1:8000", 22555),
            Ok(r("10.0.0.1", 8000))
        );
        assert_eq!(WorkerAddr::parse("::1", 22555), Ok(r("::1", 22555)));
        assert_eq!(WorkerAddr::parse("[::1]:9", 22555), Ok(r("::1", 9)));
        assert_eq!(WorkerAddr::parse("[fe80::1]", 7), Ok(r("fe80::1", 7)));
        assert_eq!(r("::1", 9).to_string(), "[::1]:9");
        assert!(
            WorkerAddr::parse("h:0", 1)
                .unwrap_err()
                .contains("invalid port")
        );
        assert!(
            WorkerAddr::parse("h:x", 1)
                .unwrap_err()
                .contains("invalid port")
        );
        assert!(WorkerAddr::parse("", 1).unwrap_err().contains("empty"));
        assert!(WorkerAddr::parse("http://h", 1).is_err());
    }

    #[test]
    fn truncates_on_char_boundary() {
        let s = truncate_output("ééé".to_string(), 3);
        assert!(
            s.starts_with('é') && s.contains("4 more bytes truncated"),
            "{s}"
        );
        assert_eq!(truncate_output("abc".into(), 3), "abc");
    }
}
