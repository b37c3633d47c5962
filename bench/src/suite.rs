//! `quarry-bench suite`: runs every scenario, each side in a child process of its own,
//! prints the tables and writes them into docs/benchmarks.md.
//!
//! Strategy: cheap, deterministic scenarios first (host overhead, plugin reload and
//! restart), then ROCK against Quarry on real rocklets (one fleet of rocklets started in
//! parallel and reused for every N), then the simulated fleet. A scenario that would not
//! finish inside the time budget is skipped and the table says so. All children die with
//! this process (`PR_SET_PDEATHSIG`), and the fleet and simulator are stopped by PID.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::measure::{median, percentile};
use crate::render;

mod state_db;
pub use state_db::{ApiRow, DbRow, api_loads, measured, measured_median};

/// The rocklet port ROCK's scheduler hard-codes.
pub const ROCK_PORT: u16 = 22555;

/// Resident memory one idle rocklet needs, with margin (measured ~60-75 MiB).
const ROCKLET_MIB: u64 = 90;

/// Memory left free besides the rocklets.
const HEADROOM_MIB: u64 = 1536;

/// Longest any one child may run before it is killed and reported as failed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest wait for a fleet of rocklets to answer `/is_alive`.
const FLEET_READY_TIMEOUT: Duration = Duration::from_secs(240);

/// Arguments of `quarry-bench suite`.
#[derive(Debug, clap::Args)]
pub struct SuiteArgs {
    /// Repository root.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Scratch directory (recreated).
    #[arg(long, default_value = "target/bench-work")]
    pub work: PathBuf,
    /// The real rocklet (from scripts/setup.sh).
    #[arg(long, default_value = "target/rocklet-venv/bin/rocklet")]
    pub rocklet: PathBuf,
    /// Python of the venv with ROCK's scheduler (rl-rock 1.11.0 and its scheduler deps).
    #[arg(long, default_value = "target/bench-venv/bin/python")]
    pub rock_python: PathBuf,
    /// Quarry's file_cleanup component.
    #[arg(
        long,
        default_value = "target/wasm/wasm32-wasip2/release/file_cleanup.wasm"
    )]
    pub file_cleanup: PathBuf,
    /// The benchmark's no-op component (bench/guests).
    #[arg(
        long,
        default_value = "target/wasm/wasm32-wasip2/release/bench_noop.wasm"
    )]
    pub noop: PathBuf,
    /// A Python guest component for the host-overhead row, if one is built.
    #[arg(long)]
    pub python_guest: Option<PathBuf>,
    /// Real-rocklet fleet sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    pub rocklets: Vec<usize>,
    /// Ticks per side and fleet size (the first is reported apart as the warm-up).
    #[arg(long, default_value_t = 5)]
    pub ticks: usize,
    /// Simulated fleet sizes.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub sim_sizes: Vec<usize>,
    /// Simulated per-request latency, ms.
    #[arg(long, default_value_t = 10)]
    pub sim_latency_ms: u64,
    /// Workers in flight per tick, both schedulers (ROCK's fixed value).
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Unix time the whole command started (scripts/bench.sh), for the budget.
    #[arg(long)]
    pub started_at: Option<u64>,
    /// Whole-command budget in seconds, build included.
    #[arg(long, default_value_t = 900)]
    pub budget_secs: u64,
    /// Facts gathered by the script (`key=value`, repeatable): date, build time, versions.
    #[arg(long = "fact")]
    pub facts: Vec<String>,
    /// Steps to run (all by default): overhead, plugins, versus, scale, statedb. Each step's
    /// tables replace only their own block of the doc.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "overhead,plugins,versus,scale,statedb"
    )]
    pub steps: Vec<String>,
    /// Simulated fleet size for the ROCK comparison row (0 = none).
    #[arg(long, default_value_t = 1000)]
    pub rock_sim_size: usize,
    /// Markdown file to write the results into.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
}

