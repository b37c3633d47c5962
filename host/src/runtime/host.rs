//! The host side of `quarry:task/host`: each call is forwarded to the run's worker.
//!
//! Trap vs answer: a worker failure is an answer (`Ok(Err(error))`) the guest can match on;
//! only host bugs would trap (there are none to raise here). Every call is bounded by the
//! smallest of: the guest's own timeout, the host's per-call limit, and the time left in the
//! run.
//!
//! With [`crate::metrics::Metrics`] on the runtime, every `execute`, `read-file`,
//! `write-file` and `log` call is counted with the error kind its answer carries and the
//! time it took (refused calls during `describe`/`validate-config` included).
//!
//! Before a call reaches the worker it is checked against the run's
//! [`crate::grants::RunPolicy`] (grants, protected paths, dry run); a refusal is a `rejected`
//! answer naming the grant, logged and counted (`quarry_grant_rejections_total`).

use std::time::{Duration, Instant};

use super::bindings::host::{self as wit, Host};
use super::convert;
use super::{CallContext, RunState};
use crate::error::ErrorType;
use crate::grants::GrantCall;
use crate::metrics::HostCall;
use crate::workers::{Worker, WorkerError};

/// Extra time given to the worker client beyond a command's own limit, so that the worker's
/// timeout answer (with the killed process group) arrives before ours fires.
const CALL_GRACE: Duration = Duration::from_secs(3);

/// Time left to the guest, after a host call that ran until the run's deadline, to handle
/// the timeout answer (so it sees a typed timeout instead of being interrupted blind).
const ANSWER_RESERVE: Duration = Duration::from_millis(300);

/// Longest log message kept from a guest; longer ones are cut.
const LOG_MESSAGE_MAX_BYTES: usize = 4096;

/// Log messages kept per run; later ones are dropped (one warning says so).
const LOG_LINES_PER_RUN: u32 = 1000;

impl RunState {
    /// The worker of this run, or the answer a metadata call gets.
    fn target(&self, call: &str) -> Result<(&str, &Worker), WorkerError> {
        match &self.ctx {
            CallContext::Run { task, worker, .. } => Ok((task, worker)),
            CallContext::Metadata => Err(WorkerError::Rejected(format!(
                "{call} is not available in describe or validate-config: they must not touch a worker"
            ))),
        }
    }

    /// The time limit for one call: the host's cap, shortened to the time left in the run
    /// and to what the guest asked for.
    fn call_limit(&self, asked: Option<Duration>) -> Duration {
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(ANSWER_RESERVE);
        let mut limit = self.call_timeout.min(left);
        if let Some(asked) = asked {
            limit = limit.min(asked);
        }
        limit
    }

    /// Counts a host call of `kind` that started at `started` and was answered with `error`.
    fn count(&self, kind: HostCall, started: Instant, error: Option<ErrorType>) {
        if let Some(metrics) = &self.metrics {
            metrics.record_host_call(kind, error, started.elapsed());
        }
    }

    /// Checks a call against the run's policy: `Err` is the `rejected` answer, counted as a
    /// grant rejection (and, by the caller, as a host call).
    fn allowed(
        &self,
        task: &str,
        call: GrantCall,
        check: impl FnOnce(&crate::grants::RunPolicy) -> Result<(), String>,
    ) -> Result<(), WorkerError> {
        check(&self.policy).map_err(|why| {
            tracing::warn!(task, call = call.as_str(), "{why}");
            if let Some(metrics) = &self.metrics {
                metrics.record_grant_rejection(task, call);
            }
            WorkerError::Rejected(why)
        })
    }

    /// Counts a host call and turns the worker's answer into the guest's.
    fn answer<T>(
        &self,
        kind: HostCall,
        started: Instant,
        result: Result<T, WorkerError>,
    ) -> Result<T, wit::Error> {
        self.count(kind, started, result.as_ref().err().map(WorkerError::kind));
        result.map_err(convert::error)
    }

    /// Emits one guest log line (cut to [`LOG_MESSAGE_MAX_BYTES`]) under the task's name,
    /// unless the run already logged [`LOG_LINES_PER_RUN`] lines.
    fn log_line(&mut self, level: wit::LogLevel, message: String) {
        if self.quiet {
            return;
        }
        self.log_lines += 1;
        let (task, worker) = match &self.ctx {
            CallContext::Run { task, worker, .. } => (task.as_str(), worker.addr().to_string()),
            CallContext::Metadata => ("(loading)", "-".to_string()),
        };
        if self.log_lines > LOG_LINES_PER_RUN {
            if self.log_lines == LOG_LINES_PER_RUN + 1 {
                tracing::warn!(task, %worker, "task logged more than {LOG_LINES_PER_RUN} lines; dropping the rest of this run's log");
            }
            return;
        }
        let mut message = message;
        if message.len() > LOG_MESSAGE_MAX_BYTES {
            let mut cut = LOG_MESSAGE_MAX_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("…[truncated]");
        }
        match level {
            wit::LogLevel::Trace => {
                tracing::trace!(target: "quarry::task", task, %worker, "{message}")
            }
            wit::LogLevel::Debug => {
                tracing::debug!(target: "quarry::task", task, %worker, "{message}")
            }
            wit::LogLevel::Info => {
                tracing::info!(target: "quarry::task", task, %worker, "{message}")
            }
            wit::LogLevel::Warn => {
                tracing::warn!(target: "quarry::task", task, %worker, "{message}")
            }
            wit::LogLevel::Error => {
                tracing::error!(target: "quarry::task", task, %worker, "{message}")
            }
        }
    }
}

