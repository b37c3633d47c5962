//! The `quarry` command line, called in-process.

use std::process::ExitCode;

use clap::Parser;
use quarry_host::cli::{Cli, execute};

use crate::harness::*;
use crate::support::real_parts;

/// Runs `quarry ARGS` in-process: exit code, stdout, stderr.
pub async fn quarry(args: &[&str]) -> (ExitCode, String, String) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_builds_as_is_and_check_explains_refusals() {
    let root = TempDir::new("scaffold");
    // Rust shares the wasm target dir of the test build, so the SDK's dependencies are reused.
    let wasm_target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm");
    let mut langs = vec!["rust"];
    // Their toolchains come with the examples that scripts/test.sh builds.
    if real_parts::available_for(
        "the C, Python and JS cases",
        "the toolchains scripts/build-examples.sh installs",
    ) {
        assert!(
            std::env::var_os("QUARRY_TEST_EXAMPLES_DIR").is_some(),
            "QUARRY_TEST_EXAMPLES_DIR is not set: run scripts/test.sh, which builds the examples and their toolchains"
        );
        langs.extend(["c", "python", "js"]);
    }
    for lang in langs {
        let name = format!("new_{lang}");
        let dir = root.path().join(&name);
        let dir_s = dir.to_str().unwrap();
        let (code, _, err) =
            quarry(&["plugin", "new", &name, "--lang", lang, "--dir", dir_s]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{lang}: {err}");
        assert!(dir.join("wit/quarry.wit").exists());
        if lang == "rust" {
            let cfg = format!(
                "[build]\ntarget-dir = {:?}\n",
                wasm_target.display().to_string()
            );
            std::fs::create_dir_all(dir.join(".cargo")).unwrap();
            std::fs::write(dir.join(".cargo/config.toml"), cfg).unwrap();
        }
        let (code, out, err) = quarry(&["plugin", "build", dir_s]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{lang}: {err}");
        assert!(out.contains(&format!("{name}.wasm")), "{out}");
        let (code, out, err) = quarry(&["plugin", "check", &format!("{dir_s}/{name}.wasm")]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{lang}: {err}");
        assert!(
            out.contains(&format!("name:        {name}")) && out.contains("quarry:task@0.1.1"),
            "{out}"
        );
    }
    let (code, _, err) = quarry(&["plugin", "new", "Bad-Name"]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("task name \"Bad-Name\" is invalid"), "{err}");
    let junk = root.path().join("junk.wasm");
    std::fs::write(&junk, b"junk").unwrap();
    let (code, _, err) = quarry(&["plugin", "check", junk.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(
        err.contains("refused: plugin") && err.contains("not a valid WebAssembly component"),
        "{err}"
    );
}

/// Bad flags of `quarry run` are refused by the config's validator, naming the flag; a report
/// that cannot be written fails the command; a missing plugin's message names the refused
/// files and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_bad_flags_and_an_unwritable_report() {
    let plugins = plugins_dir(&["probe"]);
    std::fs::write(plugins.path().join("broken.wasm"), b"not wasm").unwrap();
    let tmp = TempDir::new("cli-bad");
    let base = [
        "run",
        "probe",
        "--plugins-dir",
        plugins.str(),
        "--status-dir",
        tmp.str(),
        "--params",
        r#"{"mode":"ok"}"#,
    ];
    let (code, _, err) = quarry(&[&base[..], &["--memory-mib", "0"]].concat()).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(
        err.contains("--memory-mib: 0 is out of range (16-4096)"),
        "{err}"
    );
    let (code, _, err) =
        quarry(&[&base[..], &["--memory-mib", "18446744073709551615"]].concat()).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(err.contains("--memory-mib"), "{err}");
    let (code, _, err) =
        quarry(&[&base[..], &["--worker", "local", "--worker", "local"]].concat()).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(err.contains("--worker: local is listed twice"), "{err}");
    // A report directory under a regular file cannot be created.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under = file.join("reports");
    let (code, out, err) =
        quarry(&[&base[..], &["--report-dir", under.to_str().unwrap()]].concat()).await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(out.contains("\"outcome\": \"success\""), "{out}");
    assert!(err.contains("the run report was not written"), "{err}");
    // The missing plugin's message says which files were refused and why.
    let (code, _, err) = quarry(&["run", "nope", "--plugins-dir", plugins.str()]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(
        err.contains("refused: broken.wasm: not a valid WebAssembly component"),
        "{err}"
    );
}

/// `check-config` refuses what is not a regular file (a FIFO would block, `/dev/zero` never
/// ends) and a file over the size cap, at once and naming the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_devices_fifos_and_huge_files() {
    let tmp = TempDir::new("cli-cfg-files");
    let (code, _, err) = quarry(&["check-config", "/dev/zero"]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(err.contains("is not a regular file"), "{err}");
    let fifo = tmp.path().join("fifo.yml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (code, _, err) = quarry(&["check-config", fifo.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(err.contains("is not a regular file"), "{err}");
    let big = tmp.path().join("big.yml");
    let line = "# padding\n".repeat(1 << 19); // 5 MiB
    std::fs::write(&big, format!("scheduler: {{enabled: true}}\n{line}")).unwrap();
    let (code, _, err) = quarry(&["check-config", big.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(err.contains("is larger than 4 MiB"), "{err}");
}
