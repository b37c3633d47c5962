//! The state store: Quarry's memory across ticks and restarts, in one SQLite file (WAL mode,
//! bundled SQLite). It records every tick and every (task, worker) run, the processes tasks
//! left running on workers, pause, halt and quarantine state, and an audit log of mutating
//! API calls.
//!
//! # Integration: what the scheduler and the server call, and when
//!
//! ```text
//! serve start      let db = StateDb::open(&path)?;            // path: quarry.state_db, default
//!                                                             //   default_path(report_dir)
//!                  log db.recovery()                          // runs/ticks marked interrupted
//!                  let state = db.handle();                   // clone into scheduler + server
//!                  state.all_procs().await?                   // → each task's run::Tracked
//!                                                             //   (WorkerAddr::parse(worker))
//!                  state.task_states().await?, state.halt().await?, state.quarantines().await?
//!                  tokio::spawn(run_retention(state.clone(), retention_rx, every, shutdown))
//! each tick        let id = state.tick_started(TickStart { task, plugin_version,
//!                      plugin_sha256, trigger, started_at: Utc::now(), workers });
//!                  … run the tick …
//!                  state.tick_finished(id, records, report.outcome);   // one RunRecord per
//!                                                                      //   worker result
//!                  state.procs_changed(&task, changes);   // only workers whose Tracked changed
//! task uninstalled state.procs_cleared(&task)
//! API mutations    state.set_paused / set_halted / set_quarantine / clear_quarantine, and
//!                  state.append_audit(entry) for every mutating call (then state.flush().await
//!                  if the answer must confirm it is committed)
//! API reads        state.runs / run / ticks / tick / last_outcomes / procs / … (async)
//! serve stop       scheduler.shutdown().await; then db.shutdown().await  // runs still in
//!                                                                        //   flight: cancelled
//! ```
//!
//! Workers are named the same way everywhere ([`TickStart::workers`], [`RunRecord::worker`],
//! [`ProcChange`]): `worker.addr().to_string()` (`host:port` or `local`), so that a restored
//! [`ProcRow`] maps back with `WorkerAddr::parse`.
//!
//! Writes never block and never fail at the call: they are queued and committed by the
//! writer; a failed write (disk full, file deleted) is logged and counted, and shows in
//! [`StateHandle::health`]. Reads see what the writer has committed: call
//! [`StateHandle::flush`] first to read one's own writes.
//!
//! # Ownership
//!
//! - The **writer** is one OS thread (`quarry-state-writer`) that owns the only write
//!   connection and the file lock. It receives `Write` messages on an unbounded `mpsc`
//!   channel, in order, and commits each group of queued messages in one transaction (a tick's
//!   10 000 runs are one message, so one transaction). It is a thread rather than a tokio task
//!   because every SQLite call blocks; a task would stall a runtime worker for each commit.
//!   It stops on [`StateDb::shutdown`] or when the last handle is dropped, then releases the
//!   lock. Commits are durable against a crash of Quarry; with `synchronous = NORMAL` the
//!   last ones may be lost to a power cut (never the file's consistency).
//! - [`StateDb`] belongs to whoever runs `serve`; [`StateHandle`]s are cheap clones (an `Arc`
//!   and a channel sender) for the scheduler, the server and the retention task.
//! - **Readers** are read-only connections in a small pool shared by the handles; each read
//!   runs on a blocking thread (`spawn_blocking`) and, thanks to WAL, alongside the writer; at
//!   most `READS_AT_ONCE` at a time, the others wait their turn without holding a thread.
//! - Tick ids are allocated by the handle from an atomic counter (the file lock makes this
//!   process the only writer), so [`StateHandle::tick_started`] needs no round trip.
//! - One process per file: [`StateDb::open`] takes an exclusive lock on the database file and
//!   refuses with [`StateError::Locked`] if another `quarry serve` has it.
//!
//! # Crash recovery
//!
//! [`StateDb::open`] marks every run still `running` and every unfinished tick `interrupted`
//! (`ended_at` = open time, `error_type` `Interrupted`, an error saying Quarry restarted) and
//! returns a [`Recovery`] with the counts. `procs`, `task_state`, `halt` and `quarantine` are
//! kept as they are: they are the memory a restart needs so as not to launch a second daemon
//! or resume a paused task. A clean [`StateDb::shutdown`] marks runs in flight `cancelled`.
//!
//! # Schema (version [`SCHEMA_VERSION`], in `PRAGMA user_version`)
//!
//! Times are UTC unix milliseconds (INTEGER); enums are their lower-case names (TEXT); JSON
//! is text. Migrations only go forward; a file from a newer Quarry is refused
//! ([`StateError::TooNew`]) before anything is changed.
//!
//! | table | columns | notes |
//! |---|---|---|
//! | `ticks` | `id` PK autoincrement, `task`, `plugin_version`, `plugin_sha256`, `trigger` (`schedule`/`api`/`cli`), `started_at`, `ended_at` (NULL in flight), `outcome` ([`TickStatus`]), `worker_count`, `success_count`, `failed_count` | indexes `(task, id)`, `(started_at)`, partial `(id) WHERE outcome = 'running'` |
//! | `runs` | `id` PK, `tick_id`, `task`, `worker`, `started_at`, `ended_at`, `outcome` ([`RunOutcome`]: `running` in flight), `error_type`, `error`, `pid`, `detail` (JSON object), `attempt` | unique `(tick_id, worker)`; `(task, id)`, `(worker, id)`; the plugin version and hash are the tick's (joined on read, not repeated 10 000 times per tick) |
//! | `last_runs` | `(task, worker)` PK, `run_id`, `outcome`, `ended_at`, `error_type` | the task × worker grid, kept by the writer at each tick's end |
//! | `procs` | `(task, worker)` PK, `pid`, `start_time` (clock ticks since boot), `running`, `updated_at` | the process-tracking memory (`run::Tracked`) |
//! | `task_state` | `task` PK, `paused`, `paused_reason`, `updated_at` | |
//! | `halt` | one row (`id` = 1) while halted: `reason`, `since` | |
//! | `quarantine` | `(task, worker)` PK, `since`, `until` (NULL = until cleared), `consecutive_failures`, `reason` | |
//! | `audit` | `id` PK, `at`, `actor`, `action`, `target`, `body` (JSON), `result` | never pruned |
//!
//! `runs.tick_id` refers to `ticks.id`; the writer keeps that consistent (no foreign key, so
//! that pruning can delete runs in batches before their tick).
//!
//! # Retention
//!
//! [`run_retention`] prunes by a [`Retention`] (age in days, runs per task) every interval,
//! whole ticks at a time, in batches of [`PRUNE_BATCH`] rows; see [`retention`].

