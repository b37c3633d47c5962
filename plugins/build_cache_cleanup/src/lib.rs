//! # build_cache_cleanup: Quarry's port of ROCK's `BuildCacheCleanupTask`
//!
//! On every worker, prunes the package caches of the configured build tools: `uv cache prune`
//! and `pip cache purge`. A tool that is not installed is skipped; a prune that fails fails
//! the run, naming the tool.
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw), their checks ([`params::Config`]) and
//!   the [`params::Tool`]s.
//! - this file: the task, and [`cleanup`], which reaches the worker only through the SDK's
//!   [`Worker`] trait ([`HostWorker`] in the component, the SDK's `FakeWorker` in the native
//!   tests).
//!
//! Differences from ROCK, on purpose: an unknown tool is a config error naming the value
//! (ROCK skipped it as "not installed"); each tool runs as its own argument vector (no shell)
//! with its own time limit, and reports its own exit code and output; a failed prune fails the
//! run (ROCK printed `<tool>: prune failed` and reported success). Whether a tool is installed
//! is learned from running it: a program the worker cannot find is "not installed".

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
use serde_json::{Map, json};

use crate::params::{Config, Params, Tool};

/// Time limit of each prune. Two tools fit the default 80 s run budget with room for the
/// status writes; `uv` waits for a cache lock held by a running `uv`, and a prune cut short
/// is simply redone by the next run.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters of a prune's output kept in the outcome.
const OUTPUT_HEAD_CHARS: usize = 1000;

/// The result of a tool that is not installed (ROCK's words).
const NOT_INSTALLED: &str = "skipped (not installed)";

/// The result of a pip whose cache is disabled (`PIP_NO_CACHE_DIR`, `no-cache-dir` in its
/// config): there is no cache to prune, which is not a failure.
const CACHE_DISABLED: &str = "skipped (cache disabled)";

/// The result of an installed tool in a dry run: its read-only command answered.
const WOULD_PRUNE: &str = "would prune";

/// What `quarry plugins` shows for this task.
const PARAMS_DOC: &str = "\
Prunes build-tool caches: `uv cache prune`, `pip cache purge`. Tools that are not installed are \
skipped; a prune that fails fails the run.
  tools: list, a subset of [\"uv\", \"pip\"] (default both).";

/// The task.
pub struct BuildCacheCleanup;

impl Task for BuildCacheCleanup {
    type Params = Params;
    type Config = Config;

    fn describe() -> Metadata {
        Metadata::new("build_cache_cleanup", "0.1.0")
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

    /// The configured tools (`uv cache prune`, `pip cache purge`); no files.
    fn grants(config: &Config) -> Option<Grants> {
        let grants = Grants::new().shell(false).dry_run(true);
        Some((config.tools.iter()).fold(grants, |g, t| g.program(t.prune_argv()[0])))
    }
}

// Exported only in the wasm build (see file_cleanup for why).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(BuildCacheCleanup);

/// Runs the cleanup on one worker with checked params.
pub fn cleanup(worker: &mut impl Worker, config: &Config) -> Outcome {
    // Strategy: for each tool in order, run its prune as an argv. Not found → not installed;
    // exit 0 → pruned; anything else → failed (the run fails, naming every failed tool). An
    // unreachable worker skips the remaining tools. A dry run runs each tool's read-only
    // command instead (`Tool::dry_run_argv`), which tells the same three cases apart.
    let dry_run = worker.dry_run();
    let mut details = Map::new();
    let mut failures: Vec<String> = Vec::new();
    let mut unreachable = false;
    for tool in &config.tools {
        let name = tool.name();
        if unreachable {
            details.insert(
                name.into(),
                json!({"installed": null, "result": "skipped (worker unreachable)"}),
            );
            continue;
        }
        let argv = if dry_run {
            tool.dry_run_argv()
        } else {
            tool.prune_argv()
        };
        let command = argv.join(" ");
        let entry = match worker.execute_argv(argv, PRUNE_TIMEOUT) {
            Err(Error::NotFound(_)) => json!({
                "installed": false,
                "result": NOT_INSTALLED,
                "exit_code": null,
                "output_head": "",
            }),
            Ok(out) => {
                let output = combined_output(&out);
                let result = if out.exit_code == 0 && dry_run {
                    WOULD_PRUNE
                } else if out.exit_code == 0 {
                    "pruned"
                } else if *tool == Tool::Pip && output.contains("cache is disabled") {
                    CACHE_DISABLED
                } else {
                    let first = output.lines().find(|l| !l.trim().is_empty());
                    failures.push(format!(
                        "{name}: `{command}` exited with {}{}",
                        out.exit_code,
                        first
                            .map(|l| format!(": {}", head(l.trim(), 300)))
                            .unwrap_or_default()
                    ));
                    "failed"
                };
                let mut entry = json!({
                    "installed": true,
                    "result": result,
                    "exit_code": out.exit_code,
                    "output_head": head(&output, OUTPUT_HEAD_CHARS),
                });
                if result == WOULD_PRUNE {
                    entry["would_run"] = tool.prune_argv().join(" ").into();
                }
                entry
            }
            Err(e) => {
                let error = e.describe();
                failures.push(format!("{name}: `{command}` did not finish ({error})"));
                unreachable = matches!(e, Error::Unreachable(_));
                json!({
                    "installed": null,
                    "result": "failed",
                    "exit_code": null,
                    "output_head": "",
                    "error": error,
                })
            }
        };
        details.insert(name.into(), entry);
    }

    let summary: Vec<String> = details
        .iter()
        .map(|(name, d)| format!("{name}: {}", d["result"].as_str().unwrap_or("?")))
        .collect();
    worker.log(
        LogLevel::Info,
        &format!("build_cache_cleanup: {}", summary.join(", ")),
    );
    let tools: Vec<&str> = config.tools.iter().map(|t| t.name()).collect();
    if !failures.is_empty() {
        let error = format!("build cache cleanup failed for {}", failures.join("; "));
        let failed = Outcome::failed(error);
        let failed = if dry_run {
            failed.with_detail("dry_run", true)
        } else {
            failed
        };
        return failed
            .with_detail("tools", json!(tools))
            .with_detail("details", details);
    }
    let mut result = json!({
        "status": "success",
        "tools": tools,
        "details": details,
    });
    if dry_run {
        result["dry_run"] = true.into();
    }
    Outcome::success(result)
}

/// stdout and stderr of a command, trimmed and joined by a newline.
fn combined_output(out: &Output) -> String {
    [out.stdout.trim(), out.stderr.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}
