//! # file_cleanup: Quarry's port of ROCK's `FileCleanupTask`
//!
//! On every worker, deletes files under the configured target directories that are older than
//! `max_age_mins` or larger than `max_file_size`, then removes empty directories that old.
//! Directories of running Docker containers are never touched (fail closed: if Docker is
//! installed but its containers cannot be listed, nothing is deleted).
//!
//! A run makes exactly ONE `execute` per worker, whatever the number of targets (plus the
//! host's two status writes): `bash -c SCRIPT file_cleanup <args…>`, where SCRIPT is the
//! constant [`script::SCRIPT`] and every configured value is a positional argument, only ever
//! expanded inside double quotes by the script (no `eval`), so no value can inject anything.
//! ROCK makes 1 + T executes for T targets (`docker ps`, then one shell per target).
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw) and their checks ([`params::Config`]).
//! - [`find`]: the `find` expressions and exclusion mapping (pure).
//! - [`script`]: the worker script, its argument vector and the reader of its NUL-separated
//!   records (pure).
//! - this file: the task, and [`cleanup`], which reaches the worker only through the SDK's
//!   [`Worker`] trait ([`HostWorker`] in the component, the SDK's `FakeWorker` running the
//!   argv for real in the native tests, so that the script meets the real bash and GNU
//!   `find`) and turns the script's report into the outcome.
//!
//! Differences from ROCK, on purpose: configured values never become shell text; `find`
//! errors are reported instead of masked, and a `find` that runs out of time is reported as
//! such (the next run continues: `find` is idempotent); the outcome lists what was deleted;
//! Docker is optional (absent = nothing to protect); the target directory itself is never
//! deleted; the Miniforge root is protected even below a target such as `/tmp`; a target that
//! exists but is not a directory is an error, not "not found".

#![deny(missing_docs)]

pub mod find;
pub mod params;
pub mod script;

#[cfg(test)]
mod native_tests;

use quarry_sdk::host::ErrorExt as _;
use std::time::Duration;

use quarry_sdk::host::{Error, LogLevel};
use quarry_sdk::worker::{HostWorker, Worker};
use quarry_sdk::{Grants, Metadata, Outcome, Task};
use serde_json::{Map, Value, json};

use crate::find::{Mode, head};
use crate::params::{Config, Params};
use crate::script::{DockerSeen, Listing, PassExit, ScriptReport, TargetSeen};

/// The worker script's own time budget for a whole run. The host caps one execute at its
/// per-call limit (`quarry.call_timeout_seconds`, 60 s by default, at most 70 s, below the
/// rocklet's 85 s request cap); the script must finish on its own before that, so that a slow
/// `find` is reported per target (timed out, the rest skipped) instead of the whole run being
/// killed with its report. Each `find` runs under `timeout <seconds left>`.
pub const SCRIPT_BUDGET: Duration = Duration::from_secs(55);

/// Asked of the host above [`SCRIPT_BUDGET`] for the one execute: the last `find`'s kill grace
/// (`timeout -k 2`) and the listing of its output. 55 + 5 s is the host's default call limit.
const EXECUTE_MARGIN: Duration = Duration::from_secs(5);

/// Exit status of GNU `timeout` when the limit expired (SIGTERM)...
const EXIT_TIMED_OUT: i32 = 124;
/// ... and when it had to SIGKILL the command.
const EXIT_KILLED: i32 = 137;

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
    type Config = Config;

    fn describe() -> Metadata {
        Metadata::new("file_cleanup", "0.1.0")
            .idempotent(true)
            .default_interval_seconds(86_400)
            .params_doc(PARAMS_DOC)
    }

    fn check(params: Params) -> Result<Config, String> {
        Config::from_params(&params)
    }

    fn run(config: Config) -> Result<Outcome, String> {
        Ok(cleanup(&mut HostWorker::new(), &config, SCRIPT_BUDGET))
    }

    /// One program, `bash` (the script runs `find` and the rest inside it), acting on the
    /// target directories only.
    fn grants(config: &Config) -> Option<Grants> {
        let grants = Grants::new().program("bash").shell(false).dry_run(true);
        Some((config.targets.iter()).fold(grants, |g, t| g.write_path(&t.path)))
    }
}

