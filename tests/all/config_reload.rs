//! Live config reload: per-task diff, invalid files rejected whole, and the file watch of
//! `quarry serve`.

use std::path::Path;
use std::time::Duration;

use quarry_host::report::TickOutcome;
use quarry_host::scheduler::ApplySummary;
use quarry_host::server::{Server, serve};

use crate::harness::*;

fn config(dir: &Path, plugins: &Path, tasks: &str) -> String {
    format!(
        "scheduler:\n  enabled: true\n  tasks:\n{tasks}\nquarry:\n  plugins_dir: {}\n  workers: [local]\n  status_dir: {}/status\n  report_dir: {}/reports\n  run_timeout_seconds: 10\n  cache_dir: none\n  api: {{listen: \"127.0.0.1:0\"}}\n",
        plugins.display(),
        dir.display(),
        dir.display()
    )
}

const PROBE_OK: &str =
    "    - task_class: probe\n      interval_seconds: 1\n      params: {mode: ok}\n";
const PROBE_FAIL: &str =
    "    - task_class: probe\n      interval_seconds: 1\n      params: {mode: fail}\n";
const CLEANUP: &str = "    - task_class: FileCleanupTask\n      interval_seconds: 1\n";

fn names(v: &[&str]) -> Vec<quarry_host::task::TaskName> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_diffs_tasks_and_rejects_invalid_files_whole() {
    let tmp = TempDir::new("cfg-reload");
    let plugins = plugins_dir(&["probe", "file_cleanup"]);
    let file = tmp.path().join("quarry.yml");
    std::fs::write(&file, config(tmp.path(), plugins.path(), PROBE_OK)).unwrap();
    let mut server = within("server start", 60, Server::start(&file))
        .await
        .unwrap();
    let mut reports = server.scheduler().subscribe();
    let r = within("first probe tick", 20, reports.recv())
        .await
        .unwrap();
    assert_eq!(
        (r.task_type.as_str(), r.outcome),
        ("probe", TickOutcome::Success)
    );

    // Added.
    std::fs::write(
        &file,
        config(tmp.path(), plugins.path(), &format!("{PROBE_OK}{CLEANUP}")),
    )
    .unwrap();
    let s = server.reload().await.unwrap();
    assert_eq!(
        s,
        ApplySummary {
            added: names(&["file_cleanup"]),
            unchanged: names(&["probe"]),
            ..Default::default()
        }
    );

    // Changed and removed.
    std::fs::write(&file, config(tmp.path(), plugins.path(), PROBE_FAIL)).unwrap();
    let s = server.reload().await.unwrap();
    assert_eq!(
        s,
        ApplySummary {
            changed: names(&["probe"]),
            removed: names(&["file_cleanup"]),
            ..Default::default()
        }
    );
    while reports.try_recv().is_ok() {}
    loop {
        let r = within("a tick with the new params", 20, reports.recv())
            .await
            .unwrap();
        assert_eq!(r.task_type, "probe", "file_cleanup was removed");
        if r.outcome == TickOutcome::Failed {
            break; // the changed params (mode fail) are in effect
        }
    }

    // Invalid files are rejected whole; the running config stays.
    for (bad, why) in [
        (
            "    - task_class: probe\n      interval_seconds: 0\n",
            "interval_seconds: must be at least 1",
        ),
        (
            "    - task_class: probe\n      params: {mode: invalid}\n",
            "probe: invalid on purpose",
        ),
        ("    - task_class: nope\n", "no plugin named \"nope\""),
    ] {
        std::fs::write(&file, config(tmp.path(), plugins.path(), bad)).unwrap();
        let e = server.reload().await.unwrap_err();
        assert!(e.contains(why), "{e}");
        assert_eq!(server.scheduler().tasks(), names(&["probe"]));
    }
    std::fs::write(&file, "scheduler: [oops").unwrap();
    assert!(server.reload().await.is_err());
    while reports.try_recv().is_ok() {}
    let r = within("the old config keeps running", 20, reports.recv())
        .await
        .unwrap();
    assert_eq!(
        (r.task_type.as_str(), r.outcome),
        ("probe", TickOutcome::Failed)
    );
    within("shutdown", 30, server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_when_the_config_file_changes() {
    let tmp = TempDir::new("cfg-watch");
    let plugins = plugins_dir(&["probe", "file_cleanup"]);
    let file = tmp.path().join("quarry.yml");
    std::fs::write(&file, config(tmp.path(), plugins.path(), PROBE_OK)).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let f = file.clone();
    let server = tokio::spawn(async move {
        serve(&f, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let reports = tmp.path().join("reports");
    let appears = |name: &'static str| {
        let p = reports.join(name);
        async move {
            while !p.exists() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    within(
        "the probe's first report",
        30,
        appears("probe_run_report.json"),
    )
    .await;
    // An editor-style replace: write beside, rename over.
    let tmp_file = tmp.path().join(".quarry.yml.swp");
    std::fs::write(
        &tmp_file,
        config(tmp.path(), plugins.path(), &format!("{PROBE_OK}{CLEANUP}")),
    )
    .unwrap();
    std::fs::rename(&tmp_file, &file).unwrap();
    within(
        "the added task's first report",
        30,
        appears("file_cleanup_run_report.json"),
    )
    .await;
    let _ = stop_tx.send(());
    within("serve shutdown", 30, server).await.unwrap().unwrap();
}
