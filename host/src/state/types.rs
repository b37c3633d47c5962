//! What goes into the state store and what comes out: records the scheduler and the API
//! write, rows the readers get back, and the enums stored as text.
//!
//! Times are `DateTime<Utc>` here and unix milliseconds in the database; rows serialize
//! them as RFC 3339 with milliseconds (`2026-05-01T12:00:00.123Z`) and task names as text.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

use crate::error::ErrorType;
use crate::report::{TickOutcome, WorkerOutcome};
use crate::task::TaskName;

/// A tick's id: allocated by [`super::StateHandle::tick_started`] (no round trip to the
/// database), passed back to [`super::StateHandle::tick_finished`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TickId(pub i64);

/// A run's id (a row of `runs`), the keyset cursor of a [`Page`] of runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RunId(pub i64);

pub use crate::task::Trigger;

/// How a (task, worker) run ended, or that it has not yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// In flight: written at tick start, replaced when the tick finishes.
    Running,
    /// Task finished successfully.
    Success,
    /// Task started a long-lived process.
    Started,
    /// The gate decided not to run.
    Skipped,
    /// Failed.
    Failed,
    /// Ran out of time.
    Timeout,
    /// Quarry stopped without a clean shutdown while the run was in flight (set on the next
    /// [`super::StateDb::open`]).
    Interrupted,
    /// Quarry shut down cleanly while the run was in flight, or the tick was cancelled.
    Cancelled,
    /// Not started: the task is quarantined on the worker.
    Quarantined,
}

impl From<WorkerOutcome> for RunOutcome {
    fn from(o: WorkerOutcome) -> Self {
        match o {
            WorkerOutcome::Success => RunOutcome::Success,
            WorkerOutcome::Started => RunOutcome::Started,
            WorkerOutcome::Skipped => RunOutcome::Skipped,
            WorkerOutcome::Failed => RunOutcome::Failed,
            WorkerOutcome::Timeout => RunOutcome::Timeout,
        }
    }
}

/// A tick's outcome, or that it has not ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TickStatus {
    /// In flight.
    Running,
    /// No workers.
    NoWorkers,
    /// Every worker failed or timed out.
    Failed,
    /// Some failed.
    Partial,
    /// Every worker skipped.
    Skipped,
    /// Otherwise.
    Success,
    /// Quarry stopped without a clean shutdown during the tick.
    Interrupted,
    /// Quarry shut down cleanly during the tick, or it was cancelled.
    Cancelled,
}

impl From<TickOutcome> for TickStatus {
    fn from(o: TickOutcome) -> Self {
        match o {
            TickOutcome::NoWorkers => TickStatus::NoWorkers,
            TickOutcome::Failed => TickStatus::Failed,
            TickOutcome::Partial => TickStatus::Partial,
            TickOutcome::Skipped => TickStatus::Skipped,
            TickOutcome::Success => TickStatus::Success,
        }
    }
}

/// Stores a type with `as_str` and `parse` as TEXT.
macro_rules! sql_text {
    ($ty:ident) => {
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $ty::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} {text:?}", stringify!($ty)).into())
                })
            }
        }
    };
}

