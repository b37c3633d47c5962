//! # ray_log_cleanup: Quarry's port of ROCK's `RayLogCleanupTask`
//!
//! On every worker, keeps Ray's temp dir from growing without bound, in one `execute` (a bash
//! script, [`SCRIPT`], whose values are positional arguments):
//! 1. `session_*` dirs directly under `ray_temp_dir` older than `min_age_hours`, except
//!    `session_latest` and the session it points to, are removed;
//! 2. in the live session's `logs/`, each file falls in the first category it matches:
//!    rotated daemon logs (`raylet.1.out`, older than `rotated_daemon_keep_hours`) go; active
//!    daemon logs (`raylet*`, `gcs_server*`, `runtime_env_agent*`, `dashboard*`, `monitor*`,
//!    `log_monitor*`, `agent-*`) always stay; `runtime_env_setup-*` go after
//!    `setup_log_keep_minutes`; logs named after a process (`…[_-]<pid>.{log,err,out}`) go once
//!    older than 60 minutes and that process is gone; anything else goes after
//!    `live_log_keep_days`;
//! 3. files under `logs/old/` older than `old_logs_keep_hours` are removed.
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw) and their checks ([`params::Config`]).
//! - `cleanup.sh`: the script; this file: the task, [`cleanup`] (reaches the worker only
//!   through the SDK's [`Worker`] trait) and the parsing of the script's report.
//!
//! Differences from ROCK, on purpose: `runtime_env_setup-*` files follow only their own
//! threshold (ROCK's PID stage removed digit-named ones after 60 minutes whatever the
//! threshold); a trailing number that cannot be a PID (above `pid_max`) is not probed with
//! `kill -0` (ROCK removed such files after an hour), and a process `kill -0` may not signal
//! (another user's) but `/proc` shows is alive keeps its log; names with spaces or line
//! breaks are handled (ROCK's `while read` split them); entries that could not be removed are
//! reported and fail the run (ROCK always reported success); params are checked at load and
//! every value reaches the script as an argument, never as shell text.

#![deny(missing_docs)]

pub mod params;

#[cfg(test)]
mod native_tests;

use std::collections::BTreeMap;
use std::time::Duration;

use quarry_sdk::host::ErrorExt as _;
use quarry_sdk::host::{Command, LogLevel};
use quarry_sdk::text::head;
use quarry_sdk::worker::{HostWorker, Worker};
use quarry_sdk::{Grants, Metadata, Outcome, Task};
use serde_json::{Value, json};

use crate::params::{Config, Params};

/// The script; see its header for the arguments and the report it prints.
pub const SCRIPT: &str = include_str!("cleanup.sh");

/// Time limit of the script: within the default 80 s run budget, with room for the status
/// writes. A cleanup cut short is finished by the next run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Age in minutes a process-named log must reach before its PID is probed (ROCK's fixed guard
/// against racing a worker that is still starting).
pub const PID_LOG_MIN_AGE_MINUTES: u64 = 60;

/// Names listed per category in the outcome (the counts are always complete).
const SAMPLES_PER_CATEGORY: usize = 20;

/// Characters of the script's output kept in the outcome (ROCK's 1500).
const OUTPUT_HEAD_CHARS: usize = 1500;

/// The categories of removed entries, in the script's order.
pub const CATEGORIES: [&str; 6] = [
    "sessions",
    "dead_pid",
    "setup",
    "rotated_daemon",
    "stale",
    "old",
];

