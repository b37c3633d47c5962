//! # image_cleanup: Quarry's port of ROCK's `ImageCleanupTask`
//!
//! Keeps [docuum](https://crates.io/crates/docuum) running on every worker (it evicts the
//! least recently used Docker images once they take more than `disk_threshold`, never those
//! matching `image_whitelist`) and, on every tick, prunes dangling images and the build cache
//! above `keep_build_storage`, whether docuum was already running or not.
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw) and their checks ([`params::Config`]).
//! - this file: the task, and [`tick`], which reaches the worker only through the SDK's
//!   [`Worker`] trait ([`HostWorker`] in the component, the SDK's `FakeWorker` running the
//!   scripts with this machine's `/bin/sh` in the native tests).
//!
//! The daemon: the task reports docuum's pid with a `success` outcome, so the host records it
//! and, on the next tick, hands it back through `previous-pid` only if that very process (same
//! start time, not a zombie) is still alive. Alive → prune only; gone or never started →
//! launch. Removing the task from the config stops docuum (the host kills the recorded pid).
//!
//! Differences from ROCK, on purpose: docuum is never downloaded (ROCK piped an install script
//! from the web into a shell): a worker without it fails with a message saying how to install
//! it; every value reaches the shell quoted (ROCK pasted the whitelist into single quotes);
//! a launch is checked one second later, so a docuum that exits at once (bad pattern, no
//! Docker) is a failed run with its exit status, not a `running` status with a dead pid; a
//! failed launch is retried on the next tick (no sticky failure); prune failures are reported
//! instead of masked; the whitelist and sizes are checked at config load.

#![deny(missing_docs)]

pub mod params;

#[cfg(test)]
mod native_tests;

use quarry_sdk::host::ErrorExt as _;
use quarry_sdk::text::head;
use std::time::Duration;

use quarry_sdk::host::{Command, Error, LogLevel};
use quarry_sdk::shell::quote;
use quarry_sdk::worker::{HostWorker, Worker};
use quarry_sdk::{Grants, Metadata, Outcome, Task};
use serde_json::{Map, Value, json};

use crate::params::{Config, Params};

/// Time limit of the prune: `docker builder prune` on a large cache can take a while.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(50);

/// Time limit of the launch script (it waits one second to see docuum survive its start).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Characters of the prune's output kept in the outcome (ROCK keeps 1000).
const OUTPUT_HEAD_CHARS: usize = 1000;

/// Marks, in a script's output, where the exit status of the command before it is printed.
const EXIT_MARK: &str = "@@quarry-exit=";

