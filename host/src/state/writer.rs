//! The writer: the one thread that owns the write connection and applies [`Write`]s in the
//! order they were sent.
//!
//! Strategy: block for one message, take whatever else is already queued (up to
//! [`GROUP_MAX`]) and commit the plain writes of that group in one transaction, each under
//! its own savepoint so that one failing write loses only itself. Flushes, prune steps and
//! close are handled between groups, after the writes sent before them have committed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::retention::{Doomed, PruneStep};
use super::schema::end_in_flight;
use super::types::{
    AuditEntry, ProcChange, Quarantine, RunOutcome, RunRecord, TickId, TickStart, TickStatus, to_ms,
};
use crate::report::truncate_error;
use crate::task::TaskName;

/// Messages taken into one transaction at most: enough to coalesce a burst of small writes
/// (audit, procs) into one fsync-free commit, few enough that a flush is answered promptly.
const GROUP_MAX: usize = 64;

/// Error text of runs a tick finished without a result for.
const NO_RESULT_ERROR: &str = "the tick ended without a result for this worker";

/// `error_type` of runs marked cancelled.
const CANCELLED_TYPE: &str = "Cancelled";

/// Error text of runs in flight at a clean shutdown.
const SHUTDOWN_ERROR: &str = "Quarry shut down while this run was in flight";

/// One change to the database, sent by a [`super::StateHandle`].
#[derive(Debug)]
pub(super) enum Write {
    TickStarted {
        id: TickId,
        start: TickStart,
    },
    TickFinished {
        id: TickId,
        runs: Vec<RunRecord>,
        outcome: TickStatus,
        ended_at: DateTime<Utc>,
    },
    Procs {
        task: TaskName,
        changes: Vec<ProcChange>,
        at: DateTime<Utc>,
    },
    ProcsCleared {
        task: TaskName,
    },
    Paused {
        task: TaskName,
        paused: bool,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Halted {
        halted: bool,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Quarantine(Quarantine),
    QuarantineCleared {
        task: TaskName,
        worker: String,
    },
    Audit {
        entry: AuditEntry,
        at: DateTime<Utc>,
    },
    /// Answered once every write sent before it has been committed (or has failed).
    Flush(oneshot::Sender<()>),
    /// One bounded pruning transaction; answered with the rows it deleted.
    Prune {
        step: PruneStep,
        reply: oneshot::Sender<rusqlite::Result<u64>>,
    },
    /// Stop: commit what is queued before it, optionally mark what is in flight
    /// `cancelled`, close the connection and the lock, then answer.
    Close {
        cancel_in_flight: bool,
        reply: oneshot::Sender<()>,
    },
}

impl Write {
    /// What the write does, for error messages.
    pub(super) fn op(&self) -> &'static str {
        match self {
            Write::TickStarted { .. } => "record a tick start",
            Write::TickFinished { .. } => "record a tick's results",
            Write::Procs { .. } => "record processes",
            Write::ProcsCleared { .. } => "clear a task's processes",
            Write::Paused { .. } => "record a pause",
            Write::Halted { .. } => "record the halt",
            Write::Quarantine(_) => "record a quarantine",
            Write::QuarantineCleared { .. } => "clear a quarantine",
            Write::Audit { .. } => "append to the audit log",
            Write::Flush(_) => "flush",
            Write::Prune { .. } => "prune history",
            Write::Close { .. } => "close",
        }
    }
}

/// Runs the writer until [`Write::Close`] or until every handle is gone (then it stops
/// without touching runs in flight: the next open marks them interrupted, as after a crash).
pub(super) fn run(
    conn: Connection,
    lock: File,
    mut rx: mpsc::UnboundedReceiver<Write>,
    shared: Arc<Shared>,
) {
    let identity = file_identity(&shared.path);
    let mut writer = Writer {
        conn,
        shared,
        identity,
    };
    let mut close = None;
    let mut late = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(w) => group.push(w),
                Err(_) => break,
            }
        }
        let mut plain = Vec::new();
        let mut group = group.into_iter();
        for w in group.by_ref() {
            match w {
                Write::Flush(reply) => {
                    writer.commit_group(std::mem::take(&mut plain));
                    writer.done(1);
                    let _ = reply.send(());
                }
                Write::Prune { step, reply } => {
                    writer.commit_group(std::mem::take(&mut plain));
                    let result = writer.prune(&step);
                    writer.done(1);
                    if let Err(e) = &result {
                        writer.failed("prune history", e);
                    }
                    let _ = reply.send(result);
                }
                Write::Close {
                    cancel_in_flight,
                    reply,
                } => {
                    writer.commit_group(std::mem::take(&mut plain));
                    writer.done(1);
                    close = Some((cancel_in_flight, reply));
                    break;
                }
                w => plain.push(w),
            }
        }
        writer.commit_group(plain);
        if close.is_some() {
            late.extend(group);
            break;
        }
    }
    // From here on sends fail at the call; what was queued after the close is lost.
    rx.close();
    while let Ok(w) = rx.try_recv() {
        late.push(w);
    }
    drop(rx);
    for w in late {
        writer.done(1);
        if !matches!(w, Write::Flush(_)) {
            writer.shared.lost_after_shutdown(w.op());
        }
    }
    let reply = close.map(|(cancel, reply)| {
        if cancel && let Err(e) = writer.cancel_in_flight() {
            writer.failed("mark the runs in flight cancelled", &e);
        }
        // Cheap upkeep at a clean stop: refresh the planner's statistics, fold the WAL back.
        let _ = writer
            .conn
            .execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);");
        reply
    });
    drop(writer);
    drop(lock);
    if let Some(reply) = reply {
        let _ = reply.send(());
    }
}

