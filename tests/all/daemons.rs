//! Non-idempotent tasks: the PID gate (skip while the daemon lives, relaunch when it died or
//! its launch failed, a reused pid is not the daemon), against a real rocklet.

use std::path::Path;
use std::time::Duration;

use quarry_host::report::START_TIME_KEY;
use quarry_host::report::{TickOutcome, WorkerOutcome};
use quarry_host::run::run_tick;
use quarry_host::workers::{self, Limits, WorkerAddr};
use serde_json::json;

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

fn status(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("probe_daemon_status.json")).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_gate_skips_live_daemons_and_relaunches_dead_or_failed_ones() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("daemons");
    let rocklet = RockletProcess::start();
    let rt = runtime(64, Duration::from_secs(20));
    let set = load(&rt, plugins_dir(&["probe_daemon"]).path()).await;
    assert!(!set.get("probe_daemon").unwrap().meta().idempotent);
    let w = workers::connect(
        &[WorkerAddr::parse(&rocklet.addr, 22555).unwrap()],
        Limits::default(),
    );
    let s = settings(tmp.str(), None, 30);
    // One TaskRun across ticks, as the scheduler does: the gate remembers what it wrote.
    let t = task(&set, "probe_daemon", json!({"mode": "daemon", "secs": 300}));
    let tick = || async {
        within("a daemon tick", 60, run_tick(&rt, &t, &w, &s))
            .await
            .0
    };
    // A fresh TaskRun reads the status file, as after a restart of Quarry.
    let tick_after_restart = || async {
        let t = task(&set, "probe_daemon", json!({"mode": "daemon", "secs": 300}));
        within("a daemon tick", 60, run_tick(&rt, &t, &w, &s))
            .await
            .0
    };
    let mut launched = Vec::new();

    // First tick launches.
    let r = tick().await;
    assert_eq!(
        (r.outcome, r.started_count),
        (TickOutcome::Success, 1),
        "{}",
        r.to_json()
    );
    let st = status(tmp.path());
    assert_eq!(st["status"], "running");
    let pid = st["pid"].as_u64().unwrap();
    launched.push(pid);
    assert!(st["extra"][START_TIME_KEY].as_u64().is_some(), "{st}");

    // While it lives: skipped, and the status file is left alone.
    let r = tick().await;
    assert_eq!(r.outcome, TickOutcome::Skipped, "{}", r.to_json());
    assert_eq!((r.success_count, r.skipped_count), (1, 1));
    assert_eq!(status(tmp.path())["pid"], pid);

    // It dies: the next tick relaunches.
    kill(pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = tick().await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    let pid2 = status(tmp.path())["pid"].as_u64().unwrap();
    assert_ne!(pid2, pid);
    launched.push(pid2);

    // After a restart, the status file alone is enough to keep skipping the live daemon.
    let r = tick_after_restart().await;
    assert_eq!(r.outcome, TickOutcome::Skipped, "{}", r.to_json());

    // A pid that is alive but is not our daemon (start time differs): relaunch.
    let mut st = status(tmp.path());
    st["pid"] = json!(rocklet.pid());
    std::fs::write(tmp.path().join("probe_daemon_status.json"), st.to_string()).unwrap();
    let r = tick_after_restart().await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    launched.push(status(tmp.path())["pid"].as_u64().unwrap());

    // A failed launch (ROCK's sticky `failed` with a null pid) is retried, not skipped forever.
    std::fs::write(
        tmp.path().join("probe_daemon_status.json"),
        json!({"task_name": "probe_daemon", "worker_ip": "127.0.0.1", "pid": null, "status": "failed",
               "last_run": "2026-01-01T00:00:00.000000", "error": "launch failed", "extra": {}}).to_string(),
    )
    .unwrap();
    let r = tick_after_restart().await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    launched.push(status(tmp.path())["pid"].as_u64().unwrap());

    for pid in launched {
        kill(pid);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_task_stops_its_daemons_and_removes_its_status_files() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("uninstall");
    let rocklet = RockletProcess::start();
    let plugins = plugins_dir(&["probe_daemon", "probe"]);
    let file = tmp.path().join("quarry.yml");
    let cfg = |tasks: &str| {
        format!(
            "scheduler:\n  enabled: true\n  tasks:\n{tasks}quarry:\n  plugins_dir: {}\n  workers: [\"{}\"]\n  status_dir: {}/status\n  report_dir: {}/reports\n  run_timeout_seconds: 20\n  cache_dir: none\n",
            plugins.str(),
            rocklet.addr,
            tmp.str(),
            tmp.str()
        )
    };
    let daemon = "    - task_class: probe_daemon\n      interval_seconds: 1\n      params: {mode: daemon, secs: 300}\n";
    let probe = "    - task_class: probe\n      interval_seconds: 1\n      params: {mode: ok}\n";
    std::fs::write(&file, cfg(&format!("{daemon}{probe}"))).unwrap();
    let mut server = within(
        "server start",
        60,
        quarry_host::server::Server::start(&file),
    )
    .await
    .unwrap();
    let status_file = tmp.path().join("status/probe_daemon_status.json");
    let pid = within("the daemon's launch", 30, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&status_file)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(pid) = v["pid"].as_u64()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(alive(pid));

    std::fs::write(&file, cfg(probe)).unwrap();
    let summary = server.reload().await.unwrap();
    assert_eq!(summary.removed, vec!["probe_daemon".parse().unwrap()]);
    let report_file = tmp
        .path()
        .join("reports/probe_daemon_uninstall_report.json");
    within("the uninstall report", 30, async {
        while !report_file.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    let r = &report["worker_results"][0];
    assert_eq!(
        (r["stopped_pid"].as_u64(), r["status_removed"].as_bool()),
        (Some(pid), Some(true)),
        "{report}"
    );
    within("the daemon's death", 10, async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(!status_file.exists());
    within("shutdown", 30, server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_job_of_an_idempotent_task_never_overlaps_with_the_next_run() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("jobs");
    let rocklet = RockletProcess::start();
    let rt = runtime(64, Duration::from_secs(20));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    assert!(set.get("probe").unwrap().meta().idempotent);
    let w = workers::connect(
        &[WorkerAddr::parse(&rocklet.addr, 22555).unwrap()],
        Limits::default(),
    );
    let s = settings(tmp.str(), None, 30);
    // A job that takes 2 s, reported as `running` with its pid.
    let t = task(&set, "probe", json!({"mode": "daemon", "secs": 2}));
    let tick = || async { within("a job tick", 60, run_tick(&rt, &t, &w, &s)).await };
    let read = || -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("probe_status.json")).unwrap(),
        )
        .unwrap()
    };

    let (r, _) = tick().await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    let pid = read()["pid"].as_u64().unwrap();
    assert!(alive(pid));

    // While the job runs, the task is not started again on that worker.
    let (r, runs) = tick().await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Skipped,
        "{}",
        r.to_json()
    );
    let reason = runs[0].detail.as_ref().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains(&format!("job (pid {pid}) is still running")),
        "{reason}"
    );
    assert_eq!(
        read()["pid"],
        pid,
        "a skipped run leaves the status file alone"
    );

    // Once it has finished, the next tick runs the task again.
    within("the job's end", 20, async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (r, _) = tick().await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    let pid2 = read()["pid"].as_u64().unwrap();
    assert_ne!(pid2, pid);
    kill(pid2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_daemon_is_handed_back_to_the_task_while_it_lives() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("managed");
    let rocklet = RockletProcess::start();
    let rt = runtime(64, Duration::from_secs(20));
    let set = load(&rt, plugins_dir(&["probe_daemon"]).path()).await;
    let w = workers::connect(
        &[WorkerAddr::parse(&rocklet.addr, 22555).unwrap()],
        Limits::default(),
    );
    let s = settings(tmp.str(), None, 30);
    let params = json!({"mode": "managed"});
    let t = task(&set, "probe_daemon", params.clone());
    let action = |runs: &[quarry_host::run::WorkerRun]| {
        runs[0].detail.as_ref().unwrap()["action"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // First run launches (`started`); the run is done (status success), the daemon on record.
    let (r, runs) = within("tick", 60, run_tick(&rt, &t, &w, &s)).await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    assert_eq!(action(&runs), "launched");
    let st = status(tmp.path());
    let pid = st["pid"].as_u64().unwrap();
    assert_eq!(st["status"], "success");
    assert!(st["extra"][START_TIME_KEY].as_u64().is_some(), "{st}");

    // Every later tick still runs the task, which gets its live daemon back.
    for t in [t.clone(), task(&set, "probe_daemon", params.clone())] {
        let (r, runs) = within("tick", 60, run_tick(&rt, &t, &w, &s)).await;
        assert_eq!(
            r.worker_results[0].outcome,
            WorkerOutcome::Success,
            "{}",
            r.to_json()
        );
        assert_eq!(action(&runs), "kept");
        assert_eq!(status(tmp.path())["pid"], pid);
    }

    // A dead daemon is not handed back: the task launches a new one.
    kill(pid);
    within("the daemon's death", 10, async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (_, runs) = within("tick", 60, run_tick(&rt, &t, &w, &s)).await;
    assert_eq!(action(&runs), "launched");
    let pid2 = status(tmp.path())["pid"].as_u64().unwrap();
    assert_ne!(pid2, pid);
    kill(pid2);
}
