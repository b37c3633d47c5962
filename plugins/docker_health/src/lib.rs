//! # docker_health: Quarry's port of ROCK's `DockerHealthTask`
//!
//! On every worker, asks the Docker daemon whether it is alive (`docker info`). When it is not,
//! runs the configured start command and polls `docker info` again for a while, then reports
//! what really happened: healthy, started and healthy, or still down (a failed run).
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw) and their checks ([`params::Config`]).
//! - this file: the task, and [`check`], which reaches the worker only through the SDK's
//!   [`Worker`] trait ([`HostWorker`] in the component, the SDK's `FakeWorker` in the native
//!   tests).
//!
//! Differences from ROCK, on purpose: a failed start, or a daemon still down after a start
//! command that succeeded, is a failed run with the start command's exit code and output (ROCK
//! reported `success` whatever happened, bug 24); the start command is a configurable argument
//! vector (no shell) and defaults to `sudo -n …` so that it can never wait for a password;
//! every command has its own time limit; a worker without the `docker` CLI fails with a clear
//! message instead of trying to start a daemon that is not installed.

#![deny(missing_docs)]

pub mod params;

#[cfg(test)]
mod native_tests;

use quarry_sdk::host::ErrorExt as _;
use quarry_sdk::text::head;
use std::time::Duration;

use quarry_sdk::host::{Error, LogLevel, Output};
use quarry_sdk::worker::{HostWorker, Worker};
use quarry_sdk::{Grants, Metadata, Outcome, Task};
use serde_json::{Map, Value};

use crate::params::{Config, Params};

/// Time limit of the first `docker info`: a live daemon answers in well under a second; one
/// that has not answered after this long is hung, which counts as down.
const INFO_TIMEOUT: Duration = Duration::from_secs(15);

/// Time limit of the start command: `service docker start` waits for the daemon, which can
/// take several seconds on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(25);

/// How long `docker info` is polled after the start command succeeded: `service … start` may
/// return before the daemon's socket answers.
const RECHECK_WINDOW: Duration = Duration::from_secs(20);

/// Pause between two polls (run on the worker as `sleep`).
const RECHECK_PAUSE: Duration = Duration::from_secs(2);

/// Time limit of each polling `docker info`: short, so that the whole window stays bounded.
const RECHECK_INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// Time limit of `date`, which answers at once unless the worker is in trouble.
const DATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Characters of the start command's output kept in the outcome.
const OUTPUT_HEAD_CHARS: usize = 1000;

/// Characters of `docker info`'s complaint kept in messages.
const ERROR_HEAD_CHARS: usize = 500;

