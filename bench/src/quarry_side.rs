//! The Quarry side of each scenario, each run as its own child process (`quarry-bench tick`,
//! `overhead`, `reload`, `restart`) so that its CPU time and peak RSS are its own. Only the
//! host's public API is used: `runtime::{Runtime, RuntimeLimits}`, `plugins::PluginSet`
//! (and `plugins::watch::PluginWatcher` for hot reload), `run::{run_tick, RunSettings,
//! TaskRun}`, `workers::{connect, Limits, WorkerAddr}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use quarry_host::plugins::PluginSet;
use quarry_host::run::{RunSettings, TaskRun, run_tick};
use quarry_host::runtime::{Runtime, RuntimeLimits};
use quarry_host::workers::{Limits, WorkerAddr, connect};
use serde_json::json;

use crate::measure::{self, cpu_time, emit, ms, peak_rss_kib};

/// Budget of one run in the host-overhead and reload loops (a no-op takes microseconds).
const RUN_BUDGET: Duration = Duration::from_secs(10);

/// How long the reload loop waits for a new version to appear before calling it a failure.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// Pause between two reloads, well past the watcher's debounce, so that each reload is
/// measured on its own.
const BETWEEN_RELOADS: Duration = Duration::from_millis(400);

/// Logs to a file at `info`, as `quarry serve` does by default (to stderr there).
pub fn init_logging(file: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = file {
        let f = std::fs::File::create(path)
            .with_context(|| format!("creating the log file {}", path.display()))?;
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::sync::Mutex::new(f))
            .with_ansi(false)
            .init();
    }
    Ok(())
}

async fn load_one(rt: &Arc<Runtime>, dir: &Path, task: &str) -> anyhow::Result<TaskRunParts> {
    let set = PluginSet::load_dir(rt, dir)
        .await
        .with_context(|| format!("loading plugins from {}", dir.display()))?;
    let Some(plugin) = set.get(task).cloned() else {
        bail!(
            "no plugin named {task} in {} (loaded: {:?}; errors: {:?})",
            dir.display(),
            set.names(),
            set.errors()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        );
    };
    Ok(TaskRunParts { plugin })
}

/// The runtime limits of every child: `quarry serve`'s defaults, except that
/// `QUARRY_BENCH_COMPILE=optimized` selects `quarry.compile: optimized` (for side-by-side runs
/// of the two compile modes).
fn limits() -> RuntimeLimits {
    let mut limits = RuntimeLimits::default();
    if std::env::var("QUARRY_BENCH_COMPILE").as_deref() == Ok("optimized") {
        limits.compile = quarry_host::runtime::CompileMode::Optimized;
    }
    limits
}

struct TaskRunParts {
    plugin: Arc<quarry_host::runtime::Plugin>,
}

/// The workers of a child: real addresses, or simulated ones.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Worker addresses, comma-separated (`127.0.0.2:22555,...`).
    #[arg(long, default_value = "")]
    pub workers: String,
    /// Instead of `--workers`: this many simulated workers (see `sim::worker_ip`)…
    #[arg(long, default_value_t = 0)]
    pub sim_workers: usize,
    /// … on this port.
    #[arg(long, default_value_t = 22555)]
    pub sim_port: u16,
}

impl FleetArgs {
    /// Every worker's `host:port`.
    pub fn addresses(&self) -> Vec<String> {
        if self.sim_workers > 0 {
            (0..self.sim_workers)
                .map(|i| format!("{}:{}", crate::sim::worker_ip(i), self.sim_port))
                .collect()
        } else {
            self.workers
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }
    }
}

