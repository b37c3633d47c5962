//! Capability grants, protected paths and dry runs: enforced by the host before a call reaches
//! a worker, through `local` and a real rocklet; plugins built for WIT 0.1.0 still load.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use quarry_host::grants::{Narrowing, TaskPolicy};
use quarry_host::metrics::Metrics;
use quarry_host::report::{TickOutcome, WorkerOutcome};
use quarry_host::run::{TaskRun, run_tick};
use quarry_host::runtime::{Runtime, RuntimeLimits};
use quarry_host::workers::{self, Limits, Worker, WorkerAddr};
use serde_json::{Value, json};

use crate::cli::quarry;
use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Runs `task` once on each of `ws` and returns each worker's detail (or error) as JSON.
async fn tick(rt: &Runtime, task: &TaskRun, ws: &[Worker], status: &str) -> Vec<Value> {
    let (report, runs) = within(
        "a tick",
        60,
        run_tick(rt, task, ws, &settings(status, None, 20)),
    )
    .await;
    assert_eq!(runs.len(), ws.len(), "{}", report.to_json());
    runs.iter()
        .map(|r| match &r.detail {
            Some(d) => Value::Object(d.clone()),
            None => json!({"outcome": r.result.outcome.as_str(), "error": r.result.error}),
        })
        .collect()
}

/// The workers of a test: `local`, and a real rocklet when the real parts are there.
fn workers_with(rocklet: Option<&RockletProcess>) -> Vec<Worker> {
    let mut addrs = vec![WorkerAddr::Local];
    if let Some(r) = rocklet {
        addrs.push(WorkerAddr::parse(&r.addr, 22555).unwrap());
    }
    workers::connect(&addrs, Limits::default())
}

