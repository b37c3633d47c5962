//! # legacy: a task built for `quarry:task@0.1.0`
//!
//! Generated from `wit/quarry.wit` as it was at 0.1.0 (no `capabilities`, no `dry-run`), with
//! wit-bindgen directly. Its run executes `echo legacy` on the worker and reports the output:
//! `{"stdout": "legacy\n"}`.

#![deny(missing_docs)]

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "task-plugin" });
}

use bindings::exports::quarry::task::task::{Guest, Metadata, Outcome, Status};
use bindings::quarry::task::host;

struct Legacy;

impl Guest for Legacy {
    fn describe() -> Metadata {
        Metadata {
            name: "legacy".into(),
            version: "0.1.0".into(),
            idempotent: true,
            default_interval_seconds: 60,
            params_doc: "no params".into(),
        }
    }

    fn validate_config(_params: String) -> Result<(), String> {
        Ok(())
    }

    fn run(_params: String) -> Result<Outcome, String> {
        let cmd = host::Command {
            program: host::Program::Argv(vec!["echo".into(), "legacy".into()]),
            cwd: None,
            env: Vec::new(),
            timeout_ms: Some(5000),
        };
        let out = host::execute(&cmd).map_err(|e| format!("echo failed: {e:?}"))?;
        let stdout = out.stdout.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        Ok(Outcome {
            status: Status::Success,
            pid: None,
            detail: format!("{{\"stdout\": \"{stdout}\"}}"),
        })
    }
}

bindings::export!(Legacy with_types_in bindings);
