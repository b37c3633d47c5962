//! `quarry serve` with its state database: every tick and run recorded and readable through
//! the admin API's control plane, audit, and what a restart keeps (pauses, history).

use std::path::Path;
use std::time::Duration;

use quarry_host::api::model::RunsQuery;
use quarry_host::api::{Actor, ControlError, ControlPlane};
use quarry_host::server::Server;

use crate::harness::*;

fn config(dir: &Path, plugins: &Path, interval: u64, mode: &str) -> String {
    format!(
        "scheduler:\n  enabled: true\n  tasks:\n    - task_class: probe\n      interval_seconds: {interval}\n      params: {{mode: {mode}}}\nquarry:\n  plugins_dir: {}\n  workers: [local]\n  status_dir: {}/status\n  report_dir: {}/reports\n  run_timeout_seconds: 10\n  cache_dir: none\n",
        plugins.display(),
        dir.display(),
        dir.display()
    )
}

/// `quarry.api.trigger_cooldown_seconds`: 0 lets triggers follow each other; a reload to a
/// longer cooldown applies from the next trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_cooldown_is_configurable_and_reloads() {
    let tmp = TempDir::new("cooldown");
    let plugins = plugins_dir(&["probe"]);
    let file = tmp.path().join("quarry.yml");
    let with_cooldown = |secs: u64| {
        format!(
            "{}  state_db: none\n  api:\n    trigger_cooldown_seconds: {secs}\n",
            config(tmp.path(), plugins.path(), 3600, "ok")
        )
    };
    std::fs::write(&file, with_cooldown(0)).unwrap();
    let mut server = within("server start", 60, Server::start(&file))
        .await
        .unwrap();
    let control = server.control();
    let mut reports = server.scheduler().subscribe();
    within("first tick", 20, reports.recv()).await.unwrap();
    for i in 0..2 {
        within("trigger", 10, control.trigger("probe".into(), vec![]))
            .await
            .unwrap_or_else(|e| panic!("trigger {i} with no cooldown: {e}"));
        within("triggered tick", 20, reports.recv()).await.unwrap();
    }
    assert_eq!(control.tasks().await.unwrap()[0].cooldown_until, None);

    std::fs::write(&file, with_cooldown(7200)).unwrap();
    within("reload", 30, server.reload()).await.unwrap();
    let again = control.trigger("probe".into(), vec![]).await;
    assert!(
        matches!(again, Err(ControlError::Cooldown { retry_after_seconds, .. }) if retry_after_seconds > 7000),
        "the reloaded 7200 s cooldown counts from the last trigger: {again:?}"
    );
    assert!(control.tasks().await.unwrap()[0].cooldown_until.is_some());
    within("shutdown", 30, server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_are_recorded_and_read_back_through_the_control_plane() {
    let tmp = TempDir::new("state");
    let plugins = plugins_dir(&["probe"]);
    let file = tmp.path().join("quarry.yml");
    std::fs::write(&file, config(tmp.path(), plugins.path(), 3600, "ok")).unwrap();
    let server = within("server start", 60, Server::start(&file))
        .await
        .unwrap();
    assert!(tmp.path().join("reports/quarry-state.db").exists());
    let control = server.control();
    let mut reports = server.scheduler().subscribe();
    // The first scheduled tick (after a second).
    within("first tick", 20, reports.recv()).await.unwrap();
    // A trigger right after: a second tick; a third within the cooldown is refused.
    let t = within("trigger", 10, control.trigger("probe".into(), vec![]))
        .await
        .unwrap();
    assert_eq!(t.workers, vec!["local".to_string()]);
    within("triggered tick", 20, reports.recv()).await.unwrap();
    let again = control.trigger("probe".into(), vec![]).await;
    assert!(
        matches!(again, Err(ControlError::Cooldown { retry_after_seconds, .. }) if retry_after_seconds > 0),
        "{again:?}"
    );
    let unknown = control.trigger("nope".into(), vec![]).await;
    assert!(
        matches!(unknown, Err(ControlError::UnknownTask { .. })),
        "{unknown:?}"
    );
    let bad_worker = control
        .trigger("probe".into(), vec!["10.1.2.3".into()])
        .await;
    assert!(
        matches!(&bad_worker, Err(ControlError::UnknownWorker { field, .. }) if field == "workers[0]"),
        "{bad_worker:?}"
    );

    // The writer commits shortly after a tick ends.
    let mut page = None;
    for _ in 0..50 {
        let p = control.runs(RunsQuery::default()).await.unwrap();
        // Two runs, both finished (a run is recorded `running` when its tick starts).
        if p.runs.len() == 2 && p.runs.iter().all(|r| r.outcome != "running") {
            page = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = page.expect("two runs recorded");
    let newest = &page.runs[0];
    assert_eq!(
        (
            newest.task.as_str(),
            newest.worker.as_str(),
            newest.outcome.as_str()
        ),
        ("probe", "local", "success")
    );
    assert_eq!(newest.tick_id, t.tick_id);
    assert!(!newest.plugin_sha256.is_empty() && newest.ended_at.is_some());
    let detail = control.run(newest.id).await.unwrap();
    assert_eq!(
        detail.detail.as_ref().unwrap()["worker"],
        "local",
        "{detail:?}"
    );
    assert!(matches!(
        control.run(999_999).await,
        Err(ControlError::UnknownRun(999_999))
    ));
    // Filters and pages.
    let one = control
        .runs(RunsQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one.runs.len(), 1);
    let older = control
        .runs(RunsQuery {
            limit: Some(1),
            before: one.next,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older.runs[0].id, page.runs[1].id);
    let none = control
        .runs(RunsQuery {
            outcome: Some("failed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.runs.is_empty());
    // The grid and the task view.
    let grid = control.grid().await.unwrap();
    assert_eq!(
        (grid.tasks.clone(), grid.workers.clone()),
        (vec!["probe".to_string()], vec!["local".to_string()])
    );
    assert_eq!(grid.cells[0][0].as_ref().unwrap().outcome, "success");
    let tasks = control.tasks().await.unwrap();
    assert_eq!(tasks[0].last_tick.as_ref().unwrap().id, t.tick_id);
    assert!(tasks[0].cooldown_until.is_some());

    // Pause, audit, and a restart that keeps both.
    control
        .pause("probe".into(), Some("disk swap".into()))
        .await
        .unwrap();
    control
        .record_audit(Actor::Token, "pause".into(), "probe".into(), None, 200)
        .await;
    within("shutdown", 30, server.shutdown()).await;

    let server = within("server restart", 60, Server::start(&file))
        .await
        .unwrap();
    let control = server.control();
    let tasks = control.tasks().await.unwrap();
    assert!(
        tasks[0].paused,
        "a paused task stays paused across a restart"
    );
    assert_eq!(tasks[0].paused_reason.as_deref(), Some("disk swap"));
    let audit = control.audit(10, None).await.unwrap();
    assert_eq!((audit[0].action.as_str(), audit[0].status), ("pause", 200));
    let history = control.runs(RunsQuery::default()).await.unwrap();
    assert_eq!(history.runs.len(), 2, "history survives a restart");
    within("shutdown", 30, server.shutdown()).await;
}
