//! Opening the database: connection settings, the versioned schema and its forward
//! migrations, and crash recovery.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, params};

use super::StateError;
use super::types::{Recovery, RunOutcome, TickStatus, to_ms};

/// How long a connection waits for a lock before failing with `SQLITE_BUSY`: the writer
/// only contends with WAL checkpoints and readers only with a checkpoint's truncation, so
/// waits are short; this bounds a pathological one.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements each connection keeps (the writer's tick statements, the readers'
/// filter combinations).
const STATEMENT_CACHE: usize = 64;

/// The error text of runs found in flight when the database is opened.
pub(super) const INTERRUPTED_ERROR: &str = "Quarry stopped while this run was in flight (no clean shutdown) and was restarted; \
     the run's result is unknown";

/// `error_type` of runs marked interrupted.
pub(super) const INTERRUPTED_TYPE: &str = "Interrupted";

/// The schema, one migration per version: `MIGRATIONS[n]` takes `user_version` n to n + 1.
/// Append only; never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE ticks (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        task           TEXT    NOT NULL,
        plugin_version TEXT    NOT NULL,
        plugin_sha256  TEXT    NOT NULL,
        trigger        TEXT    NOT NULL,
        started_at     INTEGER NOT NULL,
        ended_at       INTEGER,
        outcome        TEXT    NOT NULL,
        worker_count   INTEGER NOT NULL,
        success_count  INTEGER NOT NULL DEFAULT 0,
        failed_count   INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX ticks_task ON ticks (task, id);
    CREATE INDEX ticks_started ON ticks (started_at);
    CREATE INDEX ticks_running ON ticks (id) WHERE outcome = 'running';

    CREATE TABLE runs (
        id         INTEGER PRIMARY KEY,
        tick_id    INTEGER NOT NULL,
        task       TEXT    NOT NULL,
        worker     TEXT    NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at   INTEGER,
        outcome    TEXT    NOT NULL,
        error_type TEXT,
        error      TEXT,
        pid        INTEGER,
        detail     TEXT,
        attempt    INTEGER NOT NULL DEFAULT 1
    );
    CREATE UNIQUE INDEX runs_tick_worker ON runs (tick_id, worker);
    CREATE INDEX runs_task ON runs (task, id);
    CREATE INDEX runs_worker ON runs (worker, id);

    CREATE TABLE last_runs (
        task       TEXT    NOT NULL,
        worker     TEXT    NOT NULL,
        run_id     INTEGER NOT NULL,
        outcome    TEXT    NOT NULL,
        ended_at   INTEGER NOT NULL,
        error_type TEXT,
        PRIMARY KEY (task, worker)
    ) WITHOUT ROWID;

    CREATE TABLE procs (
        task       TEXT    NOT NULL,
        worker     TEXT    NOT NULL,
        pid        INTEGER,
        start_time INTEGER,
        running    INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (task, worker)
    ) WITHOUT ROWID;

    CREATE TABLE task_state (
        task          TEXT    PRIMARY KEY,
        paused        INTEGER NOT NULL,
        paused_reason TEXT,
        updated_at    INTEGER NOT NULL
    );

    CREATE TABLE halt (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        reason TEXT,
        since  INTEGER NOT NULL
    );

    CREATE TABLE quarantine (
        task                 TEXT    NOT NULL,
        worker               TEXT    NOT NULL,
        since                INTEGER NOT NULL,
        until                INTEGER,
        consecutive_failures INTEGER NOT NULL,
        reason               TEXT    NOT NULL,
        PRIMARY KEY (task, worker)
    ) WITHOUT ROWID;

    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY,
        at     INTEGER NOT NULL,
        actor  TEXT    NOT NULL,
        action TEXT    NOT NULL,
        target TEXT    NOT NULL,
        body   TEXT,
        result TEXT    NOT NULL
    );
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Settings every connection gets.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Opens the write connection, refuses a newer schema, migrates an older one and recovers
/// from a crash. The caller holds the file lock.
///
/// Strategy: read `user_version` before changing anything, so that a file that is not a
/// database, or one from a newer Quarry, is left exactly as it was.
pub(super) fn open_writer(
    path: &Path,
    now: DateTime<Utc>,
) -> Result<(Connection, Recovery), StateError> {
    let err = |op| move |e| StateError::sqlite(path, op, e);
    let conn = Connection::open(path).map_err(err("open the file"))?;
    configure(&conn).map_err(err("configure the connection"))?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err("read the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err("switch to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::Sqlite {
            path: path.to_path_buf(),
            op: "switch to WAL mode",
            source: rusqlite::Error::InvalidQuery,
        });
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;")
        .map_err(err("set synchronous = NORMAL"))?;
    migrate(&conn, path, found)?;
    let recovery = recover(&conn, now).map_err(err("mark the runs left in flight interrupted"))?;
    Ok((
        conn,
        Recovery {
            schema_from: found,
            schema_to: SCHEMA_VERSION,
            ..recovery
        },
    ))
}

