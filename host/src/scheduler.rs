//! The scheduler: one interval loop per configured task, each tick fanned out to every worker.
//!
//! Ownership: [`Scheduler`] owns the loops (a `JoinSet`) and the stop signal (a `watch`);
//! each loop owns its task's plugin `Arc`, so the plugin version a tick started with lives
//! until that tick ends. Reports of finished ticks are broadcast to subscribers.
//!
//! Timing: first tick [`FIRST_TICK_DELAY`] after start, then every interval. A tick never
//! overlaps the previous one of the same task; ticks that fall due while one runs are
//! dropped (ROCK: APScheduler `max_instances=1`, `coalesce`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{broadcast, watch};
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
#[derive(Clone, Debug, PartialEq)]
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
        compile: cfg.compile,
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
    pub added: Vec<String>,
    /// Tasks no longer configured.
    pub removed: Vec<String>,
    /// Tasks whose params or interval changed (restarted with the new ones).
    pub changed: Vec<String>,
    /// Tasks left alone: they keep their schedule.
    pub unchanged: Vec<String>,
}

/// The interval loops, one per task; owned by whoever runs the scheduler (`serve`), which
/// applies config reloads with [`Scheduler::apply`]. Stop it with [`Scheduler::shutdown`].
pub struct Scheduler {
    rt: Arc<Runtime>,
    plugins: watch::Receiver<Arc<PluginSet>>,
    env: watch::Sender<Arc<TickEnv>>,
    loops: std::collections::BTreeMap<String, TaskLoop>,
    /// Loops told to stop (each finishes its tick in flight, then the task is uninstalled).
    retired: Vec<tokio::task::JoinHandle<()>>,
    /// Uninstalls under way, by task: a new loop of the same task waits for it.
    uninstalling: std::collections::BTreeMap<String, watch::Receiver<bool>>,
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
        let wanted: std::collections::BTreeMap<String, ScheduledTask> =
            tasks.into_iter().map(|t| (t.plugin.clone(), t)).collect();
        let names: Vec<String> = self.loops.keys().cloned().collect();
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
                            crate::run::uninstall(&task, &workers, &env.settings).await;
                            let _ = done_tx.send(true);
                        });
                        self.retired.push(cleanup);
                        self.uninstalling.insert(name.clone(), done_rx);
                    }
                    if other.is_some() {
                        summary.changed.push(name);
                    } else {
                        tracing::info!(task = name, "task unscheduled");
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
    pub fn tasks(&self) -> Vec<String> {
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
    let name = task.plugin.clone();
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
        let plugin = plugins.borrow().get(&name).cloned();
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
                    .any(|r| r.error_type.as_deref() == Some("ConnectionError"));
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

/// A running `quarry serve`: plugins (watched), scheduler, and the config they came from.
pub struct Server {
    config_path: PathBuf,
    cfg: Config,
    rt: Arc<Runtime>,
    watcher: PluginWatcher,
    discovery: workers::discovery::DiscoveryHandle,
    scheduler: Scheduler,
}

/// Where a config says workers come from.
fn sources(cfg: &Config) -> workers::discovery::Sources {
    workers::discovery::Sources {
        fixed: cfg.workers.clone(),
        file: cfg.workers_file.clone(),
        ray_dashboard: cfg.ray_dashboard.clone(),
        port: cfg.rocklet_port,
        ttl: cfg.worker_cache_ttl,
    }
}

async fn discover(cfg: &Config) -> (workers::discovery::DiscoveryHandle, TickEnv) {
    let d =
        workers::discovery::DiscoveryHandle::start(sources(cfg), workers::Limits::default()).await;
    let env = TickEnv {
        workers: d.subscribe(),
        refresh: Some(d.refresher()),
        settings: run_settings(cfg),
    };
    (d, env)
}

impl Server {
    /// Loads the config and the plugins, checks the tasks, and starts scheduling.
    pub async fn start(config_path: &Path) -> anyhow::Result<Server> {
        let cfg = Config::load(config_path)?;
        let limits = runtime_limits(&cfg);
        let (mut runtime, on_demand) = Runtime::for_server(limits, cfg.concurrency)?;
        if let Some(why) = on_demand {
            tracing::warn!("instantiating on demand (slower per run): {why}");
        }
        if let Some(dir) = &cfg.cache_dir {
            runtime = runtime.with_compile_cache(dir);
        }
        let rt = Arc::new(runtime);
        let plugins = PluginSet::scan(&rt, &cfg.plugins_dir, &PluginSet::default(), &[])
            .await
            .with_context(|| format!("loading plugins from {}", cfg.plugins_dir.display()))?;
        plugins.log_errors();
        let tasks = checked_tasks(&rt, &cfg, &plugins).await?;
        let watcher = PluginWatcher::spawn(
            rt.clone(),
            cfg.plugins_dir.clone(),
            Arc::new(plugins),
            params_checks(&cfg),
        )
        .with_context(|| format!("watching {}", cfg.plugins_dir.display()))?;
        let (discovery, env) = discover(&cfg).await;
        tracing::info!(
            tasks = tasks.len(),
            workers = env.workers.borrow().len(),
            pool_slots = rt.pool_slots().unwrap_or(0),
            reports = %cfg.report_dir.display(),
            status_dir = %cfg.status_dir,
            "quarry serving"
        );
        let scheduler = Scheduler::start_with(rt.clone(), tasks, watcher.subscribe(), env);
        Ok(Server {
            config_path: config_path.to_path_buf(),
            cfg,
            rt,
            watcher,
            discovery,
            scheduler,
        })
    }

    /// Re-reads the config file and applies it.
    ///
    /// Strategy: validate the whole file (schema, then every task against the loaded plugins)
    /// before touching anything; a file that fails is rejected whole and the running config
    /// stays. Then swap workers and settings, update the params every new plugin version must
    /// accept, and diff the tasks: unchanged tasks keep their schedule.
    pub async fn reload(&mut self) -> Result<ApplySummary, String> {
        let cfg = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        let plugins = self.watcher.current();
        let tasks = checked_tasks(&self.rt, &cfg, &plugins)
            .await
            .map_err(|e| format!("{e:#}"))?;
        for (what, same) in [
            (
                "quarry.plugins_dir",
                cfg.plugins_dir == self.cfg.plugins_dir,
            ),
            (
                "quarry.memory_limit_mib",
                cfg.memory_limit_bytes == self.cfg.memory_limit_bytes,
            ),
            (
                "quarry.call_timeout_seconds",
                cfg.call_timeout == self.cfg.call_timeout,
            ),
            ("quarry.cache_dir", cfg.cache_dir == self.cfg.cache_dir),
            ("quarry.compile", cfg.compile == self.cfg.compile),
        ] {
            if !same {
                tracing::warn!("{what} changed: it takes effect at the next restart");
            }
        }
        if let Some(slots) = self.rt.pool_slots()
            && crate::runtime::server_pool_slots(cfg.concurrency).is_none_or(|n| n > slots)
        {
            tracing::warn!(
                concurrency = cfg.concurrency,
                pool_slots = slots,
                "quarry.concurrency grew beyond the instance pool sized at start: \
                 runs wait for free slots until the next restart"
            );
        }
        self.watcher.set_checks(params_checks(&cfg));
        if sources(&cfg) != sources(&self.cfg) {
            let (discovery, env) = discover(&cfg).await;
            self.discovery = discovery;
            self.scheduler.set_env(env);
        } else {
            self.scheduler.set_env(TickEnv {
                workers: self.discovery.subscribe(),
                refresh: Some(self.discovery.refresher()),
                settings: run_settings(&cfg),
            });
        }
        let summary = self.scheduler.apply(tasks);
        tracing::info!(
            added = ?summary.added,
            changed = ?summary.changed,
            removed = ?summary.removed,
            unchanged = summary.unchanged.len(),
            "config reloaded"
        );
        self.cfg = cfg;
        Ok(summary)
    }

    /// The scheduler (for reports and the task list).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Stops watching and scheduling; ticks in flight finish.
    pub async fn shutdown(self) {
        self.watcher.stop();
        self.scheduler.shutdown().await;
    }
}

/// The config's tasks resolved against `plugins`, or one error listing every problem.
async fn checked_tasks(
    rt: &Runtime,
    cfg: &Config,
    plugins: &PluginSet,
) -> anyhow::Result<Vec<ScheduledTask>> {
    if !cfg.enabled {
        tracing::warn!("scheduler.enabled is false: no task will run");
        return Ok(Vec::new());
    }
    resolve_tasks(rt, cfg, plugins).await.map_err(|problems| {
        anyhow::anyhow!(
            "invalid config: {}",
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

/// Quiet time after a change to the config file before it is re-read (editors write in
/// several steps).
pub const CONFIG_DEBOUNCE: Duration = Duration::from_millis(200);

/// `quarry serve`: runs a [`Server`] until `shutdown` resolves, reloading the config when
/// its file changes or on SIGHUP; then stops gracefully.
pub async fn serve(config_path: &Path, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut server = Server::start(config_path).await?;
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let file_name = config_path.file_name().map(|n| n.to_os_string());
    // Watch the directory, not the file: editors replace the file by renaming.
    let dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name)
        {
            let _ = changed_tx.send(());
        }
    })?;
    notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)?;
    let mut hangup = hangup_signal()?;
    let mut last = std::fs::read(config_path).ok();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading {}", config_path.display());
            }
            ev = changed.recv() => {
                if ev.is_none() { break; }
                while let Ok(Some(())) = tokio::time::timeout(CONFIG_DEBOUNCE, changed.recv()).await {}
                let now = std::fs::read(config_path).ok();
                if now == last {
                    continue;
                }
                tracing::info!("{} changed: reloading", config_path.display());
            }
        }
        last = std::fs::read(config_path).ok();
        if let Err(e) = server.reload().await {
            tracing::error!("config rejected, the running config stays: {e}");
        }
    }
    drop(watcher);
    tracing::info!("shutting down: letting ticks in flight finish");
    server.shutdown().await;
    Ok(())
}

#[cfg(unix)]
fn hangup_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    Ok(tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::hangup(),
    )?)
}
