//! Hermetic: a task run's sequence (gate, pending status, task, final status) and a tick's
//! report, against quarry-testkit's scripted `FakeWorker`s: no rocklet, no process on a worker.

use std::sync::Arc;
use std::time::Duration;

use quarry_host::report::START_TIME_KEY;
use quarry_host::report::{TickOutcome, WorkerOutcome, WorkerResult};
use quarry_host::run::{run_on_worker, run_tick};
use quarry_host::workers::{Worker, WorkerError};
use quarry_testkit::{Answer, Call, FakeWorker};
use serde_json::{Value, json};

use crate::harness::*;

/// Where the runs below keep their status files, on the fake workers.
const STATUS_DIR: &str = "/data/scheduler_status";

/// The probe's status file.
const STATUS_FILE: &str = "/data/scheduler_status/probe_status.json";

/// A loaded probe and a runtime for it.
async fn probe() -> (
    Arc<quarry_host::runtime::Runtime>,
    quarry_host::plugins::PluginSet,
) {
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    (rt, set)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `/proc/<pid>/stat` of a live process started at `start_time` (clock ticks since boot).
fn proc_stat(pid: u32, start_time: u64) -> String {
    format!("{pid} (sleep) S {}{start_time}\n", "0 ".repeat(18))
}

/// Asserts a worker's result: its outcome, its error type and a part of its error.
fn assert_result(r: &WorkerResult, outcome: WorkerOutcome, kind: &str, error_part: &str) {
    assert_eq!(
        (r.outcome, r.error_type.map(|t| t.as_str())),
        (outcome, Some(kind)),
        "{r:?}"
    );
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains(error_part)),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_pending_then_the_final_status_through_write_file() {
    let (rt, set) = probe().await;
    let fake = Arc::new(FakeWorker::remote("10.0.0.1"));
    let run = within(
        "probe run",
        30,
        run_on_worker(
            &rt,
            &task(&set, "probe", json!({"mode": "ok"})),
            &fake.worker(),
            &settings(STATUS_DIR, None, 20),
        ),
    )
    .await;
    assert_eq!(
        run.result.outcome,
        WorkerOutcome::Success,
        "{:?}",
        run.result
    );
    assert_eq!(run.result.worker_ip, "10.0.0.1");

    // First the gate reads the status file (none yet), then pending, then the final status.
    let calls = fake.calls();
    assert!(
        matches!(&calls[0], Call::ReadFile { path, .. } if path == STATUS_FILE),
        "{calls:?}"
    );
    let writes = fake.writes_to(STATUS_FILE);
    assert_eq!(writes.len(), 2, "{calls:?}");
    assert_eq!(
        calls.len(),
        3,
        "no other call for a task that makes none: {calls:?}"
    );
    let pending = json_of(&writes[0]);
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["task_name"], "probe");
    assert_eq!(pending["worker_ip"], "10.0.0.1");
    assert_eq!(
        key_order(&writes[1])[..4],
        ["task_name", "worker_ip", "pid", "status"]
    );
    let done = json_of(&fake.file(STATUS_FILE).unwrap());
    assert_eq!(done["status"], "success");
    assert_eq!(done["extra"]["worker"], "10.0.0.1");
    assert_eq!(done["extra"]["address"], "10.0.0.1:22555");
    assert_eq!(run.detail.unwrap()["worker"], "10.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_errors_are_reported_with_their_kind() {
    let (rt, set) = probe().await;
    let refused = Arc::new(FakeWorker::remote("10.0.0.1").on_write(
        STATUS_FILE,
        Answer::error(WorkerError::Rejected(
            "worker 10.0.0.1:22555: write-file: refused".into(),
        )),
    ));
    // The pending write never answers: the run is a timeout and the task never starts.
    let slow = Arc::new(FakeWorker::remote("10.0.0.2").on_write(STATUS_FILE, Answer::timeout()));
    // The task's own command fails: the guest sees the error kind, the run succeeds.
    let missing = Arc::new(FakeWorker::remote("10.0.0.3").on_argv(
        &["quarry-tool"],
        Answer::error(WorkerError::NotFound(
            "worker 10.0.0.3:22555: execute: program \"quarry-tool\" not found".into(),
        )),
    ));
    // Only the final write fails.
    let flaky = Arc::new(
        FakeWorker::remote("10.0.0.4")
            .on_write(STATUS_FILE, Answer::proceed())
            .times(1)
            .on_write(
                STATUS_FILE,
                Answer::error(WorkerError::Other(
                    "worker 10.0.0.4:22555: disk full".into(),
                )),
            )
            .otherwise(Answer::ok("")),
    );
    let workers: Vec<Worker> = [&refused, &slow, &missing, &flaky]
        .iter()
        .map(|f| f.worker())
        .collect();
    let (report, runs) = within(
        "tick on failing fakes",
        60,
        run_tick(
            &rt,
            &task(
                &set,
                "probe",
                json!({"mode": "exec", "argv": ["quarry-tool", "-v"]}),
            ),
            &workers,
            &settings(STATUS_DIR, None, 8),
        ),
    )
    .await;
    let r = &report.worker_results;
    assert_eq!(report.outcome, TickOutcome::Partial, "{}", report.to_json());

    assert_result(
        &r[0],
        WorkerOutcome::Failed,
        "Rejected",
        "writing the pending status: worker 10.0.0.1",
    );
    assert!(
        refused.commands().is_empty(),
        "the task ran after a failed pending write"
    );

    assert_result(
        &r[1],
        WorkerOutcome::Timeout,
        "TimeoutError",
        "writing the pending status: worker 10.0.0.2",
    );
    assert!(slow.commands().is_empty());

    assert_eq!(r[2].outcome, WorkerOutcome::Success, "{:?}", r[2]);
    let detail = runs[2].detail.as_ref().unwrap();
    assert_eq!(detail["error_kind"], "not-found", "{detail:?}");
    let argv = missing
        .calls()
        .iter()
        .find_map(|c| c.argv().map(<[String]>::to_vec));
    assert_eq!(
        argv,
        Some(vec!["quarry-tool".to_string(), "-v".to_string()])
    );

    assert_result(
        &r[3],
        WorkerOutcome::Failed,
        "WorkerError",
        "writing its final status failed: worker 10.0.0.4:22555: disk full",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_worker_is_a_connection_error_and_fails_alone() {
    let (rt, set) = probe().await;
    let up = Arc::new(FakeWorker::remote("10.0.0.1"));
    let down = Arc::new(FakeWorker::unreachable("10.0.0.2"));
    let (report, _) = within(
        "tick with an unreachable worker",
        30,
        run_tick(
            &rt,
            &task(&set, "probe", json!({"mode": "ok"})),
            &[up.worker(), down.worker()],
            &settings(STATUS_DIR, None, 20),
        ),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Partial, "{}", report.to_json());
    assert_eq!(report.success_ips, vec!["10.0.0.1"]);
    let r = &report.worker_results[1];
    assert_eq!(r.worker_ip, "10.0.0.2");
    assert_result(
        r,
        WorkerOutcome::Failed,
        "ConnectionError",
        "worker 10.0.0.2:22555 unreachable",
    );
    assert_eq!(report.failed_details[0].ip, "10.0.0.2");
    // The gate's read was the only call: nothing was written on an unreachable worker.
    assert_eq!(down.calls().len(), 1, "{:?}", down.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_skips_while_the_recorded_job_lives_and_runs_once_it_is_gone() {
    let (rt, set) = probe().await;
    let started = 4_242_424;
    let status = json!({
        "task_name": "probe", "worker_ip": "10.0.0.1", "pid": 4242, "status": "running",
        "last_run": "2026-01-01T00:00:00.000000", "error": null,
        "extra": {START_TIME_KEY: started},
    });
    let fake = Arc::new(
        FakeWorker::remote("10.0.0.1")
            .with_file(STATUS_FILE, &status.to_string())
            .on_argv(
                &["cat", "/proc/4242/stat"],
                Answer::ok(&proc_stat(4242, started)),
            )
            .times(1)
            .on_argv(
                &["cat", "/proc/4242/stat"],
                Answer::output("", "cat: /proc/4242/stat: No such file or directory\n", 1),
            ),
    );
    // One TaskRun across ticks, as the scheduler keeps it.
    let t = task(&set, "probe", json!({"mode": "ok"}));
    let s = settings(STATUS_DIR, None, 20);
    let tick = || async {
        let (mut report, _) =
            within("gated tick", 30, run_tick(&rt, &t, &[fake.worker()], &s)).await;
        report.worker_results.remove(0)
    };

    let r = tick().await;
    assert_eq!(r.outcome, WorkerOutcome::Skipped, "{r:?}");
    assert!(
        fake.writes_to(STATUS_FILE).is_empty(),
        "a skipped run writes nothing"
    );

    let r = tick().await;
    assert_eq!(r.outcome, WorkerOutcome::Success, "{r:?}");
    let done = json_of(&fake.file(STATUS_FILE).unwrap());
    assert_eq!(
        (done["status"].as_str(), done["pid"].as_u64()),
        (Some("success"), None)
    );
    let stats = fake
        .calls()
        .iter()
        .filter(|c| c.argv().is_some_and(|a| a[0] == "cat"))
        .count();
    assert_eq!(stats, 2, "{:?}", fake.calls());
}

/// The scheduler against fakes: a worker that cannot be reached asks discovery for an early
/// refresh (the decision is made on `ErrorType::Unreachable`, not on report text), and the
/// other workers' runs are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_worker_asks_discovery_for_a_refresh() {
    use quarry_host::scheduler::{ScheduledTask, Scheduler, TickEnv};
    let (rt, set) = probe().await;
    let up = Arc::new(FakeWorker::remote("10.9.0.1"));
    let down = Arc::new(FakeWorker::unreachable("10.9.0.2"));
    let workers: Arc<Vec<Worker>> = Arc::new(vec![up.worker(), down.worker()]);
    let mut env = TickEnv::fixed(workers, settings(STATUS_DIR, None, 5));
    let (refresh_tx, mut refresh_rx) = tokio::sync::mpsc::unbounded_channel();
    env.refresh = Some(refresh_tx);
    let task = ScheduledTask {
        plugin: "probe".parse().unwrap(),
        params: json!({"mode": "ok"}).to_string(),
        interval: Duration::from_secs(3600),
        policy: Default::default(),
    };
    let (_keep, plugins) = tokio::sync::watch::channel(Arc::new(set));
    let sched = Scheduler::start_with(rt, vec![task], plugins, env);
    let mut reports = sched.subscribe();
    let report = within("the first tick", 20, reports.recv()).await.unwrap();
    let outcomes: Vec<_> = report
        .worker_results
        .iter()
        .map(|r| {
            (
                r.worker_ip.as_str(),
                r.outcome,
                r.error_type.map(|t| t.as_str()),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("10.9.0.1", WorkerOutcome::Success, None),
            ("10.9.0.2", WorkerOutcome::Failed, Some("ConnectionError")),
        ]
    );
    within("the refresh request", 5, refresh_rx.recv())
        .await
        .expect("an unreachable worker must ask discovery for a refresh");
    // The reachable worker got its pending and final status.
    assert_eq!(up.writes_to(STATUS_FILE).len(), 2);
    within("shutdown", 20, sched.shutdown()).await;
}
