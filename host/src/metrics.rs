//! Prometheus metrics of `quarry serve`, served at `/metrics` by the admin API.
//!
//! One [`Metrics`] handle per process: cheap to clone (an `Arc` inside), shared by the
//! scheduler, the runtime (host calls), discovery, the plugin owner and the admin API; each
//! records through a typed method, so no caller builds a label set by hand. Label values come
//! from enums ([`RunResult`], [`HostCall`], …, [`ErrorType`]) or from configured task names,
//! and API routes are `&'static str` templates: every label's cardinality is bounded by the
//! code and the config. Worker addresses are never labels (a fleet has thousands).
//!
//! [`Metrics::encode`] writes the Prometheus text exposition format (version 0.0.4); serve it
//! with the [`CONTENT_TYPE`] header. README.md "Metrics" lists every family.
//!
//! Cost: each series is resolved once and kept, so a record is at most one read-locked lookup
//! by `&str` (task series) plus atomic adds and a histogram's short mutex: about 45 ns per run
//! and 20 ns per host call optimised, a few hundred ns in the unoptimised dev profile (the
//! `recording_cost` test prints them).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::error::ErrorType;
use crate::report::{TickOutcome, WorkerOutcome};

/// The `Content-Type` to serve [`Metrics::encode`]'s text with (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Buckets of `quarry_run_duration_seconds`: a run takes from a millisecond (a skipped run,
/// a task with nothing to do) to the default 90 s run budget.
const RUN_BUCKETS_SECONDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 90.0,
];

/// Buckets of `quarry_tick_duration_seconds`: a tick lasts from milliseconds (no workers) to
/// about its slowest run's budget, and much longer when a large fleet queues behind the
/// concurrency limit.
const TICK_BUCKETS_SECONDS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Buckets of `quarry_host_call_duration_seconds`: from `log` (microseconds) and file calls on
/// `local` (sub-millisecond) to commands up to the 60 s default call cap.
const HOST_CALL_BUCKETS_SECONDS: [f64; 15] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0,
];

