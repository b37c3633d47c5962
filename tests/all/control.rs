//! Steering a running scheduler: trigger, cancel, pause and resume, retries, halt and
//! quarantine, with the probe guest on the `local` worker (no agent needed).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use quarry_host::api::ControlError;
use quarry_host::config::OnFailure;
use quarry_host::error::ErrorType;
use quarry_host::report::{RunReport, WorkerOutcome};
use quarry_host::run::quarantine::{Quarantine, QuarantinePolicy};
use quarry_host::run::{RunNote, TaskRun, TickRun, Tracked};
use quarry_host::scheduler::{Paused, ScheduledTask, Scheduler, TickEnv, TickSink, Trigger};
use quarry_host::task::TaskName;
use quarry_host::workers::{self, Limits, Worker, WorkerAddr};
use serde_json::json;

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Records every tick's runs, as the state database would.
#[derive(Default)]
struct Recorder {
    ticks: Mutex<Vec<(i64, String, Vec<TickRun>)>>,
}

impl TickSink for Recorder {
    fn tick_started<'a>(
        &'a self,
        _run: &'a TaskRun,
        _trigger: Trigger,
        _workers: &'a [Worker],
    ) -> BoxFuture<'a, i64> {
        let n = self.ticks.lock().unwrap().len() as i64 + 1000;
        Box::pin(async move { n })
    }

    fn tick_finished<'a>(
        &'a self,
        id: i64,
        _run: &'a TaskRun,
        _report: &'a RunReport,
        runs: &'a [TickRun],
        outcome: &'a str,
        _quarantine: &'a Quarantine,
    ) -> BoxFuture<'a, ()> {
        self.ticks
            .lock()
            .unwrap()
            .push((id, outcome.to_string(), runs.to_vec()));
        Box::pin(async {})
    }

    fn restore<'a>(
        &'a self,
        _task: &'a TaskName,
        _tracked: &'a Tracked,
        _quarantine: &'a Quarantine,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

struct Setup {
    sched: Scheduler,
    recorder: Arc<Recorder>,
    _tmp: TempDir,
}

/// A scheduler of one probe task in `mode` on `local`, every `interval_ms`.
async fn setup(
    params: serde_json::Value,
    interval_ms: u64,
    on_failure: OnFailure,
    quarantine: QuarantinePolicy,
) -> Setup {
    setup_on(
        WorkerAddr::Local,
        params,
        interval_ms,
        on_failure,
        quarantine,
    )
    .await
}

/// [`setup`] on the worker at `addr`.
async fn setup_on(
    addr: WorkerAddr,
    params: serde_json::Value,
    interval_ms: u64,
    on_failure: OnFailure,
    quarantine: QuarantinePolicy,
) -> Setup {
    let tmp = TempDir::new("control");
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let task = ScheduledTask {
        plugin: "probe".parse().unwrap(),
        params: params.to_string(),
        interval: Duration::from_millis(interval_ms),
        policy: Default::default(),
    };
    let workers = Arc::new(workers::connect(&[addr], Limits::default()));
    let mut env = TickEnv::fixed(workers, settings(tmp.str(), None, 3));
    env.on_failure = BTreeMap::from([(task.plugin.clone(), on_failure)]);
    env.quarantine = quarantine;
    let (keep, plugins) = tokio::sync::watch::channel(Arc::new(set));
    std::mem::forget(keep); // the plugin set lives for the test
    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn TickSink> = recorder.clone();
    let sched =
        Scheduler::start_recorded(rt, vec![task], plugins, env, Some(sink), Paused::default());
    Setup {
        sched,
        recorder,
        _tmp: tmp,
    }
}

fn probe(s: &Setup) -> quarry_host::scheduler::TaskHandle {
    s.sched.handles().borrow()["probe"].clone()
}

