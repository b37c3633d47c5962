//! Running a task: on one worker (status file pending → task → status file final) and on all
//! workers of a tick (bounded fan-out, then the run report).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tracing::Instrument as _;

use crate::report::{
    RunReport, StatusFile, StatusWord, WorkerOutcome, WorkerResult, timestamp_now, truncate_error,
};
use crate::runtime::{Plugin, Runtime};
use crate::task::RunStatus;
use crate::workers::Worker;

/// Time reserved for each status-file write, taken from the run's budget.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a tick needs besides the task: where files go and how long things may take.
#[derive(Clone, Debug)]
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
}

impl TaskRun {
    /// A run of `plugin` with `params` that knows nothing of earlier runs (it reads the
    /// status files on the workers when it needs to).
    pub fn new(plugin: Arc<Plugin>, params: String) -> TaskRun {
        TaskRun {
            plugin,
            params,
            tracked: Arc::default(),
        }
    }

    fn name(&self) -> &str {
        self.plugin.meta().name.as_str()
    }
}

/// What the last run of a task recorded on one worker: the status word and the process it
/// reported (with its start time, which tells a reused pid apart).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Recorded {
    running: bool,
    pid: Option<u32>,
    start_time: Option<u64>,
}

/// Per-worker memory of what this task's runs recorded, keyed by worker address.
///
/// Strategy: Quarry writes the status files, so after the first run on a worker it knows
/// what the file says without reading it; a worker it has not seen yet (first tick, a
/// restart, a new worker) is read from its status file. This keeps the gate at zero calls for
/// tasks that report no process and at one call (`/proc/<pid>/stat`) for those that do.
#[derive(Debug, Default)]
pub struct Tracked {
    by_worker: std::sync::Mutex<std::collections::HashMap<crate::workers::WorkerAddr, Recorded>>,
}

impl Tracked {
    fn get(&self, worker: &Worker) -> Option<Recorded> {
        let map = self.by_worker.lock().unwrap_or_else(|e| e.into_inner());
        map.get(worker.addr()).copied()
    }

    fn set(&self, worker: &Worker, rec: Recorded) {
        let mut map = self.by_worker.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(worker.addr().clone(), rec);
    }

    fn forget(&self, worker: &Worker) {
        let mut map = self.by_worker.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(worker.addr());
    }
}

