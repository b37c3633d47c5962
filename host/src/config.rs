//! Configuration in two phases: [`RawConfig`] mirrors the YAML exactly (ROCK's `scheduler:`
//! section, unchanged, plus Quarry's own `quarry:` section beside it), and [`Config`] holds
//! checked values (durations, resolved paths, parsed worker addresses).
//!
//! Other top-level keys of a ROCK config file (`ray:`, `runtime:`, …) are ignored, so ROCK's own
//! `rock-*.yml` can be used as is. Inside `scheduler:` and `quarry:` an unknown key is an
//! error that names it (a typo must not silently disable a setting).
//!
//! The validated config comes in parts, each checked by its own function with named bounds
//! and taken whole by its consumer: [`RuntimeLimits`] (restart-only), [`PathsConfig`]
//! (restart-only), [`RunSettings`] and discovery's [`Sources`] (both applied from the next
//! tick). `quarry serve`, `quarry check-config` and `quarry run` all go through
//! [`Config::from_raw`].
//!
//! The YAML library sits behind [`parse_yaml`] only.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plugins::plugin_name_for_class;
use crate::run::RunSettings;
use crate::run::quarantine::QuarantinePolicy;
use crate::runtime::RuntimeLimits;
use crate::state::Retention;
use crate::task::TaskName;
use crate::workers::discovery::Sources;
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
/// Where the admin API listens when the config says nothing: loopback only, so that no token
/// is needed to start and nothing is exposed by default.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8080";
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
    /// Quarry: what a failed run leads to (`ignore`, `retry`, `halt`); default `ignore`.
    pub on_failure: Option<OnFailureKind>,
    /// Quarry: extra attempts per worker with `on_failure: retry` (default 2).
    pub retries: Option<u32>,
    /// Quarry: narrows the grants of this task (over `quarry.grants`).
    pub grants: Option<RawGrants>,
    /// Quarry: run this task as a dry run (it changes nothing, reports what it would do).
    pub dry_run: Option<bool>,
    /// Quarry: a new plugin version may ask for more grants than the running one.
    pub allow_grant_growth: Option<bool>,
}

/// `quarry.grants` or a task's `grants:`: each field given narrows what plugins may do.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of grants (programs, shell, read_paths, write_paths)"
)]
pub struct RawGrants {
    /// Programs allowed as `argv[0]` (`*`: any).
    pub programs: Option<Vec<String>>,
    /// Whether shell scripts are allowed.
    pub shell: Option<bool>,
    /// Absolute path prefixes that may be read.
    pub read_paths: Option<Vec<String>>,
    /// Absolute path prefixes that may be written.
    pub write_paths: Option<Vec<String>>,
}

/// `on_failure` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailureKind {
    /// Failures are reported, nothing else.
    Ignore,
    /// A failed or timed-out run is retried on its worker (backoff with jitter, within the
    /// interval).
    Retry,
    /// A tick with a failed worker pauses the task until resumed through the admin API.
    Halt,
}

/// What a failed run leads to, validated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Reported, nothing else.
    #[default]
    Ignore,
    /// Retried on its worker up to `retries` more times.
    Retry {
        /// Extra attempts.
        retries: u32,
    },
    /// The task is paused after a tick with a failed worker.
    Halt,
}

impl OnFailure {
    /// The word the config and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Ignore => "ignore",
            OnFailure::Retry { .. } => "retry",
            OnFailure::Halt => "halt",
        }
    }
}

