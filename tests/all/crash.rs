//! `kill -9` of a real `quarry serve` process in the middle of a tick, then a restart: the run
//! in flight is recorded as `interrupted` (not lost, not left `running`), nothing is recorded
//! twice, and the restarted server ticks normally.

use std::path::Path;
use std::time::Duration;

use quarry_host::state::{Page, RunFilter, RunOutcome, StateDb, TickStatus};

use crate::harness::*;

fn config(dir: &Path, plugins: &Path, secs: u64) -> String {
    format!(
        "scheduler:\n  enabled: true\n  tasks:\n    - task_class: probe\n      interval_seconds: 1\n      params: {{mode: sleep, secs: {secs}}}\nquarry:\n  plugins_dir: {}\n  workers: [local]\n  status_dir: {}/status\n  report_dir: {}/reports\n  run_timeout_seconds: 30\n  cache_dir: none\n  api: {{listen: \"127.0.0.1:0\"}}\n",
        plugins.display(),
        dir.display(),
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_tick_then_restart_records_the_run_as_interrupted() {
    let tmp = TempDir::new("crash");
    let plugins = plugins_dir(&["probe"]);
    let file = tmp.path().join("quarry.yml");
    std::fs::write(&file, config(tmp.path(), plugins.path(), 20)).unwrap();
    let status = tmp.path().join("status/probe_status.json");
    let log = tmp.path().join("serve1.log");
    let mut first = quarry_serve(&file, &log);
    let _reap = KillOnDrop(u64::from(first.id()));
    // Mid-tick: the pending status is written, the guest sleeps 20 s on the worker.
    wait_until("the first tick to start", 60, || {
        std::fs::read_to_string(&status).is_ok_and(|s| s.contains("\"pending\""))
    });
    std::thread::sleep(Duration::from_millis(300));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    // A restart with a short run so that a tick completes, then a clean stop.
    std::fs::write(&file, config(tmp.path(), plugins.path(), 0)).unwrap();
    let log2 = tmp.path().join("serve2.log");
    let mut second = quarry_serve(&file, &log2);
    let _reap2 = KillOnDrop(u64::from(second.id()));
    wait_until("a tick after the restart", 60, || {
        std::fs::read_to_string(&status).is_ok_and(|s| s.contains("\"success\""))
    });
    let code = stop_child(&mut second, "the restarted serve");
    let logs = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(code.success(), "serve exited with {code}: {logs}");
    assert!(logs.contains("recorded as interrupted"), "{logs}");

    let db = StateDb::open(tmp.path().join("reports/quarry-state.db")).unwrap();
    let state = db.handle();
    let runs = state
        .runs(RunFilter::default(), Page::first(100))
        .await
        .unwrap();
    let oldest = runs.last().unwrap();
    assert_eq!(oldest.outcome, RunOutcome::Interrupted, "{runs:#?}");
    assert!(oldest.ended_at.is_some());
    assert!(
        runs.iter().all(|r| r.outcome != RunOutcome::Running),
        "no run is left running: {runs:#?}"
    );
    assert!(
        runs.iter().any(|r| r.outcome == RunOutcome::Success),
        "the restarted server ran the task: {runs:#?}"
    );
    // One run per tick: nothing lost, nothing recorded twice.
    let ticks = state.ticks(None, Page::first(100)).await.unwrap();
    assert_eq!(ticks.len(), runs.len(), "{ticks:#?}\n{runs:#?}");
    assert_eq!(ticks.last().unwrap().outcome, TickStatus::Interrupted);
    let mut ids: Vec<i64> = runs.iter().map(|r| r.tick_id.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), runs.len());
    db.shutdown().await;
}
