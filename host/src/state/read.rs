//! The queries behind [`super::StateHandle`]'s reads, each on a read-only connection. They
//! run on a blocking thread (see `StateHandle::read`); WAL lets them run while the writer
//! commits, and each sees the database as of its first statement.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::MAX_PAGE;
use super::retention::Doomed;
use super::types::{
    AuditRow, Halt, LastOutcome, Page, ProcRow, Quarantine, Retention, RunFilter, RunId, RunRow,
    TaskStateRow, TickId, TickRow, from_ms,
};
use crate::task::TaskName;

/// A `SELECT` narrowed by `WHERE` conditions with bound values, fetched one keyset page at
/// a time, newest first.
#[derive(Default)]
struct Keyset {
    conds: Vec<String>,
    args: Vec<Value>,
}

impl Keyset {
    /// Adds the condition `{test} ?N` (e.g. `r.task =`) with `value` bound to `?N`.
    fn and(&mut self, test: &str, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        self.conds.push(format!("{test} ?{}", self.args.len()));
        self
    }

    /// `select` (columns and `FROM`) with the conditions and `page` over the id column
    /// `id`. Going forward from `after` takes the rows just above it, then reverses them,
    /// so every page comes back newest first.
    fn fetch<T>(
        mut self,
        c: &Connection,
        select: &str,
        id: &str,
        page: &Page,
        row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        if let Some(before) = page.before {
            self.and(&format!("{id} <"), before);
        }
        if let Some(after) = page.after {
            self.and(&format!("{id} >"), after);
        }
        let forward = page.after.is_some() && page.before.is_none();
        self.args.push(i64::from(page.limit.min(MAX_PAGE)).into());
        let filter = if self.conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conds.join(" AND "))
        };
        let order = if forward { "ASC" } else { "DESC" };
        let sql = format!(
            "{select} {filter} ORDER BY {id} {order} LIMIT ?{}",
            self.args.len()
        );
        let mut rows = c
            .prepare_cached(&sql)?
            .query_map(params_from_iter(self.args.iter()), row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if forward {
            rows.reverse();
        }
        Ok(rows)
    }
}

const RUN_COLUMNS: &str = "r.id, r.tick_id, r.task, r.worker, t.plugin_version, \
     t.plugin_sha256, r.started_at, r.ended_at, r.outcome, r.error_type, r.error, r.pid, \
     r.detail, r.attempt";

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    let detail: Option<String> = row.get(12)?;
    Ok(RunRow {
        id: RunId(row.get(0)?),
        tick_id: TickId(row.get(1)?),
        task: row.get(2)?,
        worker: row.get(3)?,
        plugin_version: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
        plugin_sha256: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
        started_at: from_ms(row.get(6)?),
        ended_at: row.get::<_, Option<i64>>(7)?.map(from_ms),
        outcome: row.get(8)?,
        error_type: row.get(9)?,
        error: row.get(10)?,
        pid: row.get(11)?,
        detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
        attempt: row.get(13)?,
    })
}

/// Runs matching `filter`, one keyset page, newest first.
pub(super) fn runs(
    c: &Connection,
    filter: &RunFilter,
    page: &Page,
) -> rusqlite::Result<Vec<RunRow>> {
    let mut q = Keyset::default();
    if let Some(task) = &filter.task {
        q.and("r.task =", task.as_str().to_owned());
    }
    if let Some(worker) = &filter.worker {
        q.and("r.worker =", worker.clone());
    }
    if let Some(outcome) = filter.outcome {
        q.and("r.outcome =", outcome.as_str().to_owned());
    }
    if let Some(tick) = filter.tick {
        q.and("r.tick_id =", tick.0);
    }
    if let Some(since) = filter.since {
        q.and("r.started_at >=", since.timestamp_millis());
    }
    if let Some(until) = filter.until {
        q.and("r.started_at <", until.timestamp_millis());
    }
    let select = format!("SELECT {RUN_COLUMNS} FROM runs r LEFT JOIN ticks t ON t.id = r.tick_id");
    q.fetch(c, &select, "r.id", page, run_row)
}

