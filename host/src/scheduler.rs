//! The scheduler: one interval loop per configured task, each tick fanned out to every worker.
//!
//! Ownership: [`Scheduler`] owns the loops (a `JoinSet`) and the stop signal (a `watch`);
//! each loop owns its task's plugin `Arc`, so the plugin version a tick started with lives
//! until that tick ends. Reports of finished ticks are broadcast to subscribers.
//!
//! Timing: first tick [`FIRST_TICK_DELAY`] after start, then every interval. A tick never
//! overlaps the previous one of the same task; ticks that fall due while one runs are
//! dropped (ROCK: APScheduler `max_instances=1`, `coalesce`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::plugins::PluginSet;
use crate::report::RunReport;
use crate::run::{RunSettings, TaskRun, run_tick};
use crate::runtime::Runtime;
use crate::task::TaskName;
use crate::workers::Worker;

/// Delay before each task's first tick.
pub const FIRST_TICK_DELAY: Duration = Duration::from_secs(1);

/// Extra time, beyond one run budget, that shutdown waits for ticks in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Reports kept for slow subscribers before they start missing some.
const REPORT_CHANNEL_CAPACITY: usize = 256;

/// A task ready to schedule. The plugin is looked up by name at every tick, in the plugin
/// set current at that moment (hot reload swaps it).
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledTask {
    /// Task (and plugin) name.
    pub plugin: TaskName,
    /// Params, a JSON object.
    pub params: String,
    /// How often.
    pub interval: Duration,
}

/// What every tick reads when it starts: the workers and the run settings. Replaced whole on
/// config reload; ticks in flight keep the `Arc` they started with.
#[derive(Debug)]
pub struct TickEnv {
    /// The workers, as discovery currently sees them.
    pub workers: watch::Receiver<Arc<Vec<Worker>>>,
    /// Asks discovery for an early refresh (after a tick found a worker unreachable).
    pub refresh: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    /// Status dir, budgets, concurrency, report dir.
    pub settings: RunSettings,
}

impl TickEnv {
    /// A fixed worker list.
    pub fn fixed(workers: Arc<Vec<Worker>>, settings: RunSettings) -> TickEnv {
        let (_tx, rx) = watch::channel(workers);
        TickEnv {
            workers: rx,
            refresh: None,
            settings,
        }
    }
}

/// One running interval loop.
struct TaskLoop {
    spec: ScheduledTask,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

/// What [`Scheduler::apply`] changed, by task name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplySummary {
    /// New tasks.
    pub added: Vec<TaskName>,
    /// Tasks no longer configured.
    pub removed: Vec<TaskName>,
    /// Tasks whose params or interval changed (restarted with the new ones).
    pub changed: Vec<TaskName>,
    /// Tasks left alone: they keep their schedule.
    pub unchanged: Vec<TaskName>,
}

/// The interval loops, one per task; owned by whoever runs the scheduler (`serve`), which
/// applies config reloads with [`Scheduler::apply`]. Stop it with [`Scheduler::shutdown`].
pub struct Scheduler {
    rt: Arc<Runtime>,
    plugins: watch::Receiver<Arc<PluginSet>>,
    env: watch::Sender<Arc<TickEnv>>,
    loops: BTreeMap<TaskName, TaskLoop>,
    /// Loops told to stop (each finishes its tick in flight, then the task is uninstalled).
    retired: Vec<tokio::task::JoinHandle<()>>,
    /// Uninstalls under way, by task: a new loop of the same task waits for it.
    uninstalling: BTreeMap<TaskName, watch::Receiver<bool>>,
    reports: broadcast::Sender<Arc<RunReport>>,
}

impl Scheduler {
    /// Starts one loop per task.
    pub fn start(
        rt: Arc<Runtime>,
        tasks: Vec<ScheduledTask>,
        plugins: watch::Receiver<Arc<PluginSet>>,
        workers: Arc<Vec<Worker>>,
        settings: RunSettings,
    ) -> Scheduler {
        Self::start_with(rt, tasks, plugins, TickEnv::fixed(workers, settings))
    }

    /// Starts one loop per task, with workers from discovery.
    pub fn start_with(
        rt: Arc<Runtime>,
        tasks: Vec<ScheduledTask>,
        plugins: watch::Receiver<Arc<PluginSet>>,
        env: TickEnv,
    ) -> Scheduler {
        let (reports, _) = broadcast::channel(REPORT_CHANNEL_CAPACITY);
        let (env, _) = watch::channel(Arc::new(env));
        let mut scheduler = Scheduler {
            rt,
            plugins,
            env,
            loops: Default::default(),
            retired: Vec::new(),
            uninstalling: Default::default(),
            reports,
        };
        scheduler.apply(tasks);
        scheduler
    }