/// The worker's result plus the task's detail object (for `quarry run`'s summary).
#[derive(Clone, Debug)]
pub struct WorkerRun {
    /// The report entry.
    pub result: WorkerResult,
    /// The status file's `extra`, when the task answered.
    pub detail: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Runs `task` on `worker`, writing the status file before and after.
///
/// Strategy: ROCK's sequence (pending write → action → final write) under one budget; the
/// task gets what is left after reserving time for the final write, so the final status
/// lands before the report, even when the task hits its deadline.
pub async fn run_on_worker(
    rt: &Runtime,
    task: &TaskRun,
    worker: &Worker,
    settings: &RunSettings,
) -> WorkerRun {
    let started = Instant::now();
    let name = task.name();
    let ip = worker.addr().ip().to_string();
    let status_path = StatusFile::path(&settings.status_dir, name);
    let mut status = StatusFile {
        task_name: name.to_string(),
        worker_ip: ip.clone(),
        pid: None,
        status: StatusWord::Pending,
        last_run: timestamp_now(),
        error: None,
        extra: serde_json::Map::new(),
    };
    let write_timeout = STATUS_WRITE_TIMEOUT.min(settings.run_timeout / 4);
    let skipped = |pid: u32| WorkerRun {
        result: WorkerResult {
            worker_ip: ip.clone(),
            outcome: WorkerOutcome::Skipped,
            error_type: None,
            error: None,
        },
        detail: Some(serde_json::Map::from_iter([
            ("status".to_string(), "skipped".into()),
            (
                "reason".to_string(),
                if task.plugin.meta().idempotent {
                    format!("the previous run's job (pid {pid}) is still running")
                } else {
                    format!("its daemon (pid {pid}) is still running")
                }
                .into(),
            ),
        ])),
    };
    let failed = |outcome, kind: &str, error: String| WorkerRun {
        result: WorkerResult {
            worker_ip: ip.clone(),
            outcome,
            error_type: Some(kind.to_string()),
            error: Some(truncate_error(&error)),
        },
        detail: None,
    };
    // The gate: a process an earlier run reported and that is still alive. A `running` one
    // (a background job or a daemon) means this run is skipped, so two copies never
    // overlap; any other is handed to the task (`previous-pid`) to manage.
    let previous = match previous_process(worker, &task.tracked, &status_path, write_timeout).await
    {
        Ok(p) => p,
        Err(e) => {
            return failed(
                WorkerOutcome::Failed,
                e.kind(),
                format!("checking the process of the previous run: {e}"),
            );
        }
    };
    if let Some(prev) = previous
        && prev.running
    {
        return skipped(prev.pid);
    }
    // A live process the task manages stays on record until the task reports otherwise, so
    // a run that fails part-way does not orphan it.
    let mut recorded = Recorded {
        running: false,
        pid: previous.map(|p| p.pid),
        start_time: previous.and_then(|p| p.start_time),
    };
    status.pid = recorded.pid;
    if let Some(t) = recorded.start_time {
        status.extra.insert(START_TIME_KEY.into(), t.into());
    }
    if let Err(e) = worker
        .write_file(&status_path, &status.to_json(), write_timeout)
        .await
    {
        task.tracked.forget(worker);
        let outcome = match e {
            crate::workers::WorkerError::Timeout(_) => WorkerOutcome::Timeout,
            _ => WorkerOutcome::Failed,
        };
        return failed(
            outcome,
            e.kind(),
            format!("writing the pending status: {e}"),
        );
    }

    let budget = settings
        .run_timeout
        .saturating_sub(started.elapsed())
        .saturating_sub(write_timeout);
    let previous_pid = previous.map(|p| p.pid);
    let result = rt
        .run(
            &task.plugin,
            name,
            worker.clone(),
            &task.params,
            budget,
            previous_pid,
        )
        .await;

    let (outcome, error_type, error, detail) = match result {
        Ok(out) => {
            status.status = out.status.into();
            status.pid = out.pid;
            status.extra = out.detail.clone();
            status.extra.remove(START_TIME_KEY);
            // The start time identifies this very process later, even if its pid is reused.
            let start_time = match (out.pid, previous) {
                (Some(pid), Some(prev)) if prev.pid == pid => prev.start_time,
                (Some(pid), _) => proc_stat(worker, pid, write_timeout)
                    .await
                    .ok()
                    .flatten()
                    .map(|p| p.start_time),
                (None, _) => None,
            };
            if let Some(t) = start_time {
                status.extra.insert(START_TIME_KEY.into(), t.into());
            }
            recorded = Recorded {
                running: out.status == RunStatus::Running,
                pid: out.pid,
                start_time,
            };
            match out.status {
                // A daemon launched by this run (not the one handed back) is news: `started`.
                RunStatus::Success if out.pid.is_some() && out.pid != previous_pid => {
                    (WorkerOutcome::Started, None, None, Some(out.detail))
                }
                RunStatus::Success => (WorkerOutcome::Success, None, None, Some(out.detail)),
                RunStatus::Running => (WorkerOutcome::Started, None, None, Some(out.detail)),
                RunStatus::Failed => {
                    let msg = out
                        .error_message()
                        .unwrap_or_else(|| "task returned failed status".into());
                    status.error = Some(truncate_error(&msg));
                    (
                        WorkerOutcome::Failed,
                        Some("TaskResultFailed".to_string()),
                        Some(msg),
                        Some(out.detail),
                    )
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            status.status = StatusWord::Failed;
            status.error = Some(truncate_error(&msg));
            let outcome = match e {
                crate::error::RunError::Deadline { .. } => WorkerOutcome::Timeout,
                _ => WorkerOutcome::Failed,
            };
            (outcome, Some(e.kind().to_string()), Some(msg), None)
        }
    };

    let mut result = WorkerResult {
        worker_ip: ip.clone(),
        outcome,
        error_type,
        error: error.map(|e| truncate_error(&e)),
    };
    if let Err(e) = worker
        .write_file(&status_path, &status.to_json(), write_timeout)
        .await
    {
        // The task's own outcome stands; the report says the status file is stale (and the
        // next run reads it again rather than trusting memory).
        task.tracked.forget(worker);
        tracing::warn!(task = name, worker = %worker.addr(), "writing the final status failed: {e}");
        if result.error.is_none() {
            result.outcome = WorkerOutcome::Failed;
            result.error_type = Some(e.kind().to_string());
            result.error = Some(truncate_error(&format!(
                "the task finished but writing its final status failed: {e}"
            )));
        }
    } else {
        task.tracked.set(worker, recorded);
    }
    WorkerRun { result, detail }
}

/// Key in a status file's `extra` where Quarry records the start time of a launched daemon
/// (field 22 of `/proc/<pid>/stat`), so that a reused pid is not mistaken for it.
pub const START_TIME_KEY: &str = "quarry_proc_start_time";

/// State and start time of a process, from `/proc/<pid>/stat` on the worker.
struct ProcStat {
    state: char,
    start_time: u64,
}

/// Reads `/proc/<pid>/stat` on the worker; `None` when the process does not exist.
async fn proc_stat(
    worker: &Worker,
    pid: u32,
    timeout: Duration,
) -> Result<Option<ProcStat>, crate::workers::WorkerError> {
    let cmd = crate::workers::Command {
        program: crate::workers::Program::Argv(vec!["cat".into(), format!("/proc/{pid}/stat")]),
        cwd: None,
        env: Vec::new(),
        timeout,
    };
    let out = worker.execute(&cmd).await?;
    if out.exit_code != 0 {
        return Ok(None);
    }
    // "pid (comm) state ppid …": comm may contain spaces and parentheses; split after the last ')'.
    let Some((_, rest)) = out.stdout.rsplit_once(')') else {
        return Ok(None);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|f| f.chars().next());
    let start_time = fields.get(19).and_then(|f| f.parse::<u64>().ok());
    Ok(match (state, start_time) {
        (Some(state), Some(start_time)) => Some(ProcStat { state, start_time }),
        _ => None,
    })
}

/// A process an earlier run of the task reported on a worker, checked alive just now.
#[derive(Clone, Copy, Debug)]
struct Previous {
    pid: u32,
    /// The run that started it said `running`: this run must not start another copy.
    running: bool,
    start_time: Option<u64>,
}

/// The gate: the process the task's previous run on `worker` recorded (status file `pid`),
/// when that very process is still alive; `None` when there is none.
///
/// Strategy: what the previous run recorded comes from memory ([`Tracked`]) or, for a worker
/// not seen yet, from the status file (no file, an unreadable one or no pid → none: a failed
/// launch is retried, no sticky failure). The pid must exist, not be a zombie, and — when
/// Quarry recorded it — have the same start time; otherwise it died or the pid was reused.
async fn previous_process(
    worker: &Worker,
    tracked: &Tracked,
    status_path: &str,
    timeout: Duration,
) -> Result<Option<Previous>, crate::workers::WorkerError> {
    let recorded = match tracked.get(worker) {
        Some(rec) => rec,
        None => read_recorded(worker, status_path, timeout).await?,
    };
    let Some(pid) = recorded.pid else {
        return Ok(None);
    };
    let Some(proc) = proc_stat(worker, pid, timeout).await? else {
        return Ok(None);
    };
    if matches!(proc.state, 'Z' | 'X' | 'x') {
        return Ok(None);
    }
    if let Some(t) = recorded.start_time
        && t != proc.start_time
    {
        return Ok(None);
    }
    Ok(Some(Previous {
        pid,
        running: recorded.running,
        start_time: Some(proc.start_time),
    }))
}

/// What a status file on the worker records; a missing or unreadable file records nothing.
async fn read_recorded(
    worker: &Worker,
    status_path: &str,
    timeout: Duration,
) -> Result<Recorded, crate::workers::WorkerError> {
    use crate::workers::WorkerError;
    let nothing = Recorded {
        running: false,
        pid: None,
        start_time: None,
    };
    let text = match worker.read_file(status_path, timeout).await {
        Ok(t) => t,
        Err(e @ (WorkerError::Unreachable(_) | WorkerError::Timeout(_))) => return Err(e),
        Err(_) => return Ok(nothing),
    };
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(nothing);
    };
    let pid = status["pid"]
        .as_u64()
        .filter(|p| *p > 0 && *p <= u32::MAX as u64)
        .map(|p| p as u32);
    Ok(Recorded {
        running: status["status"].as_str() == Some("running"),
        pid,
        start_time: status["extra"][START_TIME_KEY].as_u64(),
    })
}

/// What uninstalling a task did on one worker.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UninstallResult {
    /// Worker host.
    pub worker_ip: String,
    /// The daemon that was killed, if one was alive.
    pub stopped_pid: Option<u32>,
    /// Whether the status file was removed (or already absent).
    pub status_removed: bool,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// `<task>_uninstall_report.json`: what uninstalling a task did on every worker.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UninstallReport {
    /// Task name.
    pub task_type: String,
    /// When it finished.
    pub timestamp: String,
    /// Per worker, in worker order.
    pub worker_results: Vec<UninstallResult>,
}

/// Uninstalls a task from one worker: kills the process its status file records if that
/// very process is still alive (a daemon or an unfinished job; its child processes first,
/// then itself), then removes the status file.
pub async fn uninstall_on_worker(
    worker: &Worker,
    task: &str,
    status_dir: &str,
    timeout: Duration,
) -> UninstallResult {
    let path = StatusFile::path(status_dir, task);
    let mut result = UninstallResult {
        worker_ip: worker.addr().ip().to_string(),
        stopped_pid: None,
        status_removed: false,
        error: None,
    };
    let argv = |args: Vec<String>| crate::workers::Command {
        program: crate::workers::Program::Argv(args),
        cwd: None,
        env: Vec::new(),
        timeout,
    };
    match previous_process(worker, &Tracked::default(), &path, timeout).await {
        Ok(Some(Previous { pid, .. })) => {
            let pid_s = pid.to_string();
            // Children first (a daemon's workers), then the daemon; both best effort.
            let _ = worker
                .execute(&argv(vec![
                    "pkill".into(),
                    "-9".into(),
                    "-P".into(),
                    pid_s.clone(),
                ]))
                .await;
            match worker
                .execute(&argv(vec!["kill".into(), "-9".into(), pid_s]))
                .await
            {
                Ok(out) if out.exit_code == 0 => result.stopped_pid = Some(pid),
                Ok(out) => {
                    result.error = Some(format!(
                        "kill -9 {pid} exited with {}: {}",
                        out.exit_code,
                        out.stderr.trim()
                    ))
                }
                Err(e) => result.error = Some(format!("kill -9 {pid}: {e}")),
            }
        }
        Ok(None) => {}
        Err(e) => {
            result.error = Some(format!("checking the daemon: {e}"));
            return result;
        }
    }
    match worker
        .execute(&argv(vec!["rm".into(), "-f".into(), path]))
        .await
    {
        Ok(out) if out.exit_code == 0 => result.status_removed = true,
        Ok(out) => {
            result.error.get_or_insert(format!(
                "rm -f exited with {}: {}",
                out.exit_code,
                out.stderr.trim()
            ));
        }
        Err(e) => {
            result
                .error
                .get_or_insert(format!("removing the status file: {e}"));
        }
    }
    result
}

/// Uninstalls `task` from every worker (best effort, bounded fan-out), logs a summary and
/// writes `<task>_uninstall_report.json` beside the run reports.
pub async fn uninstall(task: &str, workers: &[Worker], settings: &RunSettings) -> UninstallReport {
    let timeout = STATUS_WRITE_TIMEOUT.min(settings.run_timeout);
    let results: Vec<UninstallResult> = futures::stream::iter(workers.iter().cloned())
        .map(|w: Worker| async move {
            uninstall_on_worker(&w, task, &settings.status_dir, timeout).await
        })
        .buffered(settings.concurrency.max(1))
        .collect()
        .await;
    let report = UninstallReport {
        task_type: task.to_string(),
        timestamp: timestamp_now(),
        worker_results: results,
    };
    let stopped = report
        .worker_results
        .iter()
        .filter(|r| r.stopped_pid.is_some())
        .count();
    let failed = report
        .worker_results
        .iter()
        .filter(|r| r.error.is_some())
        .count();
    tracing::info!(
        task,
        stopped_daemons = stopped,
        failed_workers = failed,
        "task uninstalled from the workers"
    );
    for r in report.worker_results.iter().filter(|r| r.error.is_some()) {
        tracing::warn!(task, worker = %r.worker_ip, "uninstall: {}", r.error.as_deref().unwrap_or(""));
    }
    if let Some(dir) = &settings.report_dir {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        let write = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(dir.join(format!("{task}_uninstall_report.json")), text));
        if let Err(e) = write {
            tracing::error!(task, dir = %dir.display(), "cannot write the uninstall report: {e}");
        }
    }
    report
}

