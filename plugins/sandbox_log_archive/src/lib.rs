//! # sandbox_log_archive: Quarry's port of ROCK's `SandboxLogArchiveTask`
//!
//! On every worker, archives the log dirs of sandboxes that are done — one directory per
//! sandbox directly under the log root (`log_root`, default the worker's `$ROCK_LOGGING_PATH`)
//! — to an S3-compatible object store, as `<prefix>/sandbox-logs/<sandbox id>.tar.gz`, and
//! deletes each dir once its upload is verified:
//! 1. one `execute` lists the dirs with the age of their newest change ([`DISCOVER_SCRIPT`]);
//! 2. dirs untouched for `keep_days_before_archive` days are candidates; if there are any, one
//!    `docker ps` names the running containers, whose dirs are left alone (no Docker: none);
//! 3. per candidate, oldest first, one `execute` ([`ARCHIVE_SCRIPT`]) tars it, uploads it
//!    with `curl --aws-sigv4`, checks the stored object's size with a signed `HEAD`, and only
//!    then deletes the dir.
//!
//! The store's key and secret never leave the worker: they live in `credentials_file`, a curl
//! config file on the worker (`user = "KEY:SECRET"`, mode 600) that only curl reads. No
//! command line, environment variable or request to the worker agent holds them.
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw) and their checks ([`params::Config`]).
//! - `discover.sh`, `archive.sh`: the scripts; this file: the task and [`archive`], which
//!   reaches the worker only through the SDK's [`Worker`] trait.
//!
//! Differences from ROCK, on purpose: ROCK asked its database whether a sandbox was stopped
//! and when; Quarry has no such database and takes a dir's last change as its stop time,
//! leaving alone the dirs of running containers. ROCK passed the OSS keys in the command's
//! `env` (which the rocklet logs); Quarry keeps them in a file on the worker. ROCK deleted
//! after `ossutil cp` returned; Quarry first checks the stored object's size. A failed archive
//! fails the run (ROCK counted it and reported success). ROCK allowed each upload an hour;
//! Quarry fits all uploads in the run's budget and defers the rest to the next run.

#![deny(missing_docs)]

pub mod params;

#[cfg(test)]
mod native_tests;

use std::collections::BTreeSet;
use std::time::Duration;

use quarry_sdk::host::ErrorExt as _;
use quarry_sdk::host::{Command, Error, LogLevel, Output};
use quarry_sdk::text::head;
use quarry_sdk::worker::{HostWorker, Worker};
use quarry_sdk::{Grants, Metadata, Outcome, Task};
use serde_json::{Map, Value, json};

use crate::params::{Config, Params, valid_sandbox_id};

/// Lists the log dirs; see its header.
pub const DISCOVER_SCRIPT: &str = include_str!("discover.sh");

/// Archives one log dir; see its header.
pub const ARCHIVE_SCRIPT: &str = include_str!("archive.sh");

/// Time limit of the listing.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// Time limit of `docker ps`.
const DOCKER_PS_TIMEOUT: Duration = Duration::from_secs(15);

/// Time from the start of the run within which every upload must end: inside the default
/// 80 s run budget, with room for the status writes. What does not fit waits for the next run.
pub const UPLOAD_BUDGET: Duration = Duration::from_secs(65);

/// The least time left in [`UPLOAD_BUDGET`] worth starting an upload with.
pub const MIN_UPLOAD_TIME: Duration = Duration::from_secs(10);

/// Most dirs listed per run (the rest wait for the next run).
const MAX_LISTED: usize = 5000;

/// Archived dirs and failures listed in the outcome (the counts are always complete).
const LISTED_IN_OUTCOME: usize = 20;

/// Exit code of the archive script when the dir vanished before it started.
const EXIT_GONE: i32 = 3;

/// Seconds in a day.
const DAY_SECS: u64 = 86_400;

/// What `quarry plugins` shows for this task.
const PARAMS_DOC: &str = "\
Archives sandbox log dirs untouched for keep_days_before_archive days to an S3-compatible store \
as <prefix>/sandbox-logs/<id>.tar.gz and deletes each after a verified upload; the dirs of \
running containers are left alone.
  endpoint: URL (required), e.g. \"https://s3.example.com\"; path-style requests.
  bucket: string (required).
  credentials_file: absolute path on the worker (required): a curl config file, mode 600, \
