//! Calls from a task to the worker its run targets.
//!
//! Every function here is a call into the Quarry host, which forwards it to the worker. Errors
//! are typed ([`Error`]): match on the kind, show the message.

use std::time::Duration;

use crate::bindings::quarry::task::host as wit;

pub use wit::{Error, LogLevel, Output, WorkerInfo};

/// Helpers on the host's error type.
pub trait ErrorExt {
    /// The kind as a short word: `not-found`, `timeout`, `unreachable`, `rejected`, `other`.
    fn kind(&self) -> &'static str;
    /// The message, which names the worker and the object.
    fn message(&self) -> &str;
    /// `kind: message` for a report, the kind in words: `not found`, `timeout`,
    /// `unreachable`, `rejected`, `error`.
    fn describe(&self) -> String;
}

impl ErrorExt for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not-found",
            Error::Timeout(_) => "timeout",
            Error::Unreachable(_) => "unreachable",
            Error::Rejected(_) => "rejected",
            Error::Other(_) => "other",
        }
    }

    fn message(&self) -> &str {
        match self {
            Error::NotFound(m)
            | Error::Timeout(m)
            | Error::Unreachable(m)
            | Error::Rejected(m)
            | Error::Other(m) => m,
        }
    }

    fn describe(&self) -> String {
        let kind = match self {
            Error::NotFound(_) => "not found",
            Error::Timeout(_) => "timeout",
            Error::Unreachable(_) => "unreachable",
            Error::Rejected(_) => "rejected",
            Error::Other(_) => "error",
        };
        format!("{kind}: {}", self.message())
    }
}

/// A command to run on the worker; build it, then call [`Command::run`].
#[derive(Debug, Clone)]
pub struct Command {
    program: wit::Program,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    timeout: Option<Duration>,
}

impl Command {
    /// Runs a program with arguments, without a shell. `argv[0]` is looked up on the
    /// worker's PATH. No value is interpreted: this is the safe way to pass params.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(wit::Program::Argv(
            argv.into_iter().map(Into::into).collect(),
        ))
    }

    /// Runs a POSIX shell script with `/bin/sh -c`. Quote every value spliced into the script
    /// with [`crate::shell::quote`].
    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(wit::Program::Shell(script.into()))
    }

    fn new(program: wit::Program) -> Self {
        Command {
            program,
            cwd: None,
            env: Vec::new(),
            timeout: None,
        }
    }

    /// Sets the working directory on the worker.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Adds an environment variable; the worker's own environment is kept (merge).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets a time limit; the host caps it at its own per-call limit and the run's deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The argument vector, when the command runs a program without a shell.
    pub fn get_argv(&self) -> Option<&[String]> {
        match &self.program {
            wit::Program::Argv(argv) => Some(argv),
            wit::Program::Shell(_) => None,
        }
    }

    /// The script, when the command runs `/bin/sh -c`.
    pub fn get_script(&self) -> Option<&str> {
        match &self.program {
            wit::Program::Argv(_) => None,
            wit::Program::Shell(script) => Some(script),
        }
    }

    /// The working directory on the worker, if set.
    pub fn get_cwd(&self) -> Option<&str> {
        self.cwd.as_deref()
    }

    /// The environment variables added to the worker's, in the order they were given.
    pub fn get_env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The time limit, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Runs the command and waits for it. A non-zero exit is `Ok` with that `exit_code`.
    pub fn run(&self) -> Result<Output, Error> {
        let ms = self
            .timeout
            .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX));
        execute(&wit::Command {
            program: self.program.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            timeout_ms: ms,
        })
    }
}

/// Runs a command on the worker (see [`Command`] for a builder).
pub fn execute(cmd: &wit::Command) -> Result<Output, Error> {
    wit::execute(cmd)
}

/// Reads a UTF-8 text file on the worker.
pub fn read_file(path: &str) -> Result<String, Error> {
    wit::read_file(path)
}

/// Writes a text file on the worker, creating parent directories.
pub fn write_file(path: &str, content: &str) -> Result<(), Error> {
    wit::write_file(path, content)
}

/// Logs a message through the host, tagged with the task and worker.
pub fn log(level: LogLevel, message: &str) {
    wit::log(level, message)
}

/// Logs at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message)
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message)
}

/// The worker this run targets.
pub fn worker() -> WorkerInfo {
    wit::worker()
}

/// The process this task's previous run on this worker reported (`Outcome::pid`), if the
/// host has just checked that it is that very process (same start time) and alive.
pub fn previous_pid() -> Option<u32> {
    wit::previous_pid()
}

/// Whether this run must change nothing on the worker (a dry run): report what would be done
/// instead. See [`crate::worker::Worker::dry_run`].
pub fn dry_run() -> bool {
    wit::dry_run()
}