/// What `quarry plugins` shows for this task.
const PARAMS_DOC: &str = "\
Removes stale Ray session dirs, dead workers' logs and old Ray log backups under the Ray temp \
dir; active daemon logs and the live session (session_latest) are never touched.
  ray_temp_dir: absolute path (default \"/data/tmp/ray\").
  min_age_hours: integer >= 1 (default 24): session_* dirs older than this are removed.
  live_log_keep_days: integer >= 1 (default 7): other files in session_latest/logs.
  old_logs_keep_hours: integer >= 1 (default 24): files under session_latest/logs/old.
  setup_log_keep_minutes: integer >= 1 (default 60): runtime_env_setup-* files.
  rotated_daemon_keep_hours: integer >= 1 (default 24): rotated daemon logs (raylet.1.out).";

/// The task.
pub struct RayLogCleanup;

impl Task for RayLogCleanup {
    type Params = Params;
    type Config = Config;

    fn describe() -> Metadata {
        Metadata::new("ray_log_cleanup", "0.1.0")
            .idempotent(true)
            .default_interval_seconds(86_400)
            .params_doc(PARAMS_DOC)
    }

    fn check(params: Params) -> Result<Config, String> {
        Config::from_params(&params)
    }

    fn run(config: Config) -> Result<Outcome, String> {
        Ok(cleanup(&mut HostWorker::new(), &config))
    }

    /// One `bash` (no shell string) acting under `ray_temp_dir` only.
    fn grants(config: &Config) -> Option<Grants> {
        Some(
            Grants::new()
                .program("bash")
                .write_path(&config.ray_temp_dir)
                .dry_run(true),
        )
    }
}

// Exported only in the wasm build (see file_cleanup for why).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(RayLogCleanup);

/// The script's command: `bash -c SCRIPT ray_log_cleanup <dir> <minutes…> <samples> <mode>`,
/// the mode `list` for a dry run (the same selection, nothing removed) and `remove` otherwise.
pub fn command(config: &Config, dry_run: bool) -> Command {
    let minutes = [
        config.min_age_hours * 60,
        config.live_log_keep_days * 24 * 60,
        config.old_logs_keep_hours * 60,
        config.setup_log_keep_minutes,
        config.rotated_daemon_keep_hours * 60,
        PID_LOG_MIN_AGE_MINUTES,
        SAMPLES_PER_CATEGORY as u64,
    ];
    let mut argv = vec![
        "bash".to_string(),
        "-c".into(),
        SCRIPT.into(),
        "ray_log_cleanup".into(),
        config.ray_temp_dir.clone(),
    ];
    argv.extend(minutes.iter().map(u64::to_string));
    argv.push(if dry_run { "list" } else { "remove" }.into());
    Command::argv(argv).timeout(SCRIPT_TIMEOUT)
}

/// What the script reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Whether the Ray temp dir exists.
    pub found: bool,
    /// session_latest's target, if any.
    pub live_session: Option<String>,
    /// Removed entries per category (and `failed`).
    pub counts: BTreeMap<String, u64>,
    /// Up to [`SAMPLES_PER_CATEGORY`] removed names per category.
    pub samples: BTreeMap<String, Vec<String>>,
    /// Paths that could not be removed, with their category (the first ones).
    pub failed: Vec<(String, String)>,
}

/// Parses the script's standard output; unknown lines are ignored.
pub fn parse_report(stdout: &str) -> Report {
    let mut report = Report::default();
    for line in stdout.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "found" => report.found = rest == "1",
            "live_session" if !rest.is_empty() => report.live_session = Some(rest.to_string()),
            "count" => {
                if let Some((category, n)) = rest.split_once(' ')
                    && let Ok(n) = n.parse()
                {
                    report.counts.insert(category.to_string(), n);
                }
            }
            "sample" => {
                if let Some((category, name)) = rest.split_once(' ') {
                    report
                        .samples
                        .entry(category.to_string())
                        .or_default()
                        .push(name.to_string());
                }
            }
            "failed" if report.failed.len() < SAMPLES_PER_CATEGORY => {
                if let Some((category, path)) = rest.split_once(' ') {
                    report.failed.push((category.to_string(), path.to_string()));
                }
            }
            _ => {}
        }
    }
    report
}