/// Enums stored as their serde names in TEXT columns.
macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The text stored in the database (and serialized).
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }

            /// The value stored as `text`, if any.
            pub fn parse(text: &str) -> Option<$ty> {
                match text { $($text => Some($ty::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        sql_text!($ty);
    };
}

sql_text!(Trigger);
text_enum!(RunOutcome {
    Running => "running",
    Success => "success",
    Started => "started",
    Skipped => "skipped",
    Failed => "failed",
    Timeout => "timeout",
    Interrupted => "interrupted",
    Cancelled => "cancelled",
    Quarantined => "quarantined",
});
text_enum!(TickStatus {
    Running => "running",
    NoWorkers => "no_workers",
    Failed => "failed",
    Partial => "partial",
    Skipped => "skipped",
    Success => "success",
    Interrupted => "interrupted",
    Cancelled => "cancelled",
});

impl ToSql for TaskName {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for TaskName {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        TaskName::new(value.as_str()?).map_err(|e| FromSqlError::Other(e.into()))
    }
}

/// Unix milliseconds, as times are stored.
pub(super) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored time; out-of-range values (never written by Quarry) read as the epoch.
pub(super) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

fn ser_task<S: serde::Serializer>(t: &TaskName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

// ---------------------------------------------------------------------------------------
// Written by the scheduler and the API.

/// The start of a tick: the task, the plugin version it runs and the workers it runs on.
#[derive(Clone, Debug)]
pub struct TickStart {
    /// Task name.
    pub task: TaskName,
    /// The plugin's own version (`describe`).
    pub plugin_version: String,
    /// SHA-256 of the plugin file, hex.
    pub plugin_sha256: String,
    /// What started the tick.
    pub trigger: Trigger,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The workers, each named as [`RunRecord::worker`] will name it (the worker address as
    /// it displays: `host:port` or `local`); one `running` run is recorded per worker.
    pub workers: Vec<String>,
}

/// How a (task, worker) run of a tick ended.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// The worker, as named in [`TickStart::workers`].
    pub worker: String,
    /// When the run on this worker started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: DateTime<Utc>,
    /// How it ended (not [`RunOutcome::Running`]).
    pub outcome: RunOutcome,
    /// Kind of error, if it failed.
    pub error_type: Option<ErrorType>,
    /// Error text (cut to [`crate::report::ERROR_MAX_BYTES`] when stored).
    pub error: Option<String>,
    /// Pid the task reported.
    pub pid: Option<u32>,
    /// The task's detail object.
    pub detail: Option<serde_json::Map<String, serde_json::Value>>,
    /// Which attempt this was (1 = the first).
    pub attempt: u32,
}

/// A change to the process-tracking memory of one worker (see [`ProcRow`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcChange {
    /// What the last run of the task on `worker` recorded.
    Set {
        /// The worker.
        worker: String,
        /// The process it reported.
        pid: Option<u32>,
        /// That process's start time (`/proc/<pid>/stat` field 22, clock ticks since boot).
        start_time: Option<u64>,
        /// The run said `running`: its process is a job or daemon that must not be doubled.
        running: bool,
    },
    /// Forget `worker` (its status file may say something else; read it next time).
    Clear {
        /// The worker.
        worker: String,
    },
}

/// A (task, worker) pair in quarantine: not run until `until` (or until cleared).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quarantine {
    /// Task name.
    #[serde(serialize_with = "ser_task")]
    pub task: TaskName,
    /// The worker.
    pub worker: String,
    /// Since when.
    #[serde(serialize_with = "ser_time")]
    pub since: DateTime<Utc>,
    /// Until when; `None` = until cleared.
    #[serde(serialize_with = "ser_opt_time")]
    pub until: Option<DateTime<Utc>>,
    /// Failures in a row that led to it.
    pub consecutive_failures: u32,
    /// Why.
    pub reason: String,
}

/// One mutating API call, for the audit log.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Who (user, token name, `cli`).
    pub actor: String,
    /// What (`pause`, `run_now`, `quarantine.clear`, …).
    pub action: String,
    /// On what (a task, a worker, `task/worker`).
    pub target: String,
    /// The request body, if any.
    pub body: Option<serde_json::Value>,
    /// What came of it (`ok`, an error text, an HTTP status).
    pub result: String,
}

/// How long history is kept. Pruning removes whole ticks with their runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Ticks that started more than this many days ago are deleted; `None` = no age limit.
    pub max_age_days: Option<u32>,
    /// Per task, ticks older than the newest `max_runs_per_task` runs are deleted (whole
    /// ticks, so at least that many runs stay); `None` = no count limit.
    pub max_runs_per_task: Option<u64>,
}

// ---------------------------------------------------------------------------------------
// Read back.

/// A row of `ticks`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TickRow {
    /// Id.
    pub id: TickId,
    /// Task name.
    #[serde(serialize_with = "ser_task")]
    pub task: TaskName,
    /// Plugin version.
    pub plugin_version: String,
    /// Plugin SHA-256.
    pub plugin_sha256: String,
    /// What started it.
    pub trigger: Trigger,
    /// Start.
    #[serde(serialize_with = "ser_time")]
    pub started_at: DateTime<Utc>,
    /// End; `None` while running.
    #[serde(serialize_with = "ser_opt_time")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Outcome.
    pub outcome: TickStatus,
    /// Workers at start.
    pub worker_count: u32,
    /// success + started + skipped (as in the run report).
    pub success_count: u32,
    /// failed + timeout (as in the run report).
    pub failed_count: u32,
}

/// A row of `runs`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRow {
    /// Id.
    pub id: RunId,
    /// The tick it belongs to.
    pub tick_id: TickId,
    /// Task name.
    #[serde(serialize_with = "ser_task")]
    pub task: TaskName,
    /// The worker.
    pub worker: String,
    /// Plugin version.
    pub plugin_version: String,
    /// Plugin SHA-256.
    pub plugin_sha256: String,
    /// Start.
    #[serde(serialize_with = "ser_time")]
    pub started_at: DateTime<Utc>,
    /// End; `None` while running.
    #[serde(serialize_with = "ser_opt_time")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Outcome.
    pub outcome: RunOutcome,
    /// Kind of error: an [`ErrorType`] name, or `Interrupted` / `Cancelled`. Text, so that
    /// names written by other Quarry versions still read.
    pub error_type: Option<String>,
    /// Error text.
    pub error: Option<String>,
    /// Pid the task reported.
    pub pid: Option<u32>,
    /// The task's detail object.
    pub detail: Option<serde_json::Value>,
    /// Attempt number (1 = the first).
    pub attempt: u32,
}