/// Arguments of `quarry-bench tick`.
#[derive(Debug, clap::Args)]
pub struct TickArgs {
    /// Directory holding the task's plugin.
    #[arg(long)]
    pub plugins_dir: PathBuf,
    /// Plugin name.
    #[arg(long)]
    pub task: String,
    /// Params, a JSON object.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// The workers.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Ticks to run.
    #[arg(long, default_value_t = 3)]
    pub ticks: usize,
    /// Workers in flight.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Status directory on the workers.
    #[arg(long)]
    pub status_dir: String,
    /// Report directory on this host.
    #[arg(long)]
    pub report_dir: PathBuf,
    /// Log file (info level).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Compile cache directory (`quarry serve` uses one by default).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Runs `ticks` ticks of one task on the workers, one report line per tick.
///
/// Strategy: everything a long-running `quarry serve` does once (runtime, plugin load,
/// params validation) happens before the first tick and is reported as `setup`; each tick gets
/// a fresh worker set (fresh connection pool), because production ticks are minutes apart and
/// find no pooled connection alive; CPU is read around `run_tick` only.
pub async fn tick(args: TickArgs) -> anyhow::Result<()> {
    measure::raise_nofile_limit();
    init_logging(args.log_file.as_deref())?;
    let setup_started = Instant::now();
    // As `quarry serve` builds it: pooled for this concurrency.
    let (mut runtime, on_demand) = Runtime::for_server(limits(), args.concurrency)?;
    if let Some(why) = on_demand {
        bail!("quarry serve would instantiate on demand here: {why}");
    }
    if let Some(dir) = &args.cache_dir {
        runtime = runtime.with_compile_cache(dir);
    }
    let rt = Arc::new(runtime);
    let parts = load_one(&rt, &args.plugins_dir, &args.task).await?;
    match rt.validate_config(&parts.plugin, &args.params).await {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => bail!("{}: params rejected: {msg}", args.task),
        Err(e) => bail!("{}: validate-config failed: {e}", args.task),
    }
    let addrs: Vec<WorkerAddr> = args
        .fleet
        .addresses()
        .iter()
        .map(|s| WorkerAddr::parse(s, 22555).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let settings = RunSettings {
        status_dir: args.status_dir.clone(),
        run_timeout: Duration::from_secs(80),
        concurrency: args.concurrency,
        report_dir: Some(args.report_dir.clone()),
    };
    let run = TaskRun::new(parts.plugin, args.params.clone());
    emit(json!({
        "event": "setup",
        "ms": ms(setup_started.elapsed()),
        "cpu_ms": ms(cpu_time()),
        "peak_rss_kib": peak_rss_kib(),
    }));
    for i in 0..args.ticks {
        let workers = connect(&addrs, Limits::default());
        let (user0, sys0) = measure::cpu_times();
        let t0 = Instant::now();
        let (report, _) = run_tick(&rt, &run, &workers, &settings).await;
        let wall = t0.elapsed();
        let (user1, sys1) = measure::cpu_times();
        let sys = sys1.saturating_sub(sys0);
        let cpu = user1.saturating_sub(user0) + sys;
        drop(workers);
        let first_error = report
            .failed_details
            .first()
            .map(|d| d.reason.chars().take(300).collect::<String>());
        emit(json!({
            "event": "tick",
            "tick": i,
            "wall_ms": ms(wall),
            "cpu_ms": ms(cpu),
            "sys_ms": ms(sys),
            "outcome": serde_json::to_value(report.outcome)?,
            "ok": report.success_count,
            "failed": report.failed_count,
            "first_error": first_error,
        }));
    }
    emit(json!({
        "event": "done",
        "peak_rss_kib": peak_rss_kib(),
        "rss_kib": measure::rss_kib(),
        "cpu_ms": ms(cpu_time()),
    }));
    Ok(())
}

/// Arguments of `quarry-bench overhead`.
#[derive(Debug, clap::Args)]
pub struct OverheadArgs {
    /// Directory holding the plugin.
    #[arg(long)]
    pub plugins_dir: PathBuf,
    /// Plugin name.
    #[arg(long)]
    pub task: String,
    /// Params, a JSON object (must not make host calls: the worker is never reached).
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// Measured runs.
    #[arg(long, default_value_t = 5000)]
    pub runs: usize,
    /// Runs in flight at once (1 = sequential latency).
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// The export called: `run`, or `validate` (`validate-config`, for guests whose `run`
    /// makes host calls: same store, instantiation and drop, no I/O).
    #[arg(long, default_value = "run")]
    pub call: String,
    /// Compile cache (a Python guest takes seconds to compile).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Use wasmtime's pooling allocator (`Runtime::new_pooled`) instead of on-demand.
    #[arg(long)]
    pub pooling: bool,
}

/// Host overhead of one (task, worker) run with no I/O: a fresh store, instantiation, the
/// `run` call, result conversion and drop, against the embedded `local` worker, which a
/// task that makes no host call never touches.
pub async fn overhead(args: OverheadArgs) -> anyhow::Result<()> {
    let mut runtime = if args.pooling {
        // Room for every run in flight, plus the load-time `describe`.
        Runtime::new_pooled(limits(), args.in_flight.max(1) as u32 + 2)?
    } else {
        Runtime::new(limits())?
    };
    if let Some(dir) = &args.cache_dir {
        runtime = runtime.with_compile_cache(dir);
    }
    let rt = Arc::new(runtime);
    let validate = match args.call.as_str() {
        "run" => false,
        "validate" => true,
        other => bail!("--call {other}: expected run or validate"),
    };
    let parts = load_one(&rt, &args.plugins_dir, &args.task).await?;
    let plugin = parts.plugin;
    let worker = connect(&[WorkerAddr::Local], Limits::default())
        .pop()
        .context("no worker")?;
    let once = move |rt: Arc<Runtime>,
                     plugin: Arc<quarry_host::runtime::Plugin>,
                     w,
                     task: String,
                     params: String| async move {
        let t = Instant::now();
        if validate {
            match rt.validate_config(&plugin, &params).await {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => bail!("validate-config rejected the params: {msg}"),
                Err(e) => bail!("validate-config failed: {e}"),
            }
        } else {
            rt.run(&plugin, &task, w, &params, RUN_BUDGET, None)
                .await
                .map_err(|e| anyhow::anyhow!("run failed: {e}"))?;
        }
        anyhow::Ok(t.elapsed())
    };
    // Warm-up: first instantiation, allocator, caches.
    for _ in 0..(args.runs / 20).clamp(5, 200) {
        once(
            rt.clone(),
            plugin.clone(),
            worker.clone(),
            args.task.clone(),
            args.params.clone(),
        )
        .await?;
    }
    let in_flight = args.in_flight.max(1);
    let per_lane = args.runs.div_ceil(in_flight);
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut lanes = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (rt, plugin, worker) = (rt.clone(), plugin.clone(), worker.clone());
        let (task, params) = (args.task.clone(), args.params.clone());
        lanes.spawn(async move {
            let mut samples = Vec::with_capacity(per_lane);
            for _ in 0..per_lane {
                let d = once(
                    rt.clone(),
                    plugin.clone(),
                    worker.clone(),
                    task.clone(),
                    params.clone(),
                )
                .await?;
                samples.push(d.as_secs_f64() * 1e6);
            }
            anyhow::Ok(samples)
        });
    }
    let mut samples = Vec::new();
    while let Some(lane) = lanes.join_next().await {
        samples.extend(lane??);
    }
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let n = samples.len() as f64;
    emit(json!({
        "event": "overhead",
        "call": args.call,
        "allocator": if args.pooling { "pooling" } else { "on-demand" },
        "runs": samples.len(),
        "in_flight": in_flight,
        "mean_us": samples.iter().sum::<f64>() / n,
        "p50_us": measure::percentile(&samples, 50.0),
        "p99_us": measure::percentile(&samples, 99.0),
        "wall_per_run_us": wall.as_secs_f64() * 1e6 / n,
        "cpu_per_run_us": cpu.as_secs_f64() * 1e6 / n,
        "peak_rss_kib": peak_rss_kib(),
    }));
    Ok(())
}

/// Arguments of `quarry-bench reload`.
#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// The plugins directory to watch (holds `<task>.wasm`, version 0).
    #[arg(long)]
    pub plugins_dir: PathBuf,
    /// Plugin name.
    #[arg(long)]
    pub task: String,
    /// Component to patch into new versions (its version placeholder is replaced).
    #[arg(long)]
    pub template: PathBuf,
    /// Reloads to measure.
    #[arg(long, default_value_t = 5)]
    pub reloads: usize,
    /// `new`: every reload is a version never seen (compiled); `cached`: alternate between
    /// two versions already in the compile cache (a rollback).
    #[arg(long, default_value = "new")]
    pub mode: String,
    /// Compile cache directory (mode `cached`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Hot reload latency: a new file renamed into place → the first successful run of the new
/// version, through the host's own watcher (debounce, settle, rescan, swap).
pub async fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    use quarry_host::plugins::watch::PluginWatcher;

