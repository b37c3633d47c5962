//! The children of the state-database scenarios, through a real `quarry serve`
//! ([`quarry_host::server::Server`] in process, started from a YAML config as `quarry serve`
//! starts it):
//!
//! - `quarry-bench serve-tick`: ticks of one task with `quarry.state_db` set or `none`, the
//!   process's CPU time and the tick's wall time for each; with `--readers`, the admin API
//!   is started and `api-load` reads it during every measured tick;
//! - `quarry-bench api-load`: N concurrent readers of the admin API (GET `/api/v1/tasks`,
//!   `/api/v1/runs?task=…`, `/api/v1/workers` in turn) until its stdin closes, then their
//!   latencies. A process of its own, so that its CPU is not the scheduler's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use quarry_host::api::ControlPlane as _;
use quarry_host::server::Server;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use crate::measure::{self, emit, ms, peak_rss_kib};

/// Longest wait for one tick's report.
const TICK_WAIT: Duration = Duration::from_secs(240);

/// After a tick, the state writer commits its runs: CPU is read once the process has been
/// quiet (less than [`QUIET_CPU`] of CPU in a [`QUIET_WINDOW`]) or after [`SETTLE_MAX`].
const QUIET_WINDOW: Duration = Duration::from_millis(100);
const QUIET_CPU: Duration = Duration::from_millis(2);
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// The routes the readers call, in turn (`{task}` is the task's name).
const READ_PATHS: [&str; 3] = [
    "/api/v1/tasks",
    "/api/v1/runs?task={task}&limit=100",
    "/api/v1/workers",
];

/// Arguments of `quarry-bench serve-tick`.
#[derive(Debug, clap::Args)]
pub struct ServeTickArgs {
    /// Directory holding the task's plugin.
    #[arg(long)]
    pub plugins_dir: PathBuf,
    /// Plugin name (the task).
    #[arg(long)]
    pub task: String,
    /// The workers.
    #[command(flatten)]
    pub fleet: crate::quarry_side::FleetArgs,
    /// Ticks: the first is the scheduled one (warm-up), the others are triggered.
    #[arg(long, default_value_t = 4)]
    pub ticks: usize,
    /// `quarry.concurrency`.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Scratch directory: the config, the workers file, the reports and the database.
    #[arg(long)]
    pub dir: PathBuf,
    /// `quarry.status_dir` (on the workers).
    #[arg(long)]
    pub status_dir: String,
    /// `quarry.state_db`: a fresh database in `--dir` when set, `none` otherwise.
    #[arg(long)]
    pub state_db: bool,
    /// `quarry.cache_dir`.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Log file (info level).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Readers of the admin API during every measured tick (0: no API).
    #[arg(long, default_value_t = 0)]
    pub readers: usize,
    /// Pause of each reader between two requests, ms (0: back to back).
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
}