/// What `quarry plugins` shows for this task.
const PARAMS_DOC: &str = "\
Checks that the Docker daemon answers (`docker info`); when it does not, runs the start command \
and polls for up to 20 s. A daemon that stays down, or a start command that fails, fails the run.
  start_command: list of strings (default [\"sudo\", \"-n\", \"service\", \"docker\", \"start\"]): \
the argument vector that starts the daemon; no shell is involved.";

/// The task.
pub struct DockerHealth;

impl Task for DockerHealth {
    type Params = Params;
    type Config = Config;

    fn describe() -> Metadata {
        Metadata::new("docker_health", "0.1.0")
            .idempotent(true)
            .default_interval_seconds(60)
            .params_doc(PARAMS_DOC)
    }

    fn check(params: Params) -> Result<Config, String> {
        Config::from_params(&params)
    }

    fn run(config: Config) -> Result<Outcome, String> {
        Ok(check(&mut HostWorker::new(), &config))
    }

    /// `docker info`, the configured start command's program, `date` (the worker's clock) and
    /// `sleep` (the pause before re-checking); no files.
    fn grants(config: &Config) -> Option<Grants> {
        let start = config.start_command.first().map(String::as_str);
        let grants = Grants::new()
            .program("docker")
            .program("date")
            .program("sleep");
        Some(
            start
                .map_or(grants.clone(), |p| grants.program(p))
                .shell(false)
                .dry_run(true),
        )
    }
}

// Exported only in the wasm build (see file_cleanup for why).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(DockerHealth);

/// What one `docker info` said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    /// The daemon answered; its version when `docker info` printed one.
    Up { server_version: Option<String> },
    /// The daemon did not answer: the reason.
    Down(String),
    /// There is no `docker` CLI on the worker.
    NoDocker(String),
    /// The worker itself cannot be reached.
    Unreachable(String),
}

/// Checks the daemon on one worker and starts it when it is down.
pub fn check(worker: &mut impl Worker, config: &Config) -> Outcome {
    // Strategy: one `docker info`. Healthy → success. No docker CLI or unreachable worker →
    // failed, nothing started. Down → run the start command (argv); if it fails → failed with
    // its exit code and output. Else poll `docker info` for RECHECK_WINDOW: answering →
    // success with `restarted: true`; still down → failed. `checked_at` is the worker's clock
    // at the verdict. A dry run stops before the start command: a down daemon is a failed run
    // that names the command a real run would run (`would_run`).
    let dry_run = worker.dry_run();
    let down = match docker_info(worker, INFO_TIMEOUT) {
        Health::Up { server_version } => {
            let mut detail = Map::new();
            if dry_run {
                detail.insert("dry_run".into(), true.into());
            }
            detail.insert("checked_at".into(), checked_at(worker));
            detail.insert("restarted".into(), false.into());
            detail.insert("server_version".into(), server_version.into());
            return success(detail);
        }
        Health::NoDocker(why) => {
            let mut detail = Map::new();
            detail.insert("checked_at".into(), checked_at(worker));
            detail.insert("restarted".into(), false.into());
            let error = format!("docker is not installed on the worker ({why})");
            return Outcome::failed_with(error, detail);
        }
        Health::Unreachable(why) => {
            let mut detail = Map::new();
            detail.insert("restarted".into(), false.into());
            return Outcome::failed_with(format!("worker unreachable: {why}"), detail);
        }
        Health::Down(why) => why,
    };

    let command = config.start_command.join(" ");
    if dry_run {
        let mut detail = Map::new();
        detail.insert("dry_run".into(), true.into());
        detail.insert("daemon_error".into(), down.clone().into());
        detail.insert("would_run".into(), config.start_command.clone().into());
        detail.insert("checked_at".into(), checked_at(worker));
        detail.insert("restarted".into(), false.into());
        let error = format!(
            "dry run: the docker daemon is down ({down}); a real run would run `{command}`"
        );
        return Outcome::failed_with(error, detail);
    }
    worker.log(
        LogLevel::Warn,
        &format!("docker_health: the docker daemon is down ({down}); running `{command}`"),
    );
    let mut detail = Map::new();
    detail.insert("daemon_error".into(), down.clone().into());
    detail.insert("start_command".into(), config.start_command.clone().into());
    let started = worker.execute_argv(&config.start_command, START_TIMEOUT);
    let out = match started {
        Ok(out) => out,
        Err(e) => {
            detail.insert("restart_exit_code".into(), Value::Null);
            detail.insert("restart_output_head".into(), "".into());
            detail.insert("checked_at".into(), checked_at(worker));
            detail.insert("restarted".into(), false.into());
            let error = format!(
                "the docker daemon is down ({down}) and the start command `{command}` did not run: {}",
                e.describe()
            );
            return Outcome::failed_with(error, detail);
        }
    };
    let output = combined_output(&out);
    detail.insert("restart_exit_code".into(), out.exit_code.into());
    detail.insert(
        "restart_output_head".into(),
        head(&output, OUTPUT_HEAD_CHARS).into(),
    );
    if out.exit_code != 0 {
        detail.insert("checked_at".into(), checked_at(worker));
        detail.insert("restarted".into(), false.into());
        let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let error = format!(
            "the docker daemon is down ({down}) and the start command `{command}` exited with {}{}",
            out.exit_code,
            if first.is_empty() {
                String::new()
            } else {
                format!(": {}", head(first.trim(), ERROR_HEAD_CHARS))
            }
        );
        return Outcome::failed_with(error, detail);
    }

    let window_start = worker.elapsed();
    let mut attempts = 0u32;
    let last = loop {
        attempts += 1;
        match docker_info(worker, RECHECK_INFO_TIMEOUT) {
            Health::Up { server_version } => {
                detail.insert("recheck_attempts".into(), attempts.into());
                detail.insert("server_version".into(), server_version.into());
                detail.insert("checked_at".into(), checked_at(worker));
                detail.insert("restarted".into(), true.into());
                worker.log(
                    LogLevel::Info,
                    &format!("docker_health: the docker daemon answers again after `{command}`"),
                );
                return success(detail);
            }
            Health::Unreachable(why) => {
                detail.insert("recheck_attempts".into(), attempts.into());
                detail.insert("restarted".into(), false.into());
                return Outcome::failed_with(
                    format!("worker unreachable after running `{command}`: {why}"),
                    detail,
                );
            }
            Health::Down(why) | Health::NoDocker(why) => {
                if worker.elapsed().saturating_sub(window_start) >= RECHECK_WINDOW {
                    break why;
                }
            }
        }
        worker.pause(RECHECK_PAUSE);
    };
    detail.insert("recheck_attempts".into(), attempts.into());
    detail.insert("checked_at".into(), checked_at(worker));
    detail.insert("restarted".into(), false.into());
    let error = format!(
        "the start command `{command}` exited with 0 but the docker daemon still does not \
         answer after {}s: {last}",
        RECHECK_WINDOW.as_secs()
    );
    Outcome::failed_with(error, detail)
}

/// Runs `docker info` and classifies the answer.
fn docker_info(worker: &mut impl Worker, timeout: Duration) -> Health {
    match worker.execute_argv(["docker", "info"], timeout) {
        Ok(out) if out.exit_code == 0 && !reports_server_error(&out.stdout) => Health::Up {
            server_version: server_version(&out.stdout),
        },
        Ok(out) => Health::Down(info_error(&out)),
        Err(Error::NotFound(m)) => Health::NoDocker(m),
        Err(Error::Unreachable(m)) => Health::Unreachable(m),
        Err(e) => Health::Down(format!("docker info did not finish ({})", e.describe())),
    }
}

/// Whether `docker info`'s output has the `Server:` section starting with `ERROR:`, which some
/// CLI versions print (with exit status 0) when the daemon does not answer. `ERROR:` lines of
/// the `Client:` section (a broken CLI plugin) do not count.
pub fn reports_server_error(stdout: &str) -> bool {
    let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        if line == "Server:" {
            return lines.next().is_some_and(|l| l.starts_with("ERROR:"));
        }
    }
    false
}

