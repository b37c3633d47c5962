//! The whole [`crate::cleanup`] against the SDK's [`FakeWorker`], on which each tool is absent,
//! works, fails or hangs.

use std::time::Duration;

use quarry_sdk::Status;
use quarry_sdk::host::Error;
use quarry_sdk::worker::fake::{self, Answer, FakeWorker, output};
use serde_json::{Value, json};

use crate::cleanup;
use crate::params::{Config, Tool};

fn not_found(program: &str) -> Answer {
    Err(Error::NotFound(format!(
        "program {program:?} not found on the worker (…) — while running `{program} cache …` on worker 127.0.0.1:1"
    )))
}

/// A worker whose `uv` and `pip` answer `uv` and `pip`; any other program is a test failure,
/// and so is a command without a time limit of at most 30 s.
fn worker(uv: Answer, pip: Answer) -> FakeWorker {
    let mut w = FakeWorker::new();
    w.require_timeout(Duration::from_secs(30))
        .on(fake::program("uv"), uv)
        .on(fake::program("pip"), pip);
    w
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
    let mut w = worker(
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
        w.argvs(),
        [["uv", "cache", "prune"], ["pip", "cache", "purge"]]
    );
    assert!(
        w.logs()
            .iter()
            .any(|(_, m)| m == "build_cache_cleanup: uv: pruned, pip: pruned")
    );
}

#[test]
fn a_missing_tool_is_skipped() {
    let mut w = worker(not_found("uv"), Ok(output(0, "Files removed: 0\n", "")));
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
    let mut w = worker(not_found("uv"), Ok(output(0, "", "")));
    let (status, d) = run(&mut w, &[Tool::Pip]);
    assert_eq!(status, Status::Success);
    assert_eq!(d["tools"], json!(["pip"]));
    assert_eq!(w.argvs(), [["pip", "cache", "purge"]]);
    let (status, d) = run(&mut w, &[]);
    assert_eq!(status, Status::Success);
    assert_eq!(d["details"], json!({}));
}

#[test]
fn a_failed_prune_fails_the_run_and_names_the_tool() {
    let mut w = worker(
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
    let mut w = worker(
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
    let mut w = worker(
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
    assert_eq!(w.calls().len(), 2);

    let mut w = worker(
        Err(Error::Unreachable("connection refused".into())),
        Ok(output(0, "", "")),
    );
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Failed);
    assert_eq!(w.calls().len(), 1);
    assert_eq!(
        d["details"]["pip"]["result"],
        "skipped (worker unreachable)"
    );
}

#[test]
fn a_dry_run_only_asks_where_and_what_the_caches_are() {
    let mut w = worker(
        Ok(output(0, "/root/.cache/uv\n", "")),
        Ok(output(
            0,
            "Package index page cache location: /root/.cache/pip/http\nNumber of wheels: 3\n",
            "",
        )),
    );
    w.set_dry_run(true);
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Success, "{d:#}");
    assert_eq!(
        d,
        json!({
            "status": "success",
            "tools": ["uv", "pip"],
            "details": {
                "uv": {"installed": true, "result": "would prune", "exit_code": 0,
                       "output_head": "/root/.cache/uv", "would_run": "uv cache prune"},
                "pip": {"installed": true, "result": "would prune", "exit_code": 0,
                        "output_head": "Package index page cache location: \
                                        /root/.cache/pip/http\nNumber of wheels: 3",
                        "would_run": "pip cache purge"},
            },
            "dry_run": true,
        })
    );
    assert_eq!(
        w.argvs(),
        [["uv", "cache", "dir"], ["pip", "cache", "info"]],
        "read-only commands only"
    );

    // Missing, disabled and failing tools read as in a real run.
    let mut w = worker(
        not_found("uv"),
        Ok(output(
            1,
            "",
            "ERROR: pip cache commands can not function since cache is disabled.\n",
        )),
    );
    w.set_dry_run(true);
    let (status, d) = run(&mut w, &[Tool::Uv, Tool::Pip]);
    assert_eq!(status, Status::Success, "{d:#}");
    assert_eq!(d["details"]["uv"]["result"], "skipped (not installed)");
    assert_eq!(d["details"]["pip"]["result"], "skipped (cache disabled)");
    let mut w = worker(Ok(output(2, "", "uv: broken\n")), not_found("pip"));
    w.set_dry_run(true);
    let (status, d) = run(&mut w, &[Tool::Uv]);
    assert_eq!(status, Status::Failed, "{d:#}");
    assert_eq!(d["dry_run"], true);
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("`uv cache dir` exited with 2"),
        "{d:#}"
    );
}

#[test]
fn grants_name_the_configured_tools_and_honour_dry_runs() {
    use quarry_sdk::Task as _;
    let config = |tools: &[Tool]| Config {
        tools: tools.to_vec(),
    };
    let g = crate::BuildCacheCleanup::grants(&config(&[Tool::Uv, Tool::Pip])).unwrap();
    assert_eq!(g.programs(), ["uv", "pip"]);
    assert!(!g.allows_shell() && g.allows_dry_run());
    let g = crate::BuildCacheCleanup::grants(&config(&[Tool::Pip])).unwrap();
    assert_eq!(g.programs(), ["pip"]);
}