/// Runs a real server on the workers and reports each tick: wall time (the scheduler's own
/// `duration_ms`), the process's CPU from the trigger until the process is quiet again (so
/// that the state writer's commit after the tick is counted), and with `--readers` the API
/// latencies the readers saw during the tick.
pub async fn serve_tick(args: ServeTickArgs) -> anyhow::Result<()> {
    measure::raise_nofile_limit();
    crate::quarry_side::init_logging(args.log_file.as_deref())?;
    let setup_started = Instant::now();
    std::fs::create_dir_all(&args.dir)?;
    let workers = args.fleet.addresses();
    let n = workers.len();
    let workers_file = args.dir.join("workers.txt");
    std::fs::write(&workers_file, workers.join("\n") + "\n")?;
    let db = args.dir.join("quarry-state.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let state_db = if args.state_db {
        db.display().to_string()
    } else {
        "none".into()
    };
    let cache = args
        .cache_dir
        .as_ref()
        .map_or("none".into(), |d| d.display().to_string());
    // A year between scheduled ticks: only the first (a second after start) is scheduled,
    // the others are triggered, without a cooldown.
    let config = format!(
        "scheduler:\n  enabled: true\n  tasks:\n    - task_class: {task}\n      interval_seconds: 31536000\n\
         quarry:\n  plugins_dir: {plugins}\n  workers_file: {workers}\n  status_dir: {status}\n  report_dir: {reports}\n  \
         concurrency: {conc}\n  cache_dir: {cache}\n  state_db: {state_db}\n  \
         api: {{enabled: {api}, listen: \"127.0.0.1:0\", trigger_cooldown_seconds: 0}}\n",
        task = args.task,
        plugins = args.plugins_dir.display(),
        workers = workers_file.display(),
        status = args.status_dir,
        reports = args.dir.join("reports").display(),
        conc = args.concurrency,
        api = args.readers > 0,
    );
    let file = args.dir.join("quarry.yml");
    std::fs::write(&file, config)?;
    let server = Server::start(&file).await?;
    let api = server.start_api().await?.map(|(addr, _)| addr);
    let control = server.control();
    let mut reports = server.scheduler().subscribe();
    emit(json!({
        "event": "setup",
        "ms": ms(setup_started.elapsed()),
        "workers": n,
        "cpu_ms": ms(measure::cpu_time()),
    }));
    for i in 0..args.ticks {
        quiet().await;
        let readers = match api {
            Some(addr) if i > 0 => Some(Readers::start(addr, &args).await?),
            _ => None,
        };
        let (user0, sys0) = measure::cpu_times();
        if i > 0 {
            control
                .trigger(args.task.clone(), vec![])
                .await
                .map_err(|e| anyhow::anyhow!("triggering {}: {e}", args.task))?;
        }
        let report = tokio::time::timeout(TICK_WAIT, reports.recv())
            .await
            .with_context(|| format!("tick {i}: no report within {TICK_WAIT:?}"))?
            .with_context(|| format!("tick {i}: the scheduler stopped"))?;
        let load = match readers {
            Some(r) => Some(r.finish().await?),
            None => None,
        };
        quiet().await;
        let (user1, sys1) = measure::cpu_times();
        let sys = sys1.saturating_sub(sys0);
        let cpu = user1.saturating_sub(user0) + sys;
        let first_error = report
            .failed_details
            .first()
            .map(|d| d.reason.chars().take(300).collect::<String>());
        emit(json!({
            "event": "tick",
            "tick": i,
            "wall_ms": report.duration_ms,
            "cpu_ms": ms(cpu),
            "sys_ms": ms(sys),
            "cpu_us_per_worker_run": cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
            "outcome": serde_json::to_value(report.outcome)?,
            "ok": report.success_count,
            "failed": report.failed_count,
            "first_error": first_error,
            "api": load,
        }));
    }
    server.shutdown().await;
    emit(json!({
        "event": "done",
        "peak_rss_kib": peak_rss_kib(),
        "rss_kib": measure::rss_kib(),
        "cpu_ms": ms(measure::cpu_time()),
    }));
    Ok(())
}

/// Waits until this process uses less than [`QUIET_CPU`] per [`QUIET_WINDOW`] (or
/// [`SETTLE_MAX`] passed).
async fn quiet() {
    let t0 = Instant::now();
    let mut last = measure::cpu_time();
    while t0.elapsed() < SETTLE_MAX {
        tokio::time::sleep(QUIET_WINDOW).await;
        let now = measure::cpu_time();
        if now.saturating_sub(last) < QUIET_CPU {
            return;
        }
        last = now;
    }
}

/// A running `api-load` child.
struct Readers {
    child: tokio::process::Child,
    stdout: BufReader<tokio::process::ChildStdout>,
}

