//! State store tests, each on its own database file in a temporary directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::error::ErrorType;
use crate::report::TickOutcome;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("quarry-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("sub").join(DEFAULT_FILE_NAME)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn task(name: &str) -> TaskName {
    TaskName::new(name).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).unwrap()
}

fn workers(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.0.{}.{}:8080", i / 256, i % 256))
        .collect()
}

fn start(name: &str, started_at: DateTime<Utc>, workers: Vec<String>) -> TickStart {
    TickStart {
        task: task(name),
        plugin_version: "1.2.0".into(),
        plugin_sha256: "ab".repeat(32),
        trigger: Trigger::Schedule,
        started_at,
        workers,
    }
}

fn record(worker: &str, started_at: DateTime<Utc>, outcome: RunOutcome) -> RunRecord {
    let failed = matches!(outcome, RunOutcome::Failed);
    let mut detail = serde_json::Map::new();
    detail.insert("freed_bytes".into(), 1024.into());
    RunRecord {
        worker: worker.to_string(),
        started_at,
        ended_at: started_at + chrono::Duration::milliseconds(250),
        outcome,
        error_type: failed.then_some(ErrorType::TaskResultFailed),
        error: failed.then(|| format!("disk full on {worker}")),
        pid: (outcome == RunOutcome::Started).then_some(4242),
        detail: Some(detail),
        attempt: 1,
    }
}

