//! One task's loop: ticks on its interval, and the commands the admin API sends it (trigger,
//! cancel, pause, resume), also while a tick is in flight.
//!
//! Ownership: the loop owns its task's tick in flight, its pause state (mirrored into the
//! scheduler's [`Paused`] registry so it survives a loop restart) and the memory of what runs
//! recorded on each worker ([`crate::run::Tracked`]); it publishes a [`TaskStatus`] snapshot
//! through a `watch` channel. Others hold a [`TaskHandle`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::api::ControlError;
use crate::config::OnFailure;
use crate::error::ErrorType;
use crate::plugins::PluginSet;
use crate::report::{RunReport, WorkerOutcome};
use crate::run::quarantine::Quarantine;
use crate::run::{TaskRun, TickControl, TickRun, Tracked, run_tick_with};
use crate::runtime::Runtime;
pub use crate::task::Trigger;
use crate::workers::{Worker, WorkerAddr};

use super::{FIRST_TICK_DELAY, Paused, ScheduledTask, TickEnv, TickSink};

/// Commands a loop serves.
#[derive(Debug)]
pub(super) enum LoopCmd {
    /// Run a tick now on these workers (all when `None`).
    Trigger {
        workers: Option<Vec<WorkerAddr>>,
        trigger: Trigger,
        reply: oneshot::Sender<Result<TickInfo, ControlError>>,
    },
    /// Cancel the tick in flight.
    Cancel {
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Stop scheduled ticks until resumed.
    Pause {
        reason: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Resume scheduled ticks.
    Resume {
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// A tick, as a task's status shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TickInfo {
    /// Its id: the state database's, or a counter of this process without one.
    pub id: i64,
    /// What started it.
    pub trigger: Trigger,
    /// When.
    pub started_at: SystemTime,
    /// When it ended; `None` while in flight.
    pub ended_at: Option<SystemTime>,
    /// ROCK's aggregate once ended (`cancelled` when cancelled), `running` before.
    pub outcome: String,
    /// The workers it runs on.
    pub workers: Vec<WorkerAddr>,
}

/// A task's state, as the admin API shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskStatus {
    /// When the next scheduled tick is due; `None` while paused.
    pub next_tick: Option<SystemTime>,
    /// Paused (or halted), and why.
    pub paused: Option<String>,
    /// The tick in flight.
    pub in_flight: Option<TickInfo>,
    /// The last finished tick.
    pub last_tick: Option<TickInfo>,
}

/// A cheap handle to one task's loop.
#[derive(Clone, Debug)]
pub struct TaskHandle {
    pub(super) spec: ScheduledTask,
    pub(super) cmds: mpsc::Sender<LoopCmd>,
    pub(super) status: watch::Receiver<TaskStatus>,
    pub(super) quarantine: Arc<Quarantine>,
}

impl TaskHandle {
    /// What the task is configured as.
    pub fn spec(&self) -> &ScheduledTask {
        &self.spec
    }

    /// Its state now.
    pub fn status(&self) -> TaskStatus {
        self.status.borrow().clone()
    }

    /// Its quarantine book.
    pub fn quarantine(&self) -> &Arc<Quarantine> {
        &self.quarantine
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> LoopCmd,
    ) -> Result<T, ControlError> {
        let gone = || ControlError::Unavailable(format!("task {} is stopping", self.spec.plugin));
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Runs a tick now, on `workers` (every worker when `None`); refused while one is in
    /// flight. Returns the tick started.
    pub async fn trigger(
        &self,
        workers: Option<Vec<WorkerAddr>>,
        trigger: Trigger,
    ) -> Result<TickInfo, ControlError> {
        self.ask(|reply| LoopCmd::Trigger {
            workers,
            trigger,
            reply,
        })
        .await
    }

    /// Cancels the tick in flight; refused when none is.
    pub async fn cancel(&self) -> Result<(), ControlError> {
        self.ask(|reply| LoopCmd::Cancel { reply }).await
    }

    /// Pauses scheduled ticks (a tick in flight finishes).
    pub async fn pause(&self, reason: String) -> Result<(), ControlError> {
        self.ask(|reply| LoopCmd::Pause { reason, reply }).await
    }

    /// Resumes scheduled ticks; the next one is due at once.
    pub async fn resume(&self) -> Result<(), ControlError> {
        self.ask(|reply| LoopCmd::Resume { reply }).await
    }
}

/// What a loop needs, given by the scheduler.
pub(super) struct LoopCtx {
    pub rt: Arc<Runtime>,
    pub task: ScheduledTask,
    pub plugins: watch::Receiver<Arc<PluginSet>>,
    pub env: watch::Receiver<Arc<TickEnv>>,
    pub reports: broadcast::Sender<Arc<RunReport>>,
    pub stop: watch::Receiver<bool>,
    pub cmds: mpsc::Receiver<LoopCmd>,
    pub status: watch::Sender<TaskStatus>,
    pub quarantine: Arc<Quarantine>,
    pub paused: Paused,
    pub sink: Option<Arc<dyn TickSink>>,
}

/// A tick to run.
struct Planned {
    workers: Option<Vec<WorkerAddr>>,
    trigger: Trigger,
    reply: Option<oneshot::Sender<Result<TickInfo, ControlError>>>,
}

/// One task's loop.
///
/// Strategy: wait for the next due time (unless paused) or a command; run the tick while
/// still serving commands (a trigger is refused as a conflict, a cancel stops the tick, a
/// pause takes effect after it); after a scheduled tick, the next is due one interval after
/// the last due time, skipping the ones that fell due meanwhile (ROCK's `coalesce`).
pub(super) async fn task_loop(mut ctx: LoopCtx) {
    let name = ctx.task.plugin.clone();
    let mut next = Instant::now() + FIRST_TICK_DELAY;
    let mut missing_logged = false;
    let tracked = Arc::new(Tracked::default());
    if let Some(sink) = &ctx.sink {
        sink.restore(&name, &tracked, &ctx.quarantine).await;
    }
    let mut status = TaskStatus {
        paused: ctx.paused.get(&name),
        ..Default::default()
    };
    let mut last_sha: Option<String> = None;
    loop {
        status.next_tick = status.paused.is_none().then(|| wall(next));
        ctx.status.send_replace(status.clone());
        let planned = tokio::select! {
            _ = tokio::time::sleep_until(next), if status.paused.is_none() => Planned {
                workers: None,
                trigger: Trigger::Schedule,
                reply: None,
            },
            cmd = ctx.cmds.recv() => match cmd {
                Some(LoopCmd::Trigger { workers, trigger, reply }) => Planned {
                    workers,
                    trigger,
                    reply: Some(reply),
                },
                Some(other) => {
                    if serve_idle(other, &name, &ctx.paused, &mut status) {
                        next = Instant::now();
                    }
                    continue;
                }
                None => return,
            },
            _ = ctx.stop.changed() => return,
        };
        let scheduled = planned.trigger == Trigger::Schedule;
        // The plugin version current now; this tick keeps it even if a reload swaps it.
        let plugin = ctx.plugins.borrow().get(name.as_str()).cloned();
        match plugin {
            Some(plugin) => {
                missing_logged = false;
                if last_sha.as_deref().is_some_and(|s| s != plugin.sha256()) {
                    let n = ctx.quarantine.lift_all();
                    if n > 0 {
                        tracing::info!(task = %name, lifted = n, "a new plugin version is loaded: quarantines lifted");
                    }
                }
                last_sha = Some(plugin.sha256().to_string());
                let run = TaskRun {
                    plugin,
                    params: ctx.task.params.clone(),
                    tracked: tracked.clone(),
                    policy: ctx.task.policy.clone(),
                };
                run_one_tick(&mut ctx, &run, planned, &mut status).await;
            }
            None => {
                if let Some(reply) = planned.reply {
                    let _ = reply.send(Err(ControlError::Conflict(format!(
                        "no plugin named {name} is loaded"
                    ))));
                }
                if !missing_logged {
                    tracing::warn!(task = %name, "no plugin named {name} is loaded; ticks are skipped until one is");
                    missing_logged = true;
                }
            }
        }
        if *ctx.stop.borrow() {
            ctx.status.send_replace(status);
            return;
        }
        if scheduled {
            next = next_due(next, ctx.task.interval, &name);
        }
    }
}

/// The next due time after a scheduled tick that was due at `due`.
fn next_due(due: Instant, interval: Duration, name: &crate::task::TaskName) -> Instant {
    let mut next = due + interval;
    let now = Instant::now();
    if next <= now {
        let behind = now - next;
        let missed = (behind.as_nanos() / interval.as_nanos().max(1)) as u32 + 1;
        next += interval * missed;
        tracing::warn!(
            task = %name,
            missed,
            "tick took longer than the interval; skipped the ticks that fell due meanwhile"
        );
    }
    next
}

/// Serves a command while no tick is in flight; true when the next tick is due at once.
fn serve_idle(
    cmd: LoopCmd,
    name: &crate::task::TaskName,
    paused: &Paused,
    status: &mut TaskStatus,
) -> bool {
    match cmd {
        LoopCmd::Trigger { .. } => false, // handled by the caller
        LoopCmd::Cancel { reply } => {
            let _ = reply.send(Err(ControlError::Conflict(format!(
                "task {name} has no tick in flight to cancel"
            ))));
            false
        }
        LoopCmd::Pause { reason, reply } => {
            tracing::info!(task = %name, reason, "paused");
            paused.set(name, Some(reason.clone()));
            status.paused = Some(reason);
            let _ = reply.send(Ok(()));
            false
        }
        LoopCmd::Resume { reply } => {
            let was = status.paused.take();
            paused.set(name, None);
            let _ = reply.send(Ok(()));
            if was.is_some() {
                tracing::info!(task = %name, "resumed");
            }
            was.is_some()
        }
    }
}

/// Runs one tick, serving commands meanwhile, then records and publishes it.
async fn run_one_tick(ctx: &mut LoopCtx, run: &TaskRun, planned: Planned, status: &mut TaskStatus) {
    let name = ctx.task.plugin.clone();
    let env = ctx.env.borrow().clone();
    let all = env.workers.borrow().clone();
    let workers: Vec<Worker> = match &planned.workers {
        None => all.to_vec(),
        Some(chosen) => all
            .iter()
            .filter(|w| chosen.contains(w.addr()))
            .cloned()
            .collect(),
    };
    let started_at = SystemTime::now();
    if let Some(m) = ctx.rt.metrics() {
        m.set_workers(all.len());
    }
    let id = match &ctx.sink {
        Some(sink) => sink.tick_started(run, planned.trigger, &workers).await,
        None => next_local_tick_id(),
    };
    let info = TickInfo {
        id,
        trigger: planned.trigger,
        started_at,
        ended_at: None,
        outcome: "running".into(),
        workers: workers.iter().map(|w| w.addr().clone()).collect(),
    };
    status.in_flight = Some(info.clone());
    ctx.status.send_replace(status.clone());
    if let Some(reply) = planned.reply {
        let _ = reply.send(Ok(info.clone()));
    }
    let on_failure = env.on_failure.get(&name).copied().unwrap_or_default();
    ctx.quarantine.set_policy(env.quarantine);
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let control = TickControl {
        retries: match on_failure {
            OnFailure::Retry { retries } => retries,
            _ => 0,
        },
        retry_budget: ctx.task.interval.min(env.settings.run_timeout * 4),
        cancel: Some(cancel_rx),
        quarantine: (env.quarantine.after > 0).then(|| ctx.quarantine.clone()),
    };
    let tick = run_tick_with(&ctx.rt, run, &workers, &env.settings, &control);
    tokio::pin!(tick);
    let mut cancelled = false;
    let (report, runs) = loop {
        tokio::select! {
            done = &mut tick => break done,
            Some(cmd) = ctx.cmds.recv() => match cmd {
                LoopCmd::Trigger { reply, .. } => {
                    let _ = reply.send(Err(ControlError::Conflict(format!(
                        "task {name} has a tick in flight (id {id}); it never overlaps itself"
                    ))));
                }
                LoopCmd::Cancel { reply } => {
                    cancelled = true;
                    let _ = cancel_tx.send(true);
                    tracing::info!(task = %name, tick = id, "tick cancelled through the admin API");
                    let _ = reply.send(Ok(()));
                }
                other => {
                    serve_idle(other, &name, &ctx.paused, status);
                    ctx.status.send_replace(status.clone());
                }
            },
        }
    };
    let unreachable = runs
        .iter()
        .any(|r| r.run.result.error_type == Some(ErrorType::Unreachable));
    if unreachable && let Some(refresh) = &env.refresh {
        let _ = refresh.send(());
    }
    let outcome = if cancelled {
        "cancelled"
    } else {
        report.outcome.as_str()
    };
    if let Some(m) = ctx.rt.metrics() {
        use crate::metrics::TickResult;
        let result = if cancelled {
            TickResult::Cancelled
        } else {
            report.outcome.into()
        };
        let took = SystemTime::now()
            .duration_since(started_at)
            .unwrap_or_default();
        m.record_tick(name.as_str(), result, planned.trigger, took);
        m.set_quarantined(name.as_str(), ctx.quarantine.list().len());
    }
    if let Some(sink) = &ctx.sink {
        sink.tick_finished(id, run, &report, &runs, outcome, &ctx.quarantine)
            .await;
    }
    if on_failure == OnFailure::Halt
        && !cancelled
        && let Some(reason) = halt_reason(id, &runs)
    {
        tracing::warn!(task = %name, "{reason}");
        ctx.paused.set(&name, Some(reason.clone()));
        status.paused = Some(reason);
    }
    status.in_flight = None;
    status.last_tick = Some(TickInfo {
        ended_at: Some(SystemTime::now()),
        outcome: outcome.to_string(),
        ..info
    });
    ctx.status.send_replace(status.clone());
    let _ = ctx.reports.send(Arc::new(report));
}

/// Why `on_failure: halt` pauses the task after tick `id`, if a worker failed.
fn halt_reason(id: i64, runs: &[TickRun]) -> Option<String> {
    let failed: Vec<&TickRun> = runs
        .iter()
        .filter(|r| {
            matches!(
                r.run.result.outcome,
                WorkerOutcome::Failed | WorkerOutcome::Timeout
            )
        })
        .collect();
    let first = failed.first()?;
    Some(format!(
        "halted (on_failure: halt): tick {id} failed on {} of {} workers; first: {}: {}",
        failed.len(),
        runs.len(),
        first.worker,
        first.run.result.error.as_deref().unwrap_or("failed")
    ))
}

/// Tick ids when there is no state database: unique in this process.
fn next_local_tick_id() -> i64 {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The wall-clock time of a tokio instant.
fn wall(at: Instant) -> SystemTime {
    let now = Instant::now();
    if at >= now {
        SystemTime::now() + (at - now)
    } else {
        SystemTime::now() - (now - at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::WorkerResult;
    use crate::run::WorkerRun;

    fn tick_run(outcome: WorkerOutcome, error: Option<&str>) -> TickRun {
        TickRun {
            worker: WorkerAddr::Local,
            run: WorkerRun {
                result: WorkerResult {
                    worker_ip: "local".into(),
                    outcome,
                    error_type: None,
                    error: error.map(String::from),
                },
                detail: None,
                pid: None,
            },
            attempts: 1,
            started_at: SystemTime::UNIX_EPOCH,
            ended_at: SystemTime::UNIX_EPOCH,
            note: None,
        }
    }

    #[test]
    fn halts_only_when_a_worker_failed() {
        let ok = [
            tick_run(WorkerOutcome::Success, None),
            tick_run(WorkerOutcome::Skipped, None),
        ];
        assert_eq!(halt_reason(3, &ok), None);
        let bad = [
            tick_run(WorkerOutcome::Success, None),
            tick_run(WorkerOutcome::Timeout, Some("deadline")),
        ];
        let why = halt_reason(3, &bad).unwrap();
        assert!(
            why.contains("tick 3 failed on 1 of 2 workers") && why.contains("deadline"),
            "{why}"
        );
    }
}
