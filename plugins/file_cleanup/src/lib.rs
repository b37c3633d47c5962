//! # file_cleanup: Quarry's port of ROCK's `FileCleanupTask`
//!
//! On every worker, deletes files under the configured target directories that are older than
//! `max_age_mins` or larger than `max_file_size`, then removes empty directories that old.
//! Directories of running Docker containers are never touched (fail closed: if Docker is
//! installed but its containers cannot be listed, nothing is deleted).
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw) and their checks ([`params::Config`]).
//! - [`find`]: the `find` argument vectors, exclusion mapping and output parsing (pure).
//! - this file: the task, and [`cleanup`], which reaches the worker only through the
//!   [`Worker`] trait ([`HostWorker`] in the component, a fake in the native tests).
//!
//! Differences from ROCK, on purpose: every command is an argv (no shell, so configured values
//! cannot inject anything; a worker without the docker CLI answers `not-found` to `docker
//! ps`); `find` errors are reported instead of masked; the outcome lists what was deleted;
//! Docker is optional (absent = nothing to protect); the target directory itself is never
//! deleted; the Miniforge root is protected even below a target such as `/tmp`.

#![deny(missing_docs)]

pub mod find;
pub mod params;

#[cfg(test)]
mod native_tests;

use quarry_sdk::host::ErrorExt as _;
use std::time::Duration;

use quarry_sdk::host::{self, Command, Error, LogLevel, Output};
use quarry_sdk::{Metadata, Outcome, Task};
use serde_json::{Map, Value, json};

use crate::find::{Listing, head};
use crate::params::{Config, Params, TargetConfig};

/// Time limit of each `find`. Well under the rocklet's 85 s request cap so that a slow `find`
/// is reported as a timeout rather than an unknown outcome; `find` is idempotent, so a run cut
/// short simply continues at the next run.
const FIND_TIMEOUT: Duration = Duration::from_secs(60);

/// Time limit of the quick checks (`test -d`): they return at once
/// unless the worker is in trouble.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Time limit of `docker ps`: a busy daemon can take a few seconds to answer.
const DOCKER_PS_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters of `find`'s stderr kept per directory in the outcome.
const ERRORS_HEAD_CHARS: usize = 2000;

/// Characters of `docker ps`'s stderr quoted in the failure message.
const DOCKER_ERROR_HEAD_CHARS: usize = 500;

/// The outcome message when no targets are configured (ROCK's text).
const NO_TARGETS_MESSAGE: &str = "no target directories configured";

/// What `quarry plugins` shows for this task.
const PARAMS_DOC: &str = "\
Deletes old and oversized files under target directories, then empty directories that old; \
directories of running Docker containers (<target>/<container name>) are always kept.
  target_dirs: list (default []); each entry a path or {path, exclude_files: [..], exclude_dirs: [..]}. \
Paths are absolute, without \"..\", not \"/\", not /tmp/miniforge or below. \
An exclusion is an absolute path, a path relative to the target (contains \"/\"; leading \".\" and \"/\" \
characters are stripped, as in ROCK) or a plain name matched at any depth.
  max_age_mins: positive integer (default 10080): files not modified for longer are deleted.
  max_file_size: bytes or a string with a 1024-based unit, e.g. \"512M\", \"1.5G\" (default \"1G\"): \
larger files are deleted whatever their age.";

/// The task.
pub struct FileCleanup;

impl Task for FileCleanup {
    type Params = Params;

    fn describe() -> Metadata {
        Metadata::new("file_cleanup", "0.1.0")
            .idempotent(true)
            .default_interval_seconds(86_400)
            .params_doc(PARAMS_DOC)
    }

    fn validate(params: &Params) -> Result<(), String> {
        Config::from_params(params).map(|_| ())
    }

    fn run(params: Params) -> Result<Outcome, String> {
        let config = Config::from_params(&params)?;
        Ok(cleanup(&mut HostWorker, &config))
    }
}

// Exported only in the wasm build: natively (for `cargo test`) the cdylib's linker version
// script cannot hold the component export names (`quarry:task/task@0.1.0#run` has a `:`).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(FileCleanup);

/// What to run on the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// An argument vector, no shell.
    Argv(Vec<String>),
    /// A constant shell script (never built from params).
    Shell(&'static str),
}

/// How the cleanup reaches its worker: [`HostWorker`] in the component, a fake in native tests
/// (which run the argvs with the real `find`).
pub trait Worker {
    /// Runs `program` with a time limit; a non-zero exit is `Ok`.
    fn execute(&mut self, program: Program, timeout: Duration) -> Result<Output, Error>;
    /// Logs one line at `level`.
    fn log(&mut self, level: LogLevel, message: &str);
}

/// The worker of the current run, through the host.
pub struct HostWorker;