holding user = \"KEY:SECRET\". The secret never leaves the worker.
  region: string (default \"us-east-1\"): the SigV4 signing region.
  prefix: string (default \"rock-archives/\").
  log_root: absolute path (default the worker's $ROCK_LOGGING_PATH).
  keep_days_before_archive: integer >= 1 (default 3).
  delete_after_upload: bool (default true).";

/// The task.
pub struct SandboxLogArchive;

impl Task for SandboxLogArchive {
    type Params = Params;
    type Config = Config;

    fn describe() -> Metadata {
        Metadata::new("sandbox_log_archive", "0.1.0")
            .idempotent(true)
            .default_interval_seconds(86_400)
            .params_doc(PARAMS_DOC)
    }

    fn check(params: Params) -> Result<Config, String> {
        Config::from_params(&params)
    }

    fn run(config: Config) -> Result<Outcome, String> {
        Ok(archive(&mut HostWorker::new(), &config))
    }

    /// `bash` (no shell string) for the listing and the uploads, `docker ps` for the live
    /// sandboxes; it acts under `log_root` (unknown here when it comes from the worker's
    /// `$ROCK_LOGGING_PATH`) and reads the credentials file only from its scripts.
    fn grants(config: &Config) -> Option<Grants> {
        let grants = Grants::new()
            .program("bash")
            .program("docker")
            .dry_run(true);
        Some(match &config.log_root {
            Some(root) => grants.write_path(root),
            None => grants,
        })
    }
}

// Exported only in the wasm build (see file_cleanup for why).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(SandboxLogArchive);

/// `bash -c DISCOVER_SCRIPT sandbox_log_archive <log_root or ""> <max>`.
pub fn discover_command(config: &Config) -> Command {
    Command::argv([
        "bash".to_string(),
        "-c".into(),
        DISCOVER_SCRIPT.into(),
        "sandbox_log_archive".into(),
        config.log_root.clone().unwrap_or_default(),
        MAX_LISTED.to_string(),
    ])
    .timeout(DISCOVER_TIMEOUT)
}

/// `bash -c ARCHIVE_SCRIPT sandbox_log_archive <root> <id> <url> <region> <credentials file>
/// <delete> <seconds>`, with `time` as its limit. No secret is in it.
pub fn archive_command(config: &Config, root: &str, sandbox_id: &str, time: Duration) -> Command {
    Command::argv([
        "bash".to_string(),
        "-c".into(),
        ARCHIVE_SCRIPT.into(),
        "sandbox_log_archive".into(),
        root.into(),
        sandbox_id.into(),
        config.url(sandbox_id),
        config.region.clone(),
        config.credentials_file.clone(),
        if config.delete_after_upload { "1" } else { "0" }.into(),
        time.as_secs().max(1).to_string(),
    ])
    .timeout(time)
}

/// What the listing found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The log root; `None` when neither `log_root` nor `$ROCK_LOGGING_PATH` is set.
    pub root: Option<String>,
    /// Whether the root exists.
    pub found: bool,
    /// `(seconds since the newest change, name)` of each dir.
    pub dirs: Vec<(u64, String)>,
    /// Dirs beyond the listing's limit.
    pub more: u64,
}

/// Parses the listing's standard output; `None` when it did not say what the root is.
pub fn parse_listing(stdout: &str) -> Option<Listing> {
    let mut listing = Listing::default();
    let mut said = false;
    for line in stdout.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "root_unset" => said = true,
            "root_missing" => {
                said = true;
                listing.root = Some(rest.to_string());
            }
            "root" => {
                said = true;
                listing.found = true;
                listing.root = Some(rest.to_string());
            }
            "dir" => {
                if let Some((age, name)) = rest.split_once(' ')
                    && let Ok(age) = age.parse()
                {
                    listing.dirs.push((age, name.to_string()));
                }
            }
            "more" => listing.more = rest.parse().unwrap_or(0),
            _ => {}
        }
    }
    said.then_some(listing)
}