    /// Makes the running loops match `tasks`.
    ///
    /// Strategy: diff by task name; removed and changed loops are told to stop (a tick in
    /// flight finishes), added and changed ones start (first tick after
    /// [`FIRST_TICK_DELAY`]); unchanged loops are not touched, so they keep their schedule.
    pub fn apply(&mut self, tasks: Vec<ScheduledTask>) -> ApplySummary {
        let mut summary = ApplySummary::default();
        let wanted: BTreeMap<TaskName, ScheduledTask> =
            tasks.into_iter().map(|t| (t.plugin.clone(), t)).collect();
        let names: Vec<TaskName> = self.loops.keys().cloned().collect();
        for name in names {
            match wanted.get(&name) {
                Some(spec) if *spec == self.loops[&name].spec => {
                    summary.unchanged.push(name);
                }
                other => {
                    if let Some(old) = self.loops.remove(&name) {
                        let _ = old.stop.send(true);
                        // After its tick in flight, take the task off the workers (daemon
                        // stopped, status file removed); a changed task restarts after that.
                        let env = self.env.borrow().clone();
                        let task = name.clone();
                        let (done_tx, done_rx) = watch::channel(false);
                        let cleanup = tokio::spawn(async move {
                            let _ = old.handle.await;
                            let workers = env.workers.borrow().clone();
                            crate::run::uninstall(task.as_str(), &workers, &env.settings).await;
                            let _ = done_tx.send(true);
                        });
                        self.retired.push(cleanup);
                        self.uninstalling.insert(name.clone(), done_rx);
                    }
                    if other.is_some() {
                        summary.changed.push(name);
                    } else {
                        tracing::info!(task = %name, "task unscheduled");
                        summary.removed.push(name);
                    }
                }
            }
        }
        for (name, spec) in wanted {
            if self.loops.contains_key(&name) {
                continue;
            }
            if !summary.changed.contains(&name) {
                summary.added.push(name.clone());
            }
            tracing::info!(
                task = %name,
                interval_s = spec.interval.as_secs(),
                workers = self.env.borrow().workers.borrow().len(),
                "task scheduled"
            );
            let (stop, stop_rx) = watch::channel(false);
            let after = self.uninstalling.remove(&name);
            let run = task_loop(
                self.rt.clone(),
                spec.clone(),
                self.plugins.clone(),
                self.env.subscribe(),
                self.reports.clone(),
                stop_rx,
            );
            let handle = tokio::spawn(async move {
                if let Some(mut done) = after {
                    let _ = done.wait_for(|d| *d).await;
                }
                run.await
            });
            self.loops.insert(name, TaskLoop { spec, stop, handle });
        }
        self.retired.retain(|h| !h.is_finished());
        self.uninstalling.retain(|_, done| !*done.borrow());
        summary
    }

    /// Replaces the workers and settings; the next tick of every task uses them.
    pub fn set_env(&self, env: TickEnv) {
        self.env.send_replace(Arc::new(env));
    }

    /// Names of the scheduled tasks.
    pub fn tasks(&self) -> Vec<TaskName> {
        self.loops.keys().cloned().collect()
    }

    /// Receives the report of every tick that finishes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RunReport>> {
        self.reports.subscribe()
    }

    /// Stops scheduling; ticks in flight finish (within one run budget plus a grace), then
    /// whatever is left is cancelled.
    pub async fn shutdown(mut self) {
        let grace = self.env.borrow().settings.run_timeout + SHUTDOWN_GRACE;
        let mut handles = std::mem::take(&mut self.retired);
        for (_, l) in std::mem::take(&mut self.loops) {
            let _ = l.stop.send(true);
            handles.push(l.handle);
        }
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        let drain = futures::future::join_all(handles);
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                "ticks still running {:.0}s after shutdown began; cancelling them",
                grace.as_secs_f64()
            );
            for a in aborts {
                a.abort();
            }
        }
    }
}

/// One task's interval loop.
async fn task_loop(
    rt: Arc<Runtime>,
    task: ScheduledTask,
    plugins: watch::Receiver<Arc<PluginSet>>,
    env: watch::Receiver<Arc<TickEnv>>,
    reports: broadcast::Sender<Arc<RunReport>>,
    mut stop: watch::Receiver<bool>,
) {
    let name = task.plugin.as_str();
    let mut next = Instant::now() + FIRST_TICK_DELAY;
    let mut missing_logged = false;
    // What this task's runs recorded on each worker, kept across ticks (not across a config
    // change: that uninstalls the task first).
    let tracked = Arc::new(crate::run::Tracked::default());
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        // The plugin version current now; this tick keeps it even if a reload swaps it.
        let plugin = plugins.borrow().get(name).cloned();
        match plugin {
            Some(plugin) => {
                missing_logged = false;
                let run = TaskRun {
                    plugin,
                    params: task.params.clone(),
                    tracked: tracked.clone(),
                };
                let env = env.borrow().clone();
                let workers = env.workers.borrow().clone();
                let (report, _) = run_tick(&rt, &run, &workers, &env.settings).await;
                let unreachable = report
                    .worker_results
                    .iter()
                    .any(|r| r.error_type == Some(crate::error::ErrorType::Unreachable));
                if unreachable && let Some(refresh) = &env.refresh {
                    let _ = refresh.send(());
                }
                let _ = reports.send(Arc::new(report));
            }
            None if !missing_logged => {
                tracing::warn!(
                    task = name,
                    "no plugin named {name} is loaded; ticks are skipped until one is"
                );
                missing_logged = true;
            }
            None => {}
        }
        if *stop.borrow() {
            return;
        }
        next += task.interval;
        let now = Instant::now();
        if next <= now {
            let behind = now - next;
            let missed = (behind.as_nanos() / task.interval.as_nanos().max(1)) as u32 + 1;
            next += task.interval * missed;
            tracing::warn!(
                task = name,
                missed,
                "tick took longer than the interval; skipped the ticks that fell due meanwhile"
            );
        }
    }
}