impl Worker for HostWorker {
    fn execute(&mut self, program: Program, timeout: Duration) -> Result<Output, Error> {
        let cmd = match program {
            Program::Argv(argv) => Command::argv(argv),
            Program::Shell(script) => Command::shell(script),
        };
        cmd.timeout(timeout).run()
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        host::log(level, message)
    }
}

/// Runs the cleanup on one worker with checked params.
pub fn cleanup(worker: &mut impl Worker, config: &Config) -> Outcome {
    // Strategy: with no targets, succeed without touching the worker. Otherwise find the
    // running containers first (fail closed), then clean each target with two argv `find`s
    // (files, then empty directories), collecting per-directory results. Any failed `find`
    // fails the run, with every directory's details kept.
    if config.targets.is_empty() {
        return Outcome::success(json!({ "status": "success", "message": NO_TARGETS_MESSAGE }));
    }
    let mut detail = Map::new();
    detail.insert(
        "target_dirs".into(),
        config.targets.iter().map(|t| t.path.clone()).collect(),
    );
    detail.insert("max_age_mins".into(), config.max_age_mins.into());
    detail.insert("max_file_size".into(), config.max_file_size.clone());
    detail.insert(
        "max_file_size_bytes".into(),
        config.max_file_size_bytes.into(),
    );

    let containers = match running_containers(worker) {
        Ok(Docker::Absent) => {
            detail.insert("docker".into(), "absent".into());
            Vec::new()
        }
        Ok(Docker::Running(names)) => {
            detail.insert("docker".into(), "present".into());
            names
        }
        Err(refusal) => {
            // The host reports the failure once per worker; this is the detail for debugging.
            worker.log(
                LogLevel::Debug,
                &format!("file_cleanup: {}", refusal.message),
            );
            detail.insert("docker".into(), refusal.docker.into());
            return Outcome::failed_with(refusal.message, detail);
        }
    };
    detail.insert("protected_containers".into(), containers.clone().into());

    let mut details = Map::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    let (mut files, mut dirs, mut missing) = (0usize, 0usize, 0usize);
    let mut aborted = false;
    for target in &config.targets {
        if aborted {
            details.insert(target.path.clone(), json!({ "result": "skipped" }));
            continue;
        }
        let run = clean_target(worker, target, &containers, config);
        files += run.files_deleted;
        dirs += run.dirs_deleted;
        missing += usize::from(run.not_found);
        if let Some(line) = run.failure {
            failures.push((target.path.clone(), line));
        }
        aborted = run.abort;
        details.insert(target.path.clone(), run.detail);
    }
    detail.insert("details".into(), details.into());

    worker.log(
        LogLevel::Info,
        &format!(
            "file_cleanup: deleted {files} files and {dirs} empty dirs in {} target dirs \
             ({missing} not found, {} failed); {} running containers protected",
            config.targets.len(),
            failures.len(),
            containers.len(),
        ),
    );
    if let Some((_, first_line)) = failures.first() {
        let dirs: Vec<&str> = failures.iter().map(|(d, _)| d.as_str()).collect();
        let message = format!("cleanup failed in {}: {first_line}", dirs.join(", "));
        return Outcome::failed_with(message, detail);
    }
    // `status` first, as in ROCK's result.
    let mut ordered = Map::from_iter([("status".to_string(), Value::from("success"))]);
    ordered.extend(detail);
    Outcome::success(Value::Object(ordered))
}

/// An argv [`Program`] from string slices.
fn argv<const N: usize>(args: [&str; N]) -> Program {
    Program::Argv(args.map(String::from).to_vec())
}

/// Whether Docker is installed, and which containers run.
enum Docker {
    /// No `docker` on the worker's PATH: nothing to protect.
    Absent,
    /// The names of the running containers.
    Running(Vec<String>),
}

/// Why nothing may be deleted on this worker.
struct Refusal {
    /// The outcome's `docker` field: `present` or `unknown`.
    docker: &'static str,
    /// The error message.
    message: String,
}

/// Lists running containers. Fails closed: Docker present but not answering, or answering
/// something that is not a list of names, is an error.
fn running_containers(worker: &mut impl Worker) -> Result<Docker, Refusal> {
    const REFUSE: &str = "refusing to delete anything";
    // One call: a worker without the docker CLI answers `not-found` (the host tells a missing
    // program apart from a failing one), which means no container can need protection.
    let refusal = |why: String| Refusal {
        docker: "present",
        message: format!(
            "docker is installed but listing running containers failed {why}; {REFUSE}"
        ),
    };
    let ps = match worker.execute(
        argv(["docker", "ps", "--format", "{{.Names}}"]),
        DOCKER_PS_TIMEOUT,
    ) {
        Ok(ps) => ps,
        Err(Error::NotFound(_)) => return Ok(Docker::Absent),
        Err(e @ Error::Unreachable(_)) => {
            return Err(Refusal {
                docker: "unknown",
                message: format!(
                    "could not check whether docker is installed ({}); {REFUSE}",
                    e.describe()
                ),
            });
        }
        Err(e) => return Err(refusal(format!("({})", e.describe()))),
    };
    if ps.exit_code != 0 {
        return Err(refusal(format!(
            "(exit {}): {}",
            ps.exit_code,
            head(ps.stderr.trim(), DOCKER_ERROR_HEAD_CHARS)
        )));
    }
    find::parse_container_names(&ps.stdout)
        .map(Docker::Running)
        .map_err(|why| refusal(format!("({why})")))
}

