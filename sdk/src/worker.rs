//! The worker a run targets, behind a trait, so that a task's logic can be tested natively.
//!
//! Write the task's logic against [`Worker`] instead of calling [`crate::host`] directly:
//! [`HostWorker`] is the real worker of the current run (every method is a host call), and
//! `fake::FakeWorker` (cargo feature `fake`, for native tests) answers from a script, records
//! every call and keeps files, logs and a clock in memory.
//!
//! ```
//! use std::time::Duration;
//!
//! use quarry_sdk::host::LogLevel;
//! use quarry_sdk::worker::{HostWorker, Worker};
//! use quarry_sdk::{Metadata, Outcome, Task};
//!
//! /// The task's logic: reaches the worker only through `worker`.
//! fn uptime(worker: &mut impl Worker) -> Outcome {
//!     match worker.execute_argv(["uptime"], Duration::from_secs(5)) {
//!         Ok(out) if out.exit_code == 0 => {
//!             worker.log(LogLevel::Info, out.stdout.trim());
//!             Outcome::success(serde_json::json!({ "uptime": out.stdout.trim() }))
//!         }
//!         Ok(out) => Outcome::failed(format!("uptime exited with {}", out.exit_code)),
//!         Err(e) => Outcome::failed(format!("uptime did not run: {e:?}")),
//!     }
//! }
//!
//! struct Uptime;
//!
//! impl Task for Uptime {
//!     type Params = serde_json::Value;
//!     type Config = ();
//!
//!     fn describe() -> Metadata {
//!         Metadata::new("uptime", "0.1.0")
//!     }
//!
//!     fn check(_params: serde_json::Value) -> Result<(), String> {
//!         Ok(())
//!     }
//!
//!     fn run(_config: ()) -> Result<Outcome, String> {
//!         Ok(uptime(&mut HostWorker::new()))
//!     }
//! }
//! ```

use std::time::{Duration, Instant};

use crate::host::{self, Command, Error, LogLevel, Output};

#[cfg(any(test, feature = "fake"))]
pub mod fake;

/// How a task reaches the worker of its run: [`HostWorker`] in the component, a fake in native
/// tests (`fake::FakeWorker`, cargo feature `fake`).
///
/// Errors are the host's: match on the kind ([`Error::NotFound`], [`Error::Timeout`],
/// [`Error::Unreachable`], …), show the message ([`crate::host::ErrorExt::describe`]).
pub trait Worker {
    /// Runs `command` on the worker and waits for it. A non-zero exit is `Ok` with that
    /// `exit_code`; a program the worker cannot find is [`Error::NotFound`].
    fn execute(&mut self, command: &Command) -> Result<Output, Error>;

    /// Reads a UTF-8 text file on the worker.
    fn read_file(&mut self, path: &str) -> Result<String, Error>;

    /// Writes a text file on the worker, creating parent directories.
    fn write_file(&mut self, path: &str, content: &str) -> Result<(), Error>;

    /// Logs one line through the host, tagged with the task and worker.
    fn log(&mut self, level: LogLevel, message: &str);

    /// Time since this worker was made, which is the start of the run: a monotonic clock for
    /// time budgets.
    fn elapsed(&self) -> Duration;

    /// Waits about `pause` before the task goes on, e.g. between two polls ([`HostWorker`]
    /// waits whole seconds, at least one).
    fn pause(&mut self, pause: Duration);

    /// The process this task's previous run on this worker reported (`Outcome::pid`), if the
    /// host has just checked that it is that very process and alive (see
    /// [`host::previous_pid`]).
    fn previous_pid(&mut self) -> Option<u32>;

    /// Whether this run must change nothing on the worker (`quarry run --dry-run`, or the
    /// task's `dry_run: true` in the config): the task then reports what it would do. The host
    /// runs a task in a dry run only when its [`crate::Grants`] say
    /// [`dry_run(true)`](crate::Grants::dry_run), and refuses every write-file during one.
    fn dry_run(&self) -> bool {
        false
    }

    /// Runs an argument vector (no shell: no value is interpreted) with a time limit; a
    /// non-zero exit is `Ok`. Short for [`Worker::execute`] of [`Command::argv`] with
    /// [`Command::timeout`].
    fn execute_argv<I, S>(&mut self, argv: I, timeout: Duration) -> Result<Output, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
        Self: Sized,
    {
        self.execute(&Command::argv(argv).timeout(timeout))
    }
}

/// The worker of the current run, through the host: every method is a host call, except
/// [`Worker::elapsed`], which reads the component's monotonic clock.
///
/// Only a running component has a host: natively (unit tests, doctests) the host calls panic,
/// so native tests use `fake::FakeWorker` instead.
#[derive(Debug, Clone)]
pub struct HostWorker {
    started: Instant,
}

impl HostWorker {
    /// The worker of the current run; its clock ([`Worker::elapsed`]) starts now.
    pub fn new() -> Self {
        HostWorker {
            started: Instant::now(),
        }
    }
}

impl Default for HostWorker {
    fn default() -> Self {
        Self::new()
    }
}

impl Worker for HostWorker {
    fn execute(&mut self, command: &Command) -> Result<Output, Error> {
        command.run()
    }

    fn read_file(&mut self, path: &str) -> Result<String, Error> {
        host::read_file(path)
    }

    fn write_file(&mut self, path: &str, content: &str) -> Result<(), Error> {
        host::write_file(path, content)
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        host::log(level, message)
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Runs `sleep <seconds>` on the worker, so that the wait is a host call bounded by the
    /// run's deadline; sleeps in the component only if that fails.
    fn pause(&mut self, pause: Duration) {
        let secs = pause.as_secs().max(1).to_string();
        let slept = Command::argv(["sleep", secs.as_str()])
            .timeout(pause + Duration::from_secs(5))
            .run();
        if !matches!(slept, Ok(ref o) if o.exit_code == 0) {
            std::thread::sleep(pause);
        }
    }

    fn previous_pid(&mut self) -> Option<u32> {
        host::previous_pid()
    }

    fn dry_run(&self) -> bool {
        host::dry_run()
    }
}