/// Runs a worker call under `limit + CALL_GRACE`, naming the call when our own timer fires.
async fn bounded<T>(
    worker: &Worker,
    call: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, WorkerError>>,
) -> Result<T, WorkerError> {
    match tokio::time::timeout(limit + CALL_GRACE, fut).await {
        Ok(result) => result,
        Err(_) => Err(WorkerError::Timeout(format!(
            "worker {}: {call} did not answer within {:.1}s",
            worker.addr(),
            limit.as_secs_f64()
        ))),
    }
}

impl Host for RunState {
    async fn execute(
        &mut self,
        cmd: wit::Command,
    ) -> wasmtime::Result<Result<wit::Output, wit::Error>> {
        let started = Instant::now();
        let asked = cmd.timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        let limit = self.call_limit(asked);
        let (task, _) = match self.target("execute") {
            Ok(w) => w,
            Err(e) => return Ok(self.answer(HostCall::Execute, started, Err(e))),
        };
        let command = convert::command(cmd, limit);
        let checked = self.allowed(task, GrantCall::Execute, |p| {
            p.check_execute(task, &command.program, command.cwd.as_deref())
        });
        if let Err(e) = checked {
            return Ok(self.answer(HostCall::Execute, started, Err(e)));
        }
        let (task, worker) = self.target("execute").expect("checked above");
        tracing::debug!(
            task,
            worker = %worker.addr(),
            program = %convert::program_summary(&command.program),
            "quarry.host.execute"
        );
        let result = bounded(worker, "execute", limit, worker.execute(&command)).await;
        Ok(self.answer(HostCall::Execute, started, result.map(convert::output)))
    }

    async fn read_file(&mut self, path: String) -> wasmtime::Result<Result<String, wit::Error>> {
        let started = Instant::now();
        let limit = self.call_limit(None);
        let (task, worker) = match self.target("read-file") {
            Ok(w) => w,
            Err(e) => return Ok(self.answer(HostCall::ReadFile, started, Err(e))),
        };
        if let Err(e) = self.allowed(task, GrantCall::ReadFile, |p| p.check_read(task, &path)) {
            return Ok(self.answer(HostCall::ReadFile, started, Err(e)));
        }
        let result = bounded(worker, "read-file", limit, worker.read_file(&path, limit)).await;
        Ok(self.answer(HostCall::ReadFile, started, result))
    }

    async fn write_file(
        &mut self,
        path: String,
        content: String,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        let started = Instant::now();
        let limit = self.call_limit(None);
        let (task, worker) = match self.target("write-file") {
            Ok(w) => w,
            Err(e) => return Ok(self.answer(HostCall::WriteFile, started, Err(e))),
        };
        if let Err(e) = self.allowed(task, GrantCall::WriteFile, |p| p.check_write(task, &path)) {
            return Ok(self.answer(HostCall::WriteFile, started, Err(e)));
        }
        let fut = worker.write_file(&path, &content, limit);
        let result = bounded(worker, "write-file", limit, fut).await;
        Ok(self.answer(HostCall::WriteFile, started, result))
    }

    async fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.log_line(level, message);
        self.count(HostCall::Log, started, None);
        Ok(())
    }

    async fn worker(&mut self) -> wasmtime::Result<wit::WorkerInfo> {
        Ok(match &self.ctx {
            CallContext::Run { worker, .. } => wit::WorkerInfo {
                address: worker.addr().to_string(),
                ip: worker.addr().ip().to_string(),
            },
            CallContext::Metadata => wit::WorkerInfo {
                address: String::new(),
                ip: String::new(),
            },
        })
    }

    async fn dry_run(&mut self) -> wasmtime::Result<bool> {
        Ok(self.policy.dry_run)
    }

    async fn previous_pid(&mut self) -> wasmtime::Result<Option<u32>> {
        Ok(match &self.ctx {
            CallContext::Run { previous_pid, .. } => *previous_pid,
            CallContext::Metadata => None,
        })
    }
}
