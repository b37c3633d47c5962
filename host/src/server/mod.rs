//! `quarry serve`: the [`Server`] (config, plugins watched, worker discovery, scheduler) and
//! its reload, plus resolving a config's tasks against the loaded plugins (shared with
//! `quarry check-config`).
//!
//! Ownership: [`serve`] owns the [`Server`]; it is the only one that reloads it (on a change
//! of the config file, debounced, or on SIGHUP), so a reload never races another. The server
//! owns the plugin watcher, the discovery handle and the [`Scheduler`]; dropping it stops all
//! three.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use anyhow::Context as _;

use crate::config::TaskConfig;
use crate::config::{Config, FieldError};
use crate::metrics::Metrics;
use crate::plugins::PluginSet;
use crate::plugins::watch::PluginWatcher;
use crate::runtime::{Plugin, Runtime};
use crate::scheduler::{ApplySummary, ScheduledTask, Scheduler, TickEnv};
use crate::scheduler::{Paused, TickSink};
use crate::state::{Retention, StateDb};
use crate::workers;

pub mod control;
mod sink;

/// How often old run history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

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
        let Some(plugin) = plugins.get(t.plugin.as_str()) else {
            problems.push(FieldError {
                field: at("task_class"),
                reason: plugins.missing(t.plugin.as_str(), &cfg.paths.plugins_dir),
            });
            continue;
        };
        match rt.validate_config(plugin, &t.params).await {
            Ok(Ok(())) => match check_targets(rt, plugin, t).await {
                Ok(()) => tasks.push(ScheduledTask {
                    plugin: plugin.meta().name.clone(),
                    params: t.params.clone(),
                    interval: t.interval.unwrap_or(plugin.meta().default_interval),
                    policy: Arc::new(t.policy.clone()),
                }),
                Err(reason) => problems.push(FieldError {
                    field: at("params"),
                    reason,
                }),
            },
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

/// Refuses a task whose plugin declares, for its params, a target (write path) that touches a
/// protected path. Asks the plugin's `requires` (remembered by the plugin version).
pub async fn check_targets(rt: &Runtime, plugin: &Plugin, t: &TaskConfig) -> Result<(), String> {
    let name = plugin.meta().name.as_str();
    let declared = match rt.requires(plugin, &t.params).await {
        Ok(Ok(d)) => d,
        Ok(Err(msg)) => return Err(msg),
        Err(e) => {
            return Err(format!(
                "plugin {name} failed while declaring its grants: {e}"
            ));
        }
    };
    match t.policy.protected_target(name, &declared) {
        Some(why) => Err(why),
        None => Ok(()),
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
    /// The state database (owned here, closed after the scheduler at shutdown).
    db: Option<StateDb>,
    /// The config's tasks, for the admin API (replaced on reload).
    tasks: watch::Sender<Arc<Vec<TaskConfig>>>,
    /// The retention in force, read by the pruning task.
    retention: watch::Sender<Retention>,
    /// Stops background tasks (pruning, plugin counting).
    stop: watch::Sender<bool>,
    /// What `/metrics` shows.
    metrics: Metrics,
}

async fn discover(cfg: &Config) -> (workers::discovery::DiscoveryHandle, TickEnv) {
    let d = workers::discovery::DiscoveryHandle::start(
        cfg.discovery.clone(),
        workers::Limits::default(),
    )
    .await;
    let env = tick_env(cfg, &d);
    (d, env)
}

/// What every tick of a config reads: discovery's workers, the run settings and the failure
/// policies.
fn tick_env(cfg: &Config, d: &workers::discovery::DiscoveryHandle) -> TickEnv {
    TickEnv {
        workers: d.subscribe(),
        refresh: Some(d.refresher()),
        settings: cfg.run.clone(),
        on_failure: cfg
            .tasks
            .iter()
            .map(|t| (t.plugin.clone(), t.on_failure))
            .collect(),
        quarantine: cfg.quarantine,
    }
}

impl Server {
    /// Loads the config and the plugins, checks the tasks, and starts scheduling.
    pub async fn start(config_path: &Path) -> anyhow::Result<Server> {
        let cfg = Config::load(config_path)?;
        let (mut runtime, on_demand) = Runtime::for_server(cfg.runtime, cfg.run.concurrency)?;
        if let Some(why) = on_demand {
            tracing::warn!("instantiating on demand (slower per run): {why}");
        }
        if let Some(dir) = &cfg.paths.cache_dir {
            runtime = runtime.with_compile_cache(dir);
        }
        let metrics = Metrics::new();
        let rt = Arc::new(runtime.with_metrics(metrics.clone()));
        let dir = &cfg.paths.plugins_dir;
        let plugins = PluginSet::scan(&rt, dir, &PluginSet::default(), &[])
            .await
            .with_context(|| format!("loading plugins from {}", dir.display()))?;
        plugins.log_errors();
        let tasks = checked_tasks(&rt, &cfg, &plugins).await?;
        let watcher = PluginWatcher::spawn(
            rt.clone(),
            dir.clone(),
            Arc::new(plugins),
            params_checks(&cfg),
        )
        .with_context(|| format!("watching {}", dir.display()))?;
        let (discovery, env) = discover(&cfg).await;
        let (db, paused) = open_state(&cfg).await?;
        let state = db.as_ref().map(StateDb::handle);
        let sink = state
            .clone()
            .map(|s| sink::StateSink::new(s) as Arc<dyn TickSink>);
        let (retention, retention_rx) = watch::channel(cfg.retention);
        let (stop, stop_rx) = watch::channel(false);
        if let Some(state) = &state {
            let mut stop = stop_rx;
            let until_stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::spawn(crate::state::run_retention(
                state.clone(),
                retention_rx,
                PRUNE_EVERY,
                until_stopped,
            ));
        }
        tracing::info!(
            tasks = tasks.len(),
            workers = env.workers.borrow().len(),
            pool_slots = rt.pool_slots().unwrap_or(0),
            reports = ?cfg.run.report_dir,
            status_dir = %cfg.run.status_dir,
            "quarry serving"
        );
        let scheduler =
            Scheduler::start_recorded(rt.clone(), tasks, watcher.subscribe(), env, sink, paused);
        let (tasks, _) = watch::channel(Arc::new(cfg.tasks.clone()));
        tokio::spawn(count_plugins(
            watcher.subscribe(),
            metrics.clone(),
            stop.subscribe(),
        ));
        Ok(Server {
            config_path: config_path.to_path_buf(),
            cfg,
            rt,
            watcher,
            discovery,
            scheduler,
            db,
            tasks,
            retention,
            stop,
            metrics,
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
        for what in cfg.restart_only_changes(&self.cfg) {
            tracing::warn!("{what} changed: it takes effect at the next restart");
        }
        if let Some(slots) = self.rt.pool_slots()
            && crate::runtime::server_pool_slots(cfg.run.concurrency).is_none_or(|n| n > slots)
        {
            tracing::warn!(
                concurrency = cfg.run.concurrency,
                pool_slots = slots,
                "quarry.concurrency grew beyond the instance pool sized at start: \
                 runs wait for free slots until the next restart"
            );
        }
        self.watcher.set_checks(params_checks(&cfg));
        if cfg.discovery != self.cfg.discovery {
            let (discovery, env) = discover(&cfg).await;
            self.discovery = discovery;
            self.scheduler.set_env(env);
        } else {
            self.scheduler.set_env(tick_env(&cfg, &self.discovery));
        }
        let summary = self.scheduler.apply(tasks);
        self.tasks.send_replace(Arc::new(cfg.tasks.clone()));
        self.retention.send_replace(cfg.retention);
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
        let _ = self.stop.send(true);
        self.scheduler.shutdown().await;
        if let Some(db) = self.db {
            db.shutdown().await;
        }
    }

    /// Starts the admin API on `quarry.api.listen` (unless disabled): the REST API, `/metrics`
    /// and the dashboard. Returns its address and task; it stops with [`Server::shutdown`].
    pub async fn start_api(
        &self,
    ) -> anyhow::Result<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>> {
        let api = &self.cfg.api;
        if !api.enabled {
            tracing::info!("quarry.api.enabled is false: no admin API");
            return Ok(None);
        }
        let auth = crate::api::auth::ApiAuth::load(api.token_file.as_deref(), api.listen)
            .map_err(|e| anyhow::anyhow!("quarry.api: {e}"))?;
        let listener = tokio::net::TcpListener::bind(api.listen)
            .await
            .with_context(|| format!("quarry.api.listen: cannot listen on {}", api.listen))?;
        let addr = listener.local_addr()?;
        let metrics = self.metrics.clone();
        let render = crate::api::http::Metrics {
            content_type: crate::metrics::CONTENT_TYPE,
            render: Arc::new(move || metrics.encode()),
        };
        let router = crate::api::http::router(
            self.control(),
            auth,
            Some(render),
            crate::api::dashboard::asset,
        );
        let mut stop = self.stop.subscribe();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::api::http::serve(listener, router, shutdown).await {
                tracing::error!("the admin API stopped: {e}");
            }
        });
        tracing::info!(%addr, "admin API and dashboard listening");
        Ok(Some((addr, task)))
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the admin API sees of this server and can do to it.
    pub fn control(&self) -> Arc<control::ServerControl> {
        Arc::new(control::ServerControl {
            handles: self.scheduler.handles(),
            env: self.scheduler.env(),
            plugins: self.watcher.subscribe(),
            tasks: self.tasks.subscribe(),
            state: self.db.as_ref().map(StateDb::handle),
            cooldown: control::TRIGGER_COOLDOWN,
            last_trigger: Default::default(),
        })
    }
}

/// Opens the state database the config names (if any), logs what crash recovery repaired,
/// and reads back which tasks are paused; every later pause is written to it.
async fn open_state(cfg: &Config) -> anyhow::Result<(Option<StateDb>, Paused)> {
    let Some(path) = &cfg.paths.state_db else {
        tracing::warn!(
            "quarry.state_db is none: no run history, pauses are not kept across restarts"
        );
        return Ok((None, Paused::default()));
    };
    let db = StateDb::open(path)
        .with_context(|| format!("opening the state database {}", path.display()))?;
    let r = db.recovery();
    if r.runs_interrupted > 0 || r.ticks_interrupted > 0 {
        tracing::warn!(
            ticks = r.ticks_interrupted,
            runs = r.runs_interrupted,
            "Quarry stopped during ticks: their runs in flight are recorded as interrupted"
        );
    }
    let state = db.handle();
    let hook_state = state.clone();
    let paused = Paused::with_hook(Arc::new(
        move |task: &crate::task::TaskName, reason: Option<&str>| {
            hook_state.set_paused(task, reason.is_some(), reason.map(String::from));
        },
    ));
    match state.task_states().await {
        Ok(rows) => {
            for t in rows.into_iter().filter(|t| t.paused) {
                tracing::info!(task = %t.task, reason = ?t.paused_reason, "paused before the restart: stays paused");
                let reason = t.paused_reason.unwrap_or_else(|| "paused".into());
                paused.restore(&t.task, Some(reason));
            }
        }
        Err(e) => tracing::error!("cannot read the paused tasks: {e}"),
    }
    tracing::info!(file = %path.display(), "state database open");
    Ok((Some(db), paused))
}

/// Keeps the plugin gauges current and counts plugin reloads, until `stop`.
async fn count_plugins(
    mut plugins: watch::Receiver<Arc<PluginSet>>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    use crate::metrics::{Reload, ReloadResult};
    let mut first = true;
    loop {
        let set = plugins.borrow_and_update().clone();
        metrics.set_plugins(set.iter().count(), set.errors().len());
        if !first {
            let result = if set.errors().is_empty() {
                ReloadResult::Applied
            } else {
                ReloadResult::Rejected
            };
            metrics.record_reload(Reload::Plugins, result);
        }
        first = false;
        tokio::select! {
            r = plugins.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
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
    let api = match server.start_api().await {
        Ok(api) => api,
        Err(e) => {
            server.shutdown().await;
            return Err(e);
        }
    };
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
    let mut last = crate::config::read_text(config_path).ok();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading {}", config_path.display());
            }
            ev = changed.recv() => {
                if ev.is_none() { break; }
                if crate::debounce::quiet_after(&mut changed, (), |_| CONFIG_DEBOUNCE).await.is_none() {
                    break;
                }
                let now = crate::config::read_text(config_path).ok();
                if now == last {
                    continue;
                }
                tracing::info!("{} changed: reloading", config_path.display());
            }
        }
        last = crate::config::read_text(config_path).ok();
        use crate::metrics::{Reload, ReloadResult};
        match server.reload().await {
            Ok(summary) => {
                server
                    .metrics
                    .record_reload(Reload::Config, ReloadResult::Applied);
                for t in &summary.removed {
                    server.metrics.forget_task(t.as_str());
                }
            }
            Err(e) => {
                server
                    .metrics
                    .record_reload(Reload::Config, ReloadResult::Rejected);
                tracing::error!("config rejected, the running config stays: {e}");
            }
        }
    }
    drop(watcher);
    tracing::info!("shutting down: letting ticks in flight finish");
    server.shutdown().await;
    if let Some((_, task)) = api {
        let _ = task.await;
    }
    Ok(())
}

#[cfg(unix)]
fn hangup_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    Ok(tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::hangup(),
    )?)
}
