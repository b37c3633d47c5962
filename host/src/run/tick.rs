//! One tick: a task on a set of workers, at most `concurrency` at once, with retries,
//! cancellation and quarantine, then the run report.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::error::ErrorType;
use crate::report::{RunReport, WorkerOutcome, WorkerResult};
use crate::runtime::Runtime;
use crate::workers::{Worker, WorkerAddr};

use super::quarantine::{Change, Quarantine};
use super::{RunSettings, TaskRun, WorkerRun, run_on_worker};

/// Extra time past the run budget before a run is abandoned, in case a worker call ignores its
/// own deadline.
const HARD_STOP_GRACE: Duration = Duration::from_secs(5);

/// First pause before a retry; doubled for each further attempt.
const RETRY_BASE_DELAY: Duration = Duration::from_secs(1);

/// How a tick treats failures and interruptions, beyond running each worker once.
#[derive(Clone, Debug, Default)]
pub struct TickControl {
    /// Extra attempts on a worker whose run failed or timed out (`on_failure: retry`).
    pub retries: u32,
    /// Time retries may add to a tick on one worker (the task's interval bounds it), pauses
    /// included: no retry starts when its pause would end past it.
    pub retry_budget: Duration,
    /// Becomes true to cancel the tick: runs not started are not started, runs in flight are
    /// dropped (the guest stops at once; a command already sent to a worker finishes there).
    pub cancel: Option<watch::Receiver<bool>>,
    /// The task's quarantine book: quarantined workers are skipped, every run is recorded.
    pub quarantine: Option<Arc<Quarantine>>,
}

/// Why a run is not an ordinary one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunNote {
    /// Cancelled through the admin API.
    Cancelled,
    /// Not started: the task is quarantined on the worker.
    Quarantined,
}

/// One worker's part of a tick, with what the state database records about it.
#[derive(Clone, Debug)]
pub struct TickRun {
    /// The worker.
    pub worker: WorkerAddr,
    /// The last attempt's result and detail.
    pub run: WorkerRun,
    /// Attempts made (1 without retries; 0 when the run was never started).
    pub attempts: u32,
    /// When the first attempt started.
    pub started_at: SystemTime,
    /// When the last attempt ended.
    pub ended_at: SystemTime,
    /// Cancelled or quarantined.
    pub note: Option<RunNote>,
}

impl TickRun {
    /// The outcome word the state database and the admin API use: ROCK's outcomes plus
    /// `cancelled` and `quarantined`.
    pub fn outcome_word(&self) -> &'static str {
        match self.note {
            Some(RunNote::Cancelled) => "cancelled",
            Some(RunNote::Quarantined) => "quarantined",
            None => self.run.result.outcome.as_str(),
        }
    }
}

/// Runs `task` on every worker, at most `settings.concurrency` at once, results in worker
/// order; builds the report and writes it when a report directory is set.
pub async fn run_tick(
    rt: &Runtime,
    task: &TaskRun,
    workers: &[Worker],
    settings: &RunSettings,
) -> (RunReport, Vec<WorkerRun>) {
    let (report, runs) = run_tick_with(rt, task, workers, settings, &TickControl::default()).await;
    (report, runs.into_iter().map(|r| r.run).collect())
}

