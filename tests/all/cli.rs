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

/// `quarry plugin new` in each language: the project builds with the command its README
/// gives, runs on `local` (one `du -sk` on a directory this test fills, reported in the
/// detail), and refuses a relative `path` before anything runs, naming the param.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_templates_build_run_and_refuse_a_bad_param() {
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
    // What the task measures: 256 KiB of data, so du reports at least that.
    let data = TempDir::new("scaffold-data");
    std::fs::write(data.path().join("blob"), vec![7u8; 256 << 10]).unwrap();
    let status = TempDir::new("scaffold-status");
    for lang in langs {
        let name = format!("demo_{lang}");
        let dir = root.path().join(&name);
        let dir_s = dir.to_str().unwrap();
        let (code, _, err) =
            quarry(&["plugin", "new", &name, "--lang", lang, "--dir", dir_s]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{lang}: {err}");
        assert!(dir.join("wit/quarry.wit").exists());
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(
            readme.contains("quarry plugin build .") && !readme.contains("{{"),
            "{lang}: {readme}"
        );
        if lang == "rust" {
            let cfg = format!(
                "[build]\ntarget-dir = {:?}\n",
                wasm_target.display().to_string()
            );
            std::fs::create_dir_all(dir.join(".cargo")).unwrap();
            std::fs::write(dir.join(".cargo/config.toml"), cfg).unwrap();
        }
        // The README's `quarry plugin build .`, for the project's directory.
        let (code, out, err) = quarry(&["plugin", "build", dir_s]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{lang}: {err}");
        assert!(out.contains(&format!("{name}.wasm")), "{out}");
        let (code, out, err) = quarry(&["plugin", "check", &format!("{dir_s}/{name}.wasm")]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{lang}: {err}");
        assert!(
            out.contains(&format!("name:        {name}")) && out.contains("quarry:task@0.1.1"),
            "{out}"
        );

        let run = |params: String| {
            let (dir_s, name, status) = (dir_s.to_string(), name.clone(), status.str().to_string());
            async move {
                let args = [
                    "run",
                    &name,
                    "--plugins-dir",
                    &dir_s,
                    "--status-dir",
                    &status,
                ];
                quarry(&[&args[..], &["--params", &params]].concat()).await
            }
        };
        let (code, out, err) = run(serde_json::json!({"path": data.str()}).to_string()).await;
        assert_eq!(code, ExitCode::SUCCESS, "{lang}: {out}\n{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["outcome"], "success", "{lang}: {out}");
        let file = status.path().join(format!("{name}_status.json"));
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(file["status"], "success", "{lang}: {file}");
        let detail = &file["extra"];
        assert_eq!(detail["path"], data.str(), "{lang}: {detail}");
        let kb = detail["kb"]
            .as_u64()
            .unwrap_or_else(|| panic!("{lang}: {detail}"));
        assert!(kb >= 256, "{lang}: du -sk of 256 KiB said {kb}");

        let (code, _, err) = run(r#"{"path": "tmp"}"#.to_string()).await;
        assert_eq!(code, ExitCode::from(2), "{lang}: {err}");
        assert!(
            err.contains(&format!("invalid params for {name}: path"))
                && err.contains("must be absolute"),
            "{lang}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_and_check_explain_refusals() {
    let (code, _, err) = quarry(&["plugin", "new", "Bad-Name"]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("task name \"Bad-Name\" is invalid"), "{err}");
    let root = TempDir::new("scaffold-junk");
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

/// An alias bomb under 1 MB is refused from the parser's counts, under a memory watchdog (the
/// process's data segment capped at 512 MiB; expanded, it needs gigabytes and would abort).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_an_alias_bomb_within_bounded_memory() {
    let tmp = TempDir::new("cli-cfg-bomb");
    let file = tmp.path().join("bomb.yml");
    let text = format!(
        "scheduler:\n  enabled: true\n  tasks:\n{}",
        alias_bomb_task()
    );
    assert!(text.len() < 1 << 20, "{} bytes", text.len());
    std::fs::write(&file, text).unwrap();
    let mut command = std::process::Command::new(QUARRY_BIN);
    command.arg("check-config").arg(&file);
    limit_data(&mut command, 512 << 20);
    let out = within(
        "check-config on the alias bomb",
        60,
        tokio::task::spawn_blocking(move || command.output().unwrap()),
    )
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(ALIAS_BOMB_REFUSED), "{err}");
    assert!(
        err.contains("(the limit for a config file): refused"),
        "{err}"
    );
}