const NO_QUARANTINE: QuarantinePolicy = QuarantinePolicy {
    after: 0,
    backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(1),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_runs_now_and_never_overlaps_a_tick_in_flight() {
    let s = setup(
        json!({"mode": "sleep", "secs": 2}),
        3_600_000,
        OnFailure::Ignore,
        NO_QUARANTINE,
    )
    .await;
    let h = probe(&s);
    let mut reports = s.sched.subscribe();
    // The first scheduled tick comes after a second: trigger before it.
    let tick = within("trigger", 10, h.trigger(None, Trigger::Api))
        .await
        .unwrap();
    assert_eq!(tick.trigger, Trigger::Api);
    assert_eq!(tick.workers, vec![WorkerAddr::Local]);
    let again = within("second trigger", 10, h.trigger(None, Trigger::Api)).await;
    assert!(
        matches!(&again, Err(ControlError::Conflict(m)) if m.contains("in flight")),
        "{again:?}"
    );
    let report = within("the triggered tick", 20, reports.recv())
        .await
        .unwrap();
    assert_eq!(report.worker_results[0].outcome, WorkerOutcome::Success);
    assert_eq!(
        h.status().last_tick.map(|t| t.id),
        Some(tick.id),
        "the status names the tick"
    );
    within("shutdown", 20, s.sched.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_task_skips_its_ticks_until_resumed() {
    let s = setup(json!({"mode": "ok"}), 500, OnFailure::Ignore, NO_QUARANTINE).await;
    let h = probe(&s);
    within("pause", 10, h.pause("maintenance window".into()))
        .await
        .unwrap();
    assert_eq!(h.status().paused.as_deref(), Some("maintenance window"));
    assert_eq!(h.status().next_tick, None);
    // Four intervals (and the first-tick delay) pass without a tick.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        s.recorder.ticks.lock().unwrap().is_empty(),
        "a paused task ticked"
    );
    let cancel = within("cancel", 10, h.cancel()).await;
    assert!(
        matches!(cancel, Err(ControlError::Conflict(_))),
        "{cancel:?}"
    );
    within("resume", 10, h.resume()).await.unwrap();
    let mut reports = s.sched.subscribe();
    within("a tick after resuming", 10, reports.recv())
        .await
        .unwrap();
    assert!(h.status().paused.is_none());
    within("shutdown", 20, s.sched.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_tick_in_flight() {
    let s = setup(
        json!({"mode": "sleep", "secs": 30}),
        3_600_000,
        OnFailure::Ignore,
        NO_QUARANTINE,
    )
    .await;
    let h = probe(&s);
    let mut reports = s.sched.subscribe();
    within("trigger", 10, h.trigger(None, Trigger::Api))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    within("cancel", 10, h.cancel()).await.unwrap();
    let report = within("the cancelled tick", 10, reports.recv())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancel was not prompt"
    );
    let r = &report.worker_results[0];
    assert_eq!(r.error_type, Some(ErrorType::Cancelled), "{r:?}");
    let ticks = s.recorder.ticks.lock().unwrap().clone();
    assert_eq!(ticks[0].1, "cancelled");
    assert_eq!(ticks[0].2[0].note, Some(RunNote::Cancelled));
    assert_eq!(ticks[0].2[0].outcome_word(), "cancelled");
    within("shutdown", 20, s.sched.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_runs_a_failing_worker_again_then_reports_the_last_attempt() {
    let s = setup(
        json!({"mode": "fail"}),
        3_600_000,
        OnFailure::Retry { retries: 2 },
        NO_QUARANTINE,
    )
    .await;
    let h = probe(&s);
    let mut reports = s.sched.subscribe();
    within("trigger", 10, h.trigger(None, Trigger::Api))
        .await
        .unwrap();
    let report = within("the retried tick", 30, reports.recv())
        .await
        .unwrap();
    assert_eq!(report.worker_results[0].outcome, WorkerOutcome::Failed);
    let ticks = s.recorder.ticks.lock().unwrap().clone();
    assert_eq!(ticks[0].2[0].attempts, 3, "one run and two retries");
    // Backoff: 1 s then 2 s (±25 %) between the attempts.
    let took = ticks[0].2[0]
        .ended_at
        .duration_since(ticks[0].2[0].started_at)
        .unwrap();
    assert!(took >= Duration::from_millis(2200), "no backoff: {took:?}");
    within("shutdown", 20, s.sched.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_pauses_the_task_after_a_failed_tick() {
    let s = setup(json!({"mode": "fail"}), 400, OnFailure::Halt, NO_QUARANTINE).await;
    let h = probe(&s);
    let mut reports = s.sched.subscribe();
    within("the failing tick", 10, reports.recv())
        .await
        .unwrap();
    // Let the loop publish its status after the tick.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let paused = h.status().paused.unwrap_or_default();
    assert!(
        paused.contains("halted") && paused.contains("probe failed on purpose"),
        "{paused}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.recorder.ticks.lock().unwrap().len(),
        1,
        "a halted task ticked"
    );
    within("shutdown", 20, s.sched.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_is_quarantined_on_its_worker_and_lifted_on_demand() {
    let policy = QuarantinePolicy {
        after: 2,
        backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
    };
    let s = setup(json!({"mode": "trap"}), 300, OnFailure::Ignore, policy).await;
    let h = probe(&s);
    let mut reports = s.sched.subscribe();
    for _ in 0..2 {
        let r = within("a trapping tick", 10, reports.recv()).await.unwrap();
        assert_eq!(r.worker_results[0].error_type, Some(ErrorType::Trap));
    }
    let r = within("the quarantined tick", 10, reports.recv())
        .await
        .unwrap();
    let w = &r.worker_results[0];
    assert_eq!(
        (w.outcome, w.error_type),
        (WorkerOutcome::Skipped, Some(ErrorType::Quarantined)),
        "{w:?}"
    );
    assert!(
        w.error
            .as_deref()
            .unwrap_or("")
            .contains("2 failures in a row"),
        "{w:?}"
    );
    let q = h.quarantine().list();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].worker, WorkerAddr::Local);
    assert!(h.quarantine().lift(&WorkerAddr::Local));
    // Lifted: the next tick runs (and traps) again.
    loop {
        let r = within("a tick after lifting", 10, reports.recv())
            .await
            .unwrap();
        if r.worker_results[0].error_type == Some(ErrorType::Trap) {
            break;
        }
    }
    within("shutdown", 20, s.sched.shutdown()).await;
}

/// The same policies through a real rocklet: retries and quarantine per worker, and halt,
/// with the status files written over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_halt_and_quarantine_through_a_real_rocklet() {
    needs_real_parts!("a real rocklet");
    let rocklet = RockletProcess::start();
    let addr = WorkerAddr::parse(&rocklet.addr, 22555).unwrap();
    // Retry: a task that answers `failed` is run three times on the rocklet.
    let s = setup_on(
        addr.clone(),
        json!({"mode": "fail"}),
        3_600_000,
        OnFailure::Retry { retries: 2 },
        NO_QUARANTINE,
    )
    .await;
    let mut reports = s.sched.subscribe();
    within("trigger", 10, probe(&s).trigger(None, Trigger::Api))
        .await
        .unwrap();
    let r = within("the retried tick", 30, reports.recv())
        .await
        .unwrap();
    assert_eq!(
        r.worker_results[0].error_type,
        Some(ErrorType::TaskResultFailed)
    );
    assert_eq!(s.recorder.ticks.lock().unwrap()[0].2[0].attempts, 3);
    within("shutdown", 20, s.sched.shutdown()).await;
    // Halt: paused after the failed tick.
    let s = setup_on(
        addr.clone(),
        json!({"mode": "fail"}),
        400,
        OnFailure::Halt,
        NO_QUARANTINE,
    )
    .await;
    let mut reports = s.sched.subscribe();
    within("the failing tick", 15, reports.recv())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        probe(&s)
            .status()
            .paused
            .is_some_and(|p| p.contains("halted"))
    );
    within("shutdown", 20, s.sched.shutdown()).await;
    // Quarantine: a trapping plugin is kept off the rocklet after two traps.
    let policy = QuarantinePolicy {
        after: 2,
        backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
    };
    let s = setup_on(
        addr.clone(),
        json!({"mode": "trap"}),
        300,
        OnFailure::Ignore,
        policy,
    )
    .await;
    let mut reports = s.sched.subscribe();
    for _ in 0..2 {
        let r = within("a trapping tick", 15, reports.recv()).await.unwrap();
        assert_eq!(r.worker_results[0].error_type, Some(ErrorType::Trap));
    }
    let r = within("the quarantined tick", 15, reports.recv())
        .await
        .unwrap();
    assert_eq!(r.worker_results[0].error_type, Some(ErrorType::Quarantined));
    assert_eq!(probe(&s).quarantine().list()[0].worker, addr);
    within("shutdown", 20, s.sched.shutdown()).await;
}