/// Buckets of `quarry_api_request_duration_seconds`: snapshot reads take milliseconds; a
/// paged run query on a large state database up to a few seconds.
const API_BUCKETS_SECONDS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// An enum of label values: its `as_str()` is the value, and it encodes as that.
macro_rules! label_values {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// How many values there are.
            const COUNT: usize = [$($text),*].len();

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// Its position among the values, for arrays of resolved series.
            fn index(self) -> usize {
                self as usize
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values! {
    /// How a run of a task on one worker ended: `outcome` of `quarry_runs_total`. The report's
    /// [`WorkerOutcome`]s plus the states the scheduler and state database add.
    pub enum RunResult {
        /// Finished successfully.
        Success => "success",
        /// Started a long-lived process.
        Started => "started",
        /// The gate decided not to run (a previous process still runs).
        Skipped => "skipped",
        /// Failed.
        Failed => "failed",
        /// Ran out of time.
        Timeout => "timeout",
        /// Stopped by a shutdown before it finished.
        Interrupted => "interrupted",
        /// Cancelled through the API.
        Cancelled => "cancelled",
        /// Not run: the task is quarantined on the worker.
        Quarantined => "quarantined",
        /// Not run: refused before it started (e.g. its params or worker were rejected).
        Rejected => "rejected",
    }
}

impl From<WorkerOutcome> for RunResult {
    fn from(o: WorkerOutcome) -> RunResult {
        match o {
            WorkerOutcome::Success => RunResult::Success,
            WorkerOutcome::Started => RunResult::Started,
            WorkerOutcome::Skipped => RunResult::Skipped,
            WorkerOutcome::Failed => RunResult::Failed,
            WorkerOutcome::Timeout => RunResult::Timeout,
        }
    }
}

label_values! {
    /// How a tick ended: `outcome` of `quarry_ticks_total`. ROCK's aggregate
    /// ([`TickOutcome`]) plus cancelled and interrupted ticks.
    pub enum TickResult {
        /// Every worker succeeded, started or (not all) skipped.
        Success => "success",
        /// Some workers failed.
        Partial => "partial",
        /// Every worker failed or timed out.
        Failed => "failed",
        /// Every worker skipped.
        Skipped => "skipped",
        /// There were no workers.
        NoWorkers => "no_workers",
        /// Cancelled through the API.
        Cancelled => "cancelled",
        /// Stopped by a shutdown.
        Interrupted => "interrupted",
    }
}

impl From<TickOutcome> for TickResult {
    fn from(o: TickOutcome) -> TickResult {
        match o {
            TickOutcome::Success => TickResult::Success,
            TickOutcome::Partial => TickResult::Partial,
            TickOutcome::Failed => TickResult::Failed,
            TickOutcome::Skipped => TickResult::Skipped,
            TickOutcome::NoWorkers => TickResult::NoWorkers,
        }
    }
}

/// What started a tick (`trigger` of `quarry_ticks_total`): the scheduler's own type.
pub use crate::task::Trigger;

impl EncodeLabelValue for Trigger {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

label_values! {
    /// A host call of the `quarry:task/host` interface that reaches the worker or the logs:
    /// `kind` of `quarry_host_calls_total`. (`worker` and `previous-pid` only read the run's
    /// own data and are not counted.)
    pub enum HostCall {
        /// `execute`.
        Execute => "execute",
        /// `read-file`.
        ReadFile => "read_file",
        /// `write-file`.
        WriteFile => "write_file",
        /// `log`.
        Log => "log",
    }
}

label_values! {
    /// What a reload was about: `what` of `quarry_reloads_total`.
    pub enum Reload {
        /// The config file.
        Config => "config",
        /// The plugins directory.
        Plugins => "plugins",
    }
}

label_values! {
    /// Whether a reload took effect: `result` of `quarry_reloads_total`.
    pub enum ReloadResult {
        /// The new config or plugin set is in force.
        Applied => "applied",
        /// It was refused; the previous one stays in force.
        Rejected => "rejected",
    }
}

/// The `error` label of a host call: `none`, or the [`ErrorType`] the guest was answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CallError(Option<ErrorType>);

impl CallError {
    /// How many values there are: `none` and every [`ErrorType`].
    const COUNT: usize = 13;

    /// Its position among the values, for arrays of resolved series.
    fn index(self) -> usize {
        match self.0 {
            None => 0,
            Some(ErrorType::Timeout) => 1,
            Some(ErrorType::Unreachable) => 2,
            Some(ErrorType::NotFound) => 3,
            Some(ErrorType::Rejected) => 4,
            Some(ErrorType::WorkerError) => 5,
            Some(ErrorType::TaskResultFailed) => 6,
            Some(ErrorType::MemoryLimitExceeded) => 7,
            Some(ErrorType::Trap) => 8,
            Some(ErrorType::TaskError) => 9,
            Some(ErrorType::InvalidResult) => 10,
            Some(ErrorType::Cancelled) => 11,
            Some(ErrorType::Quarantined) => 12,
        }
    }
}

impl EncodeLabelValue for CallError {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.0.map_or("none", ErrorType::as_str))
    }
}

// Label sets: each field is a label, named as the field, in this order.

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RunLabels {
    task: String,
    outcome: RunResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TickLabels {
    task: String,
    outcome: TickResult,
    trigger: Trigger,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HostCallLabels {
    kind: HostCall,
    error: CallError,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GrantLabels {
    task: String,
    call: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HostCallKindLabels {
    kind: HostCall,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    what: Reload,
    result: ReloadResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A family of histograms that all share one set of buckets.
type Histograms<S> = Family<S, Histogram, fn() -> Histogram>;

/// The series of `family` for the labels `labels()` makes, resolved on first use and kept in
/// `slot`: later records skip the family's label hashing and locking.
fn resolved<'a, S, M, C>(
    slot: &'a OnceLock<M>,
    family: &Family<S, M, C>,
    labels: impl FnOnce() -> S,
) -> &'a M
where
    S: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    slot.get_or_init(|| family.get_or_create_owned(&labels()))
}

/// One task's series, resolved on first use (see [`resolved`]).
#[derive(Default)]
struct TaskSeries {
    run_duration: OnceLock<Histogram>,
    runs: [OnceLock<Counter>; RunResult::COUNT],
    tick_duration: OnceLock<Histogram>,
    ticks: [[OnceLock<Counter>; Trigger::COUNT]; TickResult::COUNT],
}

/// One host call kind's series, resolved on first use (see [`resolved`]).
#[derive(Default)]
struct HostCallSeries {
    duration: OnceLock<Histogram>,
    calls: [OnceLock<Counter>; CallError::COUNT],
}

/// The process's metrics. Clones share the same series; dropping the last clone drops them.
#[derive(Clone)]
pub struct Metrics(Arc<Families>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Families {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_duration: Histograms<TaskLabels>,
    ticks: Family<TickLabels, Counter>,
    tick_duration: Histograms<TaskLabels>,
    host_calls: Family<HostCallLabels, Counter>,
    host_call_duration: Histograms<HostCallKindLabels>,
    grant_rejections: Family<GrantLabels, Counter>,
    workers: Gauge,
    plugins_loaded: Gauge,
    plugins_refused: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    quarantined: Family<TaskLabels, Gauge>,
    retries: Family<TaskLabels, Counter>,
    state_db_errors: Counter,
    api_requests: Family<ApiLabels, Counter>,
    api_duration: Histograms<RouteLabels>,
    /// Resolved series per task name, looked up by `&str` without allocating. Holds only
    /// handles: the families above stay the source of what is encoded.
    tasks: RwLock<HashMap<String, TaskSeries>>,
    /// Resolved host-call series, by [`HostCall::index`].
    host_call_series: [HostCallSeries; HostCall::COUNT],
    /// Resolved reload series, by [`Reload::index`] and [`ReloadResult::index`].
    reload_series: [[OnceLock<Counter>; ReloadResult::COUNT]; Reload::COUNT],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A gauge value from a count (saturating: a count never reaches `i64::MAX`).
fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Every family registered, all empty but `quarry_build_info`.
    pub fn new() -> Metrics {
        let mut f = Families {
            registry: Registry::default(),
            runs: Family::default(),
            run_duration: Family::new_with_constructor(|| Histogram::new(RUN_BUCKETS_SECONDS)),
            ticks: Family::default(),
            tick_duration: Family::new_with_constructor(|| Histogram::new(TICK_BUCKETS_SECONDS)),
            host_calls: Family::default(),
            host_call_duration: Family::new_with_constructor(|| {
                Histogram::new(HOST_CALL_BUCKETS_SECONDS)
            }),
            grant_rejections: Family::default(),
            workers: Gauge::default(),
            plugins_loaded: Gauge::default(),
            plugins_refused: Gauge::default(),
            reloads: Family::default(),
            quarantined: Family::default(),
            retries: Family::default(),
            state_db_errors: Counter::default(),
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(|| Histogram::new(API_BUCKETS_SECONDS)),
            tasks: RwLock::default(),
            host_call_series: Default::default(),
            reload_series: Default::default(),
        };
        let r = &mut f.registry;
        // Counters are registered without `_total` and histograms without their unit: the
        // encoder appends both. Help texts get a final period from the encoder too.
        r.register(
            "quarry_build",
            "The running Quarry's version (always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        r.register(
            "quarry_runs",
            "Runs of a task on one worker, by how they ended",
            f.runs.clone(),
        );
        r.register_with_unit(
            "quarry_run_duration",
            "Wall-clock time of a run of a task on one worker, status files included",
            Unit::Seconds,
            f.run_duration.clone(),
        );
        r.register(
            "quarry_ticks",
            "Ticks of a task (one run on every worker), by aggregate outcome and what started them",
            f.ticks.clone(),
        );
        r.register_with_unit(
            "quarry_tick_duration",
            "Wall-clock time of a tick, from its start to its last worker's end",
            Unit::Seconds,
            f.tick_duration.clone(),
        );
        r.register(
            "quarry_host_calls",
            "Host calls made by tasks, by call and by the error kind the task was answered \
             with (none on success)",
            f.host_calls.clone(),
        );
        r.register_with_unit(
            "quarry_host_call_duration",
            "Time a host call took, answer to the task included",
            Unit::Seconds,
            f.host_call_duration.clone(),
        );
        r.register(
            "quarry_grant_rejections",
            "Host calls refused before reaching a worker: outside the task's grants, on a \
             protected path, or a write in a dry run",
            f.grant_rejections.clone(),
        );
        r.register(
            "quarry_workers_discovered",
            "Workers the last discovery found",
            f.workers.clone(),
        );
        r.register(
            "quarry_plugins_loaded",
            "Plugins loaded and runnable now",
            f.plugins_loaded.clone(),
        );
        r.register(
            "quarry_plugins_refused",
            "Plugin files in the plugins directory that were refused at the last scan",
            f.plugins_refused.clone(),
        );
        r.register(
            "quarry_reloads",
            "Reloads of the config file or the plugins directory, applied or rejected",
            f.reloads.clone(),
        );
        r.register(
            "quarry_quarantined",
            "Workers on which a task is quarantined now",
            f.quarantined.clone(),
        );
        r.register(
            "quarry_retries",
            "Retries of a run on a worker (on_failure: retry)",
            f.retries.clone(),
        );
        r.register(
            "quarry_state_db_errors",
            "Failed reads or writes of the state database",
            f.state_db_errors.clone(),
        );
        r.register(
            "quarry_api_requests",
            "Admin API requests, by route template and HTTP status",
            f.api_requests.clone(),
        );
        r.register_with_unit(
            "quarry_api_request_duration",
            "Time to answer an admin API request, by route template",
            Unit::Seconds,
            f.api_duration.clone(),
        );
        Metrics(Arc::new(f))
    }

    /// Calls `f` with `task`'s resolved series, creating the entry on first use.
    fn with_task<R>(&self, task: &str, f: impl FnOnce(&TaskSeries) -> R) -> R {
        let tasks = self.0.tasks.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = tasks.get(task) {
            return f(series);
        }
        drop(tasks);
        let mut tasks = self.0.tasks.write().unwrap_or_else(PoisonError::into_inner);
        f(tasks.entry(task.to_string()).or_default())
    }

    /// A run of `task` (a configured task name) on one worker ended with `outcome` after
    /// `duration`.
    pub fn record_run(&self, task: &str, outcome: RunResult, duration: Duration) {
        let f = &self.0;
        self.with_task(task, |series| {
            let labels = || TaskLabels {
                task: task.to_string(),
            };
            resolved(&series.run_duration, &f.run_duration, labels).observe(duration.as_secs_f64());
            let labels = || RunLabels {
                task: task.to_string(),
                outcome,
            };
            resolved(&series.runs[outcome.index()], &f.runs, labels).inc();
        });
    }

    /// A tick of `task` started by `trigger` ended with `outcome` after `duration`.
    pub fn record_tick(
        &self,
        task: &str,
        outcome: TickResult,
        trigger: Trigger,
        duration: Duration,
    ) {
        let f = &self.0;
        self.with_task(task, |series| {
            let labels = || TaskLabels {
                task: task.to_string(),
            };
            resolved(&series.tick_duration, &f.tick_duration, labels)
                .observe(duration.as_secs_f64());
            let labels = || TickLabels {
                task: task.to_string(),
                outcome,
                trigger,
            };
            let slot = &series.ticks[outcome.index()][trigger as usize];
            resolved(slot, &f.ticks, labels).inc();
        });
    }

    /// A host call of `kind` was answered after `duration`, with `error` when the task got an
    /// error answer.
    pub fn record_host_call(&self, kind: HostCall, error: Option<ErrorType>, duration: Duration) {
        let f = &self.0;
        let series = &f.host_call_series[kind.index()];
        resolved(&series.duration, &f.host_call_duration, || {
            HostCallKindLabels { kind }
        })
        .observe(duration.as_secs_f64());
        let error = CallError(error);
        resolved(&series.calls[error.index()], &f.host_calls, || {
            HostCallLabels { kind, error }
        })
        .inc();
    }

    /// A host call of `task` was refused by its grants (or protected paths, or a dry run).
    pub fn record_grant_rejection(&self, task: &str, call: crate::grants::GrantCall) {
        let labels = GrantLabels {
            task: task.to_string(),
            call: call.as_str(),
        };
        self.0.grant_rejections.get_or_create(&labels).inc();
    }

    /// Discovery found `n` workers.
    pub fn set_workers(&self, n: usize) {
        self.0.workers.set(gauge_value(n));
    }

    /// The plugin set now holds `loaded` plugins; `refused` files were not loaded.
    pub fn set_plugins(&self, loaded: usize, refused: usize) {
        self.0.plugins_loaded.set(gauge_value(loaded));
        self.0.plugins_refused.set(gauge_value(refused));
    }

    /// A reload of `what` was applied or rejected.
    pub fn record_reload(&self, what: Reload, result: ReloadResult) {
        let slot = &self.0.reload_series[what.index()][result.index()];
        resolved(slot, &self.0.reloads, || ReloadLabels { what, result }).inc();
    }

    /// `task` is now quarantined on `workers` workers (0 when none).
    pub fn set_quarantined(&self, task: &str, workers: usize) {
        self.0
            .quarantined
            .get_or_create(&TaskLabels {
                task: task.to_string(),
            })
            .set(gauge_value(workers));
    }

    /// A run of `task` on a worker is retried.
    pub fn record_retry(&self, task: &str) {
        self.0
            .retries
            .get_or_create(&TaskLabels {
                task: task.to_string(),
            })
            .inc();
    }

    /// `task` was removed from the config: its gauge series are dropped (its counters and
    /// histograms stay, as Prometheus expects of counters).
    pub fn forget_task(&self, task: &str) {
        self.0.quarantined.remove(&TaskLabels {
            task: task.to_string(),
        });
        let mut tasks = self.0.tasks.write().unwrap_or_else(PoisonError::into_inner);
        tasks.remove(task);
    }

    /// A read or write of the state database failed.
    pub fn record_state_db_error(&self) {
        self.0.state_db_errors.inc();
    }

    /// An admin API request matched `route` (the route template, e.g.
    /// `/api/v1/tasks/{task}`, never the raw path) and was answered with `status` after
    /// `duration`. Unmatched paths should share one route (e.g. `unmatched`).
    pub fn record_api_request(&self, route: &'static str, status: u16, duration: Duration) {
        self.0
            .api_duration
            .get_or_create(&RouteLabels { route })
            .observe(duration.as_secs_f64());
        self.0
            .api_requests
            .get_or_create(&ApiLabels { route, status })
            .inc();
    }

    /// Every family in the Prometheus text exposition format 0.0.4; serve it with
    /// [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.0.registry)
        {
            // Writing to a String cannot fail; an encoder error would be a value it refuses.
            tracing::warn!("encoding the metrics failed part-way: {e}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of family `name` (its series, `_bucket`, `_sum`, `_count`, `_total`),
    /// sorted.
    fn samples(text: &str, name: &str) -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name).is_some_and(|rest| {
                    rest.starts_with(['{', ' '])
                        || ["_total", "_bucket", "_sum", "_count", "_info"]
                            .iter()
                            .any(|s| {
                                rest.strip_prefix(s)
                                    .is_some_and(|r| r.starts_with(['{', ' ']))
                            })
                })
            })
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    fn sorted(lines: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn runs_are_counted_by_task_and_outcome_with_a_duration_histogram() {
        let m = Metrics::new();
        m.record_run("probe", RunResult::Success, Duration::from_millis(3));
        m.record_run(
            "probe",
            WorkerOutcome::Success.into(),
            Duration::from_millis(40),
        );
        m.record_run("probe", RunResult::Timeout, Duration::from_secs(120));
        m.record_run("file_cleanup", RunResult::Quarantined, Duration::ZERO);
        let text = m.encode();
        assert_eq!(
            samples(&text, "quarry_runs"),
            sorted(&[
                r#"quarry_runs_total{task="probe",outcome="success"} 2"#,
                r#"quarry_runs_total{task="probe",outcome="timeout"} 1"#,
                r#"quarry_runs_total{task="file_cleanup",outcome="quarantined"} 1"#,
            ])
        );
        let probe: Vec<String> = samples(&text, "quarry_run_duration_seconds")
            .into_iter()
            .filter(|l| l.contains(r#"task="probe""#))
            .collect();
        assert_eq!(
            probe,
            sorted(&[
                r#"quarry_run_duration_seconds_sum{task="probe"} 120.043"#,
                r#"quarry_run_duration_seconds_count{task="probe"} 3"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.001"} 0"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.0025"} 0"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.005"} 1"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.01"} 1"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.025"} 1"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.05"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.1"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.25"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="0.5"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="1"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="2.5"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="5"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="10"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="30"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="60"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="90"} 2"#,
                r#"quarry_run_duration_seconds_bucket{task="probe",le="+Inf"} 3"#,
            ])
        );
        assert!(text.contains("# TYPE quarry_run_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE quarry_runs_total counter\n"));
        assert!(text.contains(
            "# HELP quarry_runs_total Runs of a task on one worker, by how they ended.\n"
        ));
    }

    #[test]
    fn host_calls_are_counted_by_kind_and_error_kind() {
        let m = Metrics::new();
        let ms = Duration::from_millis(1);
        m.record_host_call(HostCall::Execute, None, ms);
        m.record_host_call(HostCall::Execute, None, ms);
        m.record_host_call(
            HostCall::Execute,
            Some(ErrorType::Timeout),
            Duration::from_secs(61),
        );
        m.record_host_call(HostCall::ReadFile, Some(ErrorType::NotFound), ms);
        m.record_host_call(HostCall::WriteFile, Some(ErrorType::Unreachable), ms);
        m.record_host_call(HostCall::Log, None, Duration::from_micros(5));
        let text = m.encode();
        assert_eq!(
            samples(&text, "quarry_host_calls"),
            sorted(&[
                r#"quarry_host_calls_total{kind="execute",error="none"} 2"#,
                r#"quarry_host_calls_total{kind="execute",error="TimeoutError"} 1"#,
                r#"quarry_host_calls_total{kind="read_file",error="NotFound"} 1"#,
                r#"quarry_host_calls_total{kind="write_file",error="ConnectionError"} 1"#,
                r#"quarry_host_calls_total{kind="log",error="none"} 1"#,
            ])
        );
        let exec = samples(&text, "quarry_host_call_duration_seconds");
        for line in [
            r#"quarry_host_call_duration_seconds_bucket{kind="log",le="0.0001"} 1"#,
            r#"quarry_host_call_duration_seconds_bucket{kind="execute",le="0.0005"} 0"#,
            r#"quarry_host_call_duration_seconds_bucket{kind="execute",le="0.001"} 2"#,
            r#"quarry_host_call_duration_seconds_bucket{kind="execute",le="60"} 2"#,
            r#"quarry_host_call_duration_seconds_bucket{kind="execute",le="+Inf"} 3"#,
            r#"quarry_host_call_duration_seconds_count{kind="execute"} 3"#,
            r#"quarry_host_call_duration_seconds_count{kind="read_file"} 1"#,
        ] {
            assert!(
                exec.contains(&line.to_string()),
                "{line} missing in {exec:#?}"
            );
        }
        // 16 lines (15 buckets, +Inf) per kind plus _sum and _count.
        assert_eq!(exec.len(), 4 * (HOST_CALL_BUCKETS_SECONDS.len() + 3));
    }

    #[test]
    fn ticks_gauges_reloads_and_api_requests_encode_as_documented() {
        let m = Metrics::new();
        m.record_tick(
            "probe",
            TickOutcome::Partial.into(),
            Trigger::Schedule,
            Duration::from_secs(2),
        );
        m.record_tick(
            "probe",
            TickResult::Cancelled,
            Trigger::Api,
            Duration::from_secs(700),
        );
        m.set_workers(10_000);
        m.set_plugins(3, 1);
        m.record_reload(Reload::Config, ReloadResult::Applied);
        m.record_reload(Reload::Plugins, ReloadResult::Rejected);
        m.record_reload(Reload::Plugins, ReloadResult::Rejected);
        m.set_quarantined("probe", 4);
        m.set_quarantined("gone", 1);
        m.forget_task("gone");
        m.record_retry("probe");
        m.record_state_db_error();
        let clone = m.clone();
        clone.record_api_request("/api/v1/tasks/{task}", 404, Duration::from_millis(2));
        clone.record_api_request("/metrics", 200, Duration::from_millis(2));
        let text = m.encode();
        let expect = |name: &str, lines: &[&str]| {
            assert_eq!(samples(&text, name), sorted(lines), "family {name}");
        };
        expect(
            "quarry_ticks",
            &[
                r#"quarry_ticks_total{task="probe",outcome="partial",trigger="schedule"} 1"#,
                r#"quarry_ticks_total{task="probe",outcome="cancelled",trigger="api"} 1"#,
            ],
        );
        expect(
            "quarry_workers_discovered",
            &["quarry_workers_discovered 10000"],
        );
        expect("quarry_plugins_loaded", &["quarry_plugins_loaded 3"]);
        expect("quarry_plugins_refused", &["quarry_plugins_refused 1"]);
        expect(
            "quarry_reloads",
            &[
                r#"quarry_reloads_total{what="config",result="applied"} 1"#,
                r#"quarry_reloads_total{what="plugins",result="rejected"} 2"#,
            ],
        );
        expect(
            "quarry_quarantined",
            &[r#"quarry_quarantined{task="probe"} 4"#],
        );
        expect(
            "quarry_retries",
            &[r#"quarry_retries_total{task="probe"} 1"#],
        );
        expect(
            "quarry_state_db_errors",
            &["quarry_state_db_errors_total 1"],
        );
        expect(
            "quarry_api_requests",
            &[
                r#"quarry_api_requests_total{route="/api/v1/tasks/{task}",status="404"} 1"#,
                r#"quarry_api_requests_total{route="/metrics",status="200"} 1"#,
            ],
        );
        expect(
            "quarry_build",
            &[&format!(
                r#"quarry_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )],
        );
        let tick = samples(&text, "quarry_tick_duration_seconds");
        assert!(tick.contains(
            &r#"quarry_tick_duration_seconds_bucket{task="probe",le="600"} 1"#.to_string()
        ));
        assert!(tick.contains(
            &r#"quarry_tick_duration_seconds_bucket{task="probe",le="+Inf"} 2"#.to_string()
        ));
        assert!(text.contains("# TYPE quarry_workers_discovered gauge\n"));
        assert!(text.contains("# TYPE quarry_build_info gauge\n"));
    }

    #[test]
    fn a_fresh_registry_shows_build_info_and_the_unlabelled_series_only() {
        // Labelled families have no series, and are not described, until something is
        // recorded in them.
        let text = Metrics::new().encode();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let build = format!(
            r#"quarry_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            samples,
            [
                build.as_str(),
                "quarry_workers_discovered 0",
                "quarry_plugins_loaded 0",
                "quarry_plugins_refused 0",
                "quarry_state_db_errors_total 0",
            ]
        );
    }

    #[test]
    fn every_family_is_described_with_its_type_once_recorded() {
        let m = Metrics::new();
        let d = Duration::from_millis(1);
        m.record_run("probe", RunResult::Success, d);
        m.record_tick("probe", TickResult::Success, Trigger::Cli, d);
        m.record_host_call(HostCall::Log, None, d);
        m.record_reload(Reload::Config, ReloadResult::Applied);
        m.set_quarantined("probe", 0);
        m.record_retry("probe");
        m.record_api_request("/metrics", 200, d);
        let text = m.encode();
        for family in [
            "quarry_build_info gauge",
            "quarry_runs_total counter",
            "quarry_run_duration_seconds histogram",
            "quarry_ticks_total counter",
            "quarry_tick_duration_seconds histogram",
            "quarry_host_calls_total counter",
            "quarry_host_call_duration_seconds histogram",
            "quarry_workers_discovered gauge",
            "quarry_plugins_loaded gauge",
            "quarry_plugins_refused gauge",
            "quarry_reloads_total counter",
            "quarry_quarantined gauge",
            "quarry_retries_total counter",
            "quarry_state_db_errors_total counter",
            "quarry_api_requests_total counter",
            "quarry_api_request_duration_seconds histogram",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family} missing:\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.record_retry("a\"b\\c\nd");
        assert!(
            m.encode()
                .contains(r#"quarry_retries_total{task="a\"b\\c\nd"} 1"#)
        );
    }

    /// What one record costs (a tick of 10k workers records 10k runs and ~30k host calls).
    /// Prints the figures; asserts nothing about them, as timing varies with the machine.
    #[test]
    #[allow(clippy::print_stderr)]
    fn recording_cost() {
        const N: u32 = 200_000;
        let m = Metrics::new();
        let tasks = ["file_cleanup", "image_prune", "probe", "docker_restart"];
        let started = std::time::Instant::now();
        for i in 0..N {
            let task = tasks[i as usize % tasks.len()];
            m.record_run(
                task,
                RunResult::Success,
                Duration::from_millis(u64::from(i % 5000)),
            );
        }
        let run_ns = started.elapsed().as_nanos() / u128::from(N);
        let kinds = [HostCall::Execute, HostCall::ReadFile, HostCall::WriteFile];
        let started = std::time::Instant::now();
        for i in 0..N {
            let error = (i % 7 == 0).then_some(ErrorType::NotFound);
            m.record_host_call(
                kinds[i as usize % 3],
                error,
                Duration::from_micros(u64::from(i)),
            );
        }
        let call_ns = started.elapsed().as_nanos() / u128::from(N);
        let started = std::time::Instant::now();
        let text = m.encode();
        let encode_us = started.elapsed().as_micros();
        eprintln!(
            "metrics: record_run {run_ns} ns, record_host_call {call_ns} ns, encode {encode_us} µs ({} bytes)",
            text.len()
        );
        assert!(text.contains(&format!(
            r#"quarry_runs_total{{task="probe",outcome="success"}} {}"#,
            N / 4
        )));
    }
}
