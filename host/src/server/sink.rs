//! The scheduler's [`TickSink`] over the state database: every tick and run recorded, the
//! process-tracking memory and the quarantines written when they change and read back when a
//! task's loop starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::report::RunReport;
use crate::run::gate::Recorded;
use crate::run::quarantine::{Entry, Quarantine};
use crate::run::{TaskRun, TickRun, Tracked};
use crate::scheduler::{TickSink, Trigger};
use crate::state::{self, ProcChange, RunOutcome, RunRecord, StateHandle, TickId, TickStart};
use crate::task::TaskName;
use crate::workers::{Worker, WorkerAddr};

/// What was last written for one task, so that only changes are written.
#[derive(Default)]
struct Written {
    procs: HashMap<WorkerAddr, Recorded>,
    quarantines: HashMap<WorkerAddr, Entry>,
}

/// Records ticks in the state database.
pub struct StateSink {
    state: StateHandle,
    written: Mutex<HashMap<TaskName, Written>>,
}

impl StateSink {
    /// A sink writing through `state`.
    pub fn new(state: StateHandle) -> Arc<StateSink> {
        Arc::new(StateSink {
            state,
            written: Mutex::default(),
        })
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<TaskName, Written>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what changed in `tracked` and `quarantine` since the last call for `task`
    /// (with `write` false, only remembers them as written: they were just read back).
    fn write_changes(
        &self,
        task: &TaskName,
        tracked: &Tracked,
        quarantine: &Quarantine,
        write: bool,
    ) {
        let now = tracked.snapshot();
        let q_now: HashMap<WorkerAddr, Entry> = quarantine
            .list()
            .into_iter()
            .map(|q| (q.worker, q.entry))
            .collect();
        let mut all = self.written();
        let written = all.entry(task.clone()).or_default();
        if !write {
            written.procs = now;
            written.quarantines = q_now;
            return;
        }
        let mut changes = Vec::new();
        for (w, rec) in &now {
            if written.procs.get(w) != Some(rec) {
                changes.push(ProcChange::Set {
                    worker: w.to_string(),
                    pid: rec.pid,
                    start_time: rec.start_time,
                    running: rec.running,
                });
            }
        }
        for w in written.procs.keys().filter(|w| !now.contains_key(*w)) {
            changes.push(ProcChange::Clear {
                worker: w.to_string(),
            });
        }
        if !changes.is_empty() {
            self.state.procs_changed(task, changes);
        }
        for (w, e) in &q_now {
            if written.quarantines.get(w) != Some(e) {
                self.state.set_quarantine(state::Quarantine {
                    task: task.clone(),
                    worker: w.to_string(),
                    since: e.since.map(DateTime::<Utc>::from).unwrap_or_else(Utc::now),
                    until: e.until.map(DateTime::<Utc>::from),
                    consecutive_failures: e.consecutive,
                    reason: e.reason.clone(),
                });
            }
        }
        for w in written
            .quarantines
            .keys()
            .filter(|w| !q_now.contains_key(*w))
        {
            self.state.clear_quarantine(task, &w.to_string());
        }
        written.procs = now;
        written.quarantines = q_now;
    }
}

/// The state database's name for an outcome.
fn outcome_of(r: &TickRun) -> RunOutcome {
    use crate::run::RunNote;
    match r.note {
        Some(RunNote::Cancelled) => RunOutcome::Cancelled,
        Some(RunNote::Quarantined) => RunOutcome::Quarantined,
        None => r.run.result.outcome.into(),
    }
}

impl TickSink for StateSink {
    fn tick_started<'a>(
        &'a self,
        run: &'a TaskRun,
        trigger: Trigger,
        workers: &'a [Worker],
    ) -> BoxFuture<'a, i64> {
        let meta = run.plugin.meta();
        let id = self.state.tick_started(TickStart {
            task: meta.name.clone(),
            plugin_version: meta.version.clone(),
            plugin_sha256: run.plugin.sha256().to_string(),
            trigger,
            started_at: Utc::now(),
            workers: workers.iter().map(|w| w.addr().to_string()).collect(),
        });
        Box::pin(async move { id.0 })
    }

    fn tick_finished<'a>(
        &'a self,
        id: i64,
        run: &'a TaskRun,
        report: &'a RunReport,
        runs: &'a [TickRun],
        outcome: &'a str,
        quarantine: &'a Quarantine,
    ) -> BoxFuture<'a, ()> {
        let records = runs
            .iter()
            .map(|r| RunRecord {
                worker: r.worker.to_string(),
                started_at: r.started_at.into(),
                ended_at: r.ended_at.into(),
                outcome: outcome_of(r),
                error_type: r.run.result.error_type,
                error: r.run.result.error.clone(),
                pid: r.run.pid,
                detail: r.run.detail.clone(),
                attempt: r.attempts.max(1),
            })
            .collect();
        let status = match outcome {
            "cancelled" => state::TickStatus::Cancelled,
            _ => report.outcome.into(),
        };
        self.state.tick_finished(TickId(id), records, status);
        self.write_changes(&run.plugin.meta().name, &run.tracked, quarantine, true);
        Box::pin(async {})
    }

    fn restore<'a>(
        &'a self,
        task: &'a TaskName,
        tracked: &'a Tracked,
        quarantine: &'a Quarantine,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match self.state.procs(task.clone()).await {
                Ok(rows) => {
                    for p in rows {
                        if let Ok(addr) = WorkerAddr::parse(&p.worker, 0) {
                            let rec = Recorded {
                                running: p.running,
                                pid: p.pid,
                                start_time: p.start_time,
                            };
                            tracked.restore(addr, rec);
                        }
                    }
                }
                Err(e) => tracing::error!(task = %task, "cannot read the tracked processes: {e}"),
            }
            match self.state.quarantines().await {
                Ok(rows) => {
                    for q in rows.into_iter().filter(|q| &q.task == task) {
                        if let Ok(addr) = WorkerAddr::parse(&q.worker, 0) {
                            let since: std::time::SystemTime = q.since.into();
                            let until = q.until.map(std::time::SystemTime::from);
                            let entry = Entry {
                                consecutive: q.consecutive_failures,
                                since: Some(since),
                                until,
                                backoff: until
                                    .and_then(|u| u.duration_since(since).ok())
                                    .unwrap_or_default(),
                                reason: q.reason,
                            };
                            quarantine.restore(addr, entry);
                        }
                    }
                }
                Err(e) => tracing::error!(task = %task, "cannot read the quarantines: {e}"),
            }
            // What was read back is what is written: only later changes are written again.
            self.write_changes(task, tracked, quarantine, false);
        })
    }
}
