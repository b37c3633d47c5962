//! The whole [`crate::cleanup`] against a fake [`crate::Worker`] on which each tool is absent,
//! works, fails or hangs.

use std::collections::BTreeMap;
use std::time::Duration;

use quarry_sdk::Status;
use quarry_sdk::host::{Error, LogLevel, Output};
use serde_json::{Value, json};

use crate::Worker;
use crate::cleanup;
use crate::params::{Config, Tool};

fn output(exit_code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit_code,
    }
}

fn not_found(program: &str) -> Result<Output, Error> {
    Err(Error::NotFound(format!(
        "worker 127.0.0.1:1: execute: program {program:?} not found on the worker"
    )))
}

struct FakeWorker {
    answers: BTreeMap<&'static str, Result<Output, Error>>,
    calls: Vec<Vec<String>>,
    logs: Vec<(LogLevel, String)>,
}

impl FakeWorker {
    fn new(uv: Result<Output, Error>, pip: Result<Output, Error>) -> Self {
        FakeWorker {
            answers: BTreeMap::from([("uv", uv), ("pip", pip)]),
            calls: Vec::new(),
            logs: Vec::new(),
        }
    }
}

impl Worker for FakeWorker {
    fn execute(&mut self, argv: &[&str], timeout: Duration) -> Result<Output, Error> {
        assert!(timeout > Duration::ZERO && timeout <= Duration::from_secs(30));
        self.calls
            .push(argv.iter().map(|s| s.to_string()).collect());
        self.answers[argv[0]].clone()
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}

fn run(w: &mut FakeWorker, tools: &[Tool]) -> (Status, Value) {
    let o = cleanup(
        w,
        &Config {
            tools: tools.to_vec(),
        },
    );
    (o.status, Value::Object(o.detail))
}

#[test]
fn both_tools_pruned() {
    let mut w = FakeWorker::new(
        Ok(output(0, "", "Removed 12 files (3.4MiB)\n")),
        Ok(output(0, "Files removed: 7\n", "")),
    );
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Success);
    assert_eq!(
        d,
        json!({
            "status": "success",
            "tools": ["uv", "pip"],
            "details": {
                "uv": {"installed": true, "result": "pruned", "exit_code": 0,
                       "output_head": "Removed 12 files (3.4MiB)"},
                "pip": {"installed": true, "result": "pruned", "exit_code": 0,
                        "output_head": "Files removed: 7"},
            }
        })
    );
    assert_eq!(
        w.calls,
        [["uv", "cache", "prune"], ["pip", "cache", "purge"]]
    );
    assert!(
        w.logs
            .iter()
            .any(|(_, m)| m == "build_cache_cleanup: uv: pruned, pip: pruned")
    );
}

#[test]
fn a_missing_tool_is_skipped() {
    let mut w = FakeWorker::new(not_found("uv"), Ok(output(0, "Files removed: 0\n", "")));
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Success);
    assert_eq!(
        d["details"]["uv"],
        json!({"installed": false, "result": "skipped (not installed)", "exit_code": null,
               "output_head": ""})
    );
    assert_eq!(d["details"]["pip"]["result"], "pruned");
}

#[test]
fn only_the_configured_tools_run() {
    let mut w = FakeWorker::new(not_found("uv"), Ok(output(0, "", "")));
    let (status, d) = run(&mut w, &[Tool::Pip]);
    assert_eq!(status, Status::Success);
    assert_eq!(d["tools"], json!(["pip"]));
    assert_eq!(w.calls, [["pip", "cache", "purge"]]);
    let (status, d) = run(&mut w, &[]);
    assert_eq!(status, Status::Success);
    assert_eq!(d["details"], json!({}));
}

#[test]
fn a_failed_prune_fails_the_run_and_names_the_tool() {
    let mut w = FakeWorker::new(
        Ok(output(
            2,
            "",
            "error: Failed to prune cache at: /root/.cache/uv\n  Caused by: Permission denied (os error 13)\n",
        )),
        Ok(output(0, "Files removed: 1\n", "")),
    );
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Failed);
    assert_eq!(
        d["error"],
        "build cache cleanup failed for uv: `uv cache prune` exited with 2: error: Failed to \
         prune cache at: /root/.cache/uv"
    );
    assert_eq!(d["details"]["uv"]["result"], "failed");
    assert_eq!(d["details"]["uv"]["exit_code"], 2);
    assert!(
        d["details"]["uv"]["output_head"]
            .as_str()
            .unwrap()
            .contains("Permission denied")
    );
    assert_eq!(d["details"]["pip"]["result"], "pruned", "pip still ran");
    assert_eq!(d["tools"], json!(["uv", "pip"]));
}

#[test]
fn a_pip_without_cache_is_not_a_failure() {
    let mut w = FakeWorker::new(
        not_found("uv"),
        Ok(output(
            1,
            "",
            "ERROR: pip cache commands can not function since cache is disabled.\n",
        )),
    );
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Success, "{d:#}");
    assert_eq!(d["details"]["pip"]["result"], "skipped (cache disabled)");
    assert_eq!(d["details"]["pip"]["exit_code"], 1);
}

#[test]
fn host_errors_fail_the_run_and_unreachable_skips_the_rest() {
    let mut w = FakeWorker::new(
        Err(Error::Timeout("execute did not answer within 30.0s".into())),
        Ok(output(0, "", "")),
    );
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Failed);
    assert_eq!(
        d["error"],
        "build cache cleanup failed for uv: `uv cache prune` did not finish (timeout: execute \
         did not answer within 30.0s)"
    );
    assert_eq!(w.calls.len(), 2);

    let mut w = FakeWorker::new(
        Err(Error::Unreachable("connection refused".into())),
        Ok(output(0, "", "")),
    );
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Failed);
    assert_eq!(w.calls.len(), 1);
    assert_eq!(
        d["details"]["pip"]["result"],
        "skipped (worker unreachable)"
    );
}