/// One run.
pub(super) fn run(c: &Connection, id: RunId) -> rusqlite::Result<Option<RunRow>> {
    c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs r LEFT JOIN ticks t ON t.id = r.tick_id WHERE r.id = ?1"
    ))?
    .query_row(params![id.0], run_row)
    .optional()
}

const TICK_COLUMNS: &str = "id, task, plugin_version, plugin_sha256, trigger, started_at, \
     ended_at, outcome, worker_count, success_count, failed_count";

fn tick_row(row: &Row<'_>) -> rusqlite::Result<TickRow> {
    Ok(TickRow {
        id: TickId(row.get(0)?),
        task: row.get(1)?,
        plugin_version: row.get(2)?,
        plugin_sha256: row.get(3)?,
        trigger: row.get(4)?,
        started_at: from_ms(row.get(5)?),
        ended_at: row.get::<_, Option<i64>>(6)?.map(from_ms),
        outcome: row.get(7)?,
        worker_count: row.get(8)?,
        success_count: row.get(9)?,
        failed_count: row.get(10)?,
    })
}

/// Ticks (of one task, or all), one keyset page, newest first.
pub(super) fn ticks(
    c: &Connection,
    task: Option<&TaskName>,
    page: &Page,
) -> rusqlite::Result<Vec<TickRow>> {
    let mut q = Keyset::default();
    if let Some(task) = task {
        q.and("task =", task.as_str().to_owned());
    }
    q.fetch(
        c,
        &format!("SELECT {TICK_COLUMNS} FROM ticks"),
        "id",
        page,
        tick_row,
    )
}

/// One tick.
pub(super) fn tick(c: &Connection, id: TickId) -> rusqlite::Result<Option<TickRow>> {
    c.prepare_cached(&format!("SELECT {TICK_COLUMNS} FROM ticks WHERE id = ?1"))?
        .query_row(params![id.0], tick_row)
        .optional()
}

/// `select` on a table keyed by (task, worker), for one task or all, in key order.
fn by_task<T>(
    c: &Connection,
    select: &str,
    task: Option<&TaskName>,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    match task {
        Some(task) => c
            .prepare_cached(&format!("{select} WHERE task = ?1 ORDER BY worker"))?
            .query_map(params![task], row)?
            .collect(),
        None => c
            .prepare_cached(&format!("{select} ORDER BY task, worker"))?
            .query_map([], row)?
            .collect(),
    }
}

/// The last finished run of every (task, worker), or of one task's workers.
pub(super) fn last_outcomes(
    c: &Connection,
    task: Option<&TaskName>,
) -> rusqlite::Result<Vec<LastOutcome>> {
    let row = |row: &Row<'_>| {
        Ok(LastOutcome {
            task: row.get(0)?,
            worker: row.get(1)?,
            run_id: RunId(row.get(2)?),
            outcome: row.get(3)?,
            ended_at: from_ms(row.get(4)?),
            error_type: row.get(5)?,
        })
    };
    by_task(
        c,
        "SELECT task, worker, run_id, outcome, ended_at, error_type FROM last_runs",
        task,
        row,
    )
}

/// The process-tracking memory, of one task or all.
pub(super) fn procs(c: &Connection, task: Option<&TaskName>) -> rusqlite::Result<Vec<ProcRow>> {
    let row = |row: &Row<'_>| {
        Ok(ProcRow {
            task: row.get(0)?,
            worker: row.get(1)?,
            pid: row.get(2)?,
            start_time: row
                .get::<_, Option<i64>>(3)?
                .and_then(|t| u64::try_from(t).ok()),
            running: row.get(4)?,
            updated_at: from_ms(row.get(5)?),
        })
    };
    by_task(
        c,
        "SELECT task, worker, pid, start_time, running, updated_at FROM procs",
        task,
        row,
    )
}