impl Readers {
    /// Starts the readers and waits until each route answered once.
    async fn start(addr: SocketAddr, args: &ServeTickArgs) -> anyhow::Result<Readers> {
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.arg("api-load")
            .args(["--base", &format!("http://{addr}")])
            .args(["--readers", &args.readers.to_string()])
            .args(["--task", &args.task])
            .args(["--think-ms", &args.think_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        // It stops when its stdin closes, so also when this process dies.
        let mut child = cmd.spawn().context("starting api-load")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).await?;
        let ready: Value = serde_json::from_str(&line)
            .with_context(|| format!("api-load did not start: {line:?}"))?;
        if ready["event"] != "ready" {
            bail!("api-load: {line}");
        }
        Ok(Readers { child, stdout })
    }

    /// Stops the readers (closes their stdin) and returns what they measured.
    async fn finish(mut self) -> anyhow::Result<Value> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).await?;
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("api-load exited with {status}");
        }
        rest.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "api_load")
            .context("api-load reported nothing")
    }
}

/// Arguments of `quarry-bench api-load`.
#[derive(Debug, clap::Args)]
pub struct ApiLoadArgs {
    /// The API's base URL (`http://127.0.0.1:PORT`).
    #[arg(long)]
    pub base: String,
    /// Concurrent readers.
    #[arg(long, default_value_t = 100)]
    pub readers: usize,
    /// The task whose runs are read.
    #[arg(long)]
    pub task: String,
    /// Pause of each reader between two requests, ms.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
}

/// `readers` loops of GETs, each its own keep-alive connection, until stdin closes; then
/// one `api_load` line: requests, non-200 answers, p50/p99/max overall and per route.
pub async fn api_load(args: ApiLoadArgs) -> anyhow::Result<()> {
    measure::raise_nofile_limit();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.readers)
        .build()?;
    let urls: Vec<String> = READ_PATHS
        .iter()
        .map(|p| format!("{}{}", args.base, p.replace("{task}", &args.task)))
        .collect();
    for url in &urls {
        let status = client.get(url).send().await?.status();
        if status != 200 {
            bail!("GET {url}: {status}");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_eof = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stop_on_eof.store(true, Ordering::Relaxed);
    });
    emit(json!({"event": "ready"}));
    let t0 = Instant::now();
    let mut lanes = tokio::task::JoinSet::new();
    for r in 0..args.readers {
        let (client, urls, stop) = (client.clone(), urls.clone(), stop.clone());
        let think = Duration::from_millis(args.think_ms);
        lanes.spawn(async move {
            // (route index, ms, ok)
            let mut samples: Vec<(usize, f64, bool)> = Vec::new();
            let mut k = r;
            while !stop.load(Ordering::Relaxed) {
                let route = k % urls.len();
                k += 1;
                let t = Instant::now();
                let ok = match client.get(&urls[route]).send().await {
                    Ok(a) => a.status() == 200 && a.bytes().await.is_ok(),
                    Err(_) => false,
                };
                samples.push((route, ms(t.elapsed()), ok));
                if !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(lane) = lanes.join_next().await {
        samples.extend(lane?);
    }
    let secs = t0.elapsed().as_secs_f64();
    let summary = |of: &[f64]| {
        json!({
            "requests": of.len(),
            "p50_ms": measure::percentile(of, 50.0),
            "p99_ms": measure::percentile(of, 99.0),
            "max_ms": measure::percentile(of, 100.0),
        })
    };
    let all: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let by_route: serde_json::Map<String, Value> = READ_PATHS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let of: Vec<f64> = samples.iter().filter(|s| s.0 == i).map(|s| s.1).collect();
            let route = p.split('?').next().unwrap_or(p).to_string();
            (route, summary(&of))
        })
        .collect();
    emit(json!({
        "event": "api_load",
        "readers": args.readers,
        "think_ms": args.think_ms,
        "secs": secs,
        "errors": samples.iter().filter(|s| !s.2).count(),
        "all": summary(&all),
        "by_route": by_route,
    }));
    Ok(())
}
