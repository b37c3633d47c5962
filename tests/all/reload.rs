//! Hot reload of the plugins directory (real files, real watcher) and the compile cache.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quarry_host::plugins::watch::PluginWatcher;
use quarry_host::plugins::{ParamsCheck, PluginSet};
use quarry_host::report::RunReport;
use quarry_host::scheduler::{ScheduledTask, Scheduler};
use quarry_host::workers::{self, Limits, WorkerAddr};
use serde_json::json;
use tokio::sync::broadcast;

use crate::harness::*;

/// Puts a component into `dir` the safe way: written beside it, then renamed.
fn install(dir: &Path, component_name: &str, file: &str) {
    let tmp = dir.join(format!(".{file}.partial"));
    std::fs::copy(component(component_name), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// The probe version in the next report of the probe task.
async fn next_probe_version(
    reports: &mut broadcast::Receiver<Arc<RunReport>>,
    status: &Path,
) -> String {
    loop {
        let r = within("a probe tick", 30, reports.recv()).await.unwrap();
        if r.task_type == "probe" {
            assert_eq!(
                r.outcome,
                quarry_host::report::TickOutcome::Success,
                "{}",
                r.to_json()
            );
            let s: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(status.join("probe_status.json")).unwrap(),
            )
            .unwrap();
            return s["extra"]["version"].as_str().unwrap().to_string();
        }
    }
}

/// Forgets reports already queued (ticks that ran before the change under test).
fn drain(reports: &mut broadcast::Receiver<Arc<RunReport>>) {
    while reports.try_recv().is_ok() {}
}

/// Waits until the watcher has published `n` swaps.
async fn swaps(w: &PluginWatcher, n: u64) {
    within("a plugin swap", 30, async {
        while w.swaps() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_dropped_replaced_and_removed_in_a_running_host() {
    let dir = plugins_dir(&["file_cleanup"]);
    let status = TempDir::new("reload-status");
    let rt = runtime(64, Duration::from_secs(5));
    let initial = Arc::new(load(&rt, dir.path()).await);
    let watcher =
        PluginWatcher::spawn(rt.clone(), dir.path().to_path_buf(), initial, vec![]).unwrap();
    let task = ScheduledTask {
        plugin: "probe".parse().unwrap(),
        params: json!({"mode": "ok"}).to_string(),
        interval: Duration::from_millis(300),
        policy: Default::default(),
    };
    let ws = Arc::new(workers::connect(&[WorkerAddr::Local], Limits::default()));
    let sched = Scheduler::start(
        rt.clone(),
        vec![task],
        watcher.subscribe(),
        ws,
        settings(status.str(), None, 10),
    );
    let mut reports = sched.subscribe();

    // Drop in a new plugin: the task, skipped so far, starts running it.
    let t = Instant::now();
    install(dir.path(), "probe", "probe.wasm");
    swaps(&watcher, 1).await;
    let loaded = t.elapsed();
    assert_eq!(
        next_probe_version(&mut reports, status.path()).await,
        "1.0.0"
    );
    eprintln!(
        "reload latency (new file → set swapped): {loaded:?}; to first run: {:?}",
        t.elapsed()
    );

    // A partial write over the good file: refused, version 1 keeps running.
    let v2 = std::fs::read(component("probe2")).unwrap();
    std::fs::write(dir.path().join("probe.wasm"), &v2[..v2.len() / 3]).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    drain(&mut reports);
    assert_eq!(
        next_probe_version(&mut reports, status.path()).await,
        "1.0.0"
    );
    assert_eq!(watcher.swaps(), 1, "a bad file must not cause a swap");

    // The write completes: version 2 runs from the next tick on.
    let t = Instant::now();
    std::fs::write(dir.path().join("probe.wasm"), &v2).unwrap();
    swaps(&watcher, 2).await;
    eprintln!(
        "reload latency (file replaced in place → set swapped): {:?}",
        t.elapsed()
    );
    let cur = watcher.current();
    assert_eq!(
        cur.get("probe")
            .map(|p| p.meta().version.clone())
            .as_deref(),
        Some("2.0.0"),
        "{:?}",
        cur.errors()
    );
    drain(&mut reports);
    let mut v = next_probe_version(&mut reports, status.path()).await;
    if v == "1.0.0" {
        v = next_probe_version(&mut reports, status.path()).await; // a tick that began before the swap
    }
    assert_eq!(v, "2.0.0");

    // Corrupt bytes over the good file: version 2 keeps running.
    std::fs::write(dir.path().join("probe.wasm"), b"garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    drain(&mut reports);
    assert_eq!(
        next_probe_version(&mut reports, status.path()).await,
        "2.0.0"
    );
    let current = watcher.current();
    assert!(
        current.errors().iter().any(|e| e
            .to_string()
            .contains("still running the previous version 2.0.0")),
        "{:?}",
        current.errors()
    );

    // Removed: the task is unscheduled.
    std::fs::remove_file(dir.path().join("probe.wasm")).unwrap();
    swaps(&watcher, 3).await;
    assert!(watcher.current().get("probe").is_none());
    while reports.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        reports.try_recv().is_err(),
        "a removed plugin's task must not tick"
    );
    within("shutdown", 20, sched.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_rejects_the_configured_params_is_refused() {
    let dir = plugins_dir(&["probe"]);
    let rt = runtime(64, Duration::from_secs(5));
    let checks = vec![ParamsCheck {
        field: "scheduler.tasks[0]".into(),
        plugin: "probe".parse().unwrap(),
        params: json!({"mode": "v1only"}).to_string(),
    }];
    let initial = Arc::new(
        PluginSet::scan(&rt, dir.path(), &PluginSet::default(), &checks)
            .await
            .unwrap(),
    );
    assert_eq!(initial.get("probe").unwrap().meta().version, "1.0.0");
    let watcher =
        PluginWatcher::spawn(rt.clone(), dir.path().to_path_buf(), initial, checks).unwrap();
    install(dir.path(), "probe2", "probe.wasm");
    within("the refusal", 30, async {
        while watcher.current().errors().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let set = watcher.current();
    assert_eq!(
        set.get("probe").unwrap().meta().version,
        "1.0.0",
        "the previous version keeps running"
    );
    let e = set.errors()[0].to_string();
    assert!(
        e.contains("probe.wasm")
            && e.contains("scheduler.tasks[0]")
            && e.contains("mode v1only needs version 1"),
        "{e}"
    );
    assert_eq!(watcher.swaps(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_file_claiming_a_loaded_name_is_refused_and_the_incumbent_stays() {
    let dir = plugins_dir(&["probe"]);
    let rt = runtime(64, Duration::from_secs(5));
    let initial = Arc::new(load(&rt, dir.path()).await);
    let watcher =
        PluginWatcher::spawn(rt.clone(), dir.path().to_path_buf(), initial, vec![]).unwrap();
    install(dir.path(), "probe2", "another-probe.wasm");
    within("the refusal", 30, async {
        while watcher.current().errors().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let set = watcher.current();
    assert_eq!(
        set.get("probe").unwrap().path(),
        dir.path().join("probe.wasm")
    );
    let e = set.errors()[0].to_string();
    assert!(
        e.contains("another-probe.wasm")
            && e.contains("claim the task name \"probe\"")
            && e.contains("refusing this one"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_warm_cache_does_not_recompile_and_a_bad_entry_is_recompiled() {
    let dir = plugins_dir(&["probe", "file_cleanup"]);
    let cache = TempDir::new("cache");
    let new_rt = || {
        Arc::new(
            quarry_host::runtime::Runtime::new(quarry_host::runtime::RuntimeLimits::default())
                .unwrap()
                .with_compile_cache(cache.path()),
        )
    };
    let cold = new_rt();
    let t = Instant::now();
    let set = load(&cold, dir.path()).await;
    eprintln!("cold start, 2 plugins: {:?}", t.elapsed());
    assert_eq!(set.names(), vec!["file_cleanup", "probe"]);
    assert_eq!(cold.compile_stats().compiled.load(Ordering::Relaxed), 2);

    let warm = new_rt();
    let t = Instant::now();
    let set = load(&warm, dir.path()).await;
    eprintln!("warm start, 2 plugins: {:?}", t.elapsed());
    assert_eq!(set.names(), vec!["file_cleanup", "probe"]);
    assert_eq!(
        warm.compile_stats().compiled.load(Ordering::Relaxed),
        0,
        "nothing recompiled"
    );
    assert_eq!(warm.compile_stats().cache_hits.load(Ordering::Relaxed), 2);
    // The cached code runs.
    let (report, _) = within(
        "a run from cached code",
        30,
        quarry_host::run::run_tick(
            &warm,
            &task(&set, "probe", json!({"mode": "ok"})),
            &workers::connect(&[WorkerAddr::Local], Limits::default()),
            &settings(cache.str(), None, 10),
        ),
    )
    .await;
    assert_eq!(report.outcome, quarry_host::report::TickOutcome::Success);

    // Corrupt one entry and truncate the other: both are recompiled, never trusted.
    let mut entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();
    let len = std::fs::metadata(&entries[1]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&entries[1])
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let third = new_rt();
    let set = load(&third, dir.path()).await;
    assert_eq!(set.names(), vec!["file_cleanup", "probe"]);
    let stats = third.compile_stats();
    assert_eq!(stats.compiled.load(Ordering::Relaxed), 2);
    assert_eq!(stats.cache_rejected.load(Ordering::Relaxed), 2);
    assert_eq!(stats.cache_hits.load(Ordering::Relaxed), 0);
}
