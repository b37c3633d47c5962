//! # container_cleanup: Quarry's port of ROCK's `ContainerCleanupTask`
//!
//! On every worker, removes (`docker rm -v`) the exited containers that finished more than
//! `max_age_hours` ago and the created-but-never-started containers created more than
//! `created_max_age_hours` ago.
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw) and their checks ([`params::Config`]).
//! - [`docker`]: the argument vectors, output parsers, RFC 3339 parser and age decision (pure).
//! - this file: the task, and [`cleanup`], which reaches the worker only through the SDK's
//!   [`Worker`] trait ([`HostWorker`] in the component, the SDK's `FakeWorker` in the native
//!   tests).
//!
//! Differences from ROCK, on purpose:
//! - `created` containers get an age cutoff too (`created_max_age_hours`, default 1 h): ROCK
//!   removed them at any age, racing containers about to start (bug 24).
//! - It runs synchronously and reports what it removed, bounded by per-call time limits and a
//!   budget after which no new chunk starts (the rest waits for the next run): ROCK launched
//!   an untracked detached `bash -c` job and reported `running` forever (bug 11).
//! - Every command is an argument vector (no shell, nothing from the config is interpreted);
//!   ages are computed here from the worker's clock instead of with GNU `date -d`.
//! - A container that changed state between listing and removal (started, already removed) is
//!   left alone and counted, not reported as an error.

#![deny(missing_docs)]

pub mod docker;
pub mod params;

#[cfg(test)]
mod native_tests;

use quarry_sdk::host::ErrorExt as _;
use quarry_sdk::text::head;
use std::collections::BTreeMap;
use std::time::Duration;

use quarry_sdk::host::{Error, LogLevel};
use quarry_sdk::worker::{HostWorker, Worker};
use quarry_sdk::{Grants, Metadata, Outcome, Task};
use serde_json::{Map, Value, json};

use crate::docker::{Decision, Keep, State};
use crate::params::{Config, Params};

/// Time limit of each `docker ps`: a busy daemon can take a few seconds to answer.
const LIST_TIMEOUT: Duration = Duration::from_secs(20);

/// Time limit of `date`, which answers at once unless the worker is in trouble.
const DATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Time limit of one `docker container inspect` chunk.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Time limit of one `docker rm -v` chunk: removing a container's layer and volumes is disk
/// work, a fraction of a second each on a healthy machine.
const RM_TIMEOUT: Duration = Duration::from_secs(25);

/// No inspect or rm chunk starts after this much of the run: with `RM_TIMEOUT` the run ends by
/// about 70 s, inside the default 80 s run budget (status writes included). What is left is
/// counted as deferred and handled by the next run.
const CALL_START_BUDGET: Duration = Duration::from_secs(45);

/// Containers per `docker container inspect` (argv stays around 6.5 KB).
const INSPECT_CHUNK: usize = 100;

/// Containers per `docker rm -v`: small enough that one chunk fits `RM_TIMEOUT`.
const RM_CHUNK: usize = 50;

/// Removed ids listed in the outcome; `removed_count` is exact.
const REMOVED_LIST_MAX: usize = 100;

/// Error messages listed in the outcome; `error_count` is exact.
const ERRORS_LIST_MAX: usize = 20;

/// Characters of a command's stderr kept in one error message.
const ERROR_HEAD_CHARS: usize = 500;

/// What `quarry plugins` shows for this task.
const PARAMS_DOC: &str = "\
Removes (docker rm -v) exited containers that finished more than max_age_hours ago and created \
(never started) containers created more than created_max_age_hours ago. Running containers are never touched.
  max_age_hours: number >= 0, fractions allowed (default 24).
  created_max_age_hours: number >= 0, fractions allowed (default 1).
  label: optional `key` or `key=value`: only containers with this label are considered.";

/// The task.
pub struct ContainerCleanup;

impl Task for ContainerCleanup {
    type Params = Params;
    type Config = Config;