mod error;
mod read;
pub mod retention;
mod schema;
mod types;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

pub use error::StateError;
pub use retention::{PRUNE_BATCH, Pruned, run_retention};
pub use schema::SCHEMA_VERSION;
pub use types::{
    AuditEntry, AuditRow, Halt, Health, LastOutcome, Page, ProcChange, ProcRow, Quarantine,
    Recovery, Retention, RunFilter, RunId, RunOutcome, RunRecord, RunRow, TaskStateRow, TickId,
    TickRow, TickStart, TickStatus, Trigger,
};
use writer::Write;

use crate::task::TaskName;

/// File name of the state database in the report directory, when `quarry.state_db` is unset.
pub const DEFAULT_FILE_NAME: &str = "quarry-state.db";

/// Rows a page returns at most, whatever it asks for.
pub const MAX_PAGE: u32 = 1_000;

/// Idle read connections kept for the next read (more are opened under load, then closed).
const READERS_IDLE_MAX: usize = 4;

/// Reads running at once; more wait (asynchronously) for a slot. Each read is a blocking
/// thread: without a bound, 100 API readers are 100 threads taking the cores from the runs
/// of a tick (measured: a 10 000-worker tick starved until its host calls timed out).
const READS_AT_ONCE: usize = 4;

/// Where the state database goes when `quarry.state_db` is unset.
pub fn default_path(report_dir: &Path) -> PathBuf {
    report_dir.join(DEFAULT_FILE_NAME)
}

/// What the handles and the writer share: the path, health counters, the reader pool and
/// the tick id counter.
struct Shared {
    path: PathBuf,
    next_tick: AtomicI64,
    queued: AtomicU64,
    write_errors: AtomicU64,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    readers: Mutex<Vec<Connection>>,
    /// [`READS_AT_ONCE`] slots.
    read_slots: tokio::sync::Semaphore,
}

impl Shared {
    fn done(&self, n: u64) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    fn write_ok(&self) {
        self.healthy.store(true, Ordering::Relaxed);
    }

    fn write_failed(&self, message: String) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    /// A write that came after the shutdown: counted and logged, not applied.
    fn lost_after_shutdown(&self, op: &str) {
        let message = format!(
            "state database {}: cannot {op}: the state store has shut down",
            self.path.display()
        );
        tracing::warn!(target: "quarry::state", "{message}");
        self.write_failed(message);
    }

    fn take_reader(&self) -> Result<Connection, StateError> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => schema::open_reader(&self.path),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < READERS_IDLE_MAX {
            idle.push(conn);
        }
    }
}

