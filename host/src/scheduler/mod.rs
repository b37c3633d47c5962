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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::OnFailure;
use crate::plugins::PluginSet;
use crate::report::RunReport;
use crate::run::quarantine::{Quarantine, QuarantinePolicy};
use crate::run::{RunSettings, TaskRun, TickRun, Tracked};
use crate::runtime::Runtime;
use crate::task::TaskName;
use crate::workers::Worker;

mod task_loop;

pub use task_loop::{TaskHandle, TaskStatus, TickInfo, Trigger};

/// Commands queued per task loop before senders wait.
const COMMAND_CHANNEL_CAPACITY: usize = 16;

/// Where ticks are recorded (the state database), and what a restart restores from it.
pub trait TickSink: Send + Sync + 'static {
    /// A tick of `run`'s task starts on `workers`; returns its id.
    fn tick_started<'a>(
        &'a self,
        run: &'a TaskRun,
        trigger: Trigger,
        workers: &'a [Worker],
    ) -> BoxFuture<'a, i64>;
    /// Tick `id` ended with `outcome` (ROCK's aggregate, or `cancelled`); `run.tracked` and
    /// `quarantine` are the task's memory after it.
    fn tick_finished<'a>(
        &'a self,
        id: i64,
        run: &'a TaskRun,
        report: &'a RunReport,
        runs: &'a [TickRun],
        outcome: &'a str,
        quarantine: &'a Quarantine,
    ) -> BoxFuture<'a, ()>;
    /// Fills a starting loop's memory (the processes runs reported, the quarantines) from
    /// what was recorded before.
    fn restore<'a>(
        &'a self,
        task: &'a TaskName,
        tracked: &'a Tracked,
        quarantine: &'a Quarantine,
    ) -> BoxFuture<'a, ()>;
}

/// Which tasks are paused, and why: shared by the loops so that a pause survives a loop's
/// restart by a config reload; filled from the state database at start, and every change is
/// handed to a hook (which records it there).
#[derive(Clone, Default)]
pub struct Paused {
    map: Arc<Mutex<BTreeMap<TaskName, String>>>,
    on_change: Option<Arc<PausedHook>>,
}

/// Called with a task and its new pause reason (`None`: resumed).
pub type PausedHook = dyn Fn(&TaskName, Option<&str>) + Send + Sync;

impl std::fmt::Debug for Paused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Paused").field(&self.map).finish()
    }
}

impl Paused {
    /// A registry that calls `hook` on every change.
    pub fn with_hook(hook: Arc<PausedHook>) -> Paused {
        Paused {
            map: Arc::default(),
            on_change: Some(hook),
        }
    }

    /// Why `task` is paused, if it is.
    pub fn get(&self, task: &TaskName) -> Option<String> {
        self.lock().get(task).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TaskName, String>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pauses (`Some(reason)`) or resumes (`None`) `task`.
    pub fn set(&self, task: &TaskName, reason: Option<String>) {
        self.restore(task, reason.clone());
        if let Some(hook) = &self.on_change {
            hook(task, reason.as_deref());
        }
    }

    /// Like [`Paused::set`], without calling the hook (state read back at start).
    pub fn restore(&self, task: &TaskName, reason: Option<String>) {
        let mut map = self.lock();
        match reason {
            Some(r) => map.insert(task.clone(), r),
            None => map.remove(task),
        };
    }
}

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
    /// Grants narrowing, dry run and protected paths from the config.
    pub policy: std::sync::Arc<crate::grants::TaskPolicy>,
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
    /// What a failed run leads to, per task (absent: ignore).
    pub on_failure: BTreeMap<TaskName, OnFailure>,
    /// When a plugin failing on a worker is kept off it.
    pub quarantine: QuarantinePolicy,
}

