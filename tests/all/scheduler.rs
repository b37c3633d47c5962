//! The scheduler: interval ticks, no overlap, a stuck guest does not stop the others.

use std::sync::Arc;
use std::time::Duration;

use quarry_host::report::{TickOutcome, WorkerOutcome};
use quarry_host::scheduler::{ScheduledTask, Scheduler};
use quarry_host::workers::{self, Limits, WorkerAddr};
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_guest_times_out_and_the_scheduler_keeps_ticking() {
    let tmp = TempDir::new("sched");
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let looping = ScheduledTask {
        plugin: "probe".parse().unwrap(),
        params: json!({"mode": "loop"}).to_string(),
        interval: Duration::from_secs(1),
        policy: Default::default(),
    };
    let workers = Arc::new(workers::connect(&[WorkerAddr::Local], Limits::default()));
    let reports_dir = tmp.path().join("reports");
    let (_keep, plugins) = tokio::sync::watch::channel(Arc::new(set));
    let sched = Scheduler::start(
        rt,
        vec![looping],
        plugins,
        workers,
        settings(tmp.str(), Some(&reports_dir), 2),
    );
    let mut reports = sched.subscribe();
    let started = std::time::Instant::now();
    for tick in 0..2 {
        let report = within("a tick of the looping task", 20, reports.recv())
            .await
            .unwrap();
        assert_eq!(report.outcome, TickOutcome::Failed, "tick {tick}");
        assert_eq!(report.timeout_count, 1);
        let r = &report.worker_results[0];
        assert_eq!(r.outcome, WorkerOutcome::Timeout);
        assert_eq!(r.error_type.map(|t| t.as_str()), Some("TimeoutError"));
        // Ended within its 2 s budget (plus the epoch tick), not later.
        assert!(
            report.duration_ms < 3000.0,
            "tick {tick} took {} ms",
            report.duration_ms
        );
    }
    // Two ticks of a 2 s run on a 1 s interval: no overlap, so at least 2 × 2 s.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "ticks overlapped"
    );
    let on_disk = std::fs::read_to_string(reports_dir.join("probe_run_report.json")).unwrap();
    assert!(on_disk.contains("\"timeout_count\": 1"));
    within("shutdown", 20, sched.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_tick_independently_and_shutdown_waits_for_runs_in_flight() {
    let tmp = TempDir::new("sched2");
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe", "file_cleanup"]).path()).await;
    let tasks = vec![
        ScheduledTask {
            plugin: "probe".parse().unwrap(),
            params: json!({"mode": "sleep", "secs": 2}).to_string(),
            interval: Duration::from_secs(60),
            policy: Default::default(),
        },
        ScheduledTask {
            plugin: "file_cleanup".parse().unwrap(),
            params: "{}".into(),
            interval: Duration::from_secs(1),
            policy: Default::default(),
        },
    ];
    let workers = Arc::new(workers::connect(&[WorkerAddr::Local], Limits::default()));
    let (_keep, plugins) = tokio::sync::watch::channel(Arc::new(set));
    let sched = Scheduler::start(rt, tasks, plugins, workers, settings(tmp.str(), None, 20));
    let mut reports = sched.subscribe();
    let mut cleanup_ticks = 0;
    while cleanup_ticks < 2 {
        let r = within("file_cleanup ticks", 20, reports.recv())
            .await
            .unwrap();
        if r.task_type == "file_cleanup" {
            assert_eq!(r.outcome, TickOutcome::Success);
            cleanup_ticks += 1;
        }
    }
    // The probe's first tick (a 2 s sleep) started at ~1 s; shutting down now lets it finish.
    let mut late = sched.subscribe();
    within("shutdown", 30, sched.shutdown()).await;
    let mut saw_probe = false;
    while let Ok(r) = late.try_recv() {
        if r.task_type == "probe" {
            assert_eq!(
                r.outcome,
                TickOutcome::Success,
                "the run in flight finished normally"
            );
            saw_probe = true;
        }
    }
    let status = std::fs::read_to_string(tmp.path().join("probe_status.json")).unwrap();
    assert!(
        saw_probe || status.contains("\"status\": \"success\""),
        "{status}"
    );
}