/// Runs `task` on every worker, at most `settings.concurrency` at once, results in worker
/// order; builds the report and writes it when a report directory is set.
pub async fn run_tick(
    rt: &Runtime,
    task: &TaskRun,
    workers: &[Worker],
    settings: &RunSettings,
) -> (RunReport, Vec<WorkerRun>) {
    let started = Instant::now();
    let name = task.name();
    let span = tracing::info_span!(
        "quarry.scheduler.tick",
        task = name,
        workers = workers.len()
    );
    let runs: Vec<WorkerRun> = futures::stream::iter(workers.iter().cloned())
        .map(|w: Worker| async move {
            // A hard stop slightly past the budget, in case a worker call ignores its own.
            let hard = settings.run_timeout + Duration::from_secs(5);
            match tokio::time::timeout(hard, run_on_worker(rt, task, &w, settings)).await {
                Ok(run) => run,
                Err(_) => WorkerRun {
                    result: WorkerResult {
                        worker_ip: w.addr().ip().to_string(),
                        outcome: WorkerOutcome::Timeout,
                        error_type: Some("TimeoutError".into()),
                        error: Some(format!(
                            "run exceeded its budget of {:.1}s",
                            settings.run_timeout.as_secs_f64()
                        )),
                    },
                    detail: None,
                },
            }
        })
        .buffered(settings.concurrency.max(1))
        .collect()
        .instrument(span)
        .await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let report = RunReport::build(
        name,
        duration_ms,
        runs.iter().map(|r| r.result.clone()).collect(),
    );
    for r in &report.worker_results {
        if let Some(err) = &r.error {
            tracing::warn!(task = name, worker = %r.worker_ip, outcome = ?r.outcome, "{err}");
        }
    }
    tracing::info!(
        task = name,
        outcome = ?report.outcome,
        ok = report.success_count,
        failed = report.failed_count,
        ms = format!("{duration_ms:.1}"),
        "tick done"
    );
    if let Some(dir) = &settings.report_dir
        && let Err(e) = report.write(dir)
    {
        tracing::error!(task = name, dir = %dir.display(), "cannot write the run report: {e}");
    }
    (report, runs)
}