/// Quarry's `quarry.quarantine` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of quarantine settings")]
pub struct RawQuarantine {
    /// Consecutive traps, memory overruns or timeouts before a quarantine; 0 = never.
    pub after: Option<u32>,
    /// First quarantine's length, seconds.
    pub backoff_seconds: Option<u64>,
    /// Longest quarantine, seconds.
    pub max_backoff_seconds: Option<u64>,
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
    /// When a plugin failing on a worker is kept off it.
    pub quarantine: Option<RawQuarantine>,
    /// The state database (run history, pauses, quarantines, audit); `none` disables it.
    pub state_db: Option<PathBuf>,
    /// How long run history is kept.
    pub retention: Option<RawRetention>,
    /// The admin API.
    pub api: Option<RawApi>,
    /// Narrows the grants of every task (a task's own `grants:` wins field by field).
    pub grants: Option<RawGrants>,
    /// Paths no write-file and no task target may touch (default: `exact:/`, `/etc`, `/usr`,
    /// `/bin`, `/boot`, `/proc`, `/sys`, `exact:/root`, `exact:/home`, `exact:/home/*`).
    pub protected_paths: Option<Vec<String>>,
    /// A new plugin version may ask for more grants than the running one (default false).
    pub allow_grant_growth: Option<bool>,
}

/// Quarry's `quarry.retention` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of retention settings")]
pub struct RawRetention {
    /// Ticks older than this many days are deleted with their runs.
    pub max_age_days: Option<u32>,
    /// Per task, runs beyond the newest this many are deleted (whole ticks).
    pub max_runs_per_task: Option<u64>,
}

/// `quarry.api`: the admin API (REST, metrics, dashboard) of `quarry serve`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of admin API settings")]
pub struct RawApi {
    /// false → no listener (default true).
    pub enabled: Option<bool>,
    /// IP address and port (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// A file holding the bearer token (relative: to the config file's directory).
    pub token_file: Option<PathBuf>,
}

/// Bounds of `quarry.concurrency`: at least one worker in flight; beyond 10 000 the pool and
/// the file descriptors of one host run out first.
pub const CONCURRENCY_RANGE: RangeInclusive<u64> = 1..=10_000;
/// Bounds of `quarry.call_timeout_seconds`: the rocklet answers 504 after 85 s whatever happens.
pub const CALL_TIMEOUT_RANGE_SECS: RangeInclusive<u64> = 1..=MAX_CALL_TIMEOUT_SECS;
/// Bounds of `quarry.run_timeout_seconds`: a run longer than a day is a hung run.
pub const RUN_TIMEOUT_RANGE_SECS: RangeInclusive<u64> = 1..=86_400;
/// Bounds of `quarry.memory_limit_mib`: below 16 MiB no guest language starts; 4 GiB is
/// wasm32's whole address space.
pub const MEMORY_LIMIT_RANGE_MIB: RangeInclusive<u64> = 16..=4096;
/// Bounds of `interval_seconds`: at least a second, at most a year.
pub const INTERVAL_RANGE_SECS: RangeInclusive<u64> = 1..=366 * 86_400;

/// A validated configuration, in the parts its consumers take whole.
#[derive(Debug, Clone)]
pub struct Config {
    /// false → nothing is scheduled.
    pub enabled: bool,
    /// Enabled tasks, in file order.
    pub tasks: Vec<TaskConfig>,
    /// Limits of every run and how plugins compile: fixed for the runtime's lifetime, so a
    /// change needs a restart.
    pub runtime: RuntimeLimits,
    /// Directories read at start (plugins, compile cache): a change needs a restart.
    pub paths: PathsConfig,
    /// Status dir, budgets, concurrency and report dir: applied from the next tick.
    pub run: RunSettings,
    /// Where workers come from: applied from the next tick.
    pub discovery: Sources,
    /// When a plugin failing on a worker is kept off it: applied from the next tick.
    pub quarantine: QuarantinePolicy,
    /// How long run history is kept: applied at the next pruning.
    pub retention: Retention,
    /// The admin API: read at start, so a change needs a restart.
    pub api: ApiSettings,
}

/// The admin API's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// false → `quarry serve` opens no listener.
    pub enabled: bool,
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// The bearer token's file, resolved against the config's directory; read once at start
    /// by [`crate::api::auth::ApiAuth::load`]. Required when `listen` is not loopback.
    pub token_file: Option<PathBuf>,
}