// Exported only in the wasm build: natively (for `cargo test`) the cdylib's linker version
// script cannot hold the component export names (`quarry:task/task@0.1.1#run` has a `:`).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(FileCleanup);

/// The two passes, as named in messages.
const PASS_NAMES: [&str; 2] = ["deleting files", "pruning empty dirs"];

/// Runs the cleanup on one worker with checked params; the worker script gets `budget` (whole
/// seconds) for all its work.
pub fn cleanup(worker: &mut impl Worker, config: &Config, budget: Duration) -> Outcome {
    // Strategy: with no targets, succeed without touching the worker. Otherwise one execute
    // runs the constant script, which lists the running containers (fail closed) and cleans
    // every target with two `find`s; its NUL-separated records are read back into
    // per-directory results. A refusal (docker trouble, bad arguments) deleted nothing; any
    // failed, timed-out or unfinished `find` fails the run, with every directory's details.
    // A dry run is the same execute with passes that only list (`would_delete_*`).
    let mode = if worker.dry_run() {
        Mode::DryRun
    } else {
        Mode::Delete
    };
    let mut detail = Map::new();
    if mode == Mode::DryRun {
        detail.insert("dry_run".into(), true.into());
    }
    if config.targets.is_empty() {
        let mut ordered = Map::from_iter([
            ("status".to_string(), Value::from("success")),
            ("message".to_string(), Value::from(NO_TARGETS_MESSAGE)),
        ]);
        ordered.extend(detail);
        return Outcome::success(Value::Object(ordered));
    }
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

    let budget = Duration::from_secs(budget.as_secs().max(1));
    let argv = script::argv(config, budget, mode);
    let out = match worker.execute_argv(argv, budget + EXECUTE_MARGIN) {
        Ok(out) => out,
        Err(e) => return execute_failed(worker, e, config, detail),
    };
    let report = script::parse(&out.stdout);
    let script_stderr = out.stderr.trim();
    if !script_stderr.is_empty() {
        worker.log(
            LogLevel::Debug,
            &format!(
                "file_cleanup: the worker script's stderr: {}",
                head(script_stderr, ERRORS_HEAD_CHARS)
            ),
        );
    }
    // Why targets without a result did not finish.
    let unfinished = if let Some(problem) = &report.problem {
        format!("the worker script's output is malformed ({problem})")
    } else if report.cut_by_host {
        "the worker script's output was cut at the host's size limit".to_string()
    } else {
        format!(
            "the worker script stopped early (exit {}{}{})",
            out.exit_code,
            if script_stderr.is_empty() { "" } else { ": " },
            head(script_stderr, DOCKER_ERROR_HEAD_CHARS)
        )
    };

    let containers = match check_docker(&report, &unfinished) {
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
    for (i, target) in config.targets.iter().enumerate() {
        let run = target_result(
            &target.path,
            report.targets.get(i),
            budget,
            &unfinished,
            mode,
        );
        files += run.files_deleted;
        dirs += run.dirs_deleted;
        missing += usize::from(run.not_found);
        if let Some(line) = run.failure {
            failures.push((target.path.clone(), line));
        }
        details.insert(target.path.clone(), run.detail);
    }
    detail.insert("details".into(), details.into());
    if let Some(problem) = report.problem.as_deref().filter(|_| failures.is_empty()) {
        // Every target reported, yet something else broke the protocol: worth a look.
        worker.log(
            LogLevel::Warn,
            &format!("file_cleanup: the worker script's output is malformed: {problem}"),
        );
    }

    worker.log(
        LogLevel::Info,
        &format!(
            "file_cleanup: {} {files} files and {dirs} empty dirs in {} target dirs \
             ({missing} not found, {} failed); {} running containers protected",
            match mode {
                Mode::Delete => "deleted",
                Mode::DryRun => "dry run: would delete",
            },
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

/// The outcome when the one execute brought no output: the script did not run (bash missing,
/// worker unreachable) or did not finish (killed at the host's limit, output refused).
fn execute_failed(
    worker: &mut impl Worker,
    e: Error,
    config: &Config,
    mut detail: Map<String, Value>,
) -> Outcome {
    detail.insert("docker".into(), "unknown".into());
    let message = match &e {
        Error::NotFound(_) => format!(
            "cannot run the cleanup script ({}); nothing was deleted",
            e.describe()
        ),
        _ => {
            let error = format!("did not finish: {}", e.describe());
            let entry = json!({ "result": "did_not_finish", "error": error });
            let details: Map<String, Value> = config
                .targets
                .iter()
                .map(|t| (t.path.clone(), entry.clone()))
                .collect();
            detail.insert("details".into(), details.into());
            format!("the cleanup script did not finish ({})", e.describe())
        }
    };
    worker.log(LogLevel::Debug, &format!("file_cleanup: {message}"));
    Outcome::failed_with(message, detail)
}

/// Whether Docker is installed, and which containers run.
enum Docker {
    /// No `docker` on the worker's PATH: nothing to protect.
    Absent,
    /// The names of the running containers.
    Running(Vec<String>),
}

/// Why nothing was deleted on this worker.
struct Refusal {
    /// The outcome's `docker` field: `present` or `unknown`.
    docker: &'static str,
    /// The error message.
    message: String,
}

/// Reads the script's Docker report. Fails closed: Docker present but not answering, or
/// answering something that is not a list of names, is an error (and the script then deleted
/// nothing); so is a report that stops before Docker's state.
fn check_docker(report: &ScriptReport, unfinished: &str) -> Result<Docker, Refusal> {
    const REFUSE: &str = "refusing to delete anything";
    let refusal = |why: String| Refusal {
        docker: "present",
        message: format!(
            "docker is installed but listing running containers failed {why}; {REFUSE}"
        ),
    };
    if let Some(reason) = &report.fatal {
        return Err(Refusal {
            docker: "unknown",
            message: format!("the cleanup script refused to start: {reason}; nothing was deleted"),
        });
    }
    match &report.docker {
        None => Err(Refusal {
            docker: "unknown",
            message: format!("could not list running containers ({unfinished}); {REFUSE}"),
        }),
        Some(DockerSeen::Absent) => Ok(Docker::Absent),
        Some(DockerSeen::Present(names)) => {
            for name in names {
                find::check_container_name(name).map_err(|why| refusal(format!("({why})")))?;
            }
            Ok(Docker::Running(names.clone()))
        }
        Some(DockerSeen::Failed { exit_code, .. })
            if *exit_code == EXIT_TIMED_OUT || *exit_code == EXIT_KILLED =>
        {
            Err(refusal(format!(
                "(timeout: docker ps timed out after {} s)",
                script::DOCKER_PS_TIMEOUT.as_secs()
            )))
        }
        Some(DockerSeen::Failed { exit_code, stderr }) => Err(refusal(format!(
            "(exit {exit_code}): {}",
            head(stderr.trim(), DOCKER_ERROR_HEAD_CHARS)
        ))),
        Some(DockerSeen::BadName(line)) => {
            Err(refusal(format!("({})", find::not_a_container_name(line))))
        }
    }
}

/// The result of cleaning one target directory.
struct TargetRun {
    /// The directory's entry in the outcome's `details`.
    detail: Value,
    /// The first error line, when the cleanup of this directory failed.
    failure: Option<String>,
    /// The directory does not exist (not an error).
    not_found: bool,
    files_deleted: usize,
    dirs_deleted: usize,
}

impl TargetRun {
    fn early(detail: Value, failure: Option<String>) -> Self {
        TargetRun {
            detail,
            failure,
            not_found: false,
            files_deleted: 0,
            dirs_deleted: 0,
        }
    }

    fn check_failed(error: String) -> Self {
        let detail = json!({ "result": "check_failed", "error": error });
        TargetRun::early(detail, Some(error))
    }
}

/// One target's result from what the script reported about it (`None`: nothing, because the
/// output stopped earlier for the reason `unfinished`).
fn target_result(
    dir: &str,
    seen: Option<&TargetSeen>,
    budget: Duration,
    unfinished: &str,
    mode: Mode,
) -> TargetRun {
    let passes = match seen {
        None => {
            let error = format!("did not finish: {unfinished}");
            let detail = json!({ "result": "did_not_finish", "error": error });
            return TargetRun::early(detail, Some(error));
        }
        Some(TargetSeen::Missing) => {
            let mut run = TargetRun::early(json!({ "result": "dir_not_found" }), None);
            run.not_found = true;
            return run;
        }
        Some(TargetSeen::NotADirectory) => {
            return TargetRun::check_failed(format!("{dir} exists but is not a directory"));
        }
        Some(TargetSeen::NoAccess) => {
            return TargetRun::check_failed(format!(
                "cannot tell whether {dir} exists: a parent directory is not searchable"
            ));
        }
        Some(TargetSeen::Skipped) => {
            return TargetRun::early(json!({ "result": "skipped" }), None);
        }
        Some(TargetSeen::Cleaned(passes)) => passes,
    };

    let budget_spent = format!("the run's time budget of {} s ran out", budget.as_secs());
    let mut listings = [Listing::default(), Listing::default()];
    let mut exit_code: Option<i32> = Some(0);
    let mut errors = String::new();
    for (i, what) in PASS_NAMES.iter().enumerate() {
        let Some(pass) = passes.get(i) else {
            listings[i].truncated = true;
            if exit_code == Some(0) {
                exit_code = None;
            }
            errors.push_str(&format!("find ({what}) did not finish: {unfinished}\n"));
            continue;
        };
        listings[i] = pass.listing.clone();
        let stderr = pass.stderr.trim();
        match pass.exit {
            PassExit::Code(code) => {
                if code != 0 && exit_code == Some(0) {
                    exit_code = Some(code);
                }
                if code == EXIT_TIMED_OUT || code == EXIT_KILLED {
                    errors.push_str(&format!(
                        "find ({what}) timed out: {budget_spent} (the next run continues)\n"
                    ));
                } else if code != 0 && stderr.is_empty() {
                    errors.push_str(&format!("find ({what}) exited with {code}\n"));
                }
            }
            PassExit::NotStarted => {
                if exit_code == Some(0) {
                    exit_code = None;
                }
                errors.push_str(&format!("find ({what}) not started: {budget_spent}\n"));
            }
            PassExit::Unknown => {
                if exit_code == Some(0) {
                    exit_code = None;
                }
                errors.push_str(&format!("find ({what}) did not finish: {unfinished}\n"));
            }
        }
        if !stderr.is_empty() {
            errors.push_str(stderr);
            errors.push('\n');
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
    // A dry run's listings are what a real run would delete, named so.
    let verb = match mode {
        Mode::Delete => "deleted",
        Mode::DryRun => "would_delete",
    };
    let detail = Value::Object(Map::from_iter([
        ("exit_code".to_string(), json!(exit_code)),
        (format!("{verb}_files"), json!(files.paths)),
        (format!("{verb}_files_count"), json!(files.count)),
        (format!("{verb}_dirs"), json!(dirs.paths)),
        (format!("{verb}_dirs_count"), json!(dirs.count)),
        (
            "listing_truncated".to_string(),
            json!(files.truncated || dirs.truncated),
        ),
        (
            "errors".to_string(),
            json!(head(errors.trim_end(), ERRORS_HEAD_CHARS)),
        ),
    ]));
    TargetRun {
        detail,
        failure,
        not_found: false,
        files_deleted: files.count,
        dirs_deleted: dirs.count,
    }
}
