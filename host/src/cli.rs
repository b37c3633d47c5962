//! The `quarry` command line. Parsing is clap's; each subcommand is a function that writes
//! its answer to the given writers and returns the process exit code, so tests can call it
//! in-process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::plugins::PluginSet;
use crate::report::TickOutcome;
use crate::run::{RunSettings, TaskRun, run_tick};
use crate::runtime::{Runtime, RuntimeLimits, WIT_VERSION};
use crate::server;
use crate::workers;

/// Quarry: fleet maintenance tasks as WebAssembly components, run on every worker.
#[derive(Debug, Parser)]
#[command(name = "quarry", version, about)]
pub struct Cli {
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `quarry=debug`.
    #[arg(long, global = true, env = "QUARRY_LOG", default_value = "info")]
    pub log: String,
    /// Log line format on stderr: `text` for people, `json` (one object per line) for log
    /// collectors.
    #[arg(
        long,
        global = true,
        env = "QUARRY_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// tracing-subscriber's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp` (RFC 3339), `level`, `target`, `fields` (the
    /// event's fields, `message` included), `span` (the innermost span's name and fields) and
    /// `spans` (every span the event is in, outermost first).
    Json,
}

/// The subscriber `quarry` logs through: events that pass `filter`, written to `writer`
/// (stderr in the binary) as `format` says.
pub fn log_subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    format: LogFormat,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_ansi(false)
                .finish(),
        ),
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the scheduler until Ctrl-C or SIGTERM (ticks in flight finish first).
    Serve {
        /// Config file: ROCK's YAML (`scheduler:`) plus Quarry's `quarry:` section.
        #[arg(long, short, env = "QUARRY_CONFIG", default_value = "quarry.yml")]
        config: PathBuf,
    },
    /// Run one task once and print its run report (JSON). Exit 0 on success or skipped.
    Run {
        /// Plugin name (or ROCK task class).
        task: String,
        /// Worker address: `local` (default), `host` (port 22555) or `host:port`. Repeatable.
        #[arg(long = "worker", short)]
        workers: Vec<String>,
        /// Params as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Directory of .wasm plugins.
        #[arg(long, env = "QUARRY_PLUGINS_DIR", default_value = config::DEFAULT_PLUGINS_DIR)]
        plugins_dir: PathBuf,
        /// Status directory on the workers (default: $ROCK_SCHEDULER_STATUS_DIR or /data/scheduler_status).
        #[arg(long)]
        status_dir: Option<String>,
        /// Also write the run report into this directory.
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// Budget of the run on each worker, in seconds.
        #[arg(long, default_value_t = config::DEFAULT_RUN_TIMEOUT_SECS)]
        timeout: u64,
        /// Memory limit of the task, in MiB.
        #[arg(long, default_value_t = config::DEFAULT_MEMORY_LIMIT_MIB)]
        memory_mib: u64,
        /// Change nothing: the task reports what it would do. Refused (nothing runs) for a
        /// task whose plugin does not declare dry-run support; every write-file is refused.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the plugins in a directory (name, version, idempotency, WIT version) and the
    /// files that failed to load.
    Plugins {
        /// Directory of .wasm plugins.
        #[arg(long, env = "QUARRY_PLUGINS_DIR", default_value = config::DEFAULT_PLUGINS_DIR)]
        plugins_dir: PathBuf,
    },
    /// Validate a config file: its schema, and its tasks against the plugins it names.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Write, build and check task plugins.
    Plugin {
        /// What to do.
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Show every task of a running `quarry serve` (through its admin API).
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List runs of a running `quarry serve`, newest first.
    Runs {
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only this worker (address).
        #[arg(long)]
        worker: Option<String>,
        /// Only this outcome (`success`, `failed`, `timeout`, …).
        #[arg(long)]
        outcome: Option<String>,
        /// How many (1-1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Runs older than this run id (the next page).
        #[arg(long)]
        before: Option<i64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run a task now on a running `quarry serve`, outside its schedule.
    Trigger {
        /// Task name.
        task: String,
        /// Worker address; repeatable; default: every worker.
        #[arg(long = "worker", short)]
        workers: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cancel a task's tick in flight on a running `quarry serve`.
    Cancel {
        /// Task name.
        task: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Pause a task: no scheduled tick runs until it is resumed.
    Pause {
        /// Task name.
        task: String,
        /// Why (shown by `quarry status` and the dashboard).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Resume a paused or halted task.
    Resume {
        /// Task name.
        task: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Lift a task's quarantine on one worker.
    Unquarantine {
        /// Task name.
        task: String,
        /// Worker address, as `GET /api/v1/quarantines` names it.
        worker: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// How the API verbs reach the server.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the server's admin API.
    #[arg(long, env = "QUARRY_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// File holding the bearer token (the server's quarry.api.token_file).
    #[arg(long, env = "QUARRY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON answer instead of a table or a sentence.
    #[arg(long)]
    pub json: bool,
}

/// `quarry plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// Create a task project that builds as is.
    New {
        /// Task name (lower-case letters, digits, `_`).
        name: String,
        /// Language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::scaffold::Lang,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the task project in DIR into a .wasm component.
    Build {
        /// Project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to put the .wasm (default: the project directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a plugin's metadata, or exactly why the host would refuse it.
    Check {
        /// The .wasm file.
        file: PathBuf,
    },
}

/// Runs a parsed command line. `out` gets the command's answer, `err` human notes.
pub async fn execute(
    cli: Cli,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            if let Err(e) = Config::load(&config) {
                writeln!(err, "{e}")?;
                return Ok(ExitCode::from(2));
            }
            server::serve(&config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            task,
            workers,
            params,
            plugins_dir,
            status_dir,
            report_dir,
            timeout,
            memory_mib,
            dry_run,
        } => {
            let args = RunArgs {
                task,
                workers,
                params,
                plugins_dir,
                status_dir,
                report_dir,
                timeout,
                memory_mib,
                dry_run,
            };
            run_once(args, out, err).await
        }
        Command::Plugins { plugins_dir } => list_plugins(&plugins_dir, out, err).await,
        Command::CheckConfig { file } => check_config(&file, out, err).await,
        Command::Plugin { action } => plugin_action(action, out, err).await,
        Command::Status { api } => api_verb(&api, ApiCall::Status, out, err).await,
        Command::Runs {
            task,
            worker,
            outcome,
            limit,
            before,
            api,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            let filters = [("task", task), ("worker", worker), ("outcome", outcome)];
            query.extend(filters.into_iter().filter_map(|(k, v)| Some((k, v?))));
            query.extend(before.map(|b| ("before", b.to_string())));
            api_verb(&api, ApiCall::Runs(query), out, err).await
        }
        Command::Trigger { task, workers, api } => {
            api_verb(&api, ApiCall::Trigger(task, workers), out, err).await
        }
        Command::Cancel { task, api } => api_verb(&api, ApiCall::Cancel(task), out, err).await,
        Command::Pause { task, reason, api } => {
            api_verb(&api, ApiCall::Pause(task, reason), out, err).await
        }
        Command::Resume { task, api } => api_verb(&api, ApiCall::Resume(task), out, err).await,
        Command::Unquarantine { task, worker, api } => {
            api_verb(&api, ApiCall::Lift(task, worker), out, err).await
        }
    }
}

/// One API verb, with its arguments.
enum ApiCall {
    Status,
    Runs(Vec<(&'static str, String)>),
    Trigger(String, Vec<String>),
    Cancel(String),
    Pause(String, Option<String>),
    Resume(String),
    Lift(String, String),
}

impl ApiCall {
    fn verb(&self) -> &'static str {
        match self {
            ApiCall::Status => "status",
            ApiCall::Runs(_) => "runs",
            ApiCall::Trigger(..) => "trigger",
            ApiCall::Cancel(_) => "cancel",
            ApiCall::Pause(..) => "pause",
            ApiCall::Resume(_) => "resume",
            ApiCall::Lift(..) => "unquarantine",
        }
    }
}

/// `quarry status|runs|trigger|cancel|pause|resume|unquarantine`: one call to the admin API;
/// the answer as a table or a sentence (or `--json`). Exit 0 on success, 2 when the request
/// was wrong (bad flag, unknown task), 1 when it could not be done (unreachable, 401/403,
/// conflict, cooldown, server error).
async fn api_verb(
    args: &ApiArgs,
    call: ApiCall,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let verb = call.verb();
    match api_call(args, call, out).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            writeln!(err, "quarry {verb}: {e}")?;
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

async fn api_call(args: &ApiArgs, call: ApiCall, out: &mut dyn Write) -> Result<(), ApiVerbError> {
    use crate::api::client::ApiClient;
    use reqwest::Method;
    let token = match &args.token_file {
        Some(p) => Some(ApiClient::read_token_file(p)?),
        None => None,
    };
    let client = ApiClient::new(&args.api, token)?;
    let (method, segments, query, body): (Method, Vec<&str>, _, _) = match &call {
        ApiCall::Status => (Method::GET, vec!["tasks"], vec![], None),
        ApiCall::Runs(q) => (Method::GET, vec!["runs"], q.clone(), None),
        ApiCall::Trigger(t, w) => (
            Method::POST,
            vec!["tasks", t, "trigger"],
            vec![],
            (!w.is_empty()).then(|| serde_json::json!({ "workers": w })),
        ),
        ApiCall::Cancel(t) => (Method::POST, vec!["tasks", t, "cancel"], vec![], None),
        ApiCall::Pause(t, r) => (
            Method::POST,
            vec!["tasks", t, "pause"],
            vec![],
            r.as_ref().map(|r| serde_json::json!({ "reason": r })),
        ),
        ApiCall::Resume(t) => (Method::POST, vec!["tasks", t, "resume"], vec![], None),
        ApiCall::Lift(t, w) => (Method::DELETE, vec!["quarantines", t, w], vec![], None),
    };
    let segments: Vec<&str> = ["api", "v1"].into_iter().chain(segments).collect();
    let answer = client
        .call(method, &segments, &query, body.as_ref())
        .await?;
    if args.json {
        if let Some(v) = &answer {
            writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
        }
        return Ok(());
    }
    let value = answer.unwrap_or(serde_json::Value::Null);
    match call {
        ApiCall::Status => print_tasks(&serde_json::from_value::<Vec<_>>(value)?, out)?,
        ApiCall::Runs(_) => print_runs(&serde_json::from_value(value)?, out)?,
        ApiCall::Trigger(task, _) => {
            let t: crate::api::model::Triggered = serde_json::from_value(value)?;
            writeln!(
                out,
                "triggered {task}: tick {} on {} worker(s); see `quarry runs --task {task}`",
                t.tick_id,
                t.workers.len()
            )?;
        }
        ApiCall::Cancel(task) => writeln!(out, "cancelling {task}'s tick in flight")?,
        ApiCall::Pause(task, _) => writeln!(out, "paused {task}")?,
        ApiCall::Resume(task) => writeln!(out, "resumed {task}")?,
        ApiCall::Lift(task, worker) => writeln!(out, "lifted {task}'s quarantine on {worker}")?,
    }
    Ok(())
}

/// What can go wrong in an API verb: the call, or printing its answer.
#[derive(Debug, thiserror::Error)]
enum ApiVerbError {
    #[error(transparent)]
    Client(#[from] crate::api::client::ClientError),
    #[error("the server's answer is not what this quarry expects: {0}")]
    Shape(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ApiVerbError {
    fn exit_code(&self) -> u8 {
        match self {
            ApiVerbError::Client(e) => e.exit_code(),
            _ => 1,
        }
    }
}

fn dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

/// `quarry status`'s table.
fn print_tasks(tasks: &[crate::api::model::TaskView], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<10} {:>9}  {:<27} {:<6} {:<12} {:>11}",
        "TASK", "PLUGIN", "INTERVAL", "NEXT TICK", "PAUSED", "LAST TICK", "QUARANTINED"
    )?;
    for t in tasks {
        let last = match (&t.in_flight, &t.last_tick) {
            (Some(_), _) => "running",
            (None, Some(l)) => l.outcome.as_str(),
            (None, None) => "-",
        };
        writeln!(
            out,
            "{:<24} {:<10} {:>8}s  {:<27} {:<6} {:<12} {:>11}",
            t.name,
            dash(t.plugin.as_ref().map(|p| p.version.as_str())),
            t.interval_seconds,
            dash(t.next_tick.as_deref()),
            if t.paused { "yes" } else { "no" },
            last,
            t.quarantined_workers
        )?;
    }
    for t in tasks.iter().filter(|t| t.paused) {
        writeln!(out, "{}: {}", t.name, dash(t.paused_reason.as_deref()))?;
    }
    Ok(())
}

/// `quarry runs`' table.
fn print_runs(page: &crate::api::model::RunsPage, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>8} {:<20} {:<22} {:<12} {:<27} ERROR",
        "ID", "TASK", "WORKER", "OUTCOME", "STARTED"
    )?;
    for r in &page.runs {
        let error = match (&r.error_type, &r.error) {
            (Some(t), Some(e)) => format!("{t}: {e}"),
            (None, Some(e)) => e.clone(),
            (Some(t), None) => t.clone(),
            (None, None) => String::new(),
        };
        writeln!(
            out,
            "{:>8} {:<20} {:<22} {:<12} {:<27} {}",
            r.id,
            r.task,
            r.worker,
            r.outcome,
            r.started_at,
            error.lines().next().unwrap_or("")
        )?;
    }
    if let Some(next) = page.next {
        writeln!(out, "(more: --before {next})")?;
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A runtime for one-shot commands, with the default compile cache.
fn runtime(limits: RuntimeLimits) -> anyhow::Result<Arc<Runtime>> {
    let cache = config::default_cache_dir(&|k: &str| std::env::var(k).ok());
    runtime_with_cache(limits, cache.as_deref())
}

/// A runtime for one-shot commands, with a compile cache in `cache` if any.
fn runtime_with_cache(limits: RuntimeLimits, cache: Option<&Path>) -> anyhow::Result<Arc<Runtime>> {
    let mut rt = Runtime::new(limits)?;
    if let Some(dir) = cache {
        rt = rt.with_compile_cache(dir);
    }
    Ok(Arc::new(rt))
}

struct RunArgs {
    task: String,
    workers: Vec<String>,
    params: String,
    plugins_dir: PathBuf,
    status_dir: Option<String>,
    report_dir: Option<PathBuf>,
    timeout: u64,
    memory_mib: u64,
    dry_run: bool,
}

impl RunArgs {
    /// The flags as the config they stand for, so that `quarry run` is validated exactly as a
    /// config file is (same bounds, same messages, named after the flags).
    fn config(&self, params: serde_json::Map<String, serde_json::Value>) -> Result<Config, String> {
        let raw = config::RawConfig {
            scheduler: Some(config::RawScheduler {
                enabled: true,
                worker_cache_ttl: None,
                tasks: vec![config::RawTask {
                    task_class: self.task.clone(),
                    enabled: true,
                    interval_seconds: None,
                    params: Some(params),
                    on_failure: None,
                    retries: None,
                    grants: None,
                    dry_run: Some(self.dry_run),
                    allow_grant_growth: None,
                }],
            }),
            quarry: config::RawQuarry {
                plugins_dir: Some(self.plugins_dir.clone()),
                workers: (!self.workers.is_empty()).then(|| self.workers.clone()),
                status_dir: self.status_dir.clone(),
                report_dir: self.report_dir.clone(),
                run_timeout_seconds: Some(self.timeout),
                // Host calls get the run's budget when it is shorter than the default cap.
                call_timeout_seconds: Some(
                    config::DEFAULT_CALL_TIMEOUT_SECS.min(self.timeout.max(1)),
                ),
                memory_limit_mib: Some(self.memory_mib),
                ..Default::default()
            },
        };
        let env = |k: &str| std::env::var(k).ok();
        Config::from_raw(raw, Path::new(""), env).map_err(|problems| {
            problems
                .iter()
                .map(|p| format!("{}: {}", flag_of(&p.field), p.reason))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// The `quarry run` flag that sets a config field.
fn flag_of(field: &str) -> &str {
    let field = field.split('[').next().unwrap_or(field);
    match field {
        "quarry.workers" => "--worker",
        "quarry.status_dir" => "--status-dir",
        "quarry.report_dir" => "--report-dir",
        "quarry.plugins_dir" => "--plugins-dir",
        "quarry.run_timeout_seconds" | "quarry.call_timeout_seconds" => "--timeout",
        "quarry.memory_limit_mib" => "--memory-mib",
        "scheduler.tasks" => "TASK",
        other => other,
    }
}

/// `quarry run`.
async fn run_once(
    args: RunArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let usage = |err: &mut dyn Write, msg: String| -> anyhow::Result<ExitCode> {
        writeln!(err, "quarry run: {msg}")?;
        Ok(ExitCode::from(2))
    };
    let params = match serde_json::from_str::<serde_json::Value>(&args.params) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => return usage(err, "--params must be a JSON object".into()),
        Err(e) => return usage(err, format!("--params is not valid JSON: {e}")),
    };
    let cfg = match args.config(params) {
        Ok(cfg) => cfg,
        Err(msg) => return usage(err, msg),
    };
    let rt = runtime_with_cache(cfg.runtime, cfg.paths.cache_dir.as_deref())?;
    let plugins = PluginSet::load_dir(&rt, &cfg.paths.plugins_dir).await?;
    let Some(t) = cfg.tasks.first() else {
        return usage(err, "TASK is empty".into());
    };
    let (name, params) = (t.plugin.as_str(), t.params.clone());
    let Some(plugin) = plugins.get(name) else {
        return usage(err, plugins.missing(name, &args.plugins_dir));
    };
    match rt.validate_config(plugin, &params).await {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => return usage(err, format!("invalid params for {name}: {msg}")),
        Err(e) => return usage(err, format!("{name} failed while validating params: {e}")),
    }
    let workers = workers::connect(&cfg.discovery.fixed, workers::Limits::default());
    // A one-shot run writes a report only where asked to, and here, so that a report that
    // cannot be written fails the command.
    let settings = RunSettings {
        report_dir: None,
        ..cfg.run
    };
    if let Err(why) = server::check_targets(&rt, plugin, t).await {
        return usage(err, why);
    }
    let task = TaskRun::new(plugin.clone(), params).with_policy(t.policy.clone());
    let (report, runs) = run_tick(&rt, &task, &workers, &settings).await;
    for run in &runs {
        let r = &run.result;
        write!(err, "{}: {:?}", r.worker_ip, r.outcome)?;
        if let Some(e) = &r.error {
            write!(
                err,
                " ({}: {e})",
                r.error_type.map(|t| t.as_str()).unwrap_or("error")
            )?;
        }
        writeln!(err)?;
        if let Some(detail) = &run.detail {
            writeln!(err, "{}", serde_json::to_string_pretty(detail)?)?;
        }
    }
    writeln!(out, "{}", report.to_json())?;
    if let Some(dir) = &args.report_dir
        && let Err(e) = report.write(dir)
    {
        writeln!(
            err,
            "quarry run: the run report was not written to {}: {e}",
            dir.display()
        )?;
        return Ok(ExitCode::from(1));
    }
    Ok(match report.outcome {
        TickOutcome::Success | TickOutcome::Skipped => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// `quarry plugins`.
async fn list_plugins(
    dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let rt = runtime(RuntimeLimits::default())?;
    // Refusals are printed below, once each (no log lines as well).
    let plugins = PluginSet::scan(&rt, dir, &PluginSet::default(), &[])
        .await
        .with_context(|| format!("listing plugins in {}", dir.display()))?;
    writeln!(
        out,
        "{:<24} {:<10} {:<11} {:>9}  {:<5}  FILE",
        "NAME", "VERSION", "IDEMPOTENT", "INTERVAL", "WIT"
    )?;
    for p in plugins.iter() {
        let m = p.meta();
        writeln!(
            out,
            "{:<24} {:<10} {:<11} {:>8}s  {:<5}  {}",
            m.name.as_str(),
            m.version,
            if m.idempotent { "yes" } else { "no" },
            m.default_interval.as_secs(),
            p.wit_version(),
            p.path().display()
        )?;
        if !m.params_doc.is_empty() {
            writeln!(out, "    params: {}", m.params_doc)?;
        }
    }
    for e in plugins.errors() {
        writeln!(err, "refused: {e}")?;
    }
    writeln!(
        err,
        "{} plugin(s) loaded, {} refused; host supports quarry:task@{WIT_VERSION}",
        plugins.iter().count(),
        plugins.errors().len()
    )?;
    Ok(if plugins.errors().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `quarry plugin new|build|check`.
async fn plugin_action(
    action: PluginAction,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match action {
        PluginAction::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            match crate::scaffold::new_project(&name, lang, &dir) {
                Ok(files) => {
                    for f in files {
                        writeln!(out, "created {}", f.display())?;
                    }
                    writeln!(out, "build it with: quarry plugin build {}", dir.display())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    writeln!(err, "quarry plugin new: {e:#}")?;
                    Ok(ExitCode::from(2))
                }
            }
        }
        PluginAction::Build { dir, out: dest } => {
            let dest = dest.unwrap_or_else(|| dir.clone());
            match crate::scaffold::build_project(&dir, &dest) {
                Ok(path) => {
                    writeln!(out, "built {}", path.display())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    writeln!(err, "quarry plugin build: {e:#}")?;
                    Ok(ExitCode::from(1))
                }
            }
        }
        PluginAction::Check { file } => {
            let rt = runtime(RuntimeLimits::default())?;
            match crate::runtime::Plugin::load(&rt, &file).await {
                Ok(p) => {
                    let m = p.meta();
                    writeln!(out, "name:        {}", m.name)?;
                    writeln!(out, "version:     {}", m.version)?;
                    writeln!(out, "idempotent:  {}", m.idempotent)?;
                    writeln!(out, "interval:    {}s", m.default_interval.as_secs())?;
                    writeln!(out, "wit:         quarry:task@{}", p.wit_version())?;
                    writeln!(out, "sha256:      {}", p.sha256())?;
                    writeln!(out, "params:      {}", m.params_doc)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    writeln!(err, "refused: {e}")?;
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// `quarry check-config`.
async fn check_config(
    file: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(file) {
        Ok(cfg) => cfg,
        Err(e) => {
            writeln!(err, "{e}")?;
            return Ok(ExitCode::from(1));
        }
    };
    let rt = runtime_with_cache(cfg.runtime, cfg.paths.cache_dir.as_deref())?;
    let plugins = match PluginSet::load_dir(&rt, &cfg.paths.plugins_dir).await {
        Ok(p) => p,
        Err(e) => {
            writeln!(
                err,
                "invalid config {}:\n  quarry.plugins_dir: {e}",
                file.display()
            )?;
            return Ok(ExitCode::from(1));
        }
    };
    if let Err(problems) = server::resolve_tasks(&rt, &cfg, &plugins).await {
        let e = config::ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        writeln!(err, "{e}")?;
        return Ok(ExitCode::from(1));
    }
    let names: Vec<&str> = cfg.tasks.iter().map(|t| t.plugin.as_str()).collect();
    writeln!(
        out,
        "config {} is valid: {} task(s) [{}], {} worker(s), scheduler {}",
        file.display(),
        names.len(),
        names.join(", "),
        cfg.discovery.fixed.len(),
        if cfg.enabled { "enabled" } else { "disabled" }
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// A log writer whose output the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `format` writes for an info event inside a span, plus a filtered-out debug one.
    fn logged(format: LogFormat) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let filter = tracing_subscriber::EnvFilter::new("info");
        let subscriber = log_subscriber(filter, format, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let tick = tracing::info_span!("quarry.scheduler.tick", task = "probe", workers = 3);
            let _tick = tick.enter();
            let run = tracing::info_span!("quarry.run", attempt = 1);
            let _run = run.enter();
            tracing::info!(worker = "10.0.0.7:22555", "run finished");
            tracing::debug!("below the filter");
        });
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_logs_are_one_object_per_line_with_fields_and_spans() {
        let text = logged(LogFormat::Json);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let mut line = lines[0].clone();
        let timestamp = line["timestamp"].take();
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp.as_str().unwrap()).is_ok(),
            "{timestamp}"
        );
        let tick = json!({"name": "quarry.scheduler.tick", "task": "probe", "workers": 3});
        let run = json!({"name": "quarry.run", "attempt": 1});
        assert_eq!(
            line,
            json!({
                "timestamp": null,
                "level": "INFO",
                "fields": {"message": "run finished", "worker": "10.0.0.7:22555"},
                "target": "quarry_host::cli::tests",
                "span": run,
                "spans": [tick, run],
            })
        );
    }

    #[test]
    fn text_logs_stay_the_default_format() {
        let cli = Cli::try_parse_from(["quarry", "check-config", "q.yml"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        let text = logged(cli.log_format);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.starts_with('{'), "{text}");
        assert!(text.contains("run finished"), "{text}");
        assert!(text.contains("quarry.scheduler.tick"), "{text}");
    }

    #[test]
    fn log_format_is_a_global_flag() {
        for args in [
            &["quarry", "--log-format", "json", "check-config", "q.yml"][..],
            &["quarry", "check-config", "q.yml", "--log-format=json"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.log_format, LogFormat::Json, "{args:?}");
        }
        let e = Cli::try_parse_from(["quarry", "--log-format", "xml", "plugins"]).unwrap_err();
        assert!(e.to_string().contains("possible values: text, json"), "{e}");
    }
}