/// Which runs [`super::StateHandle::runs`] returns; every field narrows, `None` = any.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFilter {
    /// Only this task.
    pub task: Option<TaskName>,
    /// Only this worker.
    pub worker: Option<String>,
    /// Only this outcome.
    pub outcome: Option<RunOutcome>,
    /// Only the runs of this tick.
    pub tick: Option<TickId>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Started before.
    pub until: Option<DateTime<Utc>>,
}

/// A page of a list, newest first, by keyset: `before` the id of the last row of the
/// previous page to go on to older rows, or `after` the id of the first row to come back to
/// newer ones (the page is still returned newest first). `limit` is capped at
/// [`super::MAX_PAGE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows at most.
    pub limit: u32,
    /// Only ids below this.
    pub before: Option<i64>,
    /// Only ids above this.
    pub after: Option<i64>,
}

impl Page {
    /// The newest `limit` rows.
    pub fn first(limit: u32) -> Page {
        Page {
            limit,
            before: None,
            after: None,
        }
    }

    /// The `limit` rows older than id `before`.
    pub fn before(before: i64, limit: u32) -> Page {
        Page {
            limit,
            before: Some(before),
            after: None,
        }
    }

    /// The `limit` rows newer than id `after` (the oldest of them, returned newest first).
    pub fn after(after: i64, limit: u32) -> Page {
        Page {
            limit,
            before: None,
            after: Some(after),
        }
    }
}

/// The last finished run of a task on a worker (one cell of the task × worker grid).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastOutcome {
    /// Task name.
    #[serde(serialize_with = "ser_task")]
    pub task: TaskName,
    /// The worker.
    pub worker: String,
    /// The run.
    pub run_id: RunId,
    /// Its outcome.
    pub outcome: RunOutcome,
    /// Its end.
    #[serde(serialize_with = "ser_time")]
    pub ended_at: DateTime<Utc>,
    /// Its kind of error.
    pub error_type: Option<String>,
}

/// The process-tracking memory: what the last run of a task recorded on a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcRow {
    /// Task name.
    #[serde(serialize_with = "ser_task")]
    pub task: TaskName,
    /// The worker.
    pub worker: String,
    /// The process it reported.
    pub pid: Option<u32>,
    /// That process's start time (clock ticks since boot).
    pub start_time: Option<u64>,
    /// The run said `running`.
    pub running: bool,
    /// When this was recorded.
    #[serde(serialize_with = "ser_time")]
    pub updated_at: DateTime<Utc>,
}

/// A task's pause state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskStateRow {
    /// Task name.
    #[serde(serialize_with = "ser_task")]
    pub task: TaskName,
    /// Not scheduled while true.
    pub paused: bool,
    /// Why.
    pub paused_reason: Option<String>,
    /// When this was set.
    #[serde(serialize_with = "ser_time")]
    pub updated_at: DateTime<Utc>,
}

/// The global halt: no task is scheduled while it is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Halt {
    /// Why.
    pub reason: Option<String>,
    /// Since when.
    #[serde(serialize_with = "ser_time")]
    pub since: DateTime<Utc>,
}

/// A row of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRow {
    /// Id (the keyset cursor of [`Page`]).
    pub id: i64,
    /// When.
    #[serde(serialize_with = "ser_time")]
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// The request body.
    pub body: Option<serde_json::Value>,
    /// What came of it.
    pub result: String,
}

/// What [`super::StateDb::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Schema version before opening (0 = new file).
    pub schema_from: i64,
    /// Schema version now.
    pub schema_to: i64,
    /// Ticks that were in flight, now `interrupted`.
    pub ticks_interrupted: u64,
    /// Runs that were in flight, now `interrupted`.
    pub runs_interrupted: u64,
    /// Process-tracking rows kept.
    pub procs: u64,
    /// Paused tasks.
    pub paused_tasks: u64,
    /// (task, worker) pairs in quarantine.
    pub quarantines: u64,
    /// Whether the global halt is set.
    pub halted: bool,
}

/// The writer's health, for a status endpoint or a metric.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The last write committed (or nothing failed yet).
    pub healthy: bool,
    /// Writes that failed since open (each lost).
    pub write_errors: u64,
    /// The last failure, naming the file and the operation.
    pub last_error: Option<String>,
    /// Writes queued, not yet committed.
    pub queued: u64,
}