/// The open state database: owns the writer (see the module docs). Hand out
/// [`StateDb::handle`]s; stop it with [`StateDb::shutdown`].
pub struct StateDb {
    handle: StateHandle,
    recovery: Recovery,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb")
            .field("path", &self.handle.shared.path)
            .field("recovery", &self.recovery)
            .finish()
    }
}

impl StateDb {
    /// Opens (creating it and its directory if needed) the database at `path`, migrates it
    /// to [`SCHEMA_VERSION`], marks what a crash left in flight `interrupted` and starts the
    /// writer. Blocking (a few milliseconds; longer after a crash with many runs in flight):
    /// call it at startup, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<StateDb, StateError> {
        let path = path.as_ref().to_path_buf();
        let io = |op| {
            let path = path.clone();
            move |source| StateError::Io { path, op, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create its directory"))?;
        }
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open the file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked { path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock the file")(e)),
        }
        let (conn, recovery) = schema::open_writer(&path, Utc::now())?;
        let next_tick = schema::next_tick_id(&conn)
            .map_err(|e| StateError::sqlite(&path, "read the last tick id", e))?;
        let shared = Arc::new(Shared {
            path: path.clone(),
            next_tick: AtomicI64::new(next_tick),
            queued: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
            read_slots: tokio::sync::Semaphore::new(READS_AT_ONCE),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("quarry-state-writer".into())
            .spawn(move || writer::run(conn, lock, rx, for_writer))
            .map_err(io("start the writer thread"))?;
        Ok(StateDb {
            handle: StateHandle { shared, tx },
            recovery,
        })
    }

    /// What opening found and repaired (log it).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// A handle for reads and writes.
    pub fn handle(&self) -> StateHandle {
        self.handle.clone()
    }

    /// Stops cleanly: commits every write sent before, marks runs and ticks still in flight
    /// `cancelled`, closes the database and releases the lock. Call it after the scheduler
    /// has stopped. Handles still held afterwards count their writes as failed.
    pub async fn shutdown(self) {
        self.close(true).await;
    }

    /// Stops the writer; `cancel_in_flight` false leaves runs in flight as a crash would.
    async fn close(self, cancel_in_flight: bool) {
        let (reply, done) = oneshot::channel();
        self.handle.send(Write::Close {
            cancel_in_flight,
            reply,
        });
        let _ = done.await;
        self.handle
            .shared
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A cheap, cloneable handle to the state store: writes are queued for the writer (they
/// never block or fail at the call), reads are async and run on a blocking thread.
#[derive(Clone)]
pub struct StateHandle {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Write>,
}

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateHandle")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl StateHandle {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether writes are landing, how many failed and the last failure.
    pub fn health(&self) -> Health {
        Health {
            healthy: self.shared.healthy.load(Ordering::Relaxed),
            write_errors: self.shared.write_errors.load(Ordering::Relaxed),
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            queued: self.shared.queued.load(Ordering::Relaxed),
        }
    }

    fn send(&self, w: Write) {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(w)) = self.tx.send(w) {
            self.shared.done(1);
            if !matches!(w, Write::Flush(_)) {
                self.shared.lost_after_shutdown(w.op());
            }
        }
    }

    // -- writes ---------------------------------------------------------------------------

    /// Records the start of a tick: the tick and one `running` run per worker, in one
    /// transaction. Returns the tick's id at once (the write is queued).
    pub fn tick_started(&self, start: TickStart) -> TickId {
        let id = TickId(self.shared.next_tick.fetch_add(1, Ordering::Relaxed));
        self.send(Write::TickStarted { id, start });
        id
    }

    /// Records how a tick ended: each worker's run (workers without a record become
    /// `cancelled`), the task × worker grid and the tick's outcome, in one transaction.
    /// `outcome` is the report's [`crate::report::TickOutcome`], or
    /// [`TickStatus::Cancelled`] for a tick that was cut short.
    pub fn tick_finished(&self, id: TickId, runs: Vec<RunRecord>, outcome: impl Into<TickStatus>) {
        self.send(Write::TickFinished {
            id,
            runs,
            outcome: outcome.into(),
            ended_at: Utc::now(),
        });
    }

    /// Records changes to the process-tracking memory of `task`, in one transaction.
    pub fn procs_changed(&self, task: &TaskName, changes: Vec<ProcChange>) {
        if changes.is_empty() {
            return;
        }
        self.send(Write::Procs {
            task: task.clone(),
            changes,
            at: Utc::now(),
        });
    }

    /// Forgets every process of `task` (it was uninstalled).
    pub fn procs_cleared(&self, task: &TaskName) {
        self.send(Write::ProcsCleared { task: task.clone() });
    }

    /// Pauses (`paused` true) or resumes a task.
    pub fn set_paused(&self, task: &TaskName, paused: bool, reason: Option<String>) {
        self.send(Write::Paused {
            task: task.clone(),
            paused,
            reason,
            at: Utc::now(),
        });
    }

    /// Sets (`halted` true) or clears the global halt.
    pub fn set_halted(&self, halted: bool, reason: Option<String>) {
        self.send(Write::Halted {
            halted,
            reason,
            at: Utc::now(),
        });
    }

    /// Puts a (task, worker) in quarantine, or updates its entry.
    pub fn set_quarantine(&self, quarantine: Quarantine) {
        self.send(Write::Quarantine(quarantine));
    }

    /// Takes a (task, worker) out of quarantine.
    pub fn clear_quarantine(&self, task: &TaskName, worker: &str) {
        self.send(Write::QuarantineCleared {
            task: task.clone(),
            worker: worker.to_string(),
        });
    }

    /// Appends a mutating API call to the audit log, stamped now.
    pub fn append_audit(&self, entry: AuditEntry) {
        self.send(Write::Audit {
            entry,
            at: Utc::now(),
        });
    }

    /// Waits until every write sent before this call has been committed (or has failed:
    /// see [`StateHandle::health`]).
    pub async fn flush(&self) -> Result<(), StateError> {
        let (reply, done) = oneshot::channel();
        self.send(Write::Flush(reply));
        done.await.map_err(|_| self.closed("flush"))
    }

    async fn prune_step(&self, step: retention::PruneStep) -> Result<u64, StateError> {
        let (reply, done) = oneshot::channel();
        self.send(Write::Prune { step, reply });
        done.await
            .map_err(|_| self.closed("prune history"))?
            .map_err(|e| StateError::sqlite(&self.shared.path, "prune history", e))
    }

    fn closed(&self, op: &'static str) -> StateError {
        StateError::Closed {
            path: self.shared.path.clone(),
            op,
        }
    }

    // -- reads ----------------------------------------------------------------------------

    /// Runs `f` on a pooled read-only connection on a blocking thread.
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let _slot = self
            .shared
            .read_slots
            .acquire()
            .await
            .map_err(|_| self.closed(op))?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let conn = shared.take_reader()?;
            let result = f(&conn).map_err(|e| StateError::sqlite(&shared.path, op, e));
            shared.give_back(conn);
            result
        })
        .await
        .map_err(|_| self.closed(op))?
    }

