//! Running a task: on one worker (status file pending → task → status file final) and on all
//! workers of a tick (bounded fan-out, then the run report).
//!
//! - [`gate`]: the process an earlier run reported, alive or not, and the memory of it;
//! - [`settle`]: what a result means for the status file, the report row and that memory
//!   (pure, table-tested);
//! - [`uninstall()`]: taking a task off the workers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ErrorType;
use crate::grants::TaskPolicy;
use crate::report::{StatusFile, WorkerOutcome, WorkerResult, truncate_error};
use crate::runtime::{Plugin, Runtime};
use crate::workers::{Worker, WorkerError};

pub mod gate;
pub mod quarantine;
pub mod settle;
mod tick;
mod uninstall;

pub use gate::Tracked;
pub use settle::Settled;
pub use tick::{RunNote, TickControl, TickRun, run_tick, run_tick_with};
pub use uninstall::{uninstall, uninstall_on_worker};

/// Time reserved for each status-file write, taken from the run's budget.
pub(crate) const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a tick needs besides the task: where files go and how long things may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSettings {
    /// Status directory on the workers.
    pub status_dir: String,
    /// Budget of one (task, worker) run, status writes included.
    pub run_timeout: Duration,
    /// Workers in flight at once.
    pub concurrency: usize,
    /// Where reports go on this host; `None` = do not write them.
    pub report_dir: Option<PathBuf>,
}

/// One task of a tick: the plugin version to run (kept alive by this `Arc` until the tick
/// ends), its params, and what earlier ticks recorded on each worker.
#[derive(Clone, Debug)]
pub struct TaskRun {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Params, a JSON object.
    pub params: String,
    /// What Quarry recorded on each worker in earlier runs of this task; shared by the ticks
    /// of one scheduled task so the gate does not re-read status files it wrote itself.
    pub tracked: Arc<Tracked>,
    /// The config's grants narrowing, dry run and protected paths for this task.
    pub policy: Arc<TaskPolicy>,
}

impl TaskRun {
    /// A run of `plugin` with `params` that knows nothing of earlier runs (it reads the
    /// status files on the workers when it needs to), under the default policy (the plugin's
    /// own grants, the default protected paths, not a dry run).
    pub fn new(plugin: Arc<Plugin>, params: String) -> TaskRun {
        TaskRun {
            plugin,
            params,
            tracked: Arc::default(),
            policy: Arc::default(),
        }
    }

    /// The same run under `policy`.
    pub fn with_policy(mut self, policy: TaskPolicy) -> TaskRun {
        self.policy = Arc::new(policy);
        self
    }

    fn name(&self) -> &str {
        self.plugin.meta().name.as_str()
    }
}

/// The worker's result plus the task's detail object (for `quarry run`'s summary).
#[derive(Clone, Debug)]
pub struct WorkerRun {
    /// The report entry.
    pub result: WorkerResult,
    /// The status file's `extra`, when the task answered.
    pub detail: Option<serde_json::Map<String, serde_json::Value>>,
    /// The pid the run reported (a job or daemon it left running, or the one handed back).
    pub pid: Option<u32>,
}

/// Runs `task` on `worker`, writing the status file before and after.
///
/// Strategy: ROCK's sequence (gate → pending write → task → final write) under one budget;
/// the task gets what is left after reserving time for the final write, so the final status
/// lands before the report, even when the task hits its deadline. What the result means is
/// decided by the pure [`settle::settle`].
pub async fn run_on_worker(
    rt: &Runtime,
    task: &TaskRun,
    worker: &Worker,
    settings: &RunSettings,
) -> WorkerRun {
    let started = Instant::now();
    let name = task.name();
    let at = RunPlace::new(name, worker, settings);
    // The grants of this plugin version for these params (asked once, then remembered by the
    // plugin), narrowed by the config; a dry run only for a task that supports it.
    let policy = match rt.requires(&task.plugin, &task.params).await {
        Ok(Ok(declared)) => task.policy.for_run(name, &declared),
        Ok(Err(msg)) => Err(format!("plugin {name} refused its params: {msg}")),
        Err(e) => Err(format!(
            "plugin {name} failed while declaring its grants: {e}"
        )),
    };
    let policy = match policy {
        Ok(p) => Arc::new(p),
        Err(why) => return at.refused(why),
    };
    let dry_run = policy.dry_run;
    // The gate: a `running` process of an earlier run (a background job or a daemon) means
    // this run is skipped, so two copies never overlap; any other live one is handed to the
    // task (`previous-pid`) to manage.
    let gate = gate::previous_process(worker, &task.tracked, &at.status_path, at.write_timeout);
    let previous = match gate.await {
        Ok(p) => p,
        Err(e) => {
            let why = "checking the process of the previous run";
            return at.failed(WorkerOutcome::of_call_error(&e), &e, why);
        }
    };
    if let Some(prev) = previous.filter(|p| p.running) {
        return at.skipped(prev.pid, task.plugin.meta().idempotent);
    }
    let pending = StatusFile::pending(name, &at.ip).handing(settle::before_run(previous));
    // A dry run changes nothing on the worker, Quarry's own status file included.
    let written = match dry_run {
        true => Ok(()),
        false => at.write_status(worker, &pending).await,
    };
    if let Err(e) = written {
        task.tracked.forget(worker);
        return at.failed(
            WorkerOutcome::of_call_error(&e),
            &e,
            "writing the pending status",
        );
    }
    let budget = (settings.run_timeout)
        .saturating_sub(started.elapsed())
        .saturating_sub(at.write_timeout);
    let previous_pid = previous.map(|p| p.pid);
    let (plugin, params) = (&task.plugin, &task.params);
    let w = worker.clone();
    let result = (rt.run_with(plugin, name, w, params, budget, previous_pid, policy)).await;
    let new_start_time = match settle::new_process(&result, previous) {
        Some(pid) => gate::start_time(worker, pid, at.write_timeout).await,
        None => None,
    };
    let settled = settle::settle(pending, result, previous, new_start_time);
    if dry_run {
        return settled.run;
    }
    at.finish(worker, &task.tracked, settled).await
}

