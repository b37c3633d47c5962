//! Configuration in two phases: [`RawConfig`] mirrors the YAML exactly (ROCK's `scheduler:`
//! section, unchanged, plus Quarry's own `quarry:` section beside it), and [`Config`] holds
//! checked values (durations, resolved paths, parsed worker addresses).
//!
//! Other top-level keys of a ROCK config file (`ray:`, `runtime:`, …) are ignored, so ROCK's own
//! `rock-*.yml` can be used as is. Inside `scheduler:` and `quarry:` an unknown key is an
//! error that names it (a typo must not silently disable a setting).
//!
//! The YAML library sits behind [`parse_yaml`] only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plugins::plugin_name_for_class;
use crate::workers::{DEFAULT_ROCKLET_PORT, WorkerAddr};

/// ROCK's status directory variable; Quarry honours it as the default `status_dir`.
pub const STATUS_DIR_ENV: &str = "ROCK_SCHEDULER_STATUS_DIR";
/// ROCK's default status directory.
pub const DEFAULT_STATUS_DIR: &str = "/data/scheduler_status";
/// Default plugins directory, relative to the working directory (where `scripts/demo.sh`
/// installs the built-in plugins).
pub const DEFAULT_PLUGINS_DIR: &str = "target/quarry-plugins";
/// Workers in flight per tick (ROCK: 50).
pub const DEFAULT_CONCURRENCY: usize = 50;
/// Budget of one (task, worker) run, status writes included. Below ROCK's 90 s; the rocklet
/// itself gives up on a request after 85 s.
pub const DEFAULT_RUN_TIMEOUT_SECS: u64 = 80;
/// Cap on one host call; must stay under the rocklet's 85 s request cap.
pub const DEFAULT_CALL_TIMEOUT_SECS: u64 = 60;
/// Largest per-call timeout accepted: the rocklet answers 504 after 85 s whatever happens.
pub const MAX_CALL_TIMEOUT_SECS: u64 = 70;
/// Linear memory per run. Python and JavaScript guests need tens of MiB.
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 256;
/// Lifetime of Ray's worker list when the config gives none. ROCK's default was an hour, so
/// new workers waited up to an hour and dead ones failed for an hour.
pub const DEFAULT_WORKER_CACHE_TTL_SECS: u64 = 60;

/// Mirrors the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping with a `scheduler` section")]
pub struct RawConfig {
    /// ROCK's scheduler section.
    pub scheduler: Option<RawScheduler>,
    /// Quarry's own settings.
    #[serde(default)]
    pub quarry: RawQuarry,
}

/// ROCK's `scheduler:` section, key for key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of scheduler settings")]
pub struct RawScheduler {
    /// false → no task runs.
    #[serde(default)]
    pub enabled: bool,
    /// Worker cache lifetime in seconds (used by worker discovery).
    pub worker_cache_ttl: Option<u64>,
    /// Task entries.
    #[serde(default)]
    pub tasks: Vec<RawTask>,
}