/// Opens `path`, expecting success.
fn open(path: &Path) -> StateDb {
    StateDb::open(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A new database in a new directory, and a handle to it.
fn fresh(name: &str) -> (TempDir, StateDb, StateHandle) {
    let dir = TempDir::new(name);
    let db = open(&dir.db());
    let state = db.handle();
    (dir, db, state)
}

/// A tick of `name` at `secs` on `n` workers, finished with every run `outcome`.
fn full_tick(state: &StateHandle, name: &str, secs: i64, n: usize, outcome: RunOutcome) -> TickId {
    let ws = workers(n);
    let id = state.tick_started(start(name, at(secs), ws.clone()));
    let records = ws.iter().map(|w| record(w, at(secs), outcome)).collect();
    state.tick_finished(id, records, TickOutcome::Success);
    id
}

fn filter_task(name: &str) -> RunFilter {
    RunFilter {
        task: Some(task(name)),
        ..RunFilter::default()
    }
}

#[tokio::test]
async fn creates_the_schema_and_reopens_with_what_was_written() {
    let dir = TempDir::new("reopen");
    let db = open(&dir.db());
    assert_eq!(db.recovery().schema_from, 0);
    assert_eq!(db.recovery().schema_to, SCHEMA_VERSION);
    let state = db.handle();
    state.set_paused(&task("file_cleanup"), true, Some("maintenance".into()));
    state.set_halted(true, Some("incident 42".into()));
    state.flush().await.unwrap();
    db.shutdown().await;

    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(conn);

    let db = open(&dir.db());
    let r = db.recovery();
    assert_eq!(
        (r.schema_from, r.paused_tasks, r.halted),
        (SCHEMA_VERSION, 1, true)
    );
    let states = db.handle().task_states().await.unwrap();
    assert_eq!(states.len(), 1);
    assert!(states[0].paused);
    assert_eq!(states[0].paused_reason.as_deref(), Some("maintenance"));
    let halt = db.handle().halt().await.unwrap().unwrap();
    assert_eq!(halt.reason.as_deref(), Some("incident 42"));
    db.handle().set_halted(false, None);
    db.handle().set_paused(&task("file_cleanup"), false, None);
    db.handle().flush().await.unwrap();
    assert_eq!(db.handle().halt().await.unwrap(), None);
    assert!(!db.handle().task_states().await.unwrap()[0].paused);
    db.shutdown().await;
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_quarry_without_touching_it() {
    let dir = TempDir::new("newer");
    std::fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);

    let err = StateDb::open(dir.db()).unwrap_err();
    assert!(matches!(err, StateError::TooNew { found, supported, .. }
        if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION));
    let message = err.to_string();
    assert!(
        message.contains(&dir.db().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && message.contains(&format!("version {SCHEMA_VERSION} that")),
        "{message}"
    );
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the refused file was switched to WAL");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_gives_an_error_naming_it() {
    let dir = TempDir::new("garbage");
    std::fs::create_dir_all(dir.db().parent().unwrap()).unwrap();
    let garbage = b"this is not a database, it is a shopping list\n".repeat(100);
    std::fs::write(dir.db(), &garbage).unwrap();

    let err = StateDb::open(dir.db()).unwrap_err();
    assert!(matches!(err, StateError::NotADatabase { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.db().display().to_string()),
        "{message}"
    );
    assert!(message.contains("not a SQLite database"), "{message}");
    assert_eq!(
        std::fs::read(dir.db()).unwrap(),
        garbage,
        "the file was changed"
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused_until_the_first_closes() {
    let dir = TempDir::new("locked");
    let db = open(&dir.db());
    let err = StateDb::open(dir.db()).unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.db().display().to_string()));
    db.shutdown().await;
    open(&dir.db()).shutdown().await;
}

#[tokio::test]
async fn tick_round_trip_with_filters_and_keyset_pages() {
    let (_dir, db, state) = fresh("roundtrip");
    let ws = workers(3);
    let t0 = at(1_800_000_000);
    let id = state.tick_started(start("file_cleanup", t0, ws.clone()));
    state.flush().await.unwrap();

    let running = state
        .runs(filter_task("file_cleanup"), Page::first(10))
        .await
        .unwrap();
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|r| r.outcome == RunOutcome::Running
        && r.tick_id == id
        && r.ended_at.is_none()
        && r.plugin_version == "1.2.0"));
    let tick = state.tick(id).await.unwrap().unwrap();
    assert_eq!((tick.outcome, tick.worker_count), (TickStatus::Running, 3));

    // Worker 0 succeeds, 1 fails, 2 has no record (it becomes cancelled); a worker the start
    // did not list gets a run of its own.
    let records = vec![
        record(&ws[0], t0, RunOutcome::Success),
        record(&ws[1], t0, RunOutcome::Failed),
        record("10.9.9.9:8080", t0, RunOutcome::Started),
    ];
    state.tick_finished(id, records, TickOutcome::Partial);
    state.flush().await.unwrap();
    assert!(state.health().healthy);

    let all = state
        .runs(filter_task("file_cleanup"), Page::first(10))
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let by_worker = |w: &str| all.iter().find(|r| r.worker == w).unwrap();
    let ok = by_worker(&ws[0]);
    assert_eq!(ok.outcome, RunOutcome::Success);
    assert_eq!(ok.ended_at, Some(t0 + chrono::Duration::milliseconds(250)));
    assert_eq!(ok.detail, Some(serde_json::json!({"freed_bytes": 1024})));
    let failed = by_worker(&ws[1]);
    assert_eq!(failed.error_type.as_deref(), Some("TaskResultFailed"));
    assert_eq!(failed.error.as_deref(), Some("disk full on 10.0.0.1:8080"));
    let missing = by_worker(&ws[2]);
    assert_eq!(missing.outcome, RunOutcome::Cancelled);
    assert!(
        missing
            .error
            .as_deref()
            .unwrap()
            .contains("without a result")
    );
    let extra = by_worker("10.9.9.9:8080");
    assert_eq!(
        (extra.outcome, extra.pid),
        (RunOutcome::Started, Some(4242))
    );
    assert_eq!(extra.plugin_sha256, "ab".repeat(32));

    let tick = state.tick(id).await.unwrap().unwrap();
    assert_eq!(tick.outcome, TickStatus::Partial);
    assert_eq!((tick.success_count, tick.failed_count), (2, 1));
    assert!(tick.ended_at.is_some());
    assert_eq!(state.run(failed.id).await.unwrap().as_ref(), Some(failed));
    assert_eq!(state.run(RunId(999_999)).await.unwrap(), None);

    // A second task and a later tick, for the filters.
    let later = 1_800_000_600;
    full_tick(&state, "file_cleanup", later, 3, RunOutcome::Success);
    full_tick(&state, "log_rotate", later, 3, RunOutcome::Failed);
    state.flush().await.unwrap();

    let q = |f: RunFilter| {
        let state = state.clone();
        async move { state.runs(f, Page::first(100)).await.unwrap() }
    };
    assert_eq!(q(filter_task("file_cleanup")).await.len(), 7);
    assert_eq!(q(filter_task("log_rotate")).await.len(), 3);
    let on_w1 = q(RunFilter {
        worker: Some(ws[1].clone()),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(on_w1.len(), 3);
    let failed_runs = q(RunFilter {
        outcome: Some(RunOutcome::Failed),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(failed_runs.len(), 4);
    let cleanup_failed = q(RunFilter {
        task: Some(task("file_cleanup")),
        outcome: Some(RunOutcome::Failed),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(cleanup_failed.len(), 1);
    let first_tick = q(RunFilter {
        tick: Some(id),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(first_tick.len(), 4);
    let since = q(RunFilter {
        since: Some(at(later)),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(since.len(), 6);
    let until = q(RunFilter {
        until: Some(at(later)),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(until.len(), 4);

    // Keyset pages: 10 runs in pages of 4 going back, then forward again.
    let all = q(RunFilter::default()).await;
    assert_eq!(all.len(), 10);
    let p1 = state
        .runs(RunFilter::default(), Page::first(4))
        .await
        .unwrap();
    let p2 = state
        .runs(RunFilter::default(), Page::before(p1[3].id.0, 4))
        .await
        .unwrap();
    let p3 = state
        .runs(RunFilter::default(), Page::before(p2[3].id.0, 4))
        .await
        .unwrap();
    assert_eq!(p3.len(), 2);
    let walked: Vec<RunId> = p1.iter().chain(&p2).chain(&p3).map(|r| r.id).collect();
    assert_eq!(walked, all.iter().map(|r| r.id).collect::<Vec<_>>());
    let back = state
        .runs(RunFilter::default(), Page::after(p2[3].id.0, 4))
        .await
        .unwrap();
    assert_eq!(
        back,
        all[3..7],
        "the 4 rows just newer than the cursor, newest first"
    );
    let ticks = state
        .ticks(Some(task("file_cleanup")), Page::first(10))
        .await
        .unwrap();
    assert_eq!(ticks.len(), 2);
    assert!(ticks[0].id > ticks[1].id);

    // The grid: the newest finished run of each (task, worker).
    let grid = state.last_outcomes(None).await.unwrap();
    assert_eq!(
        grid.len(),
        7,
        "3 + 1 extra worker of file_cleanup, 3 of log_rotate"
    );
    let cell = grid
        .iter()
        .find(|c| c.task.as_str() == "file_cleanup" && c.worker == ws[1])
        .unwrap();
    assert_eq!(cell.outcome, RunOutcome::Success, "the later tick's run");
    let cleanup_grid = state.last_outcomes(Some(task("log_rotate"))).await.unwrap();
    assert!(cleanup_grid.iter().all(|c| c.outcome == RunOutcome::Failed));
    db.shutdown().await;
}

#[tokio::test]
async fn after_a_crash_runs_in_flight_are_interrupted_and_the_memory_survives() {
    let (dir, db, state) = fresh("crash");
    let done = full_tick(
        &state,
        "file_cleanup",
        1_800_000_000,
        2,
        RunOutcome::Success,
    );
    let ws = workers(2);
    let in_flight = state.tick_started(start("file_cleanup", at(1_800_000_060), ws.clone()));
    state.procs_changed(
        &task("file_cleanup"),
        vec![ProcChange::Set {
            worker: ws[0].clone(),
            pid: Some(777),
            start_time: Some(123_456),
            running: true,
        }],
    );
    state.set_quarantine(Quarantine {
        task: task("file_cleanup"),
        worker: ws[1].clone(),
        since: at(1_800_000_000),
        until: None,
        consecutive_failures: 5,
        reason: "5 failures in a row".into(),
    });
    state.flush().await.unwrap();
    // As after kill -9: the writer stops without a word, nothing is marked.
    db.close(false).await;
    drop(state);

    let db = open(&dir.db());
    let r = db.recovery().clone();
    assert_eq!(
        (
            r.ticks_interrupted,
            r.runs_interrupted,
            r.procs,
            r.quarantines
        ),
        (1, 2, 1, 1)
    );
    let state = db.handle();
    let tick = state.tick(in_flight).await.unwrap().unwrap();
    assert_eq!(tick.outcome, TickStatus::Interrupted);
    assert!(tick.ended_at.is_some());
    assert_eq!(
        state.tick(done).await.unwrap().unwrap().outcome,
        TickStatus::Success
    );
    let runs = state
        .runs(
            RunFilter {
                tick: Some(in_flight),
                ..RunFilter::default()
            },
            Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(run.outcome, RunOutcome::Interrupted);
        assert_eq!(run.error_type.as_deref(), Some("Interrupted"));
        assert!(run.error.as_deref().unwrap().contains("restarted"));
    }
    let grid = state.last_outcomes(None).await.unwrap();
    assert!(grid.iter().all(|c| c.outcome == RunOutcome::Interrupted));
    let procs = state.procs(task("file_cleanup")).await.unwrap();
    assert_eq!(procs.len(), 1);
    assert_eq!(
        (
            procs[0].worker.as_str(),
            procs[0].pid,
            procs[0].start_time,
            procs[0].running
        ),
        (ws[0].as_str(), Some(777), Some(123_456), true)
    );
    assert_eq!(state.all_procs().await.unwrap(), procs);
    assert_eq!(
        state.quarantines().await.unwrap()[0].consecutive_failures,
        5
    );
    // Tick ids go on from where they were.
    assert!(state.tick_started(start("file_cleanup", at(1_800_000_120), ws)) > in_flight);

    // A clean shutdown cancels what is in flight instead.
    db.shutdown().await;
    let db = open(&dir.db());
    assert_eq!(db.recovery().ticks_interrupted, 0);
    let ticks = db.handle().ticks(None, Page::first(1)).await.unwrap();
    assert_eq!(ticks[0].outcome, TickStatus::Cancelled);
    db.shutdown().await;
}

#[tokio::test]
async fn procs_are_set_cleared_and_cleared_by_task() {
    let (_dir, db, state) = fresh("procs");
    let set = |w: &str, pid| ProcChange::Set {
        worker: w.into(),
        pid,
        start_time: None,
        running: pid.is_some(),
    };
    state.procs_changed(&task("a"), vec![set("w1", Some(1)), set("w2", None)]);
    state.procs_changed(&task("b"), vec![set("w1", Some(3))]);
    state.procs_changed(
        &task("a"),
        vec![
            set("w1", Some(2)),
            ProcChange::Clear {
                worker: "w2".into(),
            },
        ],
    );
    state.flush().await.unwrap();
    let a = state.procs(task("a")).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].pid, a[0].running), (Some(2), true));
    state.procs_cleared(&task("a"));
    state.flush().await.unwrap();
    let all = state.all_procs().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].task.as_str(), "b");
    db.shutdown().await;
}

#[tokio::test]
async fn retention_by_age_deletes_old_ticks_with_their_runs() {
    let (_dir, db, state) = fresh("age");
    let day = 86_400;
    let now = at(1_800_000_000);
    let old = full_tick(
        &state,
        "file_cleanup",
        1_800_000_000 - 10 * day,
        5,
        RunOutcome::Success,
    );
    let empty_old = state.tick_started(start("file_cleanup", at(1_800_000_000 - 9 * day), vec![]));
    state.tick_finished(empty_old, vec![], TickOutcome::NoWorkers);
    // Old, but still running: kept.
    let stuck = state.tick_started(start("log_rotate", at(1_800_000_000 - 8 * day), workers(2)));
    let recent = full_tick(
        &state,
        "file_cleanup",
        1_800_000_000 - day,
        5,
        RunOutcome::Failed,
    );
    state.flush().await.unwrap();

    let retention = Retention {
        max_age_days: Some(7),
        max_runs_per_task: None,
    };
    let pruned = state.prune_at(retention, now).await.unwrap();
    assert_eq!(pruned.rows, 5 + 2, "5 runs, 2 ticks");
    let ids: Vec<TickId> = state
        .ticks(None, Page::first(10))
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![recent, stuck]);
    assert!(!ids.contains(&old));
    assert_eq!(
        state
            .runs(RunFilter::default(), Page::first(100))
            .await
            .unwrap()
            .len(),
        7
    );
    // Grid cells last refreshed before the cutoff go too: here none, the recent tick
    // refreshed all five.
    assert_eq!(state.last_outcomes(None).await.unwrap().len(), 5);
    let again = state.prune_at(retention, now).await.unwrap();
    assert_eq!(again.rows, 0);
    db.shutdown().await;
}

#[tokio::test]
async fn retention_by_count_keeps_whole_ticks_per_task() {
    let (_dir, db, state) = fresh("count");
    let cleanup: Vec<TickId> = (0..5)
        .map(|i| {
            full_tick(
                &state,
                "file_cleanup",
                1_800_000_000 + i * 60,
                3,
                RunOutcome::Success,
            )
        })
        .collect();
    let rotate = full_tick(&state, "log_rotate", 1_800_000_000, 3, RunOutcome::Success);
    state.flush().await.unwrap();

    let retention = Retention {
        max_age_days: None,
        max_runs_per_task: Some(7),
    };
    let pruned = state.prune_at(retention, at(1_800_001_000)).await.unwrap();
    // The 7th newest run is in the 3rd newest tick: the two oldest ticks go (6 runs).
    assert_eq!(pruned.rows, 6 + 2);
    let left: Vec<TickId> = state
        .ticks(Some(task("file_cleanup")), Page::first(10))
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(left, vec![cleanup[4], cleanup[3], cleanup[2]]);
    assert_eq!(
        state
            .runs(filter_task("file_cleanup"), Page::first(100))
            .await
            .unwrap()
            .len(),
        9
    );
    assert!(
        state.tick(rotate).await.unwrap().is_some(),
        "other tasks keep theirs"
    );
    db.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_retention_loop_prunes_on_its_interval_and_stops_on_shutdown() {
    let (_dir, db, state) = fresh("loop");
    let old = full_tick(
        &state,
        "file_cleanup",
        1_000_000_000,
        2,
        RunOutcome::Success,
    );
    state.flush().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let retention = Retention {
        max_age_days: Some(1),
        max_runs_per_task: None,
    };
    let (_keep, retention) = tokio::sync::watch::channel(retention);
    let pruner = tokio::spawn(run_retention(
        state.clone(),
        retention,
        Duration::from_secs(3600),
        async move {
            let _ = stopped.await;
        },
    ));
    // Paused time jumps to the first pass; the guard is on real time, which the blocking
    // reads and the writer take.
    let guard = Instant::now();
    while state.tick(old).await.unwrap().is_some() {
        assert!(
            guard.elapsed() < Duration::from_secs(30),
            "the first pass never came"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), pruner)
        .await
        .expect("the retention loop did not stop")
        .unwrap();
    db.shutdown().await;
}

#[tokio::test]
async fn audit_entries_append_and_page() {
    let (_dir, db, state) = fresh("audit");
    for i in 0..5 {
        state.append_audit(AuditEntry {
            actor: "alice".into(),
            action: "pause".into(),
            target: format!("task_{i}"),
            body: (i % 2 == 0).then(|| serde_json::json!({"reason": format!("r{i}")})),
            result: "ok".into(),
        });
    }
    state.flush().await.unwrap();
    let first = state.audit(Page::first(3)).await.unwrap();
    assert_eq!(
        first.iter().map(|a| a.target.as_str()).collect::<Vec<_>>(),
        ["task_4", "task_3", "task_2"]
    );
    assert_eq!(first[0].body, Some(serde_json::json!({"reason": "r4"})));
    assert_eq!(first[1].body, None);
    assert_eq!(
        (first[0].actor.as_str(), first[0].result.as_str()),
        ("alice", "ok")
    );
    let rest = state.audit(Page::before(first[2].id, 3)).await.unwrap();
    assert_eq!(
        rest.iter().map(|a| a.target.as_str()).collect::<Vec<_>>(),
        ["task_1", "task_0"]
    );
    let json = serde_json::to_value(&first[0]).unwrap();
    assert!(json["at"].as_str().unwrap().ends_with('Z'), "{json}");
    db.shutdown().await;
}

/// 10 000 workers: the tick's two transactions, timed (printed, not asserted), while readers
/// keep reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)]
async fn a_ten_thousand_worker_tick_writes_quickly_while_readers_read() {
    const WORKERS: usize = 10_000;
    let (_dir, db, state) = fresh("large");
    // Some history first, so that the indexes are not empty.
    full_tick(
        &state,
        "warmup",
        1_700_000_000,
        WORKERS,
        RunOutcome::Success,
    );
    state.flush().await.unwrap();

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let reader = {
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut reads, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let page = state
                    .runs(RunFilter::default(), Page::first(100))
                    .await
                    .unwrap();
                assert!(!page.is_empty());
                let grid = state.last_outcomes(Some(task("warmup"))).await.unwrap();
                assert_eq!(grid.len(), WORKERS);
                slowest = slowest.max(t.elapsed());
                reads += 1;
            }
            (reads, slowest)
        })
    };

    let ws = workers(WORKERS);
    let t0 = Utc::now();
    let tick = start("big", t0, ws.clone());
    let clock = Instant::now();
    let id = state.tick_started(tick);
    let queued = clock.elapsed();
    state.flush().await.unwrap();
    let started = clock.elapsed();
    let records: Vec<RunRecord> = ws
        .iter()
        .enumerate()
        .map(|(i, w)| {
            record(
                w,
                t0,
                if i % 10 == 0 {
                    RunOutcome::Failed
                } else {
                    RunOutcome::Success
                },
            )
        })
        .collect();
    let clock = Instant::now();
    state.tick_finished(id, records, TickOutcome::Partial);
    let finish_queued = clock.elapsed();
    state.flush().await.unwrap();
    let finished = clock.elapsed();

    stop.store(true, Ordering::Relaxed);
    let (reads, slowest) = reader.await.unwrap();
    eprintln!(
        "state: {WORKERS}-worker tick: tick_started returned in {queued:?}, committed after \
         {started:?}; tick_finished returned in {finish_queued:?}, committed after \
         {finished:?}; {reads} concurrent read pairs (100-run page + {WORKERS}-cell grid), \
         slowest {slowest:?}"
    );
    assert!(state.health().healthy, "{:?}", state.health());
    let tick = state.tick(id).await.unwrap().unwrap();
    assert_eq!((tick.success_count, tick.failed_count), (9_000, 1_000));
    let succeeded = state
        .runs(
            RunFilter {
                tick: Some(id),
                outcome: Some(RunOutcome::Success),
                ..RunFilter::default()
            },
            Page::first(MAX_PAGE + 500),
        )
        .await
        .unwrap();
    assert_eq!(succeeded.len(), MAX_PAGE as usize, "pages are capped");
    assert_eq!(
        state.last_outcomes(Some(task("big"))).await.unwrap().len(),
        WORKERS
    );
    db.shutdown().await;
}

#[tokio::test]
async fn a_deleted_database_file_makes_the_store_unhealthy_not_the_caller_fail() {
    let (dir, db, state) = fresh("deleted");
    state.append_audit(AuditEntry {
        actor: "cli".into(),
        action: "halt".into(),
        target: "*".into(),
        body: None,
        result: "ok".into(),
    });
    state.flush().await.unwrap();
    assert!(state.health().healthy);
    std::fs::remove_file(dir.db()).unwrap();
    state.set_halted(true, None);
    state.flush().await.unwrap();
    let health = state.health();
    assert!(!health.healthy);
    assert_eq!(health.write_errors, 1);
    let error = health.last_error.unwrap();
    assert!(error.contains("deleted or replaced"), "{error}");
    assert!(error.contains(&dir.db().display().to_string()), "{error}");
    db.shutdown().await;
    // After shutdown, writes are counted as failed, not a panic.
    state.set_halted(false, None);
    assert_eq!(state.health().write_errors, 2);
    assert!(matches!(
        state.flush().await,
        Err(StateError::Closed { .. })
    ));
}