/// The result of cleaning one target directory.
struct TargetRun {
    /// The directory's entry in the outcome's `details`.
    detail: Value,
    /// The first error line, when the cleanup of this directory failed.
    failure: Option<String>,
    /// The worker became unreachable: skip the remaining directories.
    abort: bool,
    /// The directory does not exist (not an error).
    not_found: bool,
    files_deleted: usize,
    dirs_deleted: usize,
}

impl TargetRun {
    fn early(detail: Value, failure: Option<String>, abort: bool, not_found: bool) -> Self {
        TargetRun {
            detail,
            failure,
            abort,
            not_found,
            files_deleted: 0,
            dirs_deleted: 0,
        }
    }
}

/// Cleans one target: `test -d`, then the file `find`, then the empty-directory `find`.
fn clean_target(
    worker: &mut impl Worker,
    target: &TargetConfig,
    containers: &[String],
    config: &Config,
) -> TargetRun {
    let dir = target.path.as_str();
    match worker.execute(argv(["test", "-d", dir]), CHECK_TIMEOUT) {
        Ok(out) if out.exit_code == 0 => {}
        Ok(out) if out.exit_code == 1 => {
            return TargetRun::early(json!({ "result": "dir_not_found" }), None, false, true);
        }
        Ok(out) => {
            let error = format!(
                "test -d exited with {}: {}",
                out.exit_code,
                head(out.stderr.trim(), ERRORS_HEAD_CHARS)
            );
            let detail = json!({ "result": "check_failed", "error": error });
            return TargetRun::early(detail, Some(error), false, false);
        }
        Err(e) => {
            let error = format!("test -d did not finish ({})", e.describe());
            let detail = json!({ "result": "check_failed", "error": error });
            let abort = matches!(e, Error::Unreachable(_));
            return TargetRun::early(detail, Some(error), abort, false);
        }
    }

    let excl = find::exclusions(target, containers);
    let steps = [
        (
            "deleting files",
            find::delete_files_argv(dir, &excl, config.max_age_mins, config.max_file_size_bytes),
        ),
        (
            "pruning empty dirs",
            find::prune_dirs_argv(dir, &excl, config.max_age_mins),
        ),
    ];
    let mut listings = [Listing::default(), Listing::default()];
    let mut exit_code: Option<i32> = Some(0);
    let mut errors = String::new();
    let mut abort = false;
    for (i, (what, argv)) in steps.into_iter().enumerate() {
        if abort {
            break;
        }
        match worker.execute(Program::Argv(argv), FIND_TIMEOUT) {
            Ok(out) => {
                listings[i] = find::parse_listing(&out.stdout);
                if out.exit_code != 0 && exit_code.is_none_or(|c| c == 0) {
                    exit_code = Some(out.exit_code);
                }
                let stderr = out.stderr.trim();
                if !stderr.is_empty() {
                    errors.push_str(stderr);
                    errors.push('\n');
                } else if out.exit_code != 0 {
                    errors.push_str(&format!("find ({what}) exited with {}\n", out.exit_code));
                }
            }
            Err(e) => {
                if exit_code == Some(0) {
                    exit_code = None;
                }
                errors.push_str(&format!("find ({what}) did not finish: {}\n", e.describe()));
                abort = matches!(e, Error::Unreachable(_));
            }
        }
    }
    let [files, dirs] = listings;
    // Only a non-zero exit or an unfinished `find` fails the directory; stderr from a `find`
    // that exited 0 (a warning) is still shown in `errors`.
    let failure = (exit_code != Some(0)).then(|| {
        errors
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("find failed")
            .to_string()
    });
    let detail = json!({
        "exit_code": exit_code,
        "deleted_files": files.paths,
        "deleted_files_count": files.count,
        "deleted_dirs": dirs.paths,
        "deleted_dirs_count": dirs.count,
        "listing_truncated": files.truncated || dirs.truncated,
        "errors": head(errors.trim_end(), ERRORS_HEAD_CHARS),
    });
    TargetRun {
        detail,
        failure,
        abort,
        not_found: false,
        files_deleted: files.count,
        dirs_deleted: dirs.count,
    }
}