/// Every task's pause state.
pub(super) fn task_states(c: &Connection) -> rusqlite::Result<Vec<TaskStateRow>> {
    c.prepare_cached(
        "SELECT task, paused, paused_reason, updated_at FROM task_state ORDER BY task",
    )?
    .query_map([], |row| {
        Ok(TaskStateRow {
            task: row.get(0)?,
            paused: row.get(1)?,
            paused_reason: row.get(2)?,
            updated_at: from_ms(row.get(3)?),
        })
    })?
    .collect()
}

/// The global halt, if set.
pub(super) fn halt(c: &Connection) -> rusqlite::Result<Option<Halt>> {
    c.prepare_cached("SELECT reason, since FROM halt")?
        .query_row([], |row| {
            Ok(Halt {
                reason: row.get(0)?,
                since: from_ms(row.get(1)?),
            })
        })
        .optional()
}

/// Every quarantined (task, worker).
pub(super) fn quarantines(c: &Connection) -> rusqlite::Result<Vec<Quarantine>> {
    c.prepare_cached(
        "SELECT task, worker, since, until, consecutive_failures, reason FROM quarantine
         ORDER BY task, worker",
    )?
    .query_map([], |row| {
        Ok(Quarantine {
            task: row.get(0)?,
            worker: row.get(1)?,
            since: from_ms(row.get(2)?),
            until: row.get::<_, Option<i64>>(3)?.map(from_ms),
            consecutive_failures: row.get(4)?,
            reason: row.get(5)?,
        })
    })?
    .collect()
}

/// The audit log, one keyset page, newest first.
pub(super) fn audit(c: &Connection, page: &Page) -> rusqlite::Result<Vec<AuditRow>> {
    let select = "SELECT id, at, actor, action, target, body, result FROM audit";
    Keyset::default().fetch(c, select, "id", page, |row| {
        let body: Option<String> = row.get(5)?;
        Ok(AuditRow {
            id: row.get(0)?,
            at: from_ms(row.get(1)?),
            actor: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            body: body.and_then(|b| serde_json::from_str(&b).ok()),
            result: row.get(6)?,
        })
    })
}

/// What pruning by `retention` would delete, as of `now_ms`: one age cutoff for all tasks,
/// and per task the tick below which the newest `max_runs_per_task` runs are not reached.
///
/// Strategy: the distinct tasks by a skip-scan of `ticks_task` (one index probe per task);
/// per task, the `max_runs_per_task`-th newest run by `runs_task`, read here on a reader so
/// that the index walk never occupies the writer.
pub(super) fn prune_plan(
    c: &Connection,
    retention: &Retention,
    now_ms: i64,
) -> rusqlite::Result<Vec<Doomed>> {
    let mut plan = Vec::new();
    if let Some(days) = retention.max_age_days {
        plan.push(Doomed::Older {
            cutoff: now_ms - i64::from(days) * 86_400_000,
        });
    }
    if let Some(keep) = retention.max_runs_per_task {
        let tasks: Vec<TaskName> = c
            .prepare_cached(
                "WITH RECURSIVE t(task) AS (
                     SELECT min(task) FROM ticks
                     UNION ALL
                     SELECT (SELECT min(task) FROM ticks WHERE task > t.task) FROM t
                     WHERE t.task IS NOT NULL)
                 SELECT task FROM t WHERE task IS NOT NULL",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut nth = c.prepare_cached(
            "SELECT tick_id FROM runs WHERE task = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
        )?;
        let offset = i64::try_from(keep.saturating_sub(1)).unwrap_or(i64::MAX);
        for task in tasks {
            let kept_from: Option<i64> = nth
                .query_row(params![task, offset], |r| r.get(0))
                .optional()?;
            if let Some(tick) = kept_from {
                plan.push(Doomed::TaskBelow {
                    task,
                    tick: TickId(tick),
                });
            }
        }
    }
    Ok(plan)
}