/// The `Server Version:` line of `docker info`.
pub fn server_version(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Server Version:")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// Why `docker info` failed, in one line: its stderr, plus the `ERROR:` lines some CLI
/// versions print on stdout (Debian's 20.10 prints "errors pretty printing info" on stderr
/// and the useful "Cannot connect …" on stdout).
pub fn info_error(out: &Output) -> String {
    let mut parts: Vec<&str> = out
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for line in out.stdout.lines().map(str::trim) {
        if line.starts_with("ERROR:") && !parts.contains(&line) {
            parts.push(line);
        }
    }
    if parts.is_empty() {
        return format!("docker info exited with {}", out.exit_code);
    }
    head(&parts.join("; "), ERROR_HEAD_CHARS).to_string()
}

/// The worker's clock as `YYYY-MM-DDTHH:MM:SSZ`, or null when `date` fails (the guest has no
/// clock of the worker's own).
fn checked_at(worker: &mut impl Worker) -> Value {
    match worker.execute_argv(["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"], DATE_TIMEOUT) {
        Ok(out) if out.exit_code == 0 && is_utc_timestamp(out.stdout.trim()) => {
            out.stdout.trim().into()
        }
        _ => Value::Null,
    }
}

/// Whether `s` has the shape `YYYY-MM-DDTHH:MM:SSZ`.
pub fn is_utc_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// stdout and stderr of a command, trimmed and joined by a newline.
fn combined_output(out: &Output) -> String {
    [out.stdout.trim(), out.stderr.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A successful outcome: `status` first, then `detail`.
fn success(detail: Map<String, Value>) -> Outcome {
    let mut ordered = Map::from_iter([("status".to_string(), Value::from("success"))]);
    ordered.extend(detail);
    Outcome::success(Value::Object(ordered))
}
