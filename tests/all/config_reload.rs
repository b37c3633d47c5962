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

/// An alias bomb written over the config of a running `quarry serve` is rejected from the
/// parser's counts: the log says which limit, the old config keeps running, and the daemon's
/// peak memory stays where it was (the process also runs under a 1 GiB data-segment watchdog;
/// expanded, the bomb needs more and would abort it).
#[test]
fn serve_rejects_an_alias_bomb_reload_without_growing() {
    let tmp = TempDir::new("cfg-bomb");
    let plugins = plugins_dir(&["probe"]);
    let file = tmp.path().join("quarry.yml");
    std::fs::write(&file, config(tmp.path(), plugins.path(), PROBE_OK)).unwrap();
    let log = tmp.path().join("serve.log");
    let mut command = quarry_serve_command(&file, &log);
    limit_data(&mut command, 1 << 30);
    let mut child = command.spawn().expect("start quarry serve");
    let _guard = KillOnDrop(child.id().into());
    let report = tmp.path().join("reports").join("probe_run_report.json");
    wait_until("the probe's first report", 60, || report.exists());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let peak_before = proc_status_kib(child.id(), "VmHWM");

    // Written beside and renamed over, so no half-written file is ever read.
    let beside = tmp.path().join(".quarry.yml.new");
    std::fs::write(
        &beside,
        config(tmp.path(), plugins.path(), &alias_bomb_task()),
    )
    .unwrap();
    std::fs::rename(&beside, &file).unwrap();
    wait_until("the reload is rejected", 60, || {
        log_text().contains("config rejected") || child.try_wait().unwrap().is_some()
    });
    let text = log_text();
    assert!(text.contains(ALIAS_BOMB_REFUSED), "{text}");
    assert!(child.try_wait().unwrap().is_none(), "serve died: {text}");
    let grown_kib = proc_status_kib(child.id(), "VmHWM").saturating_sub(peak_before);
    assert!(grown_kib < 64 << 10, "peak memory grew by {grown_kib} KiB");

    // The old config keeps running: the probe reports again.
    std::fs::remove_file(&report).unwrap();
    wait_until("a probe report after the rejection", 30, || report.exists());
    assert!(stop_child(&mut child, "quarry serve").success());
}