/// What `quarry plugins` shows for this task.
const PARAMS_DOC: &str = "\
Keeps docuum (LRU image eviction) running on every worker and prunes dangling images and the \
build cache on every tick. docuum must be installed on the worker (`cargo install --locked docuum`).
  disk_threshold: string (default \"1T\"): docuum --threshold, a size (\"500G\") or a share (\"70%\").
  image_whitelist: list of regexes (default []): docuum --keep, matched against repository:tag.
  keep_build_storage: string (default \"20GB\"): docker builder prune --keep-storage; null or \"\" \
turns the prune off.
  docuum_path: string (default \"docuum\"): program name on the worker's PATH or absolute path.
  log_file: absolute path (default $ROCK_LOGGING_PATH/docuum.log, else none): docuum's output.
  state_dir: absolute path (default docuum's): docuum's state (XDG_DATA_HOME).
  min_age: string (default none): docuum --min-age, e.g. \"2h\".";

/// The task.
pub struct ImageCleanup;

impl Task for ImageCleanup {
    type Params = Params;
    type Config = Config;

    fn describe() -> Metadata {
        Metadata::new("image_cleanup", "0.1.0")
            .idempotent(false)
            .default_interval_seconds(3600)
            .params_doc(PARAMS_DOC)
    }

    fn check(params: Params) -> Result<Config, String> {
        Config::from_params(&params)
    }

    fn run(config: Config) -> Result<Outcome, String> {
        Ok(tick(&mut HostWorker::new(), &config))
    }

    /// Two shell scripts (the prune runs `docker`; the launch finds or starts docuum through
    /// `/proc`), docuum's state directory and log file as targets.
    fn grants(config: &Config) -> Option<Grants> {
        let mut grants = Grants::new()
            .program("docker")
            .program(&config.docuum_path)
            .shell(true)
            .dry_run(true);
        for path in [&config.state_dir, &config.log_file].into_iter().flatten() {
            grants = grants.write_path(path);
        }
        Some(grants)
    }
}

// Exported only in the wasm build (see file_cleanup for why).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(ImageCleanup);

/// What the prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prune {
    /// Exit status of `docker image prune`, then of `docker builder prune`.
    pub exit_codes: Vec<i32>,
    /// Their output, merged, cut to [`OUTPUT_HEAD_CHARS`].
    pub output_head: String,
}

/// One tick on one worker: prune, then make sure docuum runs.
pub fn tick(worker: &mut impl Worker, config: &Config) -> Outcome {
    // Strategy: the prune comes first and always runs (ROCK's order); its failure does not
    // stop the daemon check. Then: docuum alive (the host vouches for the pid) → prune only;
    // else launch and check. The outcome always carries docuum's pid when one runs, even when
    // the run failed, so that the host keeps it on record and never starts a second one.
    //
    // A dry run makes only read-only calls: it lists what the prune would remove
    // (`would_prune`) and looks for docuum as a launch would, without starting it
    // (`would_launch`, `would_adopt`); a live docuum on record is kept on record as a real
    // tick keeps it.
    let dry_run = worker.dry_run();
    let mut detail = Map::new();
    if dry_run {
        detail.insert("dry_run".into(), true.into());
    }
    let mut errors: Vec<String> = Vec::new();
    match &config.keep_build_storage {
        None => {
            detail.insert("prune".into(), "off".into());
        }
        Some(keep) if dry_run => match prune_preview(worker, keep) {
            Ok(preview) => {
                detail.insert("would_prune".into(), preview);
            }
            Err(why) => errors.push(why),
        },
        Some(keep) => match prune(worker, keep) {
            Ok(p) => {
                detail.insert(
                    "prune_exit_code".into(),
                    p.exit_codes
                        .iter()
                        .copied()
                        .find(|c| *c != 0)
                        .unwrap_or(0)
                        .into(),
                );
                detail.insert("prune_output_head".into(), p.output_head.clone().into());
                if let Some(code) = p.exit_codes.iter().find(|c| **c != 0) {
                    let first = p.output_head.lines().find(|l| !l.trim().is_empty());
                    errors.push(format!(
                        "the prune exited with {code}{}",
                        first.map(|l| format!(": {}", l.trim())).unwrap_or_default()
                    ));
                }
            }
            Err(e) => errors.push(format!("the prune did not run: {}", e.describe())),
        },
    }
    detail.insert(
        "keep_build_storage".into(),
        json!(config.keep_build_storage),
    );
    detail.insert(
        "disk_threshold".into(),
        config.disk_threshold.clone().into(),
    );
    detail.insert("image_whitelist".into(), json!(config.image_whitelist));

    let pid = match worker.previous_pid() {
        Some(pid) => {
            detail.insert("action".into(), "prune_only".into());
            Some(pid)
        }
        None => match launch(worker, config, dry_run) {
            Ok(Launched::Started(pid)) => {
                worker.log(
                    LogLevel::Info,
                    &format!("image_cleanup: docuum started (pid {pid})"),
                );
                detail.insert("action".into(), "launched".into());
                Some(pid)
            }
            Ok(Launched::Adopted(pid)) if dry_run => {
                // Not taken on record: a dry run changes nothing, not even the host's memory.
                detail.insert("action".into(), "would_adopt".into());
                detail.insert("adoptable_pid".into(), pid.into());
                None
            }
            Ok(Launched::WouldStart) => {
                detail.insert("action".into(), "would_launch".into());
                detail.insert(
                    "would_start".into(),
                    docuum_command(config).join(" ").into(),
                );
                None
            }
            Ok(Launched::Adopted(pid)) => {
                worker.log(
                    LogLevel::Info,
                    &format!(
                        "image_cleanup: docuum with this task's command line already runs (pid {pid}); adopted, not started again"
                    ),
                );
                detail.insert("action".into(), "adopted".into());
                Some(pid)
            }
            Err(why) => {
                detail.insert("action".into(), "launch_failed".into());
                errors.push(why);
                None
            }
        },
    };
    if let Some(pid) = pid {
        detail.insert("pid".into(), pid.into());
    }
    if errors.is_empty() {
        let mut ordered = Map::from_iter([("status".to_string(), Value::from("success"))]);
        ordered.extend(detail);
        return match pid {
            Some(pid) => Outcome::managing(pid, Value::Object(ordered)),
            None => Outcome::success(Value::Object(ordered)),
        };
    }
    let mut outcome = Outcome::failed_with(errors.join("; "), detail);
    outcome.pid = pid;
    outcome
}

/// The prune script: dangling images, then the build cache above `keep`; each exit status is
/// printed after its output.
pub fn prune_script(keep: &str) -> String {
    format!(
        "docker image prune -f 2>&1; echo \"{EXIT_MARK}$?\"; \
         docker builder prune -f --keep-storage {} 2>&1; echo \"{EXIT_MARK}$?\"",
        quote(keep)
    )
}

/// Dangling images listed in a dry run's `would_prune`; the count is exact.
const DANGLING_LIST_MAX: usize = 50;

/// Time limit of each read-only docker call of a dry run.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(20);

/// What the prune would remove, from read-only calls: the dangling images (`docker image ls
/// --filter dangling=true`, which `docker image prune` removes unless a container uses one)
/// and the build cache's size and reclaimable part (`docker system df`), which `docker
/// builder prune` cuts down to `keep`.
fn prune_preview(worker: &mut impl Worker, keep: &str) -> Result<Value, String> {
    let mut run = |argv: &[&str]| -> Result<String, String> {
        let what = argv.join(" ");
        match worker.execute_argv(argv.iter().copied(), PREVIEW_TIMEOUT) {
            Ok(out) if out.exit_code == 0 => Ok(out.stdout),
            Ok(out) => Err(format!(
                "the prune preview `{what}` exited with {}: {}",
                out.exit_code,
                head(out.stderr.trim(), 300)
            )),
            Err(e) => Err(format!(
                "the prune preview `{what}` did not run: {}",
                e.describe()
            )),
        }
    };
    let images = run(&[
        "docker",
        "image",
        "ls",
        "--filter",
        "dangling=true",
        "--no-trunc",
        "--format",
        "{{.ID}}",
    ])?;
    let df = run(&[
        "docker",
        "system",
        "df",
        "--format",
        "{{.Type}}\t{{.Size}}\t{{.Reclaimable}}",
    ])?;
    let dangling: Vec<&str> = images
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let build_cache = df.lines().find_map(|l| {
        let mut fields = l.split('\t');
        (fields.next() == Some("Build Cache"))
            .then(|| json!({"size": fields.next(), "reclaimable": fields.next()}))
    });
    Ok(json!({
        "dangling_images": dangling.iter().take(DANGLING_LIST_MAX).collect::<Vec<_>>(),
        "dangling_images_count": dangling.len(),
        "build_cache": build_cache,
        "keep_storage": keep,
    }))
}

/// Runs the prune (one call) and reads both exit statuses.
fn prune(worker: &mut impl Worker, keep: &str) -> Result<Prune, Error> {
    let out = worker.execute(&Command::shell(prune_script(keep)).timeout(PRUNE_TIMEOUT))?;
    let mut exit_codes = Vec::new();
    let mut text = String::new();
    for line in out.stdout.lines() {
        match line.strip_prefix(EXIT_MARK) {
            Some(code) => exit_codes.push(code.trim().parse().unwrap_or(-1)),
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    if exit_codes.len() != 2 {
        // The script did not get to its end (killed, or a shell that is not POSIX).
        exit_codes.push(if out.exit_code == 0 {
            -1
        } else {
            out.exit_code
        });
    }
    text.push_str(out.stderr.trim());
    Ok(Prune {
        exit_codes,
        output_head: head(text.trim(), OUTPUT_HEAD_CHARS).to_string(),
    })
}

/// The launch script: checks that docuum is installed; adopts a live docuum that runs with
/// exactly this task's arguments (one launched by a Quarry that was killed before it could
/// record the pid: two must never run); else starts it detached with its output in the log,
/// waits one second and prints its pid if it is still alive, else its exit status and the end
/// of its log.
///
/// A process matches when its `comm` is the program's file name (cut to the kernel's 15 bytes)
/// and its command line ends with exactly the arguments the task would pass (so a `docuum`
/// found on `PATH`, an absolute path or a script interpreter in front all match).
pub fn launch_script(config: &Config) -> String {
    let (find, start) = launch_script_parts(config);
    find + &start
}

/// What a dry run asks instead of [`launch_script`]: its first part only (is docuum installed,
/// does one with this task's arguments already run: read-only), then [`WOULD_START_MARK`]
/// where the real script would start it.
pub fn dry_launch_script(config: &Config) -> String {
    let (find, _) = launch_script_parts(config);
    format!("{find}echo '{WOULD_START_MARK}'\n")
}

/// Marks, in the dry run's launch script output, that docuum would be started.
const WOULD_START_MARK: &str = "@@quarry-would-start";

/// docuum's command line as the launch script runs it, every value quoted.
pub fn docuum_command(config: &Config) -> Vec<String> {
    let mut docuum = vec![
        quote(&config.docuum_path),
        "--threshold".into(),
        quote(&config.disk_threshold),
    ];
    for pattern in &config.image_whitelist {
        docuum.push("--keep".into());
        docuum.push(quote(pattern));
    }
    if let Some(age) = &config.min_age {
        docuum.push("--min-age".into());
        docuum.push(quote(age));
    }
    docuum
}

/// The launch script in two parts: the read-only one that checks that docuum is installed and
/// looks for a docuum to adopt (it exits when it finds one), and the one that starts it.
fn launch_script_parts(config: &Config) -> (String, String) {
    let docuum = docuum_command(config);
    let log = match &config.log_file {
        Some(path) => quote(path),
        None => "\"${ROCK_LOGGING_PATH:+$ROCK_LOGGING_PATH/docuum.log}\"".into(),
    };
    let state = match &config.state_dir {
        Some(dir) => format!(
            "XDG_DATA_HOME={}; export XDG_DATA_HOME; mkdir -p \"$XDG_DATA_HOME\" || exit 3\n",
            quote(dir)
        ),
        None => String::new(),
    };
    let args = docuum[1..].join(" ");
    let base = config
        .docuum_path
        .rsplit('/')
        .next()
        .unwrap_or(&config.docuum_path);
    let comm: String = base
        .chars()
        .scan(0, |n, c| {
            *n += c.len_utf8();
            (*n <= 15).then_some(c)
        })
        .collect();
    let find = format!(
        "command -v {prog} >/dev/null 2>&1 || {{ echo '@@quarry-missing'; exit 0; }}\n\
         want=$(printf '\\n%s' {args})\n\
         for d in /proc/[0-9]*; do\n\
         \x20 {{ read -r c < \"$d/comm\"; }} 2>/dev/null || continue\n\
         \x20 [ \"$c\" = {comm} ] || continue\n\
         \x20 got=$(tr '\\0' '\\n' < \"$d/cmdline\" 2>/dev/null) || continue\n\
         \x20 case \"$got\" in *\"$want\") ;; *) continue;; esac\n\
         \x20 st=$(sed 's/.*) //' \"$d/stat\" 2>/dev/null | cut -d' ' -f1)\n\
         \x20 [ -n \"$st\" ] && [ \"$st\" != Z ] && {{ echo \"@@quarry-adopted=${{d#/proc/}}\"; exit 0; }}\n\
         done\n",
        prog = quote(&config.docuum_path),
        comm = quote(&comm),
    );
    let start = format!(
        "log={log}; [ -n \"$log\" ] || log=/dev/null\n\
         {state}\
         nohup {cmd} >>\"$log\" 2>&1 </dev/null &\n\
         pid=$!\n\
         sleep 1\n\
         state=$(sed 's/.*) //' \"/proc/$pid/stat\" 2>/dev/null | cut -d' ' -f1)\n\
         if [ -n \"$state\" ] && [ \"$state\" != Z ]; then echo \"@@quarry-pid=$pid\"; exit 0; fi\n\
         wait \"$pid\"; echo \"{EXIT_MARK}$?\"\n\
         [ \"$log\" = /dev/null ] || tail -n 5 \"$log\"\n",
        cmd = docuum.join(" "),
    );
    (find, start)
}

/// What [`launch`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launched {
    /// Started docuum: its pid.
    Started(u32),
    /// A docuum with this task's arguments already ran: its pid.
    Adopted(u32),
    /// A dry run: docuum is installed, none runs, a real run would start it.
    WouldStart,
}

/// Starts (or adopts) docuum; its pid, or why it is not running. In a dry run, only looks
/// ([`dry_launch_script`]).
fn launch(worker: &mut impl Worker, config: &Config, dry_run: bool) -> Result<Launched, String> {
    let script = if dry_run {
        dry_launch_script(config)
    } else {
        launch_script(config)
    };
    let out = worker
        .execute(&Command::shell(script).timeout(LAUNCH_TIMEOUT))
        .map_err(|e| format!("launching docuum failed: {}", e.describe()))?;
    let stdout = out.stdout.trim();
    if stdout.contains("@@quarry-missing") {
        return Err(format!(
            "docuum is not installed on this worker ({:?} is not on the worker agent's PATH). \
             Install it with `cargo install --locked docuum` and put it on that PATH, or set \
             docuum_path to its absolute path; Quarry never downloads installers.",
            config.docuum_path
        ));
    }
    let marked = |mark: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(mark))
            .and_then(|p| p.trim().parse::<u32>().ok())
    };
    if let Some(pid) = marked("@@quarry-adopted=") {
        return Ok(Launched::Adopted(pid));
    }
    if let Some(pid) = marked("@@quarry-pid=") {
        return Ok(Launched::Started(pid));
    }
    if dry_run && stdout.lines().any(|l| l == WOULD_START_MARK) {
        return Ok(Launched::WouldStart);
    }
    let exit = stdout
        .lines()
        .find_map(|l| l.strip_prefix(EXIT_MARK))
        .map(|c| c.trim().to_string());
    let tail: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("@@quarry-"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut why = match exit {
        Some(code) => format!("docuum exited with {code} right after its start"),
        None => format!(
            "the launch script exited with {}: {}",
            out.exit_code,
            head(out.stderr.trim(), 300)
        ),
    };
    let stderr = out.stderr.trim();
    if !tail.is_empty() {
        why.push_str(": ");
        why.push_str(head(&tail.join(" | "), 500));
    } else if !stderr.is_empty() {
        // The shell's own complaint, e.g. a log file it cannot create.
        why.push_str(": ");
        why.push_str(head(stderr, 500));
    } else if config.log_file.is_none() {
        why.push_str(" (set log_file to keep its output)");
    }
    Err(why)
}