/// Device and inode of the file, to notice it being deleted or replaced.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    /// The file's device and inode at open.
    identity: Option<(u64, u64)>,
}

impl Writer {
    fn path(&self) -> &PathBuf {
        &self.shared.path
    }

    /// `n` queued writes were handled.
    fn done(&self, n: usize) {
        self.shared.done(n as u64);
    }

    fn failed(&self, op: &str, e: &rusqlite::Error) {
        self.record_error(format!(
            "state database {}: cannot {op}: {e}",
            self.path().display()
        ));
    }

    fn record_error(&self, message: String) {
        tracing::warn!(target: "quarry::state", "{message}");
        self.shared.write_failed(message);
    }

    /// Commits `writes` in one transaction, each under a savepoint.
    fn commit_group(&mut self, writes: Vec<Write>) {
        if writes.is_empty() {
            return;
        }
        let n = writes.len();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            self.failed(writes[0].op(), &e);
            self.done(n);
            return;
        }
        let mut all_ok = true;
        for w in &writes {
            let applied = self
                .conn
                .execute_batch("SAVEPOINT w")
                .and_then(|()| self.apply(w));
            let end = match &applied {
                Ok(()) => "RELEASE w",
                Err(_) => "ROLLBACK TO w; RELEASE w",
            };
            if let Err(e) = applied.and_then(|()| self.conn.execute_batch(end)) {
                all_ok = false;
                self.failed(w.op(), &e);
            }
        }
        match self.conn.execute_batch("COMMIT") {
            // SQLite goes on writing to a deleted file without an error; only the path tells.
            Ok(()) if self.identity.is_some() && file_identity(self.path()) != self.identity => {
                let e = "the file was deleted or replaced while Quarry had it open; \
                         what is written now is lost at the next restart";
                self.record_error(format!("state database {}: {e}", self.path().display()));
            }
            Ok(()) if all_ok => self.shared.write_ok(),
            Ok(()) => {}
            Err(e) => {
                self.failed(writes[0].op(), &e);
                let _ = self.conn.execute_batch("ROLLBACK");
            }
        }
        self.done(n);
    }

    fn apply(&self, w: &Write) -> rusqlite::Result<()> {
        let c = &self.conn;
        match w {
            Write::TickStarted { id, start } => self.tick_started(*id, start),
            Write::TickFinished {
                id,
                runs,
                outcome,
                ended_at,
            } => self.tick_finished(*id, runs, *outcome, *ended_at),
            Write::Procs { task, changes, at } => {
                let mut set = c.prepare_cached(
                    "INSERT INTO procs (task, worker, pid, start_time, running, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (task, worker) DO UPDATE SET
                         pid = excluded.pid, start_time = excluded.start_time,
                         running = excluded.running, updated_at = excluded.updated_at",
                )?;
                let mut clear =
                    c.prepare_cached("DELETE FROM procs WHERE task = ?1 AND worker = ?2")?;
                for change in changes {
                    match change {
                        ProcChange::Set {
                            worker,
                            pid,
                            start_time,
                            running,
                        } => {
                            let start_time = start_time.and_then(|t| i64::try_from(t).ok());
                            set.execute(params![
                                task,
                                worker,
                                pid,
                                start_time,
                                running,
                                to_ms(*at)
                            ])?;
                        }
                        ProcChange::Clear { worker } => {
                            clear.execute(params![task, worker])?;
                        }
                    }
                }
                Ok(())
            }
            Write::ProcsCleared { task } => {
                c.prepare_cached("DELETE FROM procs WHERE task = ?1")?
                    .execute(params![task])?;
                Ok(())
            }
            Write::Paused {
                task,
                paused,
                reason,
                at,
            } => {
                c.prepare_cached(
                    "INSERT INTO task_state (task, paused, paused_reason, updated_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (task) DO UPDATE SET paused = excluded.paused,
                         paused_reason = excluded.paused_reason, updated_at = excluded.updated_at",
                )?
                .execute(params![task, paused, reason, to_ms(*at)])?;
                Ok(())
            }
            Write::Halted {
                halted: true,
                reason,
                at,
            } => {
                c.prepare_cached(
                    "INSERT INTO halt (id, reason, since) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET reason = excluded.reason",
                )?
                .execute(params![reason, to_ms(*at)])?;
                Ok(())
            }
            Write::Halted { halted: false, .. } => {
                c.execute("DELETE FROM halt", [])?;
                Ok(())
            }
            Write::Quarantine(q) => {
                c.prepare_cached(
                    "INSERT INTO quarantine (task, worker, since, until, consecutive_failures, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (task, worker) DO UPDATE SET since = excluded.since,
                         until = excluded.until, reason = excluded.reason,
                         consecutive_failures = excluded.consecutive_failures",
                )?
                .execute(params![
                    q.task,
                    q.worker,
                    to_ms(q.since),
                    q.until.map(to_ms),
                    q.consecutive_failures,
                    q.reason
                ])?;
                Ok(())
            }
            Write::QuarantineCleared { task, worker } => {
                c.prepare_cached("DELETE FROM quarantine WHERE task = ?1 AND worker = ?2")?
                    .execute(params![task, worker])?;
                Ok(())
            }
            Write::Audit { entry, at } => {
                let body = entry.body.as_ref().map(|b| b.to_string());
                c.prepare_cached(
                    "INSERT INTO audit (at, actor, action, target, body, result)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    to_ms(*at),
                    entry.actor,
                    entry.action,
                    entry.target,
                    body,
                    entry.result
                ])?;
                Ok(())
            }
            Write::Flush(_) | Write::Prune { .. } | Write::Close { .. } => Ok(()),
        }
    }

    /// The tick row and one `running` run per worker.
    fn tick_started(&self, id: TickId, s: &TickStart) -> rusqlite::Result<()> {
        let c = &self.conn;
        c.prepare_cached(
            "INSERT INTO ticks (id, task, plugin_version, plugin_sha256, trigger, started_at,
                                outcome, worker_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7)",
        )?
        .execute(params![
            id.0,
            s.task,
            s.plugin_version,
            s.plugin_sha256,
            s.trigger,
            to_ms(s.started_at),
            s.workers.len() as i64
        ])?;
        let mut run = c.prepare_cached(
            "INSERT OR IGNORE INTO runs (tick_id, task, worker, started_at, outcome)
             VALUES (?1, ?2, ?3, ?4, 'running')",
        )?;
        let started = to_ms(s.started_at);
        for worker in &s.workers {
            run.execute(params![id.0, s.task, worker, started])?;
        }
        Ok(())
    }

    /// Each worker's result (a worker the start did not list gets a new run), the grid's
    /// last outcome, `cancelled` for workers without a result, and the tick's outcome.
    fn tick_finished(
        &self,
        id: TickId,
        runs: &[RunRecord],
        outcome: TickStatus,
        ended_at: DateTime<Utc>,
    ) -> rusqlite::Result<()> {
        let c = &self.conn;
        let mut update = c.prepare_cached(
            "UPDATE runs SET started_at = ?3, ended_at = ?4, outcome = ?5, error_type = ?6,
                             error = ?7, pid = ?8, detail = ?9, attempt = ?10
             WHERE tick_id = ?1 AND worker = ?2
             RETURNING id, task",
        )?;
        let mut insert = c.prepare_cached(
            "INSERT INTO runs (tick_id, task, worker, started_at, ended_at, outcome, error_type,
                               error, pid, detail, attempt)
             SELECT ?1, task, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 FROM ticks WHERE id = ?1
             RETURNING id, task",
        )?;
        let mut last = c.prepare_cached(
            "INSERT INTO last_runs (task, worker, run_id, outcome, ended_at, error_type)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (task, worker) DO UPDATE SET
                 run_id = excluded.run_id, outcome = excluded.outcome,
                 ended_at = excluded.ended_at, error_type = excluded.error_type
             WHERE excluded.run_id >= last_runs.run_id",
        )?;
        let (mut success, mut failed) = (0i64, 0i64);
        for r in runs {
            match r.outcome {
                RunOutcome::Success | RunOutcome::Started | RunOutcome::Skipped => success += 1,
                RunOutcome::Failed | RunOutcome::Timeout => failed += 1,
                _ => {}
            }
            let error_type = r.error_type.map(|t| t.as_str());
            let error = r.error.as_deref().map(truncate_error);
            let detail = r
                .detail
                .as_ref()
                .map(|d| serde_json::to_string(d).unwrap_or_default());
            let values = params![
                id.0,
                r.worker,
                to_ms(r.started_at),
                to_ms(r.ended_at),
                r.outcome,
                error_type,
                error,
                r.pid,
                detail,
                r.attempt
            ];
            let row =
                |row: &rusqlite::Row<'_>| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?));
            let (run_id, task) = match update.query_row(values, row) {
                Err(rusqlite::Error::QueryReturnedNoRows) => match insert.query_row(values, row) {
                    // The tick's start was never recorded (it failed): nothing to attach to.
                    Err(rusqlite::Error::QueryReturnedNoRows) => continue,
                    other => other?,
                },
                other => other?,
            };
            last.execute(params![
                task,
                r.worker,
                run_id,
                r.outcome,
                to_ms(r.ended_at),
                error_type
            ])?;
        }
        let ended = to_ms(ended_at);
        let mut cancel = c.prepare_cached(
            "UPDATE runs SET outcome = 'cancelled', ended_at = ?2, error_type = ?3, error = ?4
             WHERE tick_id = ?1 AND outcome = 'running'
             RETURNING id, task, worker",
        )?;
        let cancelled = cancel
            .query_map(
                params![id.0, ended, CANCELLED_TYPE, NO_RESULT_ERROR],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (run_id, task, worker) in cancelled {
            last.execute(params![
                task,
                worker,
                run_id,
                RunOutcome::Cancelled,
                ended,
                CANCELLED_TYPE
            ])?;
        }
        c.prepare_cached(
            "UPDATE ticks SET ended_at = ?2, outcome = ?3, success_count = ?4, failed_count = ?5
             WHERE id = ?1",
        )?
        .execute(params![id.0, ended, outcome, success, failed])?;
        Ok(())
    }

    /// At a clean shutdown: runs and ticks still in flight become `cancelled`.
    fn cancel_in_flight(&self) -> rusqlite::Result<()> {
        let now = to_ms(Utc::now());
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let run = || {
            end_in_flight(
                &self.conn,
                RunOutcome::Cancelled,
                CANCELLED_TYPE,
                SHUTDOWN_ERROR,
                now,
            )
        };
        match run() {
            Ok(_) => self.conn.execute_batch("COMMIT"),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// One bounded pruning transaction: up to `step.batch` runs of doomed ticks, or, when
    /// they have none left, up to `step.batch` doomed ticks without runs (and, for the age
    /// limit, grid cells not refreshed since the cutoff).
    fn prune(&self, step: &PruneStep) -> rusqlite::Result<u64> {
        let c = &self.conn;
        let batch = step.batch as i64;
        // Each rule walks its own index: `ticks_started` by age, `ticks_task` by task.
        let (doomed, order, args): (&str, &str, Vec<rusqlite::types::Value>) = match &step.doomed {
            Doomed::Older { cutoff } => (
                "started_at < ?2 AND outcome != 'running'",
                "started_at",
                vec![(*cutoff).into()],
            ),
            Doomed::TaskBelow { task, tick } => (
                "task = ?2 AND id < ?3 AND outcome != 'running'",
                "id",
                vec![task.as_str().to_string().into(), tick.0.into()],
            ),
        };
        let mut all = vec![rusqlite::types::Value::from(batch)];
        all.extend(args);
        let params = || rusqlite::params_from_iter(all.iter());
        let runs = c
            .prepare_cached(&format!(
                "DELETE FROM runs WHERE id IN (
                     SELECT r.id FROM runs r
                     WHERE r.tick_id IN (SELECT id FROM ticks WHERE {doomed} ORDER BY {order} LIMIT 16)
                     LIMIT ?1)"
            ))?
            .execute(params())?;
        if runs > 0 {
            return Ok(runs as u64);
        }
        let ticks = c
            .prepare_cached(&format!(
                "DELETE FROM ticks WHERE id IN (
                     SELECT t.id FROM ticks t
                     WHERE {doomed}
                       AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.tick_id = t.id)
                     ORDER BY t.{order} LIMIT ?1)"
            ))?
            .execute(params())?;
        if ticks > 0 {
            return Ok(ticks as u64);
        }
        if let Doomed::Older { cutoff } = step.doomed {
            let cells = c
                .prepare_cached(
                    "DELETE FROM last_runs WHERE (task, worker) IN (
                         SELECT task, worker FROM last_runs WHERE ended_at < ?2 LIMIT ?1)",
                )?
                .execute(params![batch, cutoff])?;
            return Ok(cells as u64);
        }
        Ok(0)
    }
}
