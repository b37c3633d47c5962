//! # bench_noop: the benchmark's no-op task
//!
//! Params: `{"exec": n}` (default 0). With `n = 0` the run makes no host call at all, so a
//! tick costs exactly what the scheduler adds around a task (two status-file writes per worker,
//! instantiation, the call, the report); with `n > 0` it runs `true` (an argv, no shell) `n`
//! times on the worker.
//!
//! The benchmark needs many distinct plugins and many distinct versions of one plugin, built
//! once: `quarry-bench` copies the built component and overwrites [`NAME`] and [`VERSION`]
//! in place (same length, each found exactly once in the file), e.g. `bench_noop_zzzz` →
//! `bench_noop_0017`. The placeholders are chosen so that they occur nowhere else.

#![deny(missing_docs)]

use quarry_sdk::host::Command;
use quarry_sdk::{Metadata, Outcome, Task};
use serde::Deserialize;
use serde_json::json;

/// Task name; a placeholder patched by the benchmark (see the crate docs).
pub const NAME: &str = "bench_noop_zzzz";

/// Task version; a placeholder patched by the benchmark (see the crate docs).
pub const VERSION: &str = "1.0.0-vvvvvvvv";

/// The params.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// How many times to run `true` on the worker.
    #[serde(default)]
    pub exec: u32,
}

/// The task.
pub struct Noop;

impl Task for Noop {
    type Params = Params;
    type Config = Params;

    fn describe() -> Metadata {
        Metadata::new(NAME, VERSION)
            .idempotent(true)
            .default_interval_seconds(60)
            .params_doc("exec: number of `true` commands to run on the worker (default 0)")
    }

    fn check(params: Params) -> Result<Params, String> {
        Ok(params)
    }

    fn run(params: Params) -> Result<Outcome, String> {
        for _ in 0..params.exec {
            let out = Command::argv(["true"])
                .run()
                .map_err(|e| format!("true failed: {e}"))?;
            if out.exit_code != 0 {
                return Ok(Outcome::failed(format!("true exited with {}", out.exit_code)));
            }
        }
        Ok(Outcome::success(json!({ "status": "success", "version": VERSION })))
    }
}

quarry_sdk::export_task!(Noop);