async fn grants_are_enforced_on(ws: Vec<Worker>) {
    let tmp = TempDir::new("grants");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "still here").unwrap();
    let metrics = Metrics::new();
    let limits = RuntimeLimits {
        memory_bytes: 64 << 20,
        call_timeout: Duration::from_secs(10),
        ..RuntimeLimits::default()
    };
    let rt = Arc::new(Runtime::new(limits).unwrap().with_metrics(metrics.clone()));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let grants = json!({"programs": ["echo"], "write_paths": [tmp.path().join("out")]});
    let status = tmp.path().join("status");

    // A program outside `programs`: refused before it reaches the worker.
    let rm = json!({"mode": "exec", "argv": ["rm", "-f", victim], "grants": grants});
    for d in tick(&rt, &task(&set, "probe", rm), &ws, status.to_str().unwrap()).await {
        assert_eq!(d["error_kind"], "rejected", "{d}");
        assert_eq!(d["error"], "grant: probe may not run `rm` (programs: echo)");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "still here");

    // Inside the grant: runs.
    let echo = json!({"mode": "exec", "argv": ["/bin/echo", "hi"], "grants": grants});
    for d in tick(
        &rt,
        &task(&set, "probe", echo),
        &ws,
        status.to_str().unwrap(),
    )
    .await
    {
        assert_eq!(
            (d["exit_code"].clone(), d["stdout"].clone()),
            (json!(0), json!("hi\n")),
            "{d}"
        );
    }

    // A shell script without `shell`, and a write outside `write_paths` (a `..` escape).
    let shell = json!({"mode": "shell", "script": "true", "grants": grants});
    for d in tick(
        &rt,
        &task(&set, "probe", shell),
        &ws,
        status.to_str().unwrap(),
    )
    .await
    {
        assert_eq!(
            d["error"], "grant: probe may not run shell scripts (shell: false)",
            "{d}"
        );
    }
    let escape = format!("{}/out/../victim", tmp.str());
    let write = json!({"mode": "write", "path": escape, "content": "x", "grants": grants});
    for d in tick(
        &rt,
        &task(&set, "probe", write),
        &ws,
        status.to_str().unwrap(),
    )
    .await
    {
        assert_eq!(d["error_kind"], "rejected", "{d}");
        let e = d["error"].as_str().unwrap();
        assert!(
            e.starts_with(&format!("grant: probe may not write `{escape}`")),
            "{e}"
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "still here");
    let inside = tmp.path().join("out/ok.txt");
    let write = json!({"mode": "write", "path": inside, "content": "x", "grants": grants});
    for d in tick(
        &rt,
        &task(&set, "probe", write),
        &ws,
        status.to_str().unwrap(),
    )
    .await
    {
        assert_eq!(d["written"], true, "{d}");
    }

    let text = metrics.encode();
    let n = ws.len();
    for (call, count) in [("execute", 2 * n), ("write_file", n)] {
        let line =
            format!(r#"quarry_grant_rejections_total{{task="probe",call="{call}"}} {count}"#);
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_enforced_on_local() {
    grants_are_enforced_on(workers_with(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_enforced_before_a_real_rocklet() {
    needs_real_parts!("a real rocklet");
    let rocklet = RockletProcess::start();
    grants_are_enforced_on(workers_with(Some(&rocklet))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_narrows_an_undeclared_plugin() {
    let tmp = TempDir::new("narrow");
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let ws = workers_with(None);
    let policy = TaskPolicy {
        narrowing: Narrowing {
            programs: Some(vec!["echo".into()]),
            ..Narrowing::default()
        },
        ..TaskPolicy::default()
    };
    let ls = json!({"mode": "exec", "argv": ["ls", "/"]});
    let run = task(&set, "probe", ls.clone()).with_policy(policy.clone());
    let d = tick(&rt, &run, &ws, tmp.str()).await.remove(0);
    assert_eq!(
        d["error"], "grant: probe may not run `ls` (programs: echo)",
        "{d}"
    );
    // Narrowing a declared plugin intersects: `ls` is declared but not allowed by the operator.
    let declared =
        json!({"mode": "exec", "argv": ["ls", "/"], "grants": {"programs": ["ls", "echo"]}});
    let run = task(&set, "probe", declared).with_policy(policy);
    let d = tick(&rt, &run, &ws, tmp.str()).await.remove(0);
    assert_eq!(
        d["error"], "grant: probe may not run `ls` (programs: echo)",
        "{d}"
    );
    // Without narrowing the undeclared probe is unrestricted.
    let d = tick(&rt, &task(&set, "probe", ls), &ws, tmp.str())
        .await
        .remove(0);
    assert_eq!(d["exit_code"], 0, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_file_to_a_protected_path_is_refused_at_run_time() {
    let tmp = TempDir::new("protected");
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let ws = workers_with(None);
    for path in [
        "/etc/quarry-test-protected",
        "/usr/quarry-test",
        "/",
        "/home",
    ] {
        let write = json!({"mode": "write", "path": path, "content": "x"});
        let d = tick(&rt, &task(&set, "probe", write), &ws, tmp.str())
            .await
            .remove(0);
        assert_eq!(d["error_kind"], "rejected", "{d}");
        let e = d["error"].as_str().unwrap();
        assert!(
            e.starts_with(&format!("protected path: probe may not write `{path}`")),
            "{e}"
        );
    }
    assert!(!std::path::Path::new("/etc/quarry-test-protected").exists());
    // Configured protected paths replace the defaults.
    let keep = tmp.path().join("keep");
    let policy = TaskPolicy {
        protected: quarry_host::grants::ProtectedPaths::parse([keep.to_str().unwrap()]).unwrap(),
        ..TaskPolicy::default()
    };
    let write = json!({"mode": "write", "path": keep.join("x"), "content": "x"});
    let run = task(&set, "probe", write).with_policy(policy);
    let d = tick(&rt, &run, &ws, tmp.str()).await.remove(0);
    assert_eq!(d["error_kind"], "rejected", "{d}");
    assert!(!keep.join("x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_on_a_protected_path_is_refused_by_check_config() {
    let dir = TempDir::new("cli-protected");
    let plugins = plugins_dir(&["probe"]);
    let config = |write_path: &str, protected: &str| {
        let file = dir.path().join("quarry.yml");
        std::fs::write(&file, format!(
            "scheduler:\n  enabled: true\n  tasks:\n    - task_class: probe\n      params: {{mode: ok, grants: {{write_paths: [{write_path}]}}}}\nquarry:\n  plugins_dir: {}\n{protected}",
            plugins.str()
        )).unwrap();
        file
    };
    for (target, protected) in [
        ("/etc/app", "/etc"),
        ("/home", "exact:/home"),
        ("/home/ann", "exact:/home/*"),
    ] {
        let file = config(target, "");
        let (code, _, err) = quarry(&["check-config", file.to_str().unwrap()]).await;
        assert_eq!(code, ExitCode::from(1), "{target}");
        let want = format!(
            "scheduler.tasks[0].params: probe would act on \"{target}\", which touches the protected path \"{protected}\""
        );
        assert!(err.contains(&want), "{want} in {err}");
    }
    // Inside a home directory is not the home directory itself.
    let file = config("/home/ann/.cache/app", "");
    let (code, _, err) = quarry(&["check-config", file.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    // The operator's list replaces the defaults.
    let file = config("/srv/data", "  protected_paths: [/srv]\n");
    let (code, _, err) = quarry(&["check-config", file.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(err.contains("the protected path \"/srv\""), "{err}");
    let file = config("/tmp/x", "  protected_paths: [etc]\n");
    let (code, _, err) = quarry(&["check-config", file.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(
        err.contains("quarry.protected_paths: protected path \"etc\" is not an absolute path"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reaches_the_task_and_refuses_undeclared_plugins() {
    let tmp = TempDir::new("dry");
    let plugins = plugins_dir(&["probe", "legacy"]);
    let status = tmp.path().join("status");
    let run = |params: Value, plugin: &str| {
        let (p, s) = (
            plugins.str().to_string(),
            status.to_str().unwrap().to_string(),
        );
        let params = params.to_string();
        let plugin = plugin.to_string();
        async move {
            let args = [
                "run",
                &plugin,
                "--dry-run",
                "--plugins-dir",
                &p,
                "--status-dir",
                &s,
                "--params",
                &params,
            ];
            quarry(&args).await
        }
    };
    let (code, out, err) = run(
        json!({"mode": "dryrun", "grants": {"dry_run": true}}),
        "probe",
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(err.contains("\"dry_run\": true"), "{err}");
    assert!(out.contains("\"success\""), "{out}");
    // A dry run writes no status file either.
    assert!(!status.join("probe.json").exists() && !status.exists());

    // Undeclared (no grants, or grants without dry_run, or a 0.1.0 plugin): never run.
    let marker = tmp.path().join("marker");
    let write = json!({"mode": "write", "path": marker, "content": "x"});
    let mut declared_not_dry = write.clone();
    declared_not_dry["grants"] = json!({"write_paths": [tmp.str()]});
    for (params, plugin) in [
        (write, "probe"),
        (declared_not_dry, "probe"),
        (json!({}), "legacy"),
    ] {
        let (code, out, err) = run(params, plugin).await;
        assert_eq!(code, ExitCode::from(1), "{out}\n{err}");
        assert!(
            err.contains(&format!("plugin {plugin} does not support dry-run")),
            "{err}"
        );
        assert!(!marker.exists());
    }

    // In a dry run every write-file is refused, even for a task that supports dry runs.
    let write = json!({"mode": "write", "path": marker, "content": "x", "grants": {"dry_run": true, "write_paths": [tmp.str()]}});
    let (_, _, err) = run(write, "probe").await;
    assert!(
        err.contains(&format!(
            "dry run: write-file `{}` refused",
            marker.display()
        )),
        "{err}"
    );
    assert!(!marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_for_wit_0_1_0_loads_and_runs_undeclared() {
    let tmp = TempDir::new("legacy");
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["legacy", "probe"]).path()).await;
    assert!(set.errors().is_empty(), "{:?}", set.errors());
    let legacy = set.get("legacy").unwrap();
    assert_eq!(legacy.wit_version(), "0.1.0");
    assert!(!legacy.declares_grants());
    assert_eq!(set.get("probe").unwrap().wit_version(), "0.1.1");
    let (report, runs) = within(
        "legacy tick",
        60,
        run_tick(
            &rt,
            &task(&set, "legacy", json!({})),
            &workers_with(None),
            &settings(tmp.str(), None, 20),
        ),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    assert_eq!(runs[0].result.outcome, WorkerOutcome::Success);
    assert_eq!(runs[0].detail.as_ref().unwrap()["stdout"], "legacy\n");
}
