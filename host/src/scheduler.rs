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
use crate::plugins::watch::PluginWatcher;
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

/// A task ready to schedule. The plugin is looked up by name at every tick, in the plugin
/// set current at that moment (hot reload swaps it).
#[derive(Clone, Debug)]
pub struct ScheduledTask {
    /// Plugin name.
    pub plugin: String,
    /// Params, a JSON object.
    pub params: String,
    /// How often.
    pub interval: Duration,
}

/// The params every plugin version must accept: one check per configured task.
pub fn params_checks(cfg: &Config) -> Vec<crate::plugins::ParamsCheck> {
    cfg.tasks
        .iter()
        .map(|t| crate::plugins::ParamsCheck {
            field: format!("scheduler.tasks[{}]", t.index),
            plugin: t.plugin.clone(),
            params: t.params.clone(),
        })
        .collect()
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
                    if loaded.is_empty() {
                        "none".to_string()
                    } else {
                        loaded.join(", ")
                    }
                ),
            });
            continue;
        };
        match rt.validate_config(plugin, &t.params).await {
            Ok(Ok(())) => tasks.push(ScheduledTask {
                plugin: t.plugin.clone(),
                params: t.params.clone(),
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
        plugins: watch::Receiver<Arc<PluginSet>>,
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
                task = %task.plugin,
                interval_s = task.interval.as_secs(),
                workers = workers.len(),
                "task scheduled"
            );
            loops.spawn(task_loop(
                rt.clone(),
                task,
                plugins.clone(),
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
    plugins: watch::Receiver<Arc<PluginSet>>,
    workers: Arc<Vec<Worker>>,
    settings: Arc<RunSettings>,
    reports: broadcast::Sender<Arc<RunReport>>,
    mut stop: watch::Receiver<bool>,
) {
    let name = task.plugin.clone();
    let mut next = Instant::now() + FIRST_TICK_DELAY;
    let mut missing_logged = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        // The plugin version current now; this tick keeps it even if a reload swaps it.
        let plugin = plugins.borrow().get(&name).cloned();
        match plugin {
            Some(plugin) => {
                missing_logged = false;
                let run = TaskRun {
                    plugin,
                    params: task.params.clone(),
                };
                let (report, _) = run_tick(&rt, &run, &workers, &settings).await;
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

/// `quarry serve`: loads plugins, checks the config's tasks against them, runs the scheduler
/// until `shutdown` resolves, then stops gracefully.
pub async fn serve(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(runtime_limits(&cfg))?;
    if let Some(dir) = &cfg.cache_dir {
        runtime = runtime.with_compile_cache(dir);
    }
    let rt = Arc::new(runtime);
    let checks = params_checks(&cfg);
    let plugins = PluginSet::scan(&rt, &cfg.plugins_dir, &PluginSet::default(), &[])
        .await
        .with_context(|| format!("loading plugins from {}", cfg.plugins_dir.display()))?;
    plugins.log_errors();
    let tasks = if cfg.enabled {
        resolve_tasks(&rt, &cfg, &plugins)
            .await
            .map_err(|problems| {
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
    let watcher = PluginWatcher::spawn(
        rt.clone(),
        cfg.plugins_dir.clone(),
        Arc::new(plugins),
        checks,
    )
    .with_context(|| format!("watching {}", cfg.plugins_dir.display()))?;
    let scheduler = Scheduler::start(rt, tasks, watcher.subscribe(), workers, run_settings(&cfg));
    shutdown.await;
    tracing::info!("shutting down: letting ticks in flight finish");
    watcher.stop();
    scheduler.shutdown().await;
    Ok(())
}