/// Files and directories Quarry opens at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathsConfig {
    /// Plugins directory.
    pub plugins_dir: PathBuf,
    /// Compile cache directory, if any.
    pub cache_dir: Option<PathBuf>,
    /// The state database, if any (default: `quarry-state.db` in the report directory).
    pub state_db: Option<PathBuf>,
}

/// One validated task entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskConfig {
    /// Index in `scheduler.tasks`, for messages.
    pub index: usize,
    /// `task_class` as written.
    pub task_class: String,
    /// The plugin it maps to.
    pub plugin: TaskName,
    /// Interval; `None` = the plugin's default.
    pub interval: Option<Duration>,
    /// Params as a JSON object string.
    pub params: String,
    /// What a failed run leads to.
    pub on_failure: OnFailure,
    /// Grants narrowing, dry run, protected paths and growth rule.
    pub policy: crate::grants::TaskPolicy,
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

/// Largest config file accepted: ROCK's own files are a few KiB; a bigger one is a mistake or
/// an attack, and is refused before anything is parsed.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads a config file: a regular file (never a FIFO, which would block, or a device such as
/// `/dev/zero`, which never ends) of at most [`MAX_CONFIG_BYTES`], as UTF-8 text; the error
/// says why not.
pub fn read_text(file: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err(
            "is not a regular file (a directory, FIFO, socket or device): refused".to_string(),
        );
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "is larger than {} MiB, the limit for a config file: refused",
            MAX_CONFIG_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("is not UTF-8 text: {e}"))
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

/// Problems found so far, each with its field.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// `value` (or `default`) when inside `range`; otherwise a problem (with `why` after
    /// the range, when not empty), and `None`.
    fn in_range(
        &mut self,
        field: &str,
        value: Option<u64>,
        default: u64,
        range: RangeInclusive<u64>,
        why: &str,
    ) -> Option<u64> {
        let v = value.unwrap_or(default);
        if range.contains(&v) {
            return Some(v);
        }
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        };
        self.add(
            field,
            format!(
                "{v} is out of range ({}-{}){why}",
                range.start(),
                range.end()
            ),
        );
        None
    }
}