    let mut runtime = Runtime::new(limits())?;
    if let Some(dir) = &args.cache_dir {
        runtime = runtime.with_compile_cache(dir);
    }
    let rt = Arc::new(runtime);
    let template = std::fs::read(&args.template)
        .with_context(|| format!("reading {}", args.template.display()))?;
    let target = args.plugins_dir.join(format!("{}.wasm", args.task));
    let version_of = |i: usize| format!("1.0.0-r{i:07}");
    let bytes_of = |i: usize| crate::patch::with_version(&template, &version_of(i));
    // In `cached` mode two versions (1 and 2) are compiled once into the cache first.
    let cached = args.mode == "cached";
    if cached {
        if args.cache_dir.is_none() {
            bail!("mode cached needs --cache-dir");
        }
        for i in [1, 2] {
            let tmp = args.plugins_dir.join(format!("warm-{i}"));
            std::fs::create_dir_all(&tmp)?;
            std::fs::write(tmp.join(format!("{}.wasm", args.task)), bytes_of(i)?)?;
            load_one(&rt, &tmp, &args.task).await?;
            std::fs::remove_dir_all(&tmp)?;
        }
    }
    std::fs::write(&target, bytes_of(0)?)?;
    let initial = PluginSet::load_dir(&rt, &args.plugins_dir).await?;
    let watcher = PluginWatcher::spawn(
        rt.clone(),
        args.plugins_dir.clone(),
        Arc::new(initial),
        vec![],
    )?;
    let mut rx = watcher.subscribe();
    let worker = connect(&[WorkerAddr::Local], Limits::default())
        .pop()
        .context("no worker")?;
    let mut samples = Vec::new();
    for r in 0..args.reloads {
        let i = if cached { 1 + r % 2 } else { r + 1 };
        let want = version_of(i);
        let bytes = bytes_of(i)?;
        tokio::time::sleep(BETWEEN_RELOADS).await;
        let tmp = args.plugins_dir.join(format!(".{}.wasm.tmp", args.task));
        std::fs::write(&tmp, &bytes)?;
        rx.borrow_and_update();
        let t0 = Instant::now();
        std::fs::rename(&tmp, &target)?;
        let plugin = tokio::time::timeout(RELOAD_WAIT, async {
            loop {
                if let Some(p) = rx.borrow_and_update().get(&args.task)
                    && p.meta().version == want
                {
                    return anyhow::Ok(p.clone());
                }
                rx.changed().await.context("the watcher stopped")?;
            }
        })
        .await
        .with_context(|| format!("version {want} did not load within {RELOAD_WAIT:?}"))??;
        rt.run(&plugin, &args.task, worker.clone(), "{}", RUN_BUDGET, None)
            .await
            .map_err(|e| anyhow::anyhow!("first run of {want} failed: {e}"))?;
        samples.push(ms(t0.elapsed()));
    }
    let stats = rt.compile_stats();
    emit(json!({
        "event": "reload",
        "mode": args.mode,
        "samples_ms": samples,
        "compiled": stats.compiled.load(std::sync::atomic::Ordering::Relaxed),
        "cache_hits": stats.cache_hits.load(std::sync::atomic::Ordering::Relaxed),
    }));
    watcher.stop();
    Ok(())
}

/// Arguments of `quarry-bench restart`.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// The plugins directory.
    #[arg(long)]
    pub plugins_dir: PathBuf,
    /// Compile cache directory; none = no cache.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// What a restart costs before the first tick can run: a new process, the runtime, and every
/// plugin loaded (compiled or read from the cache, version-checked, described). The parent
/// times from spawn to the `ready` line.
pub async fn restart(args: RestartArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut runtime = Runtime::new(limits())?;
    if let Some(dir) = &args.cache_dir {
        runtime = runtime.with_compile_cache(dir);
    }
    let rt = Arc::new(runtime);
    let set = PluginSet::load_dir(&rt, &args.plugins_dir).await?;
    let stats = rt.compile_stats();
    emit(json!({
        "event": "ready",
        "in_process_ms": ms(t0.elapsed()),
        "loaded": set.names().len(),
        "errors": set.errors().len(),
        "compiled": stats.compiled.load(std::sync::atomic::Ordering::Relaxed),
        "cache_hits": stats.cache_hits.load(std::sync::atomic::Ordering::Relaxed),
        "peak_rss_kib": peak_rss_kib(),
        "cpu_ms": ms(cpu_time()),
    }));
    Ok(())
}
