//! Uninstalling a task from the workers: after it is removed from the config (or changed),
//! the process its last run reported is stopped and its status file removed.

use std::time::Duration;

use futures::StreamExt as _;

use crate::report::{StatusFile, UninstallReport, UninstallResult, timestamp_now};
use crate::workers::Worker;

use super::gate::{Previous, Tracked, argv, previous_process};
use super::{RunSettings, STATUS_WRITE_TIMEOUT};

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
    let argv = |args: Vec<String>| argv(args, timeout);
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
    if let Some(dir) = &settings.report_dir
        && let Err(e) = report.write(dir)
    {
        tracing::error!(task, dir = %dir.display(), "cannot write the uninstall report: {e}");
    }
    report
}