/// Where one run happens: the task, the worker and its status file, and the time each status
/// write may take.
struct RunPlace<'a> {
    name: &'a str,
    ip: String,
    status_path: String,
    write_timeout: Duration,
}

impl<'a> RunPlace<'a> {
    fn new(name: &'a str, worker: &Worker, settings: &RunSettings) -> RunPlace<'a> {
        RunPlace {
            name,
            ip: worker.addr().ip().to_string(),
            status_path: StatusFile::path(&settings.status_dir, name),
            write_timeout: STATUS_WRITE_TIMEOUT.min(settings.run_timeout / 4),
        }
    }

    async fn write_status(&self, worker: &Worker, status: &StatusFile) -> Result<(), WorkerError> {
        worker
            .write_file(&self.status_path, &status.to_json(), self.write_timeout)
            .await
    }

    /// The run ends before the task ran: a worker call of Quarry's own failed.
    fn failed(&self, outcome: WorkerOutcome, e: &WorkerError, doing: &str) -> WorkerRun {
        WorkerRun {
            result: WorkerResult {
                worker_ip: self.ip.clone(),
                outcome,
                error_type: Some(e.kind()),
                error: Some(truncate_error(&format!("{doing}: {e}"))),
            },
            detail: None,
            pid: None,
        }
    }

    /// The run may not happen under the config's policy (a dry run of a task that does not
    /// support one, grants that could not be asked): nothing ran on the worker.
    fn refused(&self, why: String) -> WorkerRun {
        WorkerRun {
            result: WorkerResult {
                worker_ip: self.ip.clone(),
                outcome: WorkerOutcome::Failed,
                error_type: Some(ErrorType::Rejected),
                error: Some(truncate_error(&why)),
            },
            detail: None,
            pid: None,
        }
    }

    /// The gate found the previous run's process still running.
    fn skipped(&self, pid: u32, idempotent: bool) -> WorkerRun {
        let reason = if idempotent {
            format!("the previous run's job (pid {pid}) is still running")
        } else {
            format!("its daemon (pid {pid}) is still running")
        };
        WorkerRun {
            result: WorkerResult {
                worker_ip: self.ip.clone(),
                outcome: WorkerOutcome::Skipped,
                error_type: None,
                error: None,
            },
            detail: Some(serde_json::Map::from_iter([
                ("status".to_string(), "skipped".into()),
                ("reason".to_string(), reason.into()),
            ])),
            pid: Some(pid),
        }
    }

    /// Writes the final status and updates the gate's memory. A failed write leaves the task's
    /// own outcome standing, but a run that otherwise succeeded fails (its status is stale),
    /// and the next run reads the file again rather than trusting memory.
    async fn finish(&self, worker: &Worker, tracked: &Tracked, settled: Settled) -> WorkerRun {
        let mut run = settled.run;
        match self.write_status(worker, &settled.status).await {
            Ok(()) => tracked.set(worker, settled.recorded),
            Err(e) => {
                tracked.forget(worker);
                tracing::warn!(task = self.name, worker = %worker.addr(), "writing the final status failed: {e}");
                if run.result.error.is_none() {
                    run.result.outcome = WorkerOutcome::of_call_error(&e);
                    run.result.error_type = Some(e.kind());
                    run.result.error = Some(truncate_error(&format!(
                        "the task finished but writing its final status failed: {e}"
                    )));
                }
            }
        }
        run
    }
}