/// Everything measured, also saved as JSON next to the logs.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub facts: BTreeMap<String, String>,
    pub machine: BTreeMap<String, String>,
    pub overhead: Vec<OverheadRow>,
    pub reload: Vec<SampleRow>,
    pub restart: Vec<SampleRow>,
    pub fleet: Option<FleetInfo>,
    pub versus: Vec<VersusRow>,
    pub scale: Vec<ScaleRow>,
    /// The real rocklets of the state-database step.
    pub statedb_fleet: Option<FleetInfo>,
    pub statedb: Vec<DbRow>,
    pub api_load: Vec<ApiRow>,
    pub skipped: Vec<String>,
    pub errors: Vec<String>,
    pub suite_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct OverheadRow {
    pub guest: String,
    pub allocator: String,
    pub in_flight: usize,
    pub result: Option<Value>,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct SampleRow {
    pub what: String,
    pub samples_ms: Vec<f64>,
    pub note: String,
    pub target_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FleetInfo {
    pub size: usize,
    pub ready_secs: f64,
    pub rss_mib: f64,
}

/// One side (ROCK or Quarry) of one scenario.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Side {
    pub ticks: Vec<Value>,
    pub setup_ms: f64,
    pub peak_rss_kib: u64,
    /// RSS when the ticks are done (steady state).
    pub rss_kib: u64,
    /// Time the rocklets spent handling this side's requests, per worker per tick, ms (their
    /// access logs' `process_time`).
    pub rocklet_ms_per_worker: Option<f64>,
    /// HTTP calls per worker per tick, by route, counted on the rocklet (or simulator) side.
    pub calls_per_worker: BTreeMap<String, f64>,
    pub calls_min_max: Option<(u64, u64)>,
    pub sim_cpu_ms_per_tick: Option<f64>,
    pub error: Option<String>,
}

impl Side {
    fn values(&self, key: &str, skip_first: bool) -> Vec<f64> {
        let skip = usize::from(skip_first && self.ticks.len() > 1);
        self.ticks
            .iter()
            .skip(skip)
            .filter_map(|t| t.get(key).and_then(Value::as_f64))
            .collect()
    }
    /// Median wall time of the ticks after the first, ms.
    pub fn wall(&self) -> f64 {
        median(&self.values("wall_ms", true))
    }
    /// Wall time of the first tick, ms.
    pub fn first_wall(&self) -> f64 {
        self.values("wall_ms", false)
            .first()
            .copied()
            .unwrap_or(0.0)
    }
    /// Median CPU time of the ticks after the first, ms.
    pub fn cpu(&self) -> f64 {
        median(&self.values("cpu_ms", true))
    }
    /// Share of the CPU time spent in the kernel (ticks after the first), percent.
    pub fn sys_percent(&self) -> f64 {
        let cpu: f64 = self.values("cpu_ms", true).iter().sum();
        let sys: f64 = self.values("sys_ms", true).iter().sum();
        if cpu > 0.0 { 100.0 * sys / cpu } else { 0.0 }
    }
    pub fn calls_total(&self) -> f64 {
        self.calls_per_worker.values().sum()
    }
    /// HTTP calls per worker in the tick(s) that `wall` measures. Quarry's first tick also
    /// reads each status file once (after that it remembers what it wrote), so with more than
    /// one tick the steady ticks make the whole number below the average; with one tick, the
    /// average is that tick's count.
    pub fn calls_measured(&self) -> f64 {
        let avg = self.calls_total();
        if self.ticks.len() > 1 {
            avg.floor()
        } else {
            avg.round()
        }
    }
    /// `success` when every tick succeeded on every worker, else what went wrong.
    pub fn outcome(&self) -> String {
        if let Some(e) = &self.error {
            return format!("error: {e}");
        }
        let bad: Vec<&Value> = self
            .ticks
            .iter()
            .filter(|t| t.get("outcome").and_then(Value::as_str) != Some("success"))
            .collect();
        match bad.first() {
            None => "success".into(),
            Some(t) => format!(
                "{} of {} ticks not success: {} ({} failed workers; first error: {})",
                bad.len(),
                self.ticks.len(),
                t.get("outcome").and_then(Value::as_str).unwrap_or("?"),
                t.get("failed").and_then(Value::as_u64).unwrap_or(0),
                t.get("first_error")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .replace('\n', " ")
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VersusRow {
    pub workers: usize,
    pub task: String,
    pub rock: Side,
    pub quarry: Side,
}

#[derive(Debug, Serialize)]
pub struct ScaleRow {
    pub scheduler: String,
    pub workers: usize,
    pub latency_ms: u64,
    pub fail_rate: f64,
    pub concurrency: usize,
    pub side: Side,
}

/// Paths and the clock shared by every scenario.
struct Ctx {
    root: PathBuf,
    work: PathBuf,
    exe: PathBuf,
    deadline: Instant,
    args: SuiteArgs,
}

impl Ctx {
    fn abs(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
    /// Whether `need` still fits in the budget; records the skip otherwise.
    fn fits(&self, results: &mut Results, what: &str, need: Duration) -> bool {
        if self.left() >= need {
            return true;
        }
        let msg = format!(
            "{what}: skipped, needs ~{}s but {}s of the budget are left",
            need.as_secs(),
            self.left().as_secs()
        );
        eprintln!("bench: {msg}");
        results.skipped.push(msg);
        false
    }
    fn log(&self, msg: &str) {
        eprintln!("[bench suite, {}s left] {msg}", self.left().as_secs());
    }
}

/// Runs the whole suite.
pub fn run(args: SuiteArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = std::fs::canonicalize(&args.root).context("resolving --root")?;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let spent = args.started_at.map_or(0, |s| now_unix.saturating_sub(s));
    let deadline = started + Duration::from_secs(args.budget_secs.saturating_sub(spent));
    let work = if args.work.is_absolute() {
        args.work.clone()
    } else {
        root.join(&args.work)
    };
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("logs"))?;
    let ctx = Ctx {
        root,
        work,
        exe: std::env::current_exe()?,
        deadline,
        args,
    };
    crate::measure::raise_nofile_limit();
    let mut results = Results {
        machine: machine(),
        ..Default::default()
    };
    for f in &ctx.args.facts {
        if let Some((k, v)) = f.split_once('=') {
            results.facts.insert(k.to_string(), v.to_string());
        }
    }
    ctx.log(&format!("work dir {}", ctx.work.display()));

    type Step = fn(&Ctx, &mut Results) -> anyhow::Result<()>;
    let steps: [(&str, &str, Step); 5] = [
        ("overhead", "host overhead", overhead),
        ("plugins", "plugin reload and restart", plugins),
        ("versus", "ROCK vs Quarry on real rocklets", versus),
        ("scale", "simulated fleet", scale),
        (
            "statedb",
            "state database on and off, API under load",
            state_db::run,
        ),
    ];
    for (key, name, step) in steps {
        if !ctx.args.steps.iter().any(|s| s == key) {
            continue;
        }
        ctx.log(&format!("== {name}"));
        if let Err(e) = step(&ctx, &mut results) {
            let msg = format!("{name}: {e:#}");
            eprintln!("bench: {msg}");
            results.errors.push(msg);
        }
    }
    results.suite_secs = started.elapsed().as_secs_f64();
    std::fs::write(
        ctx.work.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    let out = ctx.abs(&ctx.args.out);
    let ran = |keys: &[&str]| ctx.args.steps.iter().any(|s| keys.contains(&s.as_str()));
    if ran(&["overhead", "plugins", "versus", "scale"]) {
        let md = render::markdown(&results);
        println!("{md}");
        render::write_into_doc(&out, render::MAIN, &md)?;
    }
    if ran(&["statedb"]) {
        let md = render::statedb_markdown(&results);
        println!("{md}");
        render::write_into_doc(&out, render::STATEDB, &md)?;
    }
    ctx.log(&format!(
        "wrote {} and {}",
        out.display(),
        ctx.work.join("results.json").display()
    ));
    Ok(())
}

/// nproc, CPU model, memory, kernel, OS, load at start.
fn machine() -> BTreeMap<String, String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut m = BTreeMap::new();
    m.insert(
        "nproc".into(),
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_default(),
    );
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    m.insert("cpu".into(), model);
    let meminfo = read("/proc/meminfo");
    let kib = |key: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    m.insert(
        "memory".into(),
        format!(
            "{:.1} GiB total, {:.1} GiB available at start",
            kib("MemTotal:") as f64 / 1048576.0,
            kib("MemAvailable:") as f64 / 1048576.0
        ),
    );
    m.insert(
        "kernel".into(),
        read("/proc/sys/kernel/osrelease").trim().to_string(),
    );
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    m.insert("os".into(), os);
    m.insert(
        "load average at start (1/5/15 min)".into(),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    m
}

fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

// ---------------------------------------------------------------------------------------
// Children

/// Makes the child die with us.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

fn tail(path: &Path, chars: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let t = text.trim();
    let start = t.char_indices().rev().nth(chars).map_or(0, |(i, _)| i);
    t[start..].replace('\n', " | ")
}

/// Removes the proxy variables: the children talk to loopback addresses only.
fn without_proxy(cmd: &mut Command) -> &mut Command {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs a child to completion (at most [`CHILD_TIMEOUT`]) and returns its report lines.
fn run_child(ctx: &Ctx, label: &str, cmd: &mut Command) -> anyhow::Result<Vec<Value>> {
    let stderr_path = ctx.work.join("logs").join(format!("{label}.stderr"));
    cmd.stdout(Stdio::piped())
        .stderr(File::create(&stderr_path)?)
        .stdin(Stdio::null());
    let mut child = die_with_parent(cmd)
        .spawn()
        .with_context(|| format!("starting {label}: {cmd:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .collect::<Vec<_>>()
    });
    let status = wait_timeout(&mut child, CHILD_TIMEOUT)?;
    let lines = reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(lines),
        Some(s) => bail!("{label} exited with {s}: {}", tail(&stderr_path, 600)),
        None => bail!(
            "{label} did not finish within {}s (killed): {}",
            CHILD_TIMEOUT.as_secs(),
            tail(&stderr_path, 600)
        ),
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops a child by PID: SIGTERM, then SIGKILL after `grace`.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: kill(2) on the PID of a child we own and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    if !matches!(wait_timeout(child, grace), Ok(Some(_))) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One GET over a new connection, `Connection: close`; returns status and body.
fn http_get(host: &str, port: u16, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let addr = format!("{host}:{port}").parse::<std::net::SocketAddr>()?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Parses a child's report lines into a [`Side`].
fn side_from(lines: &[Value]) -> Side {
    let mut side = Side::default();
    for l in lines {
        match l.get("event").and_then(Value::as_str) {
            Some("setup") => side.setup_ms = l["ms"].as_f64().unwrap_or(0.0),
            Some("tick") => side.ticks.push(l.clone()),
            Some("done") => {
                side.peak_rss_kib = l["peak_rss_kib"].as_u64().unwrap_or(0);
                side.rss_kib = l["rss_kib"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
    side
}

// ---------------------------------------------------------------------------------------
// 2. Host overhead

fn plugin_dir_with(ctx: &Ctx, name: &str, files: &[(&str, Vec<u8>)]) -> anyhow::Result<PathBuf> {
    let dir = ctx.work.join("plugins").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes)?;
    }
    Ok(dir)
}

fn overhead(ctx: &Ctx, results: &mut Results) -> anyhow::Result<()> {
    let noop = std::fs::read(ctx.abs(&ctx.args.noop))
        .with_context(|| format!("reading {}", ctx.args.noop.display()))?;
    let noop_kb = noop.len() / 1000;
    let dir = plugin_dir_with(ctx, "overhead", &[("bench_noop.wasm", noop)])?;
    for pooling in [false, true] {
        for in_flight in [1usize, 50] {
            if !ctx.fits(results, "host overhead", Duration::from_secs(20)) {
                break;
            }
            let alloc = if pooling { "pooling" } else { "on-demand" };
            let label = format!("overhead-rust-{alloc}-{in_flight}");
            let mut cmd = Command::new(&ctx.exe);
            cmd.arg("overhead")
                .arg("--plugins-dir")
                .arg(&dir)
                .args(["--task", crate::patch::NAME_PLACEHOLDER])
                .args(["--runs", "10000"])
                .args(["--in-flight", &in_flight.to_string()]);
            if pooling {
                cmd.arg("--pooling");
            }
            let (result, note) = match run_child(ctx, &label, &mut cmd) {
                Ok(lines) => (
                    lines.into_iter().find(|l| l["event"] == "overhead"),
                    String::new(),
                ),
                Err(e) => (None, format!("{e:#}")),
            };
            results.overhead.push(OverheadRow {
                guest: format!("Rust (bench_noop, {noop_kb} KB)"),
                allocator: alloc.into(),
                in_flight,
                result,
                note,
            });
        }
    }
    match &ctx.args.python_guest {
        Some(py) => {
            // The Python example makes host calls in `run`, so its overhead is measured on
            // `validate-config`: the same fresh store, instantiation and drop, no I/O.
            let bytes = std::fs::read(ctx.abs(py))?;
            let size_mb = bytes.len() as f64 / 1e6;
            let dir = plugin_dir_with(ctx, "overhead-py", &[("disk_usage_py.wasm", bytes)])?;
            for pooling in [false, true] {
                if !ctx.fits(
                    results,
                    "host overhead (Python guest)",
                    Duration::from_secs(40),
                ) {
                    break;
                }
                let alloc = if pooling { "pooling" } else { "on-demand" };
                let mut cmd = Command::new(&ctx.exe);
                cmd.arg("overhead")
                    .arg("--plugins-dir")
                    .arg(&dir)
                    .args(["--task", "disk_usage_py", "--call", "validate"])
                    .args(["--runs", "300", "--in-flight", "1"])
                    .arg("--cache-dir")
                    .arg(ctx.work.join("cache-overhead"));
                if pooling {
                    cmd.arg("--pooling");
                }
                let label = format!("overhead-python-{alloc}");
                let (result, note) = match run_child(ctx, &label, &mut cmd) {
                    Ok(lines) => (
                        lines.into_iter().find(|l| l["event"] == "overhead"),
                        "`validate-config` instead of `run` (its `run` calls `df` on the worker)"
                            .into(),
                    ),
                    Err(e) => (None, format!("{e:#}")),
                };
                results.overhead.push(OverheadRow {
                    guest: format!("Python (examples/python/disk_usage, {size_mb:.1} MB)"),
                    allocator: alloc.into(),
                    in_flight: 1,
                    result,
                    note,
                });
            }
        }
        None => results.overhead.push(OverheadRow {
            guest: "Python".into(),
            allocator: "-".into(),
            in_flight: 1,
            result: None,
            note: "TODO: no Python guest component was built (scripts/bench.sh builds \
                   examples/python/disk_usage with componentize-py when it can)"
                .into(),
        }),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Plugin reload and restart

fn plugins(ctx: &Ctx, results: &mut Results) -> anyhow::Result<()> {
    let noop_path = ctx.abs(&ctx.args.noop);
    let noop = std::fs::read(&noop_path)?;
    // Hot reload: new versions (compiled) and a rollback to a cached version.
    for (mode, reloads) in [("new", 5usize), ("cached", 6)] {
        if !ctx.fits(
            results,
            &format!("hot reload ({mode})"),
            Duration::from_secs(30),
        ) {
            break;
        }
        let dir = plugin_dir_with(ctx, &format!("reload-{mode}"), &[])?;
        let mut cmd = Command::new(&ctx.exe);
        cmd.arg("reload")
            .arg("--plugins-dir")
            .arg(&dir)
            .args(["--task", crate::patch::NAME_PLACEHOLDER])
            .arg("--template")
            .arg(&noop_path)
            .args(["--reloads", &reloads.to_string(), "--mode", mode]);
        if mode == "cached" {
            cmd.arg("--cache-dir").arg(ctx.work.join("cache-reload"));
        }
        let what = if mode == "new" {
            "hot reload: new version (compiled), file in place → first run done"
        } else {
            "hot reload: rollback to a version in the compile cache"
        };
        match run_child(ctx, &format!("reload-{mode}"), &mut cmd) {
            Ok(lines) => {
                let l = lines.iter().find(|l| l["event"] == "reload");
                let samples: Vec<f64> = l
                    .and_then(|l| l["samples_ms"].as_array())
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default();
                let note = l
                    .map(|l| format!("compiled {}, cache hits {}", l["compiled"], l["cache_hits"]))
                    .unwrap_or_default();
                results.reload.push(SampleRow {
                    what: what.into(),
                    samples_ms: samples,
                    note,
                    target_ms: Some(200.0),
                });
            }
            Err(e) => results.reload.push(SampleRow {
                what: what.into(),
                samples_ms: vec![],
                note: format!("{e:#}"),
                target_ms: Some(200.0),
            }),
        }
    }

    // Restart with 50 plugins: distinct components (patched names → distinct hashes).
    let files: Vec<(String, Vec<u8>)> = (1..=50)
        .map(|i| {
            let name = format!("bench_noop_{i:04}");
            crate::patch::with_name(&noop, &name).map(|b| (format!("{name}.wasm"), b))
        })
        .collect::<anyhow::Result<_>>()?;
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let dir = plugin_dir_with(ctx, "restart50", &refs)?;
    // Cold: an empty compile cache each time (compiles all 50 and fills the cache, what a
    // first start or an engine upgrade costs); warm: the cache the last cold run filled.
    let cases: [(&str, usize, Option<f64>); 2] =
        [("cold-cache", 2, None), ("warm-cache", 5, Some(300.0))];
    let mut last_cache = None;
    for (case, runs, target) in cases {
        let need = Duration::from_secs(if case == "cold-cache" { 30 } else { 5 });
        if !ctx.fits(results, &format!("restart ({case})"), need) {
            break;
        }
        let mut samples = Vec::new();
        let mut notes = Vec::new();
        for i in 0..runs {
            let cache = if case == "cold-cache" {
                let c = ctx.work.join(format!("cache-restart-{i}"));
                let _ = std::fs::remove_dir_all(&c);
                last_cache = Some(c.clone());
                c
            } else {
                last_cache.clone().context("no filled cache")?
            };
            let (ms, line) = restart_once(ctx, &dir, Some(&cache), &format!("restart-{case}-{i}"))?;
            samples.push(ms);
            if i == 0 {
                notes.push(format!(
                    "loaded {}, compiled {}, cache hits {}, in-process {:.0} ms, CPU {:.0} ms, peak RSS {:.0} MiB",
                    line["loaded"],
                    line["compiled"],
                    line["cache_hits"],
                    line["in_process_ms"].as_f64().unwrap_or(0.0),
                    line["cpu_ms"].as_f64().unwrap_or(0.0),
                    line["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0
                ));
            }
        }
        let what = match case {
            "no-cache" => "restart, 50 plugins, no compile cache",
            "cold-cache" => {
                "restart, 50 plugins, empty compile cache (cold: compiles and fills it)"
            }
            _ => "restart, 50 plugins, warm compile cache",
        };
        results.restart.push(SampleRow {
            what: what.into(),
            samples_ms: samples,
            note: notes.join("; "),
            target_ms: target,
        });
    }
    Ok(())
}

/// Spawns `quarry-bench restart` and times spawn → `ready` line.
fn restart_once(
    ctx: &Ctx,
    dir: &Path,
    cache: Option<&Path>,
    label: &str,
) -> anyhow::Result<(f64, Value)> {
    let stderr_path = ctx.work.join("logs").join(format!("{label}.stderr"));
    let mut cmd = Command::new(&ctx.exe);
    cmd.arg("restart").arg("--plugins-dir").arg(dir);
    if let Some(c) = cache {
        cmd.arg("--cache-dir").arg(c);
    }
    cmd.stdout(Stdio::piped())
        .stderr(File::create(&stderr_path)?)
        .stdin(Stdio::null());
    let t0 = Instant::now();
    let mut child = die_with_parent(&mut cmd).spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut ready = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["event"] == "ready"
        {
            ready = Some((crate::measure::ms(t0.elapsed()), v));
            break;
        }
    }
    let status = wait_timeout(&mut child, CHILD_TIMEOUT)?;
    match (ready, status) {
        (Some(r), Some(s)) if s.success() => {
            if r.1["loaded"] != 50 {
                bail!("{label}: only {} of 50 plugins loaded", r.1["loaded"]);
            }
            Ok(r)
        }
        _ => bail!("{label} failed: {}", tail(&stderr_path, 600)),
    }
}

// ---------------------------------------------------------------------------------------
// 1. ROCK vs Quarry on real rocklets

/// Per-route request counts read from a rocklet's access log, and the rocklet's total
/// processing time (`process_time` of the responses).
#[derive(Debug, Default, Clone)]
struct RouteCounts(BTreeMap<String, u64>, f64);

impl RouteCounts {
    fn add(&mut self, other: &RouteCounts) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
        self.1 += other.1;
    }
    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// A real rocklet on `ip:22555`, logging to its own directory.
struct Rocklet {
    ip: String,
    child: Child,
    access_log: PathBuf,
    offset: u64,
}

impl Rocklet {
    /// Requests logged since the last call, by route (`/is_alive` excluded).
    fn take_counts(&mut self) -> RouteCounts {
        let mut counts = RouteCounts::default();
        let Ok(mut f) = File::open(&self.access_log) else {
            return counts;
        };
        use std::io::Seek as _;
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return counts;
        }
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        // Only whole lines; a partial last line is read next time.
        let upto = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..upto].lines() {
            if let Some(t) = line.trim().strip_prefix("\"process_time\": \"") {
                counts.1 += t
                    .trim_end_matches(['"', ','])
                    .trim_end_matches("ms")
                    .parse::<f64>()
                    .unwrap_or(0.0);
                continue;
            }
            let Some(rest) = line.trim().strip_prefix("\"url\": \"") else {
                continue;
            };
            let route = rest
                .split_once(&format!(":{ROCK_PORT}"))
                .map(|(_, r)| r.trim_end_matches(['"', ',']))
                .unwrap_or("?");
            if route == "/is_alive" {
                continue;
            }
            *counts.0.entry(route.to_string()).or_default() += 1;
        }
        self.offset += upto as u64;
        counts
    }
}

/// The fleet; stopped by PID when dropped.
struct Fleet(Vec<Rocklet>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &self.0 {
            // SAFETY: kill(2) on our own children.
            unsafe {
                libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        for r in &mut self.0 {
            stop(&mut r.child, Duration::from_secs(5));
        }
    }
}

impl Fleet {
    fn take_counts(&mut self, n: usize) -> (RouteCounts, u64, u64) {
        let mut all = RouteCounts::default();
        let (mut min, mut max) = (u64::MAX, 0);
        for r in self.0.iter_mut().take(n) {
            let c = r.take_counts();
            min = min.min(c.total());
            max = max.max(c.total());
            all.add(&c);
        }
        (all, if n == 0 { 0 } else { min }, max)
    }

    fn rss_mib(&self) -> f64 {
        self.0
            .iter()
            .map(|r| {
                std::fs::read_to_string(format!("/proc/{}/status", r.child.id()))
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
            / 1024.0
    }
}

/// Starts `n` rocklets in parallel on 127.0.0.2… port 22555, with a stand-in `docker` first
/// on their PATH, and waits until every one answers `/is_alive`.
fn start_fleet(ctx: &Ctx, n: usize) -> anyhow::Result<(Fleet, f64)> {
    let bin = ctx.work.join("fakebin");
    std::fs::create_dir_all(&bin)?;
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        "#!/bin/sh\n# Benchmark stand-in: a Docker with no running container.\n\
         [ \"$1\" = ps ] && exit 0\necho \"bench docker: unsupported: $*\" >&2\nexit 1\n",
    )?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755))?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let rocklet = ctx.abs(&ctx.args.rocklet);
    let t0 = Instant::now();
    let mut fleet = Fleet(Vec::new());
    for i in 0..n {
        let ip = format!("127.0.0.{}", i + 2);
        let logs = ctx.work.join("rocklets").join(&ip);
        std::fs::create_dir_all(&logs)?;
        let mut cmd = Command::new(&rocklet);
        cmd.args(["--host", &ip, "--port", &ROCK_PORT.to_string()])
            .env("ROCK_LOGGING_PATH", &logs)
            .env("PATH", &path)
            .current_dir(&ctx.work)
            .stdin(Stdio::null())
            .stdout(File::create(logs.join("stdout"))?)
            .stderr(File::create(logs.join("stderr"))?);
        let child = die_with_parent(&mut cmd)
            .spawn()
            .with_context(|| format!("starting {}", rocklet.display()))?;
        fleet.0.push(Rocklet {
            ip,
            child,
            access_log: logs.join("access.log"),
            offset: 0,
        });
    }
    let mut waiting: Vec<usize> = (0..n).collect();
    while !waiting.is_empty() {
        if t0.elapsed() > FLEET_READY_TIMEOUT {
            bail!(
                "{} of {n} rocklets not ready after {}s (first: {}; its stderr: {})",
                waiting.len(),
                FLEET_READY_TIMEOUT.as_secs(),
                fleet.0[waiting[0]].ip,
                tail(
                    &ctx.work
                        .join("rocklets")
                        .join(&fleet.0[waiting[0]].ip)
                        .join("stderr"),
                    400
                )
            );
        }
        std::thread::sleep(Duration::from_millis(250));
        let mut still = Vec::new();
        for &i in &waiting {
            let r = &mut fleet.0[i];
            if let Ok(Some(s)) = r.child.try_wait() {
                bail!(
                    "rocklet {} exited with {s}: {}",
                    r.ip,
                    tail(&ctx.work.join("rocklets").join(&r.ip).join("stderr"), 400)
                );
            }
            match http_get(&r.ip, ROCK_PORT, "/is_alive", Duration::from_secs(2)) {
                Ok((200, _)) => {}
                _ => still.push(i),
            }
        }
        waiting = still;
    }
    let ready = t0.elapsed().as_secs_f64();
    // Forget the readiness probes.
    for r in &mut fleet.0 {
        r.take_counts();
    }
    Ok((fleet, ready))
}

/// A directory tree for file_cleanup: 10 dirs × 20 young files plus excluded names. Nothing
/// in it is old or big, so every tick does the same work.
fn make_cleanup_data(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    let root = ctx.work.join("data").join("logs");
    for d in 0..10 {
        let dir = root.join(format!("sandbox-{d}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..20 {
            std::fs::write(dir.join(format!("app-{f}.log")), "benchmark line\n")?;
        }
    }
    std::fs::write(root.join("docuum.log"), "x\n")?;
    std::fs::write(root.join("rocklet.log"), "x\n")?;
    Ok(root)
}

fn versus(ctx: &Ctx, results: &mut Results) -> anyhow::Result<()> {
    let data = make_cleanup_data(ctx)?;
    let cleanup_params = json!({
        "target_dirs": [{"path": data, "exclude_files": ["docuum.log", "./rocklet.log"]}],
        "max_age_mins": 180,
        "max_file_size": "1G",
    })
    .to_string();
    let noop_bytes = std::fs::read(ctx.abs(&ctx.args.noop))?;
    let fc_bytes = std::fs::read(ctx.abs(&ctx.args.file_cleanup))
        .with_context(|| format!("reading {}", ctx.args.file_cleanup.display()))?;
    let plugins = plugin_dir_with(
        ctx,
        "versus",
        &[
            ("bench_noop.wasm", noop_bytes),
            ("file_cleanup.wasm", fc_bytes),
        ],
    )?;

    // Quarry's compile cache is on by default (`quarry.cache_dir`); warm it once so that every
    // Quarry side starts the way a restarted `quarry serve` does.
    let cache = ctx.work.join("cache-ticks");
    run_child(
        ctx,
        "warm-cache",
        Command::new(&ctx.exe)
            .arg("restart")
            .arg("--plugins-dir")
            .arg(&plugins)
            .arg("--cache-dir")
            .arg(&cache),
    )?;

    // The biggest fleet the memory allows.
    let avail = mem_available_mib();
    let fits_mem = |n: usize| n as u64 * ROCKLET_MIB + HEADROOM_MIB <= avail;
    let mut sizes: Vec<usize> = Vec::new();
    for &n in &ctx.args.rocklets {
        if fits_mem(n) {
            sizes.push(n);
        } else {
            results.skipped.push(format!(
                "{n} real rocklets: skipped, needs ~{} MiB, {avail} MiB available",
                n as u64 * ROCKLET_MIB + HEADROOM_MIB
            ));
        }
    }
    // Budget: starting the fleet costs ~1 s per rocklet on 2 cores, then each size needs its
    // ticks (~n/2 s for both tasks and sides). Sizes that do not fit are dropped, largest
    // first, so that a short budget still compares the two schedulers on a smaller fleet.
    let need = |sizes: &[usize]| {
        let max = sizes.iter().copied().max().unwrap_or(0) as u64;
        let ticks: u64 = sizes.iter().map(|&n| 25 + n as u64 / 2).sum();
        Duration::from_secs(20 + max + ticks)
    };
    sizes.sort_unstable();
    while !sizes.is_empty() && ctx.left() < need(&sizes) {
        let n = sizes.pop().unwrap_or_default();
        results.skipped.push(format!(
            "{n} real rocklets: skipped, {}s of the budget are left, {}s needed with them",
            ctx.left().as_secs(),
            need(&[&sizes[..], &[n]].concat()).as_secs()
        ));
    }
    let Some(&max_n) = sizes.iter().max() else {
        bail!("no fleet size fits in memory and time");
    };
    ctx.log(&format!("starting {max_n} rocklets in parallel"));
    let (mut fleet, ready_secs) = start_fleet(ctx, max_n)?;
    results.fleet = Some(FleetInfo {
        size: max_n,
        ready_secs,
        rss_mib: fleet.rss_mib(),
    });
    ctx.log(&format!("{max_n} rocklets ready in {ready_secs:.1}s"));

    let rock_status = ctx.work.join("rock-status");
    let quarry_status = ctx.work.join("quarry-status");
    let driver = ctx.root.join("bench").join("rock_driver.py");
    let mut order = 0usize;
    for &n in &sizes {
        let ticks = if n >= 50 {
            ctx.args.ticks.min(3)
        } else {
            ctx.args.ticks
        };
        let ips: Vec<String> = fleet.0.iter().take(n).map(|r| r.ip.clone()).collect();
        for (task, params) in [
            ("noop", "{}".to_string()),
            ("file_cleanup", cleanup_params.clone()),
        ] {
            // ~4 HTTP calls per worker and side at ~10 ms of rocklet CPU each on 2 cores,
            // plus process start-up (ROCK imports ~2 s).
            let need = Duration::from_secs(10 + (n * ticks) as u64 / 4);
            if !ctx.fits(results, &format!("{task} on {n} rocklets"), need) {
                continue;
            }
            ctx.log(&format!("{task} on {n} rocklets, {ticks} ticks per side"));
            let mut rock = Side::default();
            let mut quarry = Side::default();
            // Alternate which side goes first.
            let rock_first = order.is_multiple_of(2);
            order += 1;
            for which in if rock_first {
                ["rock", "quarry"]
            } else {
                ["quarry", "rock"]
            } {
                let label = format!("{which}-{task}-{n}");
                let logs = ctx.work.join("logs").join(&label);
                std::fs::create_dir_all(&logs)?;
                let mut cmd = if which == "rock" {
                    let mut c = Command::new(ctx.abs(&ctx.args.rock_python));
                    c.arg(&driver)
                        .args(["--task", task, "--params", &params])
                        .args(["--workers", &ips.join(",")])
                        .args(["--ticks", &ticks.to_string()])
                        .args(["--concurrency", &ctx.args.concurrency.to_string()])
                        .env("ROCK_SCHEDULER_STATUS_DIR", &rock_status)
                        .env("ROCK_LOGGING_PATH", &logs);
                    c
                } else {
                    let mut c = Command::new(&ctx.exe);
                    let workers: Vec<String> =
                        ips.iter().map(|ip| format!("{ip}:{ROCK_PORT}")).collect();
                    let name = if task == "noop" {
                        crate::patch::NAME_PLACEHOLDER
                    } else {
                        task
                    };
                    c.arg("tick")
                        .arg("--plugins-dir")
                        .arg(&plugins)
                        .args(["--task", name, "--params", &params])
                        .args(["--workers", &workers.join(",")])
                        .args(["--ticks", &ticks.to_string()])
                        .args(["--concurrency", &ctx.args.concurrency.to_string()])
                        .arg("--status-dir")
                        .arg(&quarry_status)
                        .arg("--report-dir")
                        .arg(&quarry_status)
                        .arg("--log-file")
                        .arg(logs.join("quarry.log"))
                        .arg("--cache-dir")
                        .arg(&cache);
                    c
                };
                without_proxy(&mut cmd);
                fleet.take_counts(max_n);
                let out = run_child(ctx, &label, &mut cmd);
                std::thread::sleep(Duration::from_millis(300));
                let (counts, min, max) = fleet.take_counts(n);
                let mut side = match out {
                    Ok(lines) => side_from(&lines),
                    Err(e) => Side {
                        error: Some(format!("{e:#}")),
                        ..Default::default()
                    },
                };
                let runs = (n * side.ticks.len().max(1)) as f64;
                side.calls_per_worker = counts
                    .0
                    .iter()
                    .map(|(k, v)| (k.trim_start_matches('/').to_string(), *v as f64 / runs))
                    .collect();
                let t = side.ticks.len().max(1) as u64;
                side.calls_min_max = Some((min / t, max.div_ceil(t)));
                side.rocklet_ms_per_worker = Some(counts.1 / runs);
                if which == "rock" {
                    rock = side;
                } else {
                    quarry = side;
                }
            }
            results.versus.push(VersusRow {
                workers: n,
                task: task.into(),
                rock,
                quarry,
            });
        }
    }
    ctx.log("stopping the rocklets");
    drop(fleet);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Simulated fleet

/// A running simulator; killed when dropped.
struct Sim {
    child: Child,
    port: u16,
}

impl Drop for Sim {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(2));
    }
}

impl Sim {
    fn start(
        ctx: &Ctx,
        port: u16,
        workers: usize,
        latency_ms: u64,
        fail_rate: f64,
    ) -> anyhow::Result<Sim> {
        let label = format!("sim-{workers}-{latency_ms}-{fail_rate}");
        let mut cmd = Command::new(&ctx.exe);
        cmd.arg("sim")
            .args(["--port", &port.to_string()])
            .args(["--workers", &workers.to_string()])
            .args(["--latency-ms", &latency_ms.to_string()])
            .args(["--fail-rate", &fail_rate.to_string()])
            .stdout(Stdio::piped())
            .stderr(File::create(
                ctx.work.join("logs").join(format!("{label}.stderr")),
            )?)
            .stdin(Stdio::null());
        let mut child = die_with_parent(&mut cmd).spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line).with_context(|| {
            format!(
                "the simulator did not start: {}",
                tail(&ctx.work.join("logs").join(format!("{label}.stderr")), 400)
            )
        })?;
        let port = v["port"].as_u64().context("no port")? as u16;
        Ok(Sim { child, port })
    }

    fn stats(&self, reset: bool) -> anyhow::Result<Value> {
        let path = if reset { "/__stats?reset" } else { "/__stats" };
        let (code, body) = http_get("127.0.0.1", self.port, path, Duration::from_secs(10))?;
        if code != 200 {
            bail!("simulator stats: HTTP {code}");
        }
        Ok(serde_json::from_str(&body)?)
    }
}

fn scale(ctx: &Ctx, results: &mut Results) -> anyhow::Result<()> {
    let noop_bytes = std::fs::read(ctx.abs(&ctx.args.noop))?;
    let plugins = plugin_dir_with(ctx, "scale", &[("bench_noop.wasm", noop_bytes)])?;
    let cache = ctx.work.join("cache-ticks");
    let conc = ctx.args.concurrency;
    let status = ctx.work.join("scale-status");
    let lat = ctx.args.sim_latency_ms;
    // (scheduler, workers, latency ms, failure rate, ticks)
    let mut cases: Vec<(&str, usize, u64, f64, usize)> = ctx
        .args
        .sim_sizes
        .iter()
        .map(|&n| ("quarry", n, lat, 0.0, if n >= 10_000 { 2 } else { 3 }))
        .collect();
    cases.push(("quarry", 1000, lat, 0.01, 2));
    if ctx.args.rock_sim_size > 0 {
        cases.push(("rock", ctx.args.rock_sim_size, lat, 0.0, 2));
    }
    // Where latency, not CPU, dominates (a rocklet's `execute` takes 5–150 ms).
    if let Some(&big) = ctx.args.sim_sizes.iter().max() {
        cases.push(("quarry", big, 5 * lat, 0.0, 1));
    }
    for (who, n, latency, fail, ticks) in cases {
        // Ideal tick + per-worker CPU (~0.5 ms Quarry, ~5 ms ROCK) on a shared box.
        let ideal = (n.div_ceil(conc) as u64 * 2 * latency) as f64 / 1000.0;
        let cpu_guess = n as f64 * if who == "rock" { 0.006 } else { 0.0006 };
        let need = Duration::from_secs_f64(5.0 + (ticks as f64) * (ideal + cpu_guess) * 1.5);
        if !ctx.fits(results, &format!("{who} on {n} simulated workers"), need) {
            continue;
        }
        ctx.log(&format!(
            "{who}: {n} simulated workers, latency {latency} ms, failure rate {fail}, {ticks} ticks"
        ));
        // ROCK needs port 22555; Quarry uses it too when free, so both see the same setup.
        let sim = match Sim::start(ctx, ROCK_PORT, n, latency, fail) {
            Ok(s) => s,
            Err(e) if who == "quarry" => {
                eprintln!("bench: simulator on {ROCK_PORT} failed ({e:#}); using a random port");
                Sim::start(ctx, 0, n, latency, fail)?
            }
            Err(e) => {
                results
                    .errors
                    .push(format!("rock on {n} simulated workers: {e:#}"));
                continue;
            }
        };
        sim.stats(true)?;
        let label = format!("scale-{who}-{n}-{fail}");
        let logs = ctx.work.join("logs").join(&label);
        std::fs::create_dir_all(&logs)?;
        let mut cmd = if who == "rock" {
            let ips: Vec<String> = (0..n)
                .map(|i| crate::sim::worker_ip(i).to_string())
                .collect();
            let mut c = Command::new(ctx.abs(&ctx.args.rock_python));
            c.arg(ctx.root.join("bench").join("rock_driver.py"))
                .args(["--task", "noop", "--workers", &ips.join(",")])
                .args(["--ticks", &ticks.to_string()])
                .args(["--concurrency", &conc.to_string()])
                .env("ROCK_SCHEDULER_STATUS_DIR", &status)
                .env("ROCK_LOGGING_PATH", &logs);
            c
        } else {
            let mut c = Command::new(&ctx.exe);
            c.arg("tick")
                .arg("--plugins-dir")
                .arg(&plugins)
                .args(["--task", crate::patch::NAME_PLACEHOLDER])
                .args(["--sim-workers", &n.to_string()])
                .args(["--sim-port", &sim.port.to_string()])
                .args(["--ticks", &ticks.to_string()])
                .args(["--concurrency", &conc.to_string()])
                .arg("--status-dir")
                .arg(&status)
                .arg("--report-dir")
                .arg(&status)
                .arg("--log-file")
                .arg(logs.join("quarry.log"))
                .arg("--cache-dir")
                .arg(&cache);
            c
        };
        let out = run_child(ctx, &label, &mut cmd);
        let stats = sim.stats(true)?;
        drop(sim);
        let mut side = match out {
            Ok(lines) => side_from(&lines),
            Err(e) => Side {
                error: Some(format!("{e:#}")),
                ..Default::default()
            },
        };
        let runs = (n * side.ticks.len().max(1)) as f64;
        for route in ["execute", "read_file", "write_file"] {
            let v = stats[route].as_f64().unwrap_or(0.0);
            if v > 0.0 {
                side.calls_per_worker.insert(route.into(), v / runs);
            }
        }
        let t = side.ticks.len().max(1) as u64;
        side.calls_min_max = Some((
            stats["per_worker_min"].as_u64().unwrap_or(0) / t,
            stats["per_worker_max"].as_u64().unwrap_or(0).div_ceil(t),
        ));
        side.sim_cpu_ms_per_tick = stats["cpu_ms"].as_f64().map(|c| c / t as f64);
        results.scale.push(ScaleRow {
            scheduler: who.into(),
            workers: n,
            latency_ms: latency,
            fail_rate: fail,
            concurrency: conc,
            side,
        });
    }
    Ok(())
}

/// Summary statistics used by the renderer.
pub fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let max = samples.iter().copied().fold(0.0, f64::max);
    (median(samples), percentile(samples, 90.0), max)
}