    fn describe() -> Metadata {
        Metadata::new("container_cleanup", "0.1.0")
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

    /// `docker` (ps, inspect, rm) and `date` (the worker's clock); no files.
    fn grants(_config: &Config) -> Option<Grants> {
        Some(
            Grants::new()
                .program("docker")
                .program("date")
                .shell(false)
                .dry_run(true),
        )
    }
}

// Exported only in the wasm build (see file_cleanup for why).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(ContainerCleanup);

/// One container chosen for removal.
struct Candidate {
    id: String,
    state: State,
    age_nanos: i128,
}

/// Counters and lists of one run.
#[derive(Default)]
struct Tally {
    removed: Vec<String>,
    removed_by_state: BTreeMap<State, usize>,
    kept: BTreeMap<Keep, usize>,
    gone: usize,
    deferred: usize,
    errors: Vec<String>,
    /// The worker stopped answering: no further call is made.
    aborted: bool,
}

impl Tally {
    fn keep(&mut self, why: Keep) {
        *self.kept.entry(why).or_default() += 1;
    }

    /// Whether the budget allows starting another chunk; counts `left` as deferred if not.
    fn may_start(&mut self, worker: &mut impl Worker, left: usize) -> bool {
        if self.aborted {
            return false;
        }
        if worker.elapsed() >= CALL_START_BUDGET {
            self.deferred += left;
            return false;
        }
        true
    }
}

/// Runs the cleanup on one worker with checked params.
pub fn cleanup(worker: &mut impl Worker, config: &Config) -> Outcome {
    // Strategy: list exited and created containers (`docker ps`, argv); read the worker's
    // clock (`date -u +%s`); inspect the listed ids in chunks and decide from the inspected
    // state and times (a container started since it was listed is kept); remove the chosen
    // ones oldest first with `docker rm -v` in chunks. No chunk starts after
    // CALL_START_BUDGET; the rest is deferred to the next run. Listing or clock failures fail
    // the run at once; per-container failures fail it with every detail kept. A dry run makes
    // the same read-only calls and reports the chosen containers instead of removing them.
    let dry_run = worker.dry_run();
    let mut detail = Map::new();
    if dry_run {
        detail.insert("dry_run".into(), true.into());
    }
    detail.insert("max_age_hours".into(), config.max_age_hours.clone());
    detail.insert(
        "created_max_age_hours".into(),
        config.created_max_age_hours.clone(),
    );
    if let Some(label) = &config.label {
        detail.insert("label".into(), label.clone().into());
    }

    let mut listed: Vec<String> = Vec::new();
    let mut listed_counts = Map::new();
    for state in [State::Exited, State::Created] {
        match list(worker, state, config.label.as_deref()) {
            Ok(ids) => {
                listed_counts.insert(state.word().into(), ids.len().into());
                for id in ids {
                    if !listed.contains(&id) {
                        listed.push(id);
                    }
                }
            }
            Err(error) => return Outcome::failed_with(error, detail),
        }
    }
    detail.insert("listed".into(), listed_counts.into());

    let mut tally = Tally::default();
    if !listed.is_empty() {
        let now_secs = match worker_clock(worker) {
            Ok(secs) => secs,
            Err(error) => return Outcome::failed_with(error, detail),
        };
        detail.insert("worker_time".into(), now_secs.into());
        let candidates = inspect_all(
            worker,
            &listed,
            i128::from(now_secs) * 1_000_000_000,
            config,
            &mut tally,
        );
        if dry_run {
            for c in candidates {
                *tally.removed_by_state.entry(c.state).or_default() += 1;
                tally.removed.push(c.id);
            }
        } else {
            remove_all(worker, candidates, &mut tally);
        }
    }

    let removed_count = tally.removed.len();
    let kept_count: usize = tally.kept.values().sum();
    worker.log(
        LogLevel::Info,
        &format!(
            "container_cleanup: {} {removed_count} containers, kept {kept_count}, \
             {} already gone, {} deferred, {} errors",
            if dry_run {
                "dry run: would remove"
            } else {
                "removed"
            },
            tally.gone,
            tally.deferred,
            tally.errors.len()
        ),
    );
    let by_state: Map<String, Value> = [State::Exited, State::Created]
        .into_iter()
        .map(|s| {
            let n = tally.removed_by_state.get(&s).copied().unwrap_or(0);
            (s.word().to_string(), n.into())
        })
        .collect();
    let by_reason: Map<String, Value> = tally
        .kept
        .iter()
        .map(|(k, n)| (k.word().to_string(), (*n).into()))
        .collect();
    let removed_list: Vec<Value> = tally
        .removed
        .iter()
        .take(REMOVED_LIST_MAX)
        .map(|id| Value::from(id.as_str()))
        .collect();
    // A dry run reports what it would remove, named so.
    let verb = if dry_run { "would_remove" } else { "removed" };
    detail.insert(verb.into(), removed_list.into());
    detail.insert(format!("{verb}_count"), removed_count.into());
    detail.insert(format!("{verb}_by_state"), by_state.into());
    detail.insert("kept_count".into(), kept_count.into());
    detail.insert("kept_by_reason".into(), by_reason.into());
    detail.insert("gone_count".into(), tally.gone.into());
    detail.insert("deferred_count".into(), tally.deferred.into());
    detail.insert("incomplete".into(), (tally.deferred > 0).into());
    detail.insert(
        "errors".into(),
        json!(
            tally
                .errors
                .iter()
                .take(ERRORS_LIST_MAX)
                .collect::<Vec<_>>()
        ),
    );
    detail.insert("error_count".into(), tally.errors.len().into());

    if let Some(first) = tally.errors.first() {
        let n = tally.errors.len();
        let error = format!(
            "container cleanup removed {removed_count} containers but hit {n} error{}: {first}",
            if n == 1 { "" } else { "s" }
        );
        return Outcome::failed_with(error, detail);
    }
    if tally.deferred > 0 {
        worker.log(
            LogLevel::Warn,
            &format!(
                "container_cleanup: time budget used up; {} containers left for the next run",
                tally.deferred
            ),
        );
    }
    let mut ordered = Map::from_iter([("status".to_string(), Value::from("success"))]);
    ordered.extend(detail);
    Outcome::success(Value::Object(ordered))
}

/// Lists the ids of containers in `state`. Errors are the failure message of the run.
fn list(
    worker: &mut impl Worker,
    state: State,
    label: Option<&str>,
) -> Result<Vec<String>, String> {
    let what = format!("listing {} containers", state.word());
    match worker.execute_argv(docker::ps_argv(state, label), LIST_TIMEOUT) {
        Ok(out) if out.exit_code == 0 => {
            docker::parse_ids(&out.stdout).map_err(|why| format!("{what} failed: {why}"))
        }
        Ok(out) => Err(format!(
            "{what} failed (docker ps exited with {}): {}",
            out.exit_code,
            head(out.stderr.trim(), ERROR_HEAD_CHARS)
        )),
        Err(Error::NotFound(m)) => Err(format!("docker is not installed on the worker ({m})")),
        Err(e) => Err(format!("{what} did not finish ({})", e.describe())),
    }
}

/// The worker's clock in Unix seconds (`date -u +%s`): Docker's times come from the same
/// machine's clock, so ages do not depend on the scheduler's.
fn worker_clock(worker: &mut impl Worker) -> Result<i64, String> {
    let what = "could not read the worker's clock (date -u +%s";
    match worker.execute_argv(["date", "-u", "+%s"], DATE_TIMEOUT) {
        Ok(out) if out.exit_code == 0 => out
            .stdout
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("{what} printed {:?})", head(out.stdout.trim(), 100))),
        Ok(out) => Err(format!(
            "{what} exited with {}: {})",
            out.exit_code,
            head(out.stderr.trim(), ERROR_HEAD_CHARS)
        )),
        Err(e) => Err(format!("{what}: {})", e.describe())),
    }
}