/// One entry of `scheduler.tasks`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a task entry (a mapping with task_class)"
)]
pub struct RawTask {
    /// ROCK class path, class name, or Quarry plugin name.
    #[serde(default)]
    pub task_class: String,
    /// false → entry ignored.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Interval; default: the plugin's own default interval.
    pub interval_seconds: Option<u64>,
    /// Task-specific params.
    #[serde(default)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

fn yes() -> bool {
    true
}

/// Quarry's `quarry:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of Quarry settings")]
pub struct RawQuarry {
    /// Directory of `.wasm` plugins (relative paths: to the config file's directory).
    pub plugins_dir: Option<PathBuf>,
    /// Worker addresses: `local`, `host`, `host:port`.
    pub workers: Option<Vec<String>>,
    /// Port for workers given without one.
    pub rocklet_port: Option<u16>,
    /// A file listing worker addresses, one per line; re-read when it changes.
    pub workers_file: Option<PathBuf>,
    /// Ray dashboard URL; its alive nodes with CPUs become workers.
    pub ray_dashboard: Option<String>,
    /// Status directory on the workers.
    pub status_dir: Option<String>,
    /// Directory for run reports on this host.
    pub report_dir: Option<PathBuf>,
    /// Workers in flight per tick.
    pub concurrency: Option<usize>,
    /// Budget of one (task, worker) run, in seconds.
    pub run_timeout_seconds: Option<u64>,
    /// Cap on one host call, in seconds.
    pub call_timeout_seconds: Option<u64>,
    /// Linear memory per run, in MiB.
    pub memory_limit_mib: Option<u64>,
    /// Directory of the compile cache; `none` disables it.
    pub cache_dir: Option<PathBuf>,
    /// `fast` (default) or `optimized`.
    pub compile: Option<crate::runtime::CompileMode>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// false → nothing is scheduled.
    pub enabled: bool,
    /// Worker cache lifetime.
    pub worker_cache_ttl: Duration,
    /// Enabled tasks, in file order.
    pub tasks: Vec<TaskConfig>,
    /// Plugins directory.
    pub plugins_dir: PathBuf,
    /// Workers listed in the config.
    pub workers: Vec<WorkerAddr>,
    /// Workers file, if any.
    pub workers_file: Option<PathBuf>,
    /// Ray dashboard URL, if any.
    pub ray_dashboard: Option<String>,
    /// Port for workers given without one.
    pub rocklet_port: u16,
    /// Status directory on the workers.
    pub status_dir: String,
    /// Run report directory on this host.
    pub report_dir: PathBuf,
    /// Workers in flight per tick.
    pub concurrency: usize,
    /// Budget of one (task, worker) run.
    pub run_timeout: Duration,
    /// Cap on one host call.
    pub call_timeout: Duration,
    /// Linear memory per run, bytes.
    pub memory_limit_bytes: u64,
    /// Compile cache directory, if any.
    pub cache_dir: Option<PathBuf>,
    /// How plugins are compiled.
    pub compile: crate::runtime::CompileMode,
}

/// One validated task entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskConfig {
    /// Index in `scheduler.tasks`, for messages.
    pub index: usize,
    /// `task_class` as written.
    pub task_class: String,
    /// The plugin it maps to.
    pub plugin: String,
    /// Interval; `None` = the plugin's default.
    pub interval: Option<Duration>,
    /// Params as a JSON object string.
    pub params: String,
}

/// A config problem: where (`scheduler.tasks[1].interval_seconds`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Everything wrong with a config file, one problem per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid config {}:\n{}", file.display(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Its problems.
    pub problems: Vec<FieldError>,
}

/// `$XDG_CACHE_HOME/quarry/compiled`, else `$HOME/.cache/quarry/compiled`, else none.
pub fn default_cache_dir(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("quarry").join("compiled"))
}

/// The only place that knows the YAML library.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FieldError> {
    let de = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        // The YAML library prefixes some messages with the path we already report.
        let inner = match inner.split_once(": ") {
            Some((path, rest)) if !path.is_empty() && field.starts_with(path) => rest.to_string(),
            _ => inner,
        };
        FieldError {
            field: if field == "." { "(file)".into() } else { field },
            reason: inner,
        }
    })
}

