//! The Docker-side built-ins — container_cleanup, docker_health, build_cache_cleanup — loaded
//! by the host and run through real rocklets: against the real test dockerd started by
//! scripts/test-dockerd.sh, and with fake `docker`, `uv` and `pip` programs first on the
//! worker's PATH where a real daemon cannot be made to fail on purpose.
//!
//! Container ages cannot be faked (the daemon stamps them), so container_cleanup runs with
//! cutoffs of a few seconds and the test sleeps between "old" and "new" containers. Every
//! container carries a label unique to this process and the task is told to consider only
//! that label, so tests running in parallel on the same daemon never see each other's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quarry_host::report::{RunReport, TickOutcome, WorkerOutcome};
use quarry_host::run::{WorkerRun, run_tick};
use quarry_host::workers::{self, Limits, Worker, WorkerAddr};
use serde_json::{Value, json};

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Budget of one (task, worker) run: the host's default.
const RUN_TIMEOUT_SECS: u64 = 80;

/// Named timeout around one tick: the run budget plus slack for a loaded machine.
const TICK_TIMEOUT_SECS: u64 = 100;

/// container_cleanup's cutoff in the test, in seconds (both exited and created).
const CUTOFF_SECS: f64 = 6.0;

/// How much older the "old" containers are made than the "new" ones: twice the cutoff, so
/// that a slow `docker run` of the new ones still leaves a clear margin on both sides.
const OLD_AGE: Duration = Duration::from_secs(12);

fn rocklet_worker(addr: &str) -> Worker {
    let a = WorkerAddr::parse(addr, 22555).unwrap();
    workers::connect(&[a], Limits::default()).remove(0)
}

