//! The scheduler: one interval loop per configured task, each tick fanned out to every worker.
//!
//! Ownership: [`Scheduler`] owns the loops (a `JoinSet`) and the stop signal (a `watch`);
//! each loop owns its task's plugin `Arc`, so the plugin version a tick started with lives
//! until that tick ends. Reports of finished ticks are broadcast to subscribers.
//!
//! Timing: first tick [`FIRST_TICK_DELAY`] after start, then every interval. A tick never
//! overlaps the previous one of the same task; ticks that fall due while one runs are
//! dropped (ROCK: APScheduler `max_instances=1`, `coalesce`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, FieldError};
use crate::plugins::PluginSet;
use crate::report::RunReport;
use crate::run::{RunSettings, TaskRun, run_tick};
use crate::runtime::{Runtime, RuntimeLimits};
use crate::workers::{self, Worker};

/// Delay before each task's first tick.
pub const FIRST_TICK_DELAY: Duration = Duration::from_secs(1);

/// Extra time, beyond one run budget, that shutdown waits for ticks in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Reports kept for slow subscribers before they start missing some.
const REPORT_CHANNEL_CAPACITY: usize = 256;

/// A task ready to schedule.
#[derive(Clone, Debug)]
pub struct ScheduledTask {
    /// What to run.
    pub run: TaskRun,
    /// How often.
    pub interval: Duration,
}

/// Resolves the config's task entries against the loaded plugins: each must name a loaded
/// plugin whose `validate-config` accepts its params. Returns the tasks, or every problem
/// found (field paths as in the YAML).
pub async fn resolve_tasks(
    rt: &Runtime,
    cfg: &Config,
    plugins: &PluginSet,
) -> Result<Vec<ScheduledTask>, Vec<FieldError>> {
    let mut tasks = Vec::new();
    let mut problems = Vec::new();
    for t in &cfg.tasks {
        let at = |f: &str| format!("scheduler.tasks[{}].{f}", t.index);
        let Some(plugin) = plugins.get(&t.plugin) else {
            let loaded = plugins.names();
            problems.push(FieldError {
                field: at("task_class"),
                reason: format!(
                    "no plugin named {:?} in {} (loaded: {})",
                    t.plugin,
                    cfg.plugins_dir.display(),
                    if loaded.is_empty() { "none".to_string() } else { loaded.join(", ") }
                ),
            });
            continue;
        };
        match rt.validate_config(plugin, &t.params).await {
            Ok(Ok(())) => tasks.push(ScheduledTask {
                run: TaskRun {
                    plugin: plugin.clone(),
                    params: t.params.clone(),
                },
                interval: t.interval.unwrap_or(plugin.meta().default_interval),
            }),
            Ok(Err(msg)) => problems.push(FieldError {
                field: at("params"),
                reason: msg,
            }),
            Err(e) => problems.push(FieldError {
                field: at("params"),
                reason: format!("plugin {} failed while validating them: {e}", t.plugin),
            }),
        }
    }
    if problems.is_empty() {
        Ok(tasks)
    } else {
        Err(problems)
    }
}

/// The runtime limits a config asks for.
pub fn runtime_limits(cfg: &Config) -> RuntimeLimits {
    RuntimeLimits {
        memory_bytes: cfg.memory_limit_bytes,
        call_timeout: cfg.call_timeout,
    }
}

/// The run settings a config asks for.
pub fn run_settings(cfg: &Config) -> RunSettings {
    RunSettings {
        status_dir: cfg.status_dir.clone(),
        run_timeout: cfg.run_timeout,
        concurrency: cfg.concurrency,
        report_dir: Some(cfg.report_dir.clone()),
    }
}

/// Running interval loops; stop them with [`Scheduler::shutdown`].
pub struct Scheduler {
    loops: JoinSet<()>,
    stop: watch::Sender<bool>,
    reports: broadcast::Sender<Arc<RunReport>>,
    grace: Duration,
}

impl Scheduler {
    /// Starts one loop per task.
    pub fn start(
        rt: Arc<Runtime>,
        tasks: Vec<ScheduledTask>,
        workers: Arc<Vec<Worker>>,
        settings: RunSettings,
    ) -> Scheduler {
        let (stop, _) = watch::channel(false);
        let (reports, _) = broadcast::channel(REPORT_CHANNEL_CAPACITY);
        let mut loops = JoinSet::new();
        let grace = settings.run_timeout + SHUTDOWN_GRACE;
        let settings = Arc::new(settings);
        for task in tasks {
            tracing::info!(
                task = %task.run.plugin.meta().name,
                interval_s = task.interval.as_secs(),
                workers = workers.len(),
                "task scheduled"
            );
            loops.spawn(task_loop(
                rt.clone(),
                task,
                workers.clone(),
                settings.clone(),
                reports.clone(),
                stop.subscribe(),
            ));
        }
        Scheduler {
            loops,
            stop,
            reports,
            grace,
        }
    }

    /// Receives the report of every tick that finishes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RunReport>> {
        self.reports.subscribe()
    }

    /// Stops scheduling; ticks in flight finish (within one run budget plus a grace), then
    /// whatever is left is cancelled.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drain = async { while self.loops.join_next().await.is_some() {} };
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            tracing::warn!(
                "ticks still running {:.0}s after shutdown began; cancelling them",
                self.grace.as_secs_f64()
            );
            self.loops.shutdown().await;
        }
    }
}

/// One task's interval loop.
async fn task_loop(
    rt: Arc<Runtime>,
    task: ScheduledTask,
    workers: Arc<Vec<Worker>>,
    settings: Arc<RunSettings>,
    reports: broadcast::Sender<Arc<RunReport>>,
    mut stop: watch::Receiver<bool>,
) {
    let name = task.run.plugin.meta().name.to_string();
    let mut next = Instant::now() + FIRST_TICK_DELAY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        let (report, _) = run_tick(&rt, &task.run, &workers, &settings).await;
        let _ = reports.send(Arc::new(report));
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

/// `quarry serve`: loads plugins, checks the config's tasks against them, runs the scheduler
/// until `shutdown` resolves, then stops gracefully.
pub async fn serve(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let rt = Arc::new(Runtime::new(runtime_limits(&cfg))?);
    let plugins = PluginSet::load_dir(&rt, &cfg.plugins_dir)
        .await
        .with_context(|| format!("loading plugins from {}", cfg.plugins_dir.display()))?;
    let tasks = if cfg.enabled {
        resolve_tasks(&rt, &cfg, &plugins).await.map_err(|problems| {
            anyhow::anyhow!(
                "invalid config: {}",
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?
    } else {
        tracing::warn!("scheduler.enabled is false: no task will run");
        Vec::new()
    };
    let workers = Arc::new(workers::connect(&cfg.workers, workers::Limits::default()));
    let report_dir: PathBuf = cfg.report_dir.clone();
    tracing::info!(
        tasks = tasks.len(),
        workers = workers.len(),
        reports = %report_dir.display(),
        status_dir = %cfg.status_dir,
        "quarry serving"
    );
    let scheduler = Scheduler::start(rt, tasks, workers, run_settings(&cfg));
    shutdown.await;
    tracing::info!("shutting down: letting ticks in flight finish");
    scheduler.shutdown().await;
    Ok(())
}