/// Runs the cleanup on one worker with checked params.
pub fn cleanup(worker: &mut impl Worker, config: &Config) -> Outcome {
    // Strategy: one execute of the script (argv, no value is shell text); a script that did
    // not run or did not finish fails the run; otherwise its report becomes the outcome, failed
    // if anything could not be removed.
    let dry_run = worker.dry_run();
    let out = match worker.execute(&command(config, dry_run)) {
        Ok(out) => out,
        Err(e) => {
            return Outcome::failed(format!(
                "the cleanup script did not finish ({}); ray_temp_dir {:?}",
                e.describe(),
                config.ray_temp_dir
            ));
        }
    };
    let report = parse_report(&out.stdout);
    let stderr = out.stderr.trim();
    // A found dir's report ends with the counts; without them the script was cut short.
    let complete = !report.found || out.stdout.contains("\ncount failed ");
    if out.exit_code != 0 || !complete {
        let reason = stderr.lines().next().unwrap_or("no output");
        return Outcome::failed(format!(
            "the cleanup script exited with {}: {}",
            out.exit_code,
            head(reason, 300)
        ))
        .with_detail("ray_temp_dir", config.ray_temp_dir.as_str());
    }
    let count = |c: &str| report.counts.get(c).copied().unwrap_or(0);
    let mut detail = json!({
        "status": "success",
        "ray_temp_dir": config.ray_temp_dir,
        "found": report.found,
        "live_session": report.live_session,
        "thresholds": {
            "min_age_hours": config.min_age_hours,
            "live_log_keep_days": config.live_log_keep_days,
            "old_logs_keep_hours": config.old_logs_keep_hours,
            "setup_log_keep_minutes": config.setup_log_keep_minutes,
            "rotated_daemon_keep_hours": config.rotated_daemon_keep_hours,
        },
        "removed": CATEGORIES.iter().map(|c| (c.to_string(), json!(count(c)))).collect::<serde_json::Map<_, _>>(),
        "removed_names": CATEGORIES.iter().map(|c| (c.to_string(), json!(report.samples.get(*c).cloned().unwrap_or_default()))).collect::<serde_json::Map<_, _>>(),
        // ROCK's result keys.
        "exit_code": out.exit_code,
        "removed_count": count("sessions"),
        "removed_sessions": report.samples.get("sessions").cloned().unwrap_or_default(),
        "removed_dead_pid_count": count("dead_pid"),
        "removed_setup_count": count("setup"),
        "removed_rotated_daemon_count": count("rotated_daemon"),
        "removed_stale_count": count("stale"),
        "removed_old_count": count("old"),
        "failed_count": count("failed"),
        "output_head": head(&out.stdout, OUTPUT_HEAD_CHARS),
    });
    if !stderr.is_empty() {
        detail["stderr_head"] = Value::from(head(stderr, OUTPUT_HEAD_CHARS));
    }
    if dry_run {
        // The counts and names are what a real run would remove.
        detail["dry_run"] = Value::from(true);
    }
    let summary: Vec<String> = CATEGORIES
        .iter()
        .map(|c| format!("{c}={}", count(c)))
        .collect();
    worker.log(
        LogLevel::Info,
        &format!(
            "ray_log_cleanup{}: {}{}",
            if dry_run {
                " (dry run, would remove)"
            } else {
                ""
            },
            summary.join(", "),
            if report.found {
                ""
            } else {
                " (ray_temp_dir not found)"
            }
        ),
    );
    if count("failed") > 0 {
        let first = report
            .failed
            .first()
            .map(|(c, p)| format!(" (first: {c} {p:?})"))
            .unwrap_or_default();
        let Value::Object(mut detail) = detail else {
            unreachable!("json! of an object")
        };
        // The failure's own `status` and `error` come first.
        detail.remove("status");
        return Outcome::failed_with(
            format!(
                "could not remove {} entries under {}{first}",
                count("failed"),
                config.ray_temp_dir
            ),
            detail,
        );
    }
    Outcome::success(detail)
}