/// A dry run's outcome: the dirs a real run would archive (oldest first), the keys they would
/// get and whether they would be deleted; nothing was packed, uploaded or deleted.
fn would_archive(
    worker: &mut impl Worker,
    config: &Config,
    root: &str,
    candidates: &[(u64, String)],
    [alive, too_young, invalid]: [u64; 3],
) -> Outcome {
    let listed: Vec<Value> = (candidates.iter().take(LISTED_IN_OUTCOME))
        .map(|(_, id)| json!({"sandbox_id": id, "key": config.key(id)}))
        .collect();
    worker.log(
        LogLevel::Info,
        &format!(
            "sandbox_log_archive (dry run): would archive {} dirs under {root}",
            candidates.len()
        ),
    );
    Outcome::success(json!({
        "status": "success",
        "dry_run": true,
        "log_root": root,
        "bucket": config.bucket,
        "endpoint": config.endpoint,
        "would_archive": listed,
        "would_archive_count": candidates.len(),
        "would_delete_after_upload": config.delete_after_upload,
        "skipped_alive": alive,
        "skipped_too_young": too_young,
        "skipped_invalid_name": invalid,
    }))
}

/// The running containers' names; `Ok(empty)` when the worker has no Docker.
fn running_containers(worker: &mut impl Worker) -> Result<BTreeSet<String>, String> {
    let argv = ["docker", "ps", "--format", "{{.Names}}"];
    match worker.execute_argv(argv, DOCKER_PS_TIMEOUT) {
        Err(Error::NotFound(_)) => Ok(BTreeSet::new()),
        Ok(out) if out.exit_code == 0 => Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()),
        Ok(out) => Err(format!(
            "docker is installed but `docker ps` exited with {}: {}",
            out.exit_code,
            head(out.stderr.trim(), 300)
        )),
        Err(e) => Err(format!(
            "docker is installed but `docker ps` did not finish ({})",
            e.describe()
        )),
    }
}

/// Why one archive failed, from its output or its error.
fn archive_error(result: &Result<Output, Error>) -> String {
    match result {
        Ok(out) => out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("error "))
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "the archive script exited with {}: {}",
                    out.exit_code,
                    head(out.stderr.trim().lines().next().unwrap_or("no output"), 300)
                )
            }),
        Err(e) => format!("the archive did not finish ({})", e.describe()),
    }
}