/// Writes an executable `#!/bin/sh` script `name` into `dir`.
fn fake_program(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs one tick of `name` with `params` on `worker`; status files go to `status_dir`.
async fn tick(
    rt: &Arc<quarry_host::runtime::Runtime>,
    set: &quarry_host::plugins::PluginSet,
    name: &str,
    params: Value,
    worker: &Worker,
    status_dir: &Path,
) -> (RunReport, WorkerRun) {
    let (report, mut runs) = within(
        &format!("{name} tick"),
        TICK_TIMEOUT_SECS,
        run_tick(
            rt,
            &task(set, name, params),
            std::slice::from_ref(worker),
            &settings(status_dir.to_str().unwrap(), None, RUN_TIMEOUT_SECS),
        ),
    )
    .await;
    (report, runs.remove(0))
}

/// The run's `extra` (the task's detail), with the report for failure messages.
fn detail(report: &RunReport, run: &WorkerRun) -> Value {
    Value::Object(
        run.detail
            .clone()
            .unwrap_or_else(|| panic!("no detail: {}", report.to_json())),
    )
}

/// The status file the run wrote on the worker.
fn status_file(status_dir: &Path, task: &str) -> Value {
    let text = std::fs::read_to_string(status_dir.join(format!("{task}_status.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The full id of a container, or None once it is gone.
fn container_id(name: &str) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(["container", "inspect", "--format", "{{.Id}}", name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_cleanup_removes_only_what_is_old_enough_on_real_docker() {
    needs_real_parts!("the test dockerd and a real rocklet");
    let image = docker_image();
    let pid = std::process::id();
    let label = format!("quarry-test-container-cleanup={pid}");
    let name = |what: &str| format!("quarry-cc-{pid}-{what}");
    let guards: Vec<Container> = [
        "old-exited",
        "old-created",
        "running",
        "new-exited",
        "new-created",
    ]
    .iter()
    .map(|w| {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &name(w)])
            .output();
        Container(name(w))
    })
    .collect();
    // Everything slow first, so that the "new" containers are fresh when the task runs.
    let tmp = TempDir::new("container-cleanup");
    let rocklet = RockletProcess::start();
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let worker = rocklet_worker(&rocklet.addr);

    let run_true = |n: &str| docker(&["run", "--name", n, "--label", &label, &image, "true"]);
    let create = |n: &str| docker(&["create", "--name", n, "--label", &label, &image, "true"]);
    run_true(&name("old-exited"));
    create(&name("old-created"));
    docker(&[
        "run",
        "-d",
        "--name",
        &name("running"),
        "--label",
        &label,
        &image,
        "sleep",
        "600",
    ]);
    let old_ids = [
        container_id(&name("old-exited")).unwrap(),
        container_id(&name("old-created")).unwrap(),
    ];
    tokio::time::sleep(OLD_AGE).await;
    run_true(&name("new-exited"));
    create(&name("new-created"));

    let hours = CUTOFF_SECS / 3600.0;
    let params = json!({"max_age_hours": hours, "created_max_age_hours": hours, "label": label});
    let (report, run) = tick(
        &rt,
        &set,
        "container_cleanup",
        params.clone(),
        &worker,
        tmp.path(),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    let d = detail(&report, &run);
    for gone in ["old-exited", "old-created"] {
        assert_eq!(
            container_id(&name(gone)),
            None,
            "{gone} should be removed: {d:#}"
        );
    }
    for kept in ["running", "new-exited", "new-created"] {
        assert!(
            container_id(&name(kept)).is_some(),
            "{kept} should be kept: {d:#}"
        );
    }
    let mut removed: Vec<String> = d["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    removed.sort();
    let mut expected = old_ids.to_vec();
    expected.sort();
    assert_eq!(removed, expected, "{d:#}");
    assert_eq!(d["removed_count"], 2);
    assert_eq!(d["removed_by_state"], json!({"exited": 1, "created": 1}));
    assert_eq!(d["listed"], json!({"exited": 2, "created": 2}), "{d:#}");
    assert_eq!(d["kept_count"], 2);
    assert_eq!(d["kept_by_reason"], json!({"young": 2}));
    assert_eq!(d["errors"], json!([]));
    assert_eq!(d["label"], label.as_str());
    let status = status_file(tmp.path(), "container_cleanup");
    assert_eq!(status["status"], "success");
    assert_eq!(
        status["pid"],
        Value::Null,
        "synchronous: no detached job to track"
    );
    assert_eq!(status["extra"]["removed_count"], 2);

    // Idempotent: a second run right away finds nothing more to remove.
    let (report, run) = tick(&rt, &set, "container_cleanup", params, &worker, tmp.path()).await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    assert_eq!(detail(&report, &run)["removed_count"], 0);
    drop(guards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_cleanup_fails_when_the_daemon_is_down() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("container-cleanup-down");
    let bin = tmp.path().join("bin");
    fake_program(
        &bin,
        "docker",
        "echo 'Cannot connect to the Docker daemon at unix:///fake.sock. Is the docker daemon running?' >&2; exit 1",
    );
    let rocklet = RockletProcess::start_with_path_prefix(&bin);
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let (report, run) = tick(
        &rt,
        &set,
        "container_cleanup",
        json!({}),
        &rocklet_worker(&rocklet.addr),
        tmp.path(),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Failed);
    let r = &report.worker_results[0];
    assert_eq!(
        r.error_type.map(|t| t.as_str()),
        Some("TaskResultFailed"),
        "{r:?}"
    );
    assert!(
        r.error.as_deref().unwrap().starts_with(
            "listing exited containers failed (docker ps exited with 1): Cannot connect"
        ),
        "{r:?}"
    );
    assert_eq!(detail(&report, &run)["max_age_hours"], 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_health_reports_the_real_daemon_healthy() {
    needs_real_parts!("the test dockerd and a real rocklet");
    let _ = docker_image(); // fails early, with the reason, when there is no test daemon
    let tmp = TempDir::new("docker-health");
    let rocklet = RockletProcess::start();
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let (report, run) = tick(
        &rt,
        &set,
        "docker_health",
        json!({}),
        &rocklet_worker(&rocklet.addr),
        tmp.path(),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    let d = detail(&report, &run);
    assert_eq!(d["status"], "success");
    assert_eq!(d["restarted"], false);
    let checked_at = d["checked_at"].as_str().unwrap();
    assert!(
        checked_at.len() == 20 && checked_at.ends_with('Z') && checked_at.as_bytes()[10] == b'T',
        "{checked_at}"
    );
    assert_eq!(
        d["server_version"].as_str(),
        Some(docker(&["version", "--format", "{{.Server.Version}}"]).as_str()),
        "{d:#}"
    );
    assert_eq!(
        status_file(tmp.path(), "docker_health")["extra"]["restarted"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_health_with_a_dead_daemon_reports_what_the_start_command_achieved() {
    needs_real_parts!("a real rocklet");
    // A worker whose `docker info` fails until a marker file exists (the "daemon" is up).
    let tmp = TempDir::new("docker-health-down");
    let bin = tmp.path().join("bin");
    let up = tmp.path().join("daemon-up");
    let up_str = up.to_str().unwrap();
    fake_program(
        &bin,
        "docker",
        &format!(
            r#"if [ "$1" = info ] && [ -e '{up_str}' ]; then printf 'Server:\n Server Version: fake-1.0\n'; exit 0; fi
echo 'Cannot connect to the Docker daemon at unix:///fake.sock. Is the docker daemon running?' >&2
exit 1"#
        ),
    );
    // Refused, as sudo without a password would be.
    fake_program(
        &bin,
        "fake-start-refused",
        "echo 'sudo: a password is required' >&2; exit 1",
    );
    // Returns at once, like `service docker start`; the daemon answers two seconds later.
    fake_program(
        &bin,
        "fake-start-slow",
        &format!(
            "echo 'Starting Docker: docker.'\n(sleep 2; touch '{up_str}') >/dev/null 2>&1 &\nexit 0"
        ),
    );
    let rocklet = RockletProcess::start_with_path_prefix(&bin);
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let worker = rocklet_worker(&rocklet.addr);
    let status_dir = tmp.path().join("status");

    // 1. The start command fails: a failed run with its exit code and output (ROCK: success).
    let (report, run) = tick(
        &rt,
        &set,
        "docker_health",
        json!({"start_command": ["fake-start-refused"]}),
        &worker,
        &status_dir,
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Failed, "{}", report.to_json());
    let r = &report.worker_results[0];
    assert_eq!(r.outcome, WorkerOutcome::Failed);
    assert_eq!(r.error_type.map(|t| t.as_str()), Some("TaskResultFailed"));
    let error = r.error.as_deref().unwrap();
    assert!(
        error.contains(
            "the start command `fake-start-refused` exited with 1: sudo: a password is required"
        ),
        "{error}"
    );
    assert!(
        error.contains("Cannot connect to the Docker daemon"),
        "{error}"
    );
    let d = detail(&report, &run);
    assert_eq!(d["restarted"], false);
    assert_eq!(d["restart_exit_code"], 1);
    assert_eq!(d["restart_output_head"], "sudo: a password is required");
    let status = status_file(&status_dir, "docker_health");
    assert_eq!(status["status"], "failed");
    assert_eq!(status["extra"]["restart_exit_code"], 1);

    // 2. The start command succeeds but the daemon stays down: still a failed run, after
    //    about 20 s of polling.
    let (report, run) = tick(
        &rt,
        &set,
        "docker_health",
        json!({"start_command": ["true"]}),
        &worker,
        &status_dir,
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Failed, "{}", report.to_json());
    let error = report.worker_results[0].error.as_deref().unwrap();
    assert!(
        error.contains("`true` exited with 0 but the docker daemon still does not answer"),
        "{error}"
    );
    let d = detail(&report, &run);
    assert_eq!(d["restart_exit_code"], 0);
    assert!(d["recheck_attempts"].as_u64().unwrap() >= 2, "{d:#}");

    // 3. The start command works, the daemon comes up a little later: restarted.
    let (report, run) = tick(
        &rt,
        &set,
        "docker_health",
        json!({"start_command": ["fake-start-slow"]}),
        &worker,
        &status_dir,
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    let d = detail(&report, &run);
    assert_eq!(d["restarted"], true, "{d:#}");
    assert_eq!(d["restart_exit_code"], 0);
    assert_eq!(d["restart_output_head"], "Starting Docker: docker.");
    assert_eq!(d["server_version"], "fake-1.0");
    assert!(
        d["recheck_attempts"].as_u64().unwrap() >= 2,
        "polled: {d:#}"
    );
    assert_eq!(
        status_file(&status_dir, "docker_health")["status"],
        "success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_cache_cleanup_prunes_installed_tools_and_skips_missing_ones() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("build-cache");
    let calls = tmp.path().join("calls.log");
    let calls_str = calls.to_str().unwrap();
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let status_dir = tmp.path().join("status");

    // uv and pip both present (on a rocklet, fakes first on PATH).
    let both = tmp.path().join("both");
    fake_program(
        &both,
        "uv",
        &format!("echo \"uv $*\" >> '{calls_str}'; echo 'Removed 3 files (1.2KiB)' >&2"),
    );
    fake_program(
        &both,
        "pip",
        &format!("echo \"pip $*\" >> '{calls_str}'; echo 'Files removed: 2'"),
    );
    let rocklet = RockletProcess::start_with_path_prefix(&both);
    let (report, run) = tick(
        &rt,
        &set,
        "build_cache_cleanup",
        json!({}),
        &rocklet_worker(&rocklet.addr),
        &status_dir,
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    assert_eq!(
        detail(&report, &run),
        json!({
            "status": "success",
            "tools": ["uv", "pip"],
            "details": {
                "uv": {"installed": true, "result": "pruned", "exit_code": 0,
                       "output_head": "Removed 3 files (1.2KiB)"},
                "pip": {"installed": true, "result": "pruned", "exit_code": 0,
                        "output_head": "Files removed: 2"},
            }
        })
    );
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "uv cache prune\npip cache purge\n"
    );

    // pip absent: the local worker with a PATH holding only the fake uv (this machine has a
    // real pip on every standard PATH directory, so a prefix cannot hide it).
    let only_uv = tmp.path().join("only-uv");
    std::fs::create_dir_all(&only_uv).unwrap();
    std::fs::copy(both.join("uv"), only_uv.join("uv")).unwrap();
    let local = |path: &Path| {
        Worker::new(
            workers::local::LocalWorker::new(Limits::default())
                .with_env(vec![("PATH".into(), path.to_str().unwrap().into())]),
        )
    };
    let (report, run) = tick(
        &rt,
        &set,
        "build_cache_cleanup",
        json!({"tools": ["uv", "pip"]}),
        &local(&only_uv),
        &status_dir,
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    let d = detail(&report, &run);
    assert_eq!(d["details"]["uv"]["result"], "pruned");
    assert_eq!(
        d["details"]["pip"],
        json!({"installed": false, "result": "skipped (not installed)", "exit_code": null,
               "output_head": ""})
    );

    // A failing uv fails the run and is named.
    let broken = tmp.path().join("broken");
    fake_program(
        &broken,
        "uv",
        "echo 'error: Failed to prune cache at: /root/.cache/uv' >&2; exit 2",
    );
    let (report, run) = tick(
        &rt,
        &set,
        "build_cache_cleanup",
        json!({"tools": ["uv"]}),
        &local(&broken),
        &status_dir,
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Failed, "{}", report.to_json());
    assert_eq!(
        report.worker_results[0].error.as_deref(),
        Some(
            "build cache cleanup failed for uv: `uv cache prune` exited with 2: error: Failed \
             to prune cache at: /root/.cache/uv"
        )
    );
    assert_eq!(detail(&report, &run)["details"]["uv"]["exit_code"], 2);
    let status = status_file(&status_dir, "build_cache_cleanup");
    assert_eq!(status["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_cache_cleanup_rejects_a_hostile_tools_value() {
    let tmp = TempDir::new("build-cache-hostile");
    let marker = tmp.path().join("pwned");
    let hostile = format!("uv; touch {}", marker.display());
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let plugin = set.get("build_cache_cleanup").unwrap();
    let params = json!({"tools": ["pip", hostile]});
    let verdict = within(
        "validate-config",
        30,
        rt.validate_config(plugin, &params.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(
        verdict,
        Err(format!(
            "tools[1] {}: unknown tool (supported: \"uv\", \"pip\")",
            json!(hostile)
        ))
    );
    // Run anyway (as if validation had been skipped): the run refuses the params, nothing runs.
    let local = workers::connect(&[WorkerAddr::Local], Limits::default()).remove(0);
    let (report, _) = tick(
        &rt,
        &set,
        "build_cache_cleanup",
        params,
        &local,
        &tmp.path().join("status"),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Failed);
    assert!(
        report.worker_results[0]
            .error
            .as_deref()
            .unwrap()
            .contains("unknown tool"),
        "{}",
        report.to_json()
    );
    assert!(!marker.exists(), "a tools value was executed");
}