impl Config {
    /// Reads and validates `file`. Relative paths inside are resolved against its directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        let text = std::fs::read_to_string(file).map_err(|e| {
            fail(vec![FieldError {
                field: "(file)".into(),
                reason: format!("cannot read it: {e}"),
            }])
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        Config::from_yaml(&text, base).map_err(fail)
    }

    /// Validates YAML text; `base` resolves relative paths.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Config, Vec<FieldError>> {
        let raw: RawConfig = parse_yaml(text).map_err(|e| vec![e])?;
        Config::from_raw(raw, base, |k| std::env::var(k).ok())
    }

    /// Validates a parsed config. `env` reads environment variables (injected for tests).
    pub fn from_raw(
        raw: RawConfig,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<FieldError>> {
        let mut problems = Vec::new();
        let mut bad = |field: String, reason: String| problems.push(FieldError { field, reason });
        let Some(sched) = raw.scheduler else {
            return Err(vec![FieldError {
                field: "scheduler".into(),
                reason: "missing: a Quarry config needs ROCK's `scheduler:` section".into(),
            }]);
        };
        let q = raw.quarry;

        let mut tasks = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (index, t) in sched.tasks.into_iter().enumerate() {
            let at = |f: &str| format!("scheduler.tasks[{index}].{f}");
            if t.task_class.trim().is_empty() {
                if t.enabled {
                    bad(
                        at("task_class"),
                        "is empty: name a plugin or a ROCK task class".into(),
                    );
                }
                continue;
            }
            if !t.enabled {
                continue;
            }
            let plugin = plugin_name_for_class(t.task_class.trim()).to_string();
            if let Some(first) = seen.insert(plugin.clone(), index) {
                bad(
                    at("task_class"),
                    format!(
                        "task {plugin:?} is already configured by scheduler.tasks[{first}]; each task may appear once"
                    ),
                );
                continue;
            }
            let interval = match t.interval_seconds {
                Some(0) => {
                    bad(at("interval_seconds"), "must be at least 1".into());
                    None
                }
                Some(s) if s > 366 * 86400 => {
                    bad(at("interval_seconds"), format!("{s} is more than a year"));
                    None
                }
                Some(s) => Some(Duration::from_secs(s)),
                None => None,
            };
            let params = serde_json::Value::Object(t.params.unwrap_or_default()).to_string();
            tasks.push(TaskConfig {
                index,
                task_class: t.task_class,
                plugin,
                interval,
                params,
            });
        }

        let port = q.rocklet_port.unwrap_or(DEFAULT_ROCKLET_PORT);
        if port == 0 {
            bad("quarry.rocklet_port".into(), "must be 1-65535".into());
        }
        let mut workers = Vec::new();
        let discovered = q.workers_file.is_some() || q.ray_dashboard.is_some();
        for (i, w) in q
            .workers
            .unwrap_or_else(|| {
                if discovered {
                    Vec::new()
                } else {
                    vec!["local".to_string()]
                }
            })
            .iter()
            .enumerate()
        {
            match WorkerAddr::parse(w, port) {
                Ok(a) if workers.contains(&a) => bad(
                    format!("quarry.workers[{i}]"),
                    format!("{a} is listed twice"),
                ),
                Ok(a) => workers.push(a),
                Err(e) => bad(format!("quarry.workers[{i}]"), e),
            }
        }

        let status_dir = q
            .status_dir
            .or_else(|| env(STATUS_DIR_ENV).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_STATUS_DIR.to_string());
        if !status_dir.starts_with('/') {
            bad(
                "quarry.status_dir".into(),
                format!("{status_dir:?} must be an absolute path (it is used on every worker)"),
            );
        }
        let report_dir = q
            .report_dir
            .map(|p| base.join(p))
            .unwrap_or_else(|| PathBuf::from(&status_dir));
        let plugins_dir = base.join(
            q.plugins_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGINS_DIR)),
        );

        let concurrency = q.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 || concurrency > 10_000 {
            bad(
                "quarry.concurrency".into(),
                format!("{concurrency} is out of range (1-10000)"),
            );
        }
        let call = q.call_timeout_seconds.unwrap_or(DEFAULT_CALL_TIMEOUT_SECS);
        if call == 0 || call > MAX_CALL_TIMEOUT_SECS {
            bad(
                "quarry.call_timeout_seconds".into(),
                format!(
                    "{call} is out of range (1-{MAX_CALL_TIMEOUT_SECS}): the rocklet gives up on any request after 85 s"
                ),
            );
        }
        let run = q.run_timeout_seconds.unwrap_or(DEFAULT_RUN_TIMEOUT_SECS);
        if run == 0 || run > 86_400 {
            bad(
                "quarry.run_timeout_seconds".into(),
                format!("{run} is out of range (1-86400)"),
            );
        }
        let mem = q.memory_limit_mib.unwrap_or(DEFAULT_MEMORY_LIMIT_MIB);
        if !(16..=4096).contains(&mem) {
            bad(
                "quarry.memory_limit_mib".into(),
                format!("{mem} is out of range (16-4096)"),
            );
        }
        let ttl = sched
            .worker_cache_ttl
            .unwrap_or(DEFAULT_WORKER_CACHE_TTL_SECS);
        if ttl == 0 {
            bad(
                "scheduler.worker_cache_ttl".into(),
                "must be at least 1".into(),
            );
        }
        if let Some(url) = &q.ray_dashboard
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bad(
                "quarry.ray_dashboard".into(),
                format!("{url:?} must be an http:// or https:// URL of Ray's dashboard"),
            );
        }
        let cache_dir = match q.cache_dir {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(base.join(p)),
            None => default_cache_dir(&env),
        };

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Config {
            enabled: sched.enabled,
            worker_cache_ttl: Duration::from_secs(ttl),
            tasks,
            plugins_dir,
            workers,
            workers_file: q.workers_file.map(|p| base.join(p)),
            ray_dashboard: q.ray_dashboard,
            rocklet_port: port,
            status_dir,
            report_dir,
            concurrency,
            run_timeout: Duration::from_secs(run),
            call_timeout: Duration::from_secs(call),
            memory_limit_bytes: mem << 20,
            cache_dir,
            compile: q.compile.unwrap_or_default(),
        })
    }
}