/// [`run_tick`] with retries, cancellation and quarantine as `control` says.
pub async fn run_tick_with(
    rt: &Runtime,
    task: &TaskRun,
    workers: &[Worker],
    settings: &RunSettings,
    control: &TickControl,
) -> (RunReport, Vec<TickRun>) {
    let started = Instant::now();
    let name = task.name();
    let span = tracing::info_span!(
        "quarry.scheduler.tick",
        task = name,
        workers = workers.len()
    );
    let runs: Vec<TickRun> = futures::stream::iter(workers.iter().cloned())
        .map(|w: Worker| async move {
            let r = run_with_retries(rt, task, &w, settings, control).await;
            if let Some(m) = rt.metrics() {
                let outcome = match r.note {
                    Some(RunNote::Cancelled) => crate::metrics::RunResult::Cancelled,
                    Some(RunNote::Quarantined) => crate::metrics::RunResult::Quarantined,
                    None => r.run.result.outcome.into(),
                };
                let took = r.ended_at.duration_since(r.started_at).unwrap_or_default();
                m.record_run(task.name(), outcome, took);
            }
            r
        })
        .buffered(settings.concurrency.max(1))
        .collect()
        .instrument(span)
        .await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let report = RunReport::build(
        name,
        duration_ms,
        runs.iter().map(|r| r.run.result.clone()).collect(),
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

/// One worker's part of a tick.
///
/// Strategy: skip a quarantined worker; otherwise run, and while the run failed or timed out
/// and retries are left, pause (exponential backoff with jitter) and run again, within the
/// retry budget; every attempt's end is recorded in the quarantine book (a probe that fails
/// ends the retries: the book decides). A cancel stops whatever is under way.
async fn run_with_retries(
    rt: &Runtime,
    task: &TaskRun,
    worker: &Worker,
    settings: &RunSettings,
    control: &TickControl,
) -> TickRun {
    let started_at = SystemTime::now();
    let begun = Instant::now();
    let finish = |run: WorkerRun, attempts: u32, note: Option<RunNote>| TickRun {
        worker: worker.addr().clone(),
        run,
        attempts,
        started_at,
        ended_at: SystemTime::now(),
        note,
    };
    if let Some(q) = &control.quarantine
        && let Some(entry) = q.blocks(worker.addr(), started_at)
    {
        let until = entry.until.map(crate::report::rfc3339).unwrap_or_default();
        let why = format!(
            "quarantined until {until} after {} failures in a row: {}",
            entry.consecutive, entry.reason
        );
        let run = note_run(worker, WorkerOutcome::Skipped, ErrorType::Quarantined, why);
        return finish(run, 0, Some(RunNote::Quarantined));
    }
    let mut cancel = control.cancel.clone();
    let mut attempt = 0;
    loop {
        if cancel.as_ref().is_some_and(|c| *c.borrow()) {
            let run = cancelled(worker, attempt);
            return finish(run, attempt, Some(RunNote::Cancelled));
        }
        attempt += 1;
        let hard = settings.run_timeout + HARD_STOP_GRACE;
        let once = tokio::time::timeout(hard, run_on_worker(rt, task, worker, settings));
        let run = match &mut cancel {
            Some(c) => tokio::select! {
                r = once => r,
                _ = c.wait_for(|v| *v) => {
                    return finish(cancelled(worker, attempt), attempt, Some(RunNote::Cancelled));
                }
            },
            None => once.await,
        };
        let run = run.unwrap_or_else(|_| {
            let why = format!(
                "run exceeded its budget of {:.1}s",
                settings.run_timeout.as_secs_f64()
            );
            note_run(worker, WorkerOutcome::Timeout, ErrorType::Timeout, why)
        });
        let change = match &control.quarantine {
            Some(q) => q.record(worker.addr(), &run.result, SystemTime::now()),
            None => Change::None,
        };
        if let Change::Quarantined { until } = change {
            tracing::warn!(task = task.name(), worker = %worker.addr(), until = %crate::report::rfc3339(until), "quarantined");
        }
        let failed = matches!(
            run.result.outcome,
            WorkerOutcome::Failed | WorkerOutcome::Timeout
        );
        if !failed || attempt > control.retries || change != Change::None {
            return finish(run, attempt, None);
        }
        let pause = retry_delay(attempt, worker.addr());
        if begun.elapsed() + pause >= control.retry_budget {
            return finish(run, attempt, None);
        }
        if let Some(m) = rt.metrics() {
            m.record_retry(task.name());
        }
        tracing::info!(task = task.name(), worker = %worker.addr(), attempt, pause_ms = pause.as_millis() as u64, "retrying after: {}", run.result.error.as_deref().unwrap_or("failure"));
        match &mut cancel {
            Some(c) => tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = c.wait_for(|v| *v) => {
                    return finish(cancelled(worker, attempt), attempt, Some(RunNote::Cancelled));
                }
            },
            None => tokio::time::sleep(pause).await,
        }
    }
}

/// The pause before retry number `attempt` (1-based): `RETRY_BASE_DELAY × 2^(attempt-1)`,
/// ±25 % jitter so that a fleet does not retry in lockstep.
fn retry_delay(attempt: u32, worker: &WorkerAddr) -> Duration {
    use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
    let base = RETRY_BASE_DELAY * 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    worker.hash(&mut h);
    attempt.hash(&mut h);
    let jitter = (h.finish() % 501) as f64 / 1000.0 - 0.25; // -0.25 ..= +0.25
    base.mul_f64(1.0 + jitter)
}

/// A run that ended without reaching the task.
fn note_run(worker: &Worker, outcome: WorkerOutcome, kind: ErrorType, why: String) -> WorkerRun {
    WorkerRun {
        result: WorkerResult {
            worker_ip: worker.addr().ip().to_string(),
            outcome,
            error_type: Some(kind),
            error: Some(why),
        },
        detail: None,
        pid: None,
    }
}

fn cancelled(worker: &Worker, attempt: u32) -> WorkerRun {
    let why = if attempt == 0 {
        "cancelled through the admin API before it started".to_string()
    } else {
        format!("cancelled through the admin API during attempt {attempt}")
    };
    note_run(worker, WorkerOutcome::Failed, ErrorType::Cancelled, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_bounded_jitter() {
        let w = WorkerAddr::Local;
        for attempt in 1..=5 {
            let base = RETRY_BASE_DELAY * 2u32.pow(attempt - 1);
            for _ in 0..20 {
                let d = retry_delay(attempt, &w);
                assert!(
                    d >= base.mul_f64(0.75) && d <= base.mul_f64(1.25),
                    "{attempt}: {d:?}"
                );
            }
        }
        // No overflow for absurd attempt numbers.
        assert!(retry_delay(u32::MAX, &w) > Duration::ZERO);
    }
}