    /// Runs matching `filter`, one page, newest first.
    pub async fn runs(&self, filter: RunFilter, page: Page) -> Result<Vec<RunRow>, StateError> {
        self.read("read runs", move |c| read::runs(c, &filter, &page))
            .await
    }

    /// One run, with its detail.
    pub async fn run(&self, id: RunId) -> Result<Option<RunRow>, StateError> {
        self.read("read a run", move |c| read::run(c, id)).await
    }

    /// Ticks of `task` (or of every task), one page, newest first.
    pub async fn ticks(
        &self,
        task: Option<TaskName>,
        page: Page,
    ) -> Result<Vec<TickRow>, StateError> {
        self.read("read ticks", move |c| read::ticks(c, task.as_ref(), &page))
            .await
    }

    /// One tick.
    pub async fn tick(&self, id: TickId) -> Result<Option<TickRow>, StateError> {
        self.read("read a tick", move |c| read::tick(c, id)).await
    }

    /// The last finished run of each (task, worker), of `task` or of every task: the
    /// task × worker grid.
    pub async fn last_outcomes(
        &self,
        task: Option<TaskName>,
    ) -> Result<Vec<LastOutcome>, StateError> {
        self.read("read the last outcomes", move |c| {
            read::last_outcomes(c, task.as_ref())
        })
        .await
    }

    /// The process-tracking memory of `task`.
    pub async fn procs(&self, task: TaskName) -> Result<Vec<ProcRow>, StateError> {
        self.read("read processes", move |c| read::procs(c, Some(&task)))
            .await
    }

    /// The process-tracking memory of every task.
    pub async fn all_procs(&self) -> Result<Vec<ProcRow>, StateError> {
        self.read("read processes", |c| read::procs(c, None)).await
    }

    /// Every task's pause state.
    pub async fn task_states(&self) -> Result<Vec<TaskStateRow>, StateError> {
        self.read("read task states", read::task_states).await
    }

    /// The global halt, if set.
    pub async fn halt(&self) -> Result<Option<Halt>, StateError> {
        self.read("read the halt", read::halt).await
    }

    /// Every quarantined (task, worker).
    pub async fn quarantines(&self) -> Result<Vec<Quarantine>, StateError> {
        self.read("read quarantines", read::quarantines).await
    }

    /// The audit log, one page, newest first.
    pub async fn audit(&self, page: Page) -> Result<Vec<AuditRow>, StateError> {
        self.read("read the audit log", move |c| read::audit(c, &page))
            .await
    }
}