/// Runs the archive on one worker with checked params.
pub fn archive(worker: &mut impl Worker, config: &Config) -> Outcome {
    // Strategy: list (one execute); sort out what is too young or not a sandbox id; protect
    // running containers (one docker ps, only if something is left); then archive the oldest
    // first, one execute each, while the upload budget lasts. A failed upload leaves its dir
    // and fails the run once the others are done.
    let listed = worker.execute(&discover_command(config));
    let listing = match &listed {
        Ok(out) if out.exit_code == 0 => parse_listing(&out.stdout),
        _ => None,
    };
    let Some(listing) = listing else {
        let why = match &listed {
            Ok(out) => format!(
                "exited with {}: {}",
                out.exit_code,
                head(out.stderr.trim(), 300)
            ),
            Err(e) => format!("did not finish ({})", e.describe()),
        };
        return Outcome::failed(format!("listing the sandbox log dirs {why}"));
    };
    let Some(root) = listing.root.clone() else {
        worker.log(
            LogLevel::Warn,
            "sandbox_log_archive: no log root (set log_root, or ROCK_LOGGING_PATH on the worker)",
        );
        return Outcome::success(json!({
            "status": "success",
            "message": "no log root configured",
            "scanned": 0,
            "archived": 0,
        }));
    };

    let keep_secs = config.keep_days_before_archive * DAY_SECS;
    let (mut invalid, mut too_young) = (0u64, 0u64);
    let mut candidates: Vec<(u64, String)> = Vec::new();
    for (age, name) in &listing.dirs {
        if !valid_sandbox_id(name) {
            invalid += 1;
        } else if *age < keep_secs {
            too_young += 1;
        } else {
            candidates.push((*age, name.clone()));
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));

    let mut alive = 0u64;
    if !candidates.is_empty() {
        let running = match running_containers(worker) {
            Ok(names) => names,
            Err(why) => {
                return Outcome::failed(format!("{why}; refusing to archive anything"))
                    .with_detail("log_root", root.as_str());
            }
        };
        candidates.retain(|(_, name)| {
            let keep = !running.contains(name);
            alive += u64::from(!keep);
            keep
        });
    }

    if worker.dry_run() {
        return would_archive(
            worker,
            config,
            &root,
            &candidates,
            [alive, too_young, invalid],
        );
    }

    let mut archived: Vec<Value> = Vec::new();
    let mut archived_count = 0u64;
    let mut failures: Vec<(String, String)> = Vec::new();
    let (mut gone, mut deferred) = (0u64, 0u64);
    let mut unreachable = false;
    for (_, id) in &candidates {
        let left = UPLOAD_BUDGET.saturating_sub(worker.elapsed());
        if unreachable || left < MIN_UPLOAD_TIME {
            deferred += 1;
            continue;
        }
        let result = worker.execute(&archive_command(config, &root, id, left));
        match &result {
            Ok(out) if out.exit_code == 0 && out.stdout.contains("archived ") => {
                let line = out.stdout.lines().find_map(|l| l.strip_prefix("archived "));
                let mut words = line.unwrap_or("").split(' ');
                let bytes: u64 = words.next().and_then(|b| b.parse().ok()).unwrap_or(0);
                let deleted = words.next() == Some("1");
                archived_count += 1;
                if archived.len() < LISTED_IN_OUTCOME {
                    archived.push(json!({
                        "sandbox_id": id, "key": config.key(id), "bytes": bytes, "deleted": deleted,
                    }));
                }
            }
            Ok(out) if out.exit_code == EXIT_GONE => gone += 1,
            _ => {
                unreachable = matches!(result, Err(Error::Unreachable(_)));
                failures.push((id.clone(), archive_error(&result)));
            }
        }
    }

    let scanned = listing.dirs.len() as u64 + listing.more;
    let mut detail = Map::new();
    if failures.is_empty() {
        detail.insert("status".into(), "success".into());
    }
    detail.insert("log_root".into(), root.clone().into());
    detail.insert("found".into(), listing.found.into());
    detail.insert("bucket".into(), config.bucket.clone().into());
    detail.insert("endpoint".into(), config.endpoint.clone().into());
    detail.insert(
        "keep_days_before_archive".into(),
        config.keep_days_before_archive.into(),
    );
    detail.insert("scanned".into(), scanned.into());
    detail.insert("archived".into(), archived_count.into());
    detail.insert("skipped_alive".into(), alive.into());
    detail.insert("skipped_too_young".into(), too_young.into());
    detail.insert("skipped_invalid_name".into(), invalid.into());
    detail.insert("skipped_gone".into(), gone.into());
    detail.insert("deferred".into(), (deferred + listing.more).into());
    detail.insert("failed".into(), (failures.len() as u64).into());
    detail.insert("archives".into(), Value::Array(archived));
    let listed_failures: Vec<Value> = failures
        .iter()
        .take(LISTED_IN_OUTCOME)
        .map(|(id, error)| json!({"sandbox_id": id, "error": error}))
        .collect();
    detail.insert("failures".into(), Value::Array(listed_failures));
    worker.log(
        if failures.is_empty() {
            LogLevel::Info
        } else {
            LogLevel::Warn
        },
        &format!(
            "sandbox_log_archive: {scanned} dirs under {root}: {archived_count} archived, {} \
             failed, {alive} alive, {too_young} too young, {} deferred",
            failures.len(),
            deferred + listing.more
        ),
    );
    if let Some((id, error)) = failures.first() {
        let total = failures.len() + archived_count as usize;
        return Outcome::failed_with(
            format!(
                "could not archive {} of {total} sandbox log dirs, which stay on the worker \
                 (first: {id}: {error})",
                failures.len()
            ),
            detail,
        );
    }
    Outcome::success(Value::Object(detail))
}