impl TickEnv {
    /// A fixed worker list.
    pub fn fixed(workers: Arc<Vec<Worker>>, settings: RunSettings) -> TickEnv {
        let (_tx, rx) = watch::channel(workers);
        TickEnv {
            workers: rx,
            refresh: None,
            settings,
            on_failure: BTreeMap::new(),
            quarantine: QuarantinePolicy::default(),
        }
    }
}

/// One running interval loop.
struct TaskLoop {
    spec: ScheduledTask,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
    control: TaskHandle,
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
    /// Handles of the running loops, republished on every change.
    handles: watch::Sender<Arc<BTreeMap<TaskName, TaskHandle>>>,
    paused: Paused,
    sink: Option<Arc<dyn TickSink>>,
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

    /// Starts one loop per task, recording ticks in `sink` and starting with the `paused`
    /// tasks paused.
    pub fn start_recorded(
        rt: Arc<Runtime>,
        tasks: Vec<ScheduledTask>,
        plugins: watch::Receiver<Arc<PluginSet>>,
        env: TickEnv,
        sink: Option<Arc<dyn TickSink>>,
        paused: Paused,
    ) -> Scheduler {
        let (reports, _) = broadcast::channel(REPORT_CHANNEL_CAPACITY);
        let (env, _) = watch::channel(Arc::new(env));
        let (handles, _) = watch::channel(Arc::default());
        let mut scheduler = Scheduler {
            rt,
            plugins,
            env,
            loops: Default::default(),
            retired: Vec::new(),
            uninstalling: Default::default(),
            reports,
            handles,
            paused,
            sink,
        };
        scheduler.apply(tasks);
        scheduler
    }

    /// Starts one loop per task, with workers from discovery.
    pub fn start_with(
        rt: Arc<Runtime>,
        tasks: Vec<ScheduledTask>,
        plugins: watch::Receiver<Arc<PluginSet>>,
        env: TickEnv,
    ) -> Scheduler {
        Self::start_recorded(rt, tasks, plugins, env, None, Paused::default())
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
            let (cmds_tx, cmds) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
            // Paused before the loop runs (a restart, a reload): visible at once.
            let (status_tx, status_rx) = watch::channel(TaskStatus {
                paused: self.paused.get(&name),
                ..TaskStatus::default()
            });
            let quarantine = Arc::new(Quarantine::new(self.env.borrow().quarantine));
            let control = TaskHandle {
                spec: spec.clone(),
                cmds: cmds_tx,
                status: status_rx,
                quarantine: quarantine.clone(),
            };
            let after = self.uninstalling.remove(&name);
            let run = task_loop::task_loop(task_loop::LoopCtx {
                rt: self.rt.clone(),
                task: spec.clone(),
                plugins: self.plugins.clone(),
                env: self.env.subscribe(),
                reports: self.reports.clone(),
                stop: stop_rx,
                cmds,
                status: status_tx,
                quarantine,
                paused: self.paused.clone(),
                sink: self.sink.clone(),
            });
            let handle = tokio::spawn(async move {
                if let Some(mut done) = after {
                    let _ = done.wait_for(|d| *d).await;
                }
                run.await
            });
            self.loops.insert(
                name,
                TaskLoop {
                    spec,
                    stop,
                    handle,
                    control,
                },
            );
        }
        self.retired.retain(|h| !h.is_finished());
        self.uninstalling.retain(|_, done| !*done.borrow());
        let handles = self
            .loops
            .iter()
            .map(|(n, l)| (n.clone(), l.control.clone()))
            .collect();
        self.handles.send_replace(Arc::new(handles));
        summary
    }

    /// The running tasks' handles, republished whenever the set of loops changes.
    pub fn handles(&self) -> watch::Receiver<Arc<BTreeMap<TaskName, TaskHandle>>> {
        self.handles.subscribe()
    }

    /// What ticks read: workers, settings, policies (replaced on reload).
    pub fn env(&self) -> watch::Receiver<Arc<TickEnv>> {
        self.env.subscribe()
    }

    /// Which tasks are paused (shared with the loops).
    pub fn paused(&self) -> &Paused {
        &self.paused
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