/// Inspects `ids` in chunks and returns the containers to remove, oldest first.
fn inspect_all(
    worker: &mut impl Worker,
    ids: &[String],
    now_nanos: i128,
    config: &Config,
    tally: &mut Tally,
) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for (n, chunk) in ids.chunks(INSPECT_CHUNK).enumerate() {
        if !tally.may_start(worker, ids.len() - n * INSPECT_CHUNK) {
            break;
        }
        let out = match worker.execute_argv(docker::inspect_argv(chunk), INSPECT_TIMEOUT) {
            Ok(out) => out,
            Err(e) => {
                tally.errors.push(format!(
                    "docker container inspect of {} containers did not finish ({})",
                    chunk.len(),
                    e.describe()
                ));
                tally.aborted = matches!(e, Error::Unreachable(_));
                continue;
            }
        };
        let (found, unreadable) = docker::parse_inspect(&out.stdout);
        for line in unreadable {
            tally.errors.push(format!(
                "unreadable docker container inspect line: {:?}",
                head(&line, 200)
            ));
        }
        for id in chunk {
            let Some(c) = found.iter().find(|c| &c.id == id) else {
                let said = out
                    .stderr
                    .lines()
                    .find(|l| l.contains(id.as_str()))
                    .map(str::trim);
                match said {
                    Some(l) if l.to_ascii_lowercase().contains("no such") => tally.gone += 1,
                    _ => tally.errors.push(format!(
                        "docker container inspect {}: exited with {}: {}",
                        short(id),
                        out.exit_code,
                        head(said.unwrap_or(out.stderr.trim()), ERROR_HEAD_CHARS)
                    )),
                }
                continue;
            };
            match docker::decide(c, now_nanos, config) {
                Decision::Remove { state, age_nanos } => candidates.push(Candidate {
                    id: id.clone(),
                    state,
                    age_nanos,
                }),
                Decision::Keep(why) => tally.keep(why),
            }
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.age_nanos));
    candidates
}