/// A read-only connection to a database the writer has opened (and so migrated).
pub(super) fn open_reader(path: &Path) -> Result<Connection, StateError> {
    let err = |op| move |e| StateError::sqlite(path, op, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err("open a reader"))?;
    configure(&conn).map_err(err("configure a reader"))?;
    Ok(conn)
}

/// Applies the migrations after `from`, each in its own transaction with its version.
fn migrate(conn: &Connection, path: &Path, from: i64) -> Result<(), StateError> {
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let to = n as i64 + 1;
        let apply = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let done = conn
                .execute_batch(sql)
                .and_then(|()| conn.pragma_update(None, "user_version", to));
            match done {
                Ok(()) => conn.execute_batch("COMMIT"),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        };
        apply().map_err(|e| StateError::sqlite(path, "apply a schema migration", e))?;
    }
    Ok(())
}

/// Marks what a crash left in flight `interrupted`, in one transaction, and counts what
/// survives (procs, pauses, quarantines, halt).
fn recover(conn: &Connection, now: DateTime<Utc>) -> rusqlite::Result<Recovery> {
    let now = to_ms(now);
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let run = || -> rusqlite::Result<Recovery> {
        let (ticks_interrupted, runs_interrupted) = end_in_flight(
            conn,
            RunOutcome::Interrupted,
            INTERRUPTED_TYPE,
            INTERRUPTED_ERROR,
            now,
        )?;
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        Ok(Recovery {
            ticks_interrupted: ticks_interrupted as u64,
            runs_interrupted: runs_interrupted as u64,
            procs: count("SELECT count(*) FROM procs")? as u64,
            paused_tasks: count("SELECT count(*) FROM task_state WHERE paused")? as u64,
            quarantines: count("SELECT count(*) FROM quarantine")? as u64,
            halted: count("SELECT count(*) FROM halt")? > 0,
            ..Recovery::default()
        })
    };
    match run() {
        Ok(r) => conn.execute_batch("COMMIT").map(|()| r),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Ends every tick still `running` and its runs still `running` with `outcome` (runs) and
/// the matching tick status, at `now` (unix ms), and puts those runs in the grid. Returns
/// (ticks, runs) changed. The caller holds the transaction.
pub(super) fn end_in_flight(
    conn: &Connection,
    outcome: RunOutcome,
    error_type: &str,
    error: &str,
    now: i64,
) -> rusqlite::Result<(usize, usize)> {
    let tick_status = match outcome {
        RunOutcome::Interrupted => TickStatus::Interrupted,
        _ => TickStatus::Cancelled,
    };
    let runs = conn.execute(
        "UPDATE runs SET outcome = ?1, ended_at = ?2, error_type = ?3, error = ?4
         WHERE outcome = 'running'
           AND tick_id IN (SELECT id FROM ticks WHERE outcome = 'running')",
        params![outcome, now, error_type, error],
    )?;
    conn.execute(
        "INSERT INTO last_runs (task, worker, run_id, outcome, ended_at, error_type)
         SELECT task, worker, id, outcome, ended_at, error_type FROM runs
         WHERE outcome = ?1 AND ended_at = ?2
           AND tick_id IN (SELECT id FROM ticks WHERE outcome = 'running')
         ON CONFLICT (task, worker) DO UPDATE SET
             run_id = excluded.run_id, outcome = excluded.outcome,
             ended_at = excluded.ended_at, error_type = excluded.error_type
         WHERE excluded.run_id >= last_runs.run_id",
        params![outcome, now],
    )?;
    let ticks = conn.execute(
        "UPDATE ticks SET outcome = ?1, ended_at = ?2 WHERE outcome = 'running'",
        params![tick_status, now],
    )?;
    Ok((ticks, runs))
}

/// The next free tick id. Ids are allocated in memory (the file lock makes this process the
/// only writer); `AUTOINCREMENT` keeps the highest id ever used in `sqlite_sequence`, so ids
/// are not reused after pruning has deleted the newest ticks.
pub(super) fn next_tick_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'ticks'), 0),
                    coalesce((SELECT max(id) FROM ticks), 0)) + 1",
        [],
        |r| r.get(0),
    )
}