impl Config {
    /// Reads and validates `file`. Relative paths inside are resolved against its directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        let text = read_text(file).map_err(|reason| {
            fail(vec![FieldError {
                field: "(file)".into(),
                reason,
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

    /// Validates a parsed config, part by part, reporting every problem. `env` reads
    /// environment variables (injected for tests); `base` resolves relative paths.
    pub fn from_raw(
        raw: RawConfig,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<FieldError>> {
        let Some(sched) = raw.scheduler else {
            return Err(vec![FieldError {
                field: "scheduler".into(),
                reason: "missing: a Quarry config needs ROCK's `scheduler:` section".into(),
            }]);
        };
        let q = raw.quarry;
        let mut problems = Problems::default();
        let policy = task_policy_defaults(&q, &mut problems);
        let tasks = tasks(sched.tasks, &policy, &mut problems);
        let discovery = discovery(&q, sched.worker_cache_ttl, base, &mut problems);
        let run = run_settings(&q, base, &env, &mut problems);
        let runtime = runtime_limits(&q, &mut problems);
        let quarantine = quarantine_policy(q.quarantine.as_ref(), &mut problems);
        let retention = retention(q.retention.as_ref(), &mut problems);
        let report_dir = run.as_ref().and_then(|r| r.report_dir.clone());
        let api = api_settings(q.api.as_ref(), base, &mut problems);
        let paths = PathsConfig {
            state_db: match &q.state_db {
                Some(p) if p.as_os_str() == "none" => None,
                Some(p) => Some(base.join(p)),
                None => report_dir.map(|d| d.join(crate::state::DEFAULT_FILE_NAME)),
            },
            plugins_dir: base.join(
                q.plugins_dir
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_PLUGINS_DIR)),
            ),
            cache_dir: match q.cache_dir {
                Some(p) if p.as_os_str() == "none" => None,
                Some(p) => Some(base.join(p)),
                None => default_cache_dir(&env),
            },
        };
        match (problems.0.is_empty(), discovery, run, runtime, api) {
            (true, Some(discovery), Some(run), Some(runtime), Some(api)) => Ok(Config {
                enabled: sched.enabled,
                tasks,
                runtime,
                paths,
                run,
                discovery,
                quarantine,
                retention,
                api,
            }),
            _ => Err(problems.0),
        }
    }

    /// The settings that differ from `running`'s but apply only at a restart, named as in
    /// the YAML. Computed from the runtime, paths and api parts: a field added to any must be
    /// named here (the destructuring does not compile otherwise).
    pub fn restart_only_changes(&self, running: &Config) -> Vec<&'static str> {
        let RuntimeLimits {
            memory_bytes,
            call_timeout,
            compile,
        } = self.runtime;
        let PathsConfig {
            plugins_dir,
            cache_dir,
            state_db,
        } = &self.paths;
        let ApiSettings {
            enabled: api_enabled,
            listen,
            token_file,
        } = &self.api;
        let old = (&running.runtime, &running.paths);
        let old_api = &running.api;
        [
            ("quarry.plugins_dir", *plugins_dir != old.1.plugins_dir),
            (
                "quarry.memory_limit_mib",
                memory_bytes != old.0.memory_bytes,
            ),
            (
                "quarry.call_timeout_seconds",
                call_timeout != old.0.call_timeout,
            ),
            ("quarry.cache_dir", *cache_dir != old.1.cache_dir),
            ("quarry.compile", compile != old.0.compile),
            ("quarry.state_db", *state_db != old.1.state_db),
            ("quarry.api.enabled", *api_enabled != old_api.enabled),
            ("quarry.api.listen", *listen != old_api.listen),
            ("quarry.api.token_file", *token_file != old_api.token_file),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// The policy every task starts from: `quarry.grants`, `quarry.protected_paths` and
/// `quarry.allow_grant_growth`.
fn task_policy_defaults(q: &RawQuarry, problems: &mut Problems) -> crate::grants::TaskPolicy {
    let mut policy = crate::grants::TaskPolicy::default();
    if let Some(g) = &q.grants {
        policy.narrowing = narrowing(g, "quarry.grants", problems);
    }
    if let Some(list) = &q.protected_paths {
        match crate::grants::ProtectedPaths::parse(list.iter().map(String::as_str)) {
            Ok(p) => policy.protected = p,
            Err(e) => problems.add("quarry.protected_paths", e),
        }
    }
    policy.allow_growth = q.allow_grant_growth.unwrap_or(false);
    policy
}

/// A `grants:` mapping, checked: paths absolute without `..` above `/`, programs not empty.
fn narrowing(g: &RawGrants, at: &str, problems: &mut Problems) -> crate::grants::Narrowing {
    for (field, paths) in [
        ("read_paths", &g.read_paths),
        ("write_paths", &g.write_paths),
    ] {
        for p in paths.iter().flatten() {
            if crate::grants::normalize(p).is_none() {
                problems.add(
                    format!("{at}.{field}"),
                    format!("{p:?} is not an absolute path (or its `..` climbs above `/`)"),
                );
            }
        }
    }
    for p in g.programs.iter().flatten() {
        if p.trim().is_empty() {
            problems.add(format!("{at}.programs"), "contains an empty program name");
        }
    }
    crate::grants::Narrowing {
        programs: g.programs.clone(),
        shell: g.shell,
        read_paths: g.read_paths.clone(),
        write_paths: g.write_paths.clone(),
    }
}

/// `scheduler.tasks`: enabled entries, each task once.
fn tasks(
    raw: Vec<RawTask>,
    defaults: &crate::grants::TaskPolicy,
    problems: &mut Problems,
) -> Vec<TaskConfig> {
    let mut tasks = Vec::new();
    let mut seen: BTreeMap<TaskName, usize> = BTreeMap::new();
    for (index, t) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("scheduler.tasks[{index}].{f}");
        if t.task_class.trim().is_empty() {
            if t.enabled {
                problems.add(
                    at("task_class"),
                    "is empty: name a plugin or a ROCK task class",
                );
            }
            continue;
        }
        if !t.enabled {
            continue;
        }
        if let Err(e) = crate::plugins::check_rock_class(t.task_class.trim()) {
            problems.add(at("task_class"), e);
            continue;
        }
        let plugin = match TaskName::new(plugin_name_for_class(t.task_class.trim())) {
            Ok(name) => name,
            Err(e) => {
                problems.add(at("task_class"), e);
                continue;
            }
        };
        if let Some(first) = seen.insert(plugin.clone(), index) {
            problems.add(
                at("task_class"),
                format!(
                    "task {plugin:?} is already configured by scheduler.tasks[{first}]; each task may appear once"
                ),
            );
            continue;
        }
        let interval = match t.interval_seconds {
            Some(0) => {
                problems.add(at("interval_seconds"), "must be at least 1");
                None
            }
            Some(s) if !INTERVAL_RANGE_SECS.contains(&s) => {
                problems.add(at("interval_seconds"), format!("{s} is more than a year"));
                None
            }
            Some(s) => Some(Duration::from_secs(s)),
            None => None,
        };
        let params = serde_json::Value::Object(t.params.unwrap_or_default()).to_string();
        let on_failure = on_failure(t.on_failure, t.retries, &at, problems);
        let mut policy = defaults.clone();
        if let Some(g) = &t.grants {
            policy.narrowing = narrowing(g, &at("grants"), problems).or(&defaults.narrowing);
        }
        policy.dry_run = t.dry_run.unwrap_or(false);
        policy.allow_growth = t.allow_grant_growth.unwrap_or(defaults.allow_growth);
        tasks.push(TaskConfig {
            index,
            task_class: t.task_class,
            plugin,
            interval,
            params,
            on_failure,
            policy,
        });
    }
    tasks
}

/// Bounds of `retries`: at least one, and a handful at most (each retry is a full run).
pub const RETRIES_RANGE: RangeInclusive<u64> = 1..=10;
/// Retries with `on_failure: retry` when the entry gives none.
pub const DEFAULT_RETRIES: u32 = 2;

/// A task entry's `on_failure` and `retries`.
fn on_failure(
    kind: Option<OnFailureKind>,
    retries: Option<u32>,
    at: &impl Fn(&str) -> String,
    problems: &mut Problems,
) -> OnFailure {
    match (kind, retries) {
        (Some(OnFailureKind::Retry), r) => {
            let r = problems.in_range(
                &at("retries"),
                r.map(u64::from),
                u64::from(DEFAULT_RETRIES),
                RETRIES_RANGE,
                "",
            );
            OnFailure::Retry {
                retries: r.unwrap_or(0) as u32,
            }
        }
        (_, Some(_)) => {
            problems.add(at("retries"), "is only used with on_failure: retry");
            OnFailure::Ignore
        }
        (Some(OnFailureKind::Halt), None) => OnFailure::Halt,
        (Some(OnFailureKind::Ignore) | None, None) => OnFailure::Ignore,
    }
}

/// Bounds of `quarry.retention.max_age_days`: a day to ten years.
pub const RETENTION_DAYS_RANGE: RangeInclusive<u64> = 1..=3650;
/// History kept when the config says nothing: two weeks.
pub const DEFAULT_RETENTION_DAYS: u32 = 14;
/// Bounds of `quarry.retention.max_runs_per_task`: at least one 10 000-worker tick.
pub const RETENTION_RUNS_RANGE: RangeInclusive<u64> = 10_000..=1_000_000_000;
/// Runs kept per task when the config says nothing.
pub const DEFAULT_RETENTION_RUNS: u64 = 1_000_000;

/// `quarry.retention`.
fn retention(raw: Option<&RawRetention>, problems: &mut Problems) -> Retention {
    let empty = RawRetention::default();
    let raw = raw.unwrap_or(&empty);
    let days = problems.in_range(
        "quarry.retention.max_age_days",
        raw.max_age_days.map(u64::from),
        u64::from(DEFAULT_RETENTION_DAYS),
        RETENTION_DAYS_RANGE,
        "",
    );
    let runs = problems.in_range(
        "quarry.retention.max_runs_per_task",
        raw.max_runs_per_task,
        DEFAULT_RETENTION_RUNS,
        RETENTION_RUNS_RANGE,
        "",
    );
    Retention {
        max_age_days: days.map(|d| d as u32),
        max_runs_per_task: runs,
    }
}

/// Bounds of `quarry.quarantine.after` (0 = off).
pub const QUARANTINE_AFTER_RANGE: RangeInclusive<u64> = 0..=100;
/// Bounds of the quarantine backoffs, seconds: a second to a week.
pub const QUARANTINE_BACKOFF_RANGE_SECS: RangeInclusive<u64> = 1..=7 * 86_400;

/// `quarry.quarantine`.
fn quarantine_policy(raw: Option<&RawQuarantine>, problems: &mut Problems) -> QuarantinePolicy {
    let d = QuarantinePolicy::default();
    let empty = RawQuarantine::default();
    let raw = raw.unwrap_or(&empty);
    let after = problems.in_range(
        "quarry.quarantine.after",
        raw.after.map(u64::from),
        u64::from(d.after),
        QUARANTINE_AFTER_RANGE,
        "",
    );
    let backoff = problems.in_range(
        "quarry.quarantine.backoff_seconds",
        raw.backoff_seconds,
        d.backoff.as_secs(),
        QUARANTINE_BACKOFF_RANGE_SECS,
        "",
    );
    let max = problems.in_range(
        "quarry.quarantine.max_backoff_seconds",
        raw.max_backoff_seconds,
        d.max_backoff.as_secs(),
        QUARANTINE_BACKOFF_RANGE_SECS,
        "",
    );
    if let (Some(b), Some(m)) = (backoff, max)
        && b > m
    {
        problems.add(
            "quarry.quarantine.backoff_seconds",
            format!("{b} is more than max_backoff_seconds ({m})"),
        );
    }
    QuarantinePolicy {
        after: after.map_or(d.after, |a| a as u32),
        backoff: backoff.map_or(d.backoff, Duration::from_secs),
        max_backoff: max.map_or(d.max_backoff, Duration::from_secs),
    }
}

/// Where workers come from: listed addresses (default `local` unless a discovery source is
/// set), a workers file, Ray.
fn discovery(
    q: &RawQuarry,
    ttl: Option<u64>,
    base: &Path,
    problems: &mut Problems,
) -> Option<Sources> {
    let port = q.rocklet_port.unwrap_or(DEFAULT_ROCKLET_PORT);
    if port == 0 {
        problems.add("quarry.rocklet_port", "must be 1-65535");
    }
    let discovered = q.workers_file.is_some() || q.ray_dashboard.is_some();
    let listed = match &q.workers {
        Some(w) => w.clone(),
        None if discovered => Vec::new(),
        None => vec!["local".to_string()],
    };
    let mut fixed = Vec::new();
    for (i, w) in listed.iter().enumerate() {
        match WorkerAddr::parse(w, port) {
            Ok(a) if fixed.contains(&a) => problems.add(
                format!("quarry.workers[{i}]"),
                format!("{a} is listed twice"),
            ),
            Ok(a) => fixed.push(a),
            Err(e) => problems.add(format!("quarry.workers[{i}]"), e),
        }
    }
    let ttl = ttl.unwrap_or(DEFAULT_WORKER_CACHE_TTL_SECS);
    if ttl == 0 {
        problems.add("scheduler.worker_cache_ttl", "must be at least 1");
    }
    if let Some(url) = &q.ray_dashboard
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        problems.add(
            "quarry.ray_dashboard",
            format!("{url:?} must be an http:// or https:// URL of Ray's dashboard"),
        );
    }
    Some(Sources {
        fixed,
        file: q.workers_file.as_ref().map(|p| base.join(p)),
        ray_dashboard: q.ray_dashboard.clone(),
        port,
        ttl: Duration::from_secs(ttl),
    })
}

/// Status dir (the config's, else `$ROCK_SCHEDULER_STATUS_DIR`, else ROCK's default), report
/// dir (default: the status dir), the run budget and the fan-out.
fn run_settings(
    q: &RawQuarry,
    base: &Path,
    env: &impl Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<RunSettings> {
    let status_dir = q
        .status_dir
        .clone()
        .or_else(|| env(STATUS_DIR_ENV).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_STATUS_DIR.to_string());
    if !status_dir.starts_with('/') {
        problems.add(
            "quarry.status_dir",
            format!("{status_dir:?} must be an absolute path (it is used on every worker)"),
        );
    }
    let report_dir = q
        .report_dir
        .as_ref()
        .map(|p| base.join(p))
        .unwrap_or_else(|| PathBuf::from(&status_dir));
    let concurrency = problems.in_range(
        "quarry.concurrency",
        q.concurrency.map(|c| c as u64),
        DEFAULT_CONCURRENCY as u64,
        CONCURRENCY_RANGE,
        "",
    );
    let run = problems.in_range(
        "quarry.run_timeout_seconds",
        q.run_timeout_seconds,
        DEFAULT_RUN_TIMEOUT_SECS,
        RUN_TIMEOUT_RANGE_SECS,
        "",
    );
    Some(RunSettings {
        status_dir,
        run_timeout: Duration::from_secs(run?),
        concurrency: concurrency? as usize,
        report_dir: Some(report_dir),
    })
}

/// Memory per run, the cap on one host call, and how plugins compile.
fn runtime_limits(q: &RawQuarry, problems: &mut Problems) -> Option<RuntimeLimits> {
    let call = problems.in_range(
        "quarry.call_timeout_seconds",
        q.call_timeout_seconds,
        DEFAULT_CALL_TIMEOUT_SECS,
        CALL_TIMEOUT_RANGE_SECS,
        "the rocklet gives up on any request after 85 s",
    );
    let mem = problems.in_range(
        "quarry.memory_limit_mib",
        q.memory_limit_mib,
        DEFAULT_MEMORY_LIMIT_MIB,
        MEMORY_LIMIT_RANGE_MIB,
        "",
    );
    Some(RuntimeLimits {
        memory_bytes: mem? << 20,
        call_timeout: Duration::from_secs(call?),
        compile: q.compile.unwrap_or_default(),
    })
}

/// `quarry.api`: `listen` must be an IP address and port; a listener that is not loopback
/// needs `token_file` (every call but `/healthz` then needs the token).
fn api_settings(raw: Option<&RawApi>, base: &Path, problems: &mut Problems) -> Option<ApiSettings> {
    let default = RawApi::default();
    let raw = raw.unwrap_or(&default);
    let enabled = raw.enabled.unwrap_or(true);
    let text = raw.listen.as_deref().unwrap_or(DEFAULT_API_LISTEN);
    let Ok(listen) = text.parse::<std::net::SocketAddr>() else {
        problems.add(
            "quarry.api.listen",
            format!("{text:?} is not an IP address and port (e.g. 127.0.0.1:8080 or [::1]:8080)"),
        );
        return None;
    };
    let token_file = raw.token_file.as_ref().map(|p| base.join(p));
    if enabled && token_file.is_none() && !crate::api::auth::is_loopback(&listen) {
        problems.add(
            "quarry.api.listen",
            format!(
                "{listen} is not a loopback address, so quarry.api.token_file must be set (every call but /healthz then needs its bearer token)"
            ),
        );
        return None;
    }
    Some(ApiSettings {
        enabled,
        listen,
        token_file,
    })
}