/// Removes the candidates in chunks, oldest first, while the budget allows.
fn remove_all(worker: &mut impl Worker, candidates: Vec<Candidate>, tally: &mut Tally) {
    let total = candidates.len();
    for (n, chunk) in candidates.chunks(RM_CHUNK).enumerate() {
        if !tally.may_start(worker, total - n * RM_CHUNK) {
            break;
        }
        let ids: Vec<String> = chunk.iter().map(|c| c.id.clone()).collect();
        let out = match worker.execute_argv(docker::rm_argv(&ids), RM_TIMEOUT) {
            Ok(out) => out,
            Err(e) => {
                // Some of the chunk may be gone: the next run sees what is left.
                tally.errors.push(format!(
                    "docker rm -v of {} containers did not finish ({})",
                    ids.len(),
                    e.describe()
                ));
                tally.aborted = matches!(e, Error::Unreachable(_));
                continue;
            }
        };
        let r = docker::parse_rm(&ids, out.exit_code, &out.stdout, &out.stderr);
        for id in &r.removed {
            if let Some(c) = chunk.iter().find(|c| &c.id == id) {
                *tally.removed_by_state.entry(c.state).or_default() += 1;
            }
        }
        tally.removed.extend(r.removed);
        tally.gone += r.gone.len();
        for _ in &r.running {
            tally.keep(Keep::StateChanged);
        }
        for (id, why) in r.errors {
            tally.errors.push(format!(
                "docker rm -v {}: {}",
                short(&id),
                head(&why, ERROR_HEAD_CHARS)
            ));
        }
    }
}

/// The 12-character short form of a container id.
fn short(id: &str) -> &str {
    head(id, 12)
}
