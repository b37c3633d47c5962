//! The `quarry` command line, called in-process.

use std::process::ExitCode;

use clap::Parser;
use quarry_host::cli::{Cli, execute};

use crate::harness::*;

async fn quarry(args: &[&str]) -> (ExitCode, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("quarry").chain(args.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = within("quarry command", 120, execute(cli, &mut out, &mut err))
        .await
        .unwrap();
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_the_report_and_exits_by_outcome() {
    let plugins = plugins_dir(&["probe"]);
    let status = TempDir::new("cli-status");
    let base = [
        "run",
        "probe",
        "--plugins-dir",
        plugins.str(),
        "--status-dir",
        status.str(),
    ];
    let (code, out, err) = quarry(&[&base[..], &["--params", r#"{"mode":"ok"}"#]].concat()).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["outcome"], "success");
    assert_eq!(report["worker_results"][0]["worker_ip"], "local");
    assert!(status.path().join("probe_status.json").exists());

    let (code, out, _) = quarry(&[&base[..], &["--params", r#"{"mode":"fail"}"#]].concat()).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(out.contains("\"outcome\": \"failed\""));

    let (code, _, err) =
        quarry(&[&base[..], &["--params", r#"{"mode":"invalid"}"#]].concat()).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(
        err.contains("invalid params for probe: probe: invalid on purpose"),
        "{err}"
    );

    let (code, _, err) = quarry(&[&base[..], &["--params", "[1]"]].concat()).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("--params must be a JSON object"), "{err}");

    let (code, _, err) = quarry(&["run", "nope", "--plugins-dir", plugins.str()]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(
        err.contains("no plugin named \"nope\"") && err.contains("loaded: probe"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_lists_metadata_and_refusals() {
    let plugins = plugins_dir(&["probe", "file_cleanup"]);
    let (code, out, err) = quarry(&["plugins", "--plugins-dir", plugins.str()]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let line = out.lines().find(|l| l.starts_with("file_cleanup")).unwrap();
    assert!(
        line.contains("0.1.0") && line.contains("yes") && line.contains("86400s"),
        "{line}"
    );
    std::fs::write(plugins.path().join("bad.wasm"), b"nope").unwrap();
    let (code, out, err) = quarry(&["plugins", "--plugins-dir", plugins.str()]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(out.contains("probe"));
    assert!(
        err.contains("refused: plugin") && err.contains("bad.wasm"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_field_and_reason() {
    let dir = TempDir::new("cli-config");
    let plugins = plugins_dir(&["file_cleanup"]);
    let good = dir.path().join("good.yml");
    std::fs::write(&good, format!(
        "scheduler:\n  enabled: true\n  tasks:\n    - task_class: FileCleanupTask\n      params: {{target_dirs: [/data/logs]}}\nquarry:\n  plugins_dir: {}\n",
        plugins.str()
    )).unwrap();
    let (code, out, err) = quarry(&["check-config", good.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(
        out.contains("is valid: 1 task(s) [file_cleanup], 1 worker(s)"),
        "{out}"
    );
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, format!(
        "scheduler:\n  enabled: true\n  tasks:\n    - task_class: file_cleanup\n      params: {{target_dirs: [data]}}\nquarry:\n  plugins_dir: {}\n",
        plugins.str()
    )).unwrap();
    let (code, _, err) = quarry(&["check-config", bad.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(
        err.contains("scheduler.tasks[0].params:") && err.contains("\"data\""),
        "{err}"
    );
}
