//! End to end: plugins loaded by the host, run against real rocklets and the `local` worker.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quarry_host::report::{TickOutcome, WorkerOutcome};
use quarry_host::run::run_tick;
use quarry_host::workers::{self, Limits, Worker, WorkerAddr};
use serde_json::json;

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

const STATUS_KEYS: [&str; 7] = [
    "task_name",
    "worker_ip",
    "pid",
    "status",
    "last_run",
    "error",
    "extra",
];
const REPORT_KEYS: [&str; 13] = [
    "task_type",
    "timestamp",
    "duration_ms",
    "outcome",
    "total",
    "success_count",
    "started_count",
    "skipped_count",
    "failed_count",
    "timeout_count",
    "success_ips",
    "failed_details",
    "worker_results",
];

fn rocklet_worker(addr: &str) -> Worker {
    let a = WorkerAddr::parse(addr, 22555).unwrap();
    workers::connect(&[a], Limits::default()).remove(0)
}

/// A directory with a fake `docker` that reports one running container, `web-1`.
fn fake_docker(dir: &Path, script: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("docker");
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The tree file_cleanup works on, and the params that go with it.
fn cleanup_tree(root: &Path) -> serde_json::Value {
    let d = root.join("logs");
    file(&d.join("old.log"), b"old", 3);
    file(&d.join("young.log"), b"young", 0);
    file(&d.join("big.bin"), &vec![0u8; 3000], 0);
    file(&d.join("docuum.log"), b"keep", 3);
    file(&d.join("rocklet.log"), b"keep", 3);
    file(
        &d.join("sub/rocklet.log"),
        b"old, not excluded by ./rocklet.log",
        3,
    );
    file(&d.join("web-1/app.log"), b"protected", 3);
    file(&d.join("keepdir/x.log"), b"excluded dir", 3);
    file(&d.join("it's $(touch pwned)"), b"old, hostile name", 3);
    std::fs::create_dir_all(d.join("empty-old")).unwrap();
    age(&d.join("empty-old"), 3);
    json!({
        "target_dirs": [
            {"path": d.to_str().unwrap(), "exclude_files": ["docuum.log", "./rocklet.log"], "exclude_dirs": ["keepdir"]},
            root.join("missing").to_str().unwrap()
        ],
        "max_age_mins": 60,
        "max_file_size": "2K"
    })
}

fn assert_cleanup_result(root: &Path) {
    let d = root.join("logs");
    for gone in [
        "old.log",
        "big.bin",
        "sub/rocklet.log",
        "it's $(touch pwned)",
        "empty-old",
    ] {
        assert!(!d.join(gone).exists(), "{gone} should have been deleted");
    }
    for kept in [
        "young.log",
        "docuum.log",
        "rocklet.log",
        "web-1/app.log",
        "keepdir/x.log",
    ] {
        assert!(d.join(kept).exists(), "{kept} should have been kept");
    }
    assert!(d.exists(), "the target dir itself is never deleted");
    assert!(
        !Path::new("pwned").exists() && !d.join("pwned").exists(),
        "a file name executed"
    );
}

fn check_status_file(status_dir: &Path, task: &str, ip: &str, status: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(status_dir.join(format!("{task}_status.json"))).unwrap();
    assert_eq!(key_order(&text), STATUS_KEYS, "status file key order");
    assert!(
        text.starts_with("{\n  \"task_name\": "),
        "2-space indent: {text}"
    );
    assert!(!text.ends_with('\n'));
    assert!(text.is_ascii(), "status files are ASCII (ensure_ascii)");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["task_name"], task);
    assert_eq!(v["worker_ip"], ip);
    assert_eq!(v["status"], status, "{text}");
    let last_run = v["last_run"].as_str().unwrap();
    assert!(
        last_run.len() == 26 && last_run.as_bytes()[10] == b'T' && last_run.as_bytes()[19] == b'.',
        "naive ISO timestamp with microseconds: {last_run}"
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cleanup_on_a_rocklet_deletes_exactly_the_right_files() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("fc-rocklet");
    let bin = tmp.path().join("bin");
    fake_docker(&bin, r#"[ "$1" = ps ] && { echo web-1; exit 0; }; exit 1"#);
    let rocklet = RockletProcess::start_with_path_prefix(&bin);
    let params = cleanup_tree(tmp.path());
    let rt = runtime(256, Duration::from_secs(30));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let status = tmp.path().join("status");
    let reports = tmp.path().join("reports");
    let worker = rocklet_worker(&rocklet.addr);
    let (report, runs) = within(
        "file_cleanup tick",
        60,
        run_tick(
            &rt,
            &task(&set, "file_cleanup", params),
            &[worker],
            &settings(status.to_str().unwrap(), Some(&reports), 60),
        ),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    assert_cleanup_result(tmp.path());

    let v = check_status_file(&status, "file_cleanup", "127.0.0.1", "success");
    assert_eq!(v["extra"]["protected_containers"], json!(["web-1"]));
    let logs = tmp.path().join("logs");
    let details = &v["extra"]["details"][logs.to_str().unwrap()];
    assert_eq!(details["deleted_files_count"], 4, "{v:#}");
    assert_eq!(
        v["extra"]["details"][tmp.path().join("missing").to_str().unwrap()]["result"],
        "dir_not_found"
    );
    assert_eq!(runs[0].detail.as_ref().unwrap()["status"], "success");

    let text = std::fs::read_to_string(reports.join("file_cleanup_run_report.json")).unwrap();
    assert_eq!(key_order(&text), REPORT_KEYS);
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["task_type"], "file_cleanup");
    assert_eq!(r["outcome"], "success");
    assert_eq!(r["success_ips"], json!(["127.0.0.1"]));
    assert_eq!(
        r["worker_results"][0],
        json!({"worker_ip": "127.0.0.1", "outcome": "success", "error_type": null, "error": null})
    );
    let wr = &text[text.find("\"worker_results\"").unwrap()..];
    assert!(
        wr.contains("\"worker_ip\": \"127.0.0.1\",\n      \"outcome\""),
        "ROCK's entry key order: {wr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cleanup_fails_closed_when_docker_is_installed_but_broken() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("fc-closed");
    let bin = tmp.path().join("bin");
    fake_docker(
        &bin,
        "echo 'Cannot connect to the Docker daemon' >&2; exit 1",
    );
    let rocklet = RockletProcess::start_with_path_prefix(&bin);
    let params = cleanup_tree(tmp.path());
    let rt = runtime(256, Duration::from_secs(30));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let status = tmp.path().join("status");
    let (report, _) = within(
        "file_cleanup tick",
        60,
        run_tick(
            &rt,
            &task(&set, "file_cleanup", params),
            &[rocklet_worker(&rocklet.addr)],
            &settings(status.to_str().unwrap(), None, 60),
        ),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Failed);
    let wr = &report.worker_results[0];
    assert_eq!(wr.error_type.map(|t| t.as_str()), Some("TaskResultFailed"));
    assert!(
        wr.error
            .as_deref()
            .unwrap()
            .contains("refusing to delete anything"),
        "{wr:?}"
    );
    assert!(
        tmp.path().join("logs/old.log").exists(),
        "nothing may be deleted when docker fails"
    );
    let v = check_status_file(&status, "file_cleanup", "127.0.0.1", "failed");
    assert!(
        v["error"].as_str().unwrap().contains("Cannot connect"),
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cleanup_on_the_local_worker_behaves_the_same() {
    let tmp = TempDir::new("fc-local");
    let bin = tmp.path().join("bin");
    fake_docker(&bin, r#"[ "$1" = ps ] && { echo web-1; exit 0; }; exit 1"#);
    let params = cleanup_tree(tmp.path());
    let rt = runtime(256, Duration::from_secs(30));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let status = tmp.path().join("status");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let local = Worker::new(
        workers::local::LocalWorker::new(Limits::default()).with_env(vec![("PATH".into(), path)]),
    );
    let (report, _) = within(
        "file_cleanup tick",
        60,
        run_tick(
            &rt,
            &task(&set, "file_cleanup", params),
            &[local],
            &settings(status.to_str().unwrap(), None, 60),
        ),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    assert_cleanup_result(tmp.path());
    let v = check_status_file(&status, "file_cleanup", "local", "success");
    assert_eq!(v["extra"]["protected_containers"], json!(["web-1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_fails_alone() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("dead");
    let rocklet = RockletProcess::start();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let addrs = [
        WorkerAddr::parse(&rocklet.addr, 22555).unwrap(),
        WorkerAddr::parse(&format!("127.0.0.2:{dead}"), 22555).unwrap(),
        WorkerAddr::Local,
    ];
    let ws = workers::connect(&addrs, Limits::default());
    let reports = tmp.path().join("reports");
    let (report, _) = within(
        "tick with a dead worker",
        60,
        run_tick(
            &rt,
            &task(&set, "probe", json!({"mode": "ok"})),
            &ws,
            &settings(tmp.str(), Some(&reports), 20),
        ),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Partial, "{}", report.to_json());
    assert_eq!(report.total, 3);
    assert_eq!(report.success_count, 2);
    assert_eq!(report.success_ips, vec!["127.0.0.1", "local"]);
    let dead_result = &report.worker_results[1];
    assert_eq!(dead_result.worker_ip, "127.0.0.2");
    assert_eq!(dead_result.outcome, WorkerOutcome::Failed);
    assert_eq!(
        dead_result.error_type.map(|t| t.as_str()),
        Some("ConnectionError")
    );
    assert!(
        dead_result.error.as_deref().unwrap().contains("127.0.0.2"),
        "{dead_result:?}"
    );
    assert_eq!(report.failed_details[0].ip, "127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_calls_reach_the_rocklet_and_errors_are_typed() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("calls");
    let rocklet = RockletProcess::start();
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let w = rocklet_worker(&rocklet.addr);
    let s = settings(&format!("{}/status", tmp.str()), None, 20);
    let run = |params: serde_json::Value| {
        let (rt, set, w, s) = (rt.clone(), &set, w.clone(), s.clone());
        async move {
            let (report, runs) = within(
                "probe tick",
                30,
                run_tick(&rt, &task(set, "probe", params), &[w], &s),
            )
            .await;
            assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
            runs[0].detail.clone().unwrap()
        }
    };
    let path = tmp.path().join("dir/ünï.txt");
    let d = run(json!({"mode": "write", "path": path, "content": "héllo\nworld"})).await;
    assert_eq!(d["written"], true);
    let d = run(json!({"mode": "read", "path": path})).await;
    assert_eq!(d["content"], "héllo\nworld");
    let d = run(json!({"mode": "read", "path": tmp.path().join("nope")})).await;
    assert_eq!(d["error_kind"], "not-found", "{d:?}");
    let d = run(json!({"mode": "exec", "argv": ["printf", "%s", "$(id) `id`; id"]})).await;
    assert_eq!(
        d["stdout"], "$(id) `id`; id",
        "argv values reach the program verbatim"
    );
    let d = run(json!({"mode": "shell", "script": "echo out; echo err >&2; exit 3"})).await;
    assert_eq!(
        (
            d["stdout"].as_str(),
            d["stderr"].as_str(),
            d["exit_code"].as_i64()
        ),
        (Some("out\n"), Some("err\n"), Some(3))
    );
    let d = run(json!({"mode": "exec", "argv": ["no-such-program-quarry"]})).await;
    assert_eq!(d["error_kind"], "not-found", "{d:?}");
    let d = run(json!({"mode": "ok"})).await;
    assert_eq!(d["worker"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_blocked_in_a_host_call_is_stopped_at_its_deadline() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("blocked");
    let rocklet = RockletProcess::start();
    let rt = runtime(64, Duration::from_secs(60));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let started = Instant::now();
    let (report, runs) = within(
        "sleeping probe",
        30,
        run_tick(
            &rt,
            &task(&set, "probe", json!({"mode": "sleep", "secs": 60})),
            &[rocklet_worker(&rocklet.addr)],
            &settings(tmp.str(), None, 4),
        ),
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "took {took:?}");
    // The host call was cut at the run's deadline; the guest saw a timeout error.
    let d = runs[0]
        .detail
        .as_ref()
        .unwrap_or_else(|| panic!("{}", report.to_json()));
    assert_eq!(d["error_kind"], "timeout", "{}", report.to_json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_task_errors_and_failed_results_are_reported_per_worker() {
    let tmp = TempDir::new("traps");
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let local = workers::connect(&[WorkerAddr::Local], Limits::default());
    let cases = [
        ("trap", "Trap", "probe trap on purpose"),
        ("error", "TaskError", "probe error on purpose"),
        ("fail", "TaskResultFailed", "probe failed on purpose"),
    ];
    for (mode, kind, msg) in cases {
        let (report, _) = within(
            mode,
            30,
            run_tick(
                &rt,
                &task(&set, "probe", json!({"mode": mode})),
                &local,
                &settings(tmp.str(), None, 10),
            ),
        )
        .await;
        assert_eq!(report.outcome, TickOutcome::Failed, "{mode}");
        let r = &report.worker_results[0];
        assert_eq!(
            r.error_type.map(|t| t.as_str()),
            Some(kind),
            "{mode}: {r:?}"
        );
        assert!(r.error.as_deref().unwrap().contains(msg), "{mode}: {r:?}");
        let v = check_status_file(tmp.path(), "probe", "local", "failed");
        assert!(v["error"].as_str().unwrap().contains(msg), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_past_the_memory_limit_fails_cleanly() {
    let tmp = TempDir::new("alloc");
    let rt = runtime(64, Duration::from_secs(10));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let local = workers::connect(&[WorkerAddr::Local], Limits::default());
    let (report, _) = within(
        "alloc 512",
        30,
        run_tick(
            &rt,
            &task(&set, "probe", json!({"mode": "alloc", "mib": 512})),
            &local,
            &settings(tmp.str(), None, 10),
        ),
    )
    .await;
    let r = &report.worker_results[0];
    assert_eq!(r.outcome, WorkerOutcome::Failed);
    assert_eq!(
        r.error_type.map(|t| t.as_str()),
        Some("MemoryLimitExceeded"),
        "{r:?}"
    );
    assert!(r.error.as_deref().unwrap().contains("64 MiB"), "{r:?}");
    // The same plugin, same runtime, within the limit: fine.
    let (report, _) = within(
        "alloc 8",
        30,
        run_tick(
            &rt,
            &task(&set, "probe", json!({"mode": "alloc", "mib": 8})),
            &local,
            &settings(tmp.str(), None, 10),
        ),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cleanup_protects_the_directories_of_running_containers_on_real_docker() {
    needs_real_parts!("the test dockerd and a real rocklet");
    let image = docker_image();
    let name = format!("quarry-protected-{}", std::process::id());
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    let container = Container(name.clone());
    docker(&["run", "-d", "--name", &container.0, &image, "sleep", "600"]);
    let tmp = TempDir::new("fc-docker");
    let d = tmp.path().join("logs");
    file(
        &d.join(&name).join("app.log"),
        b"a running container's log",
        3,
    );
    file(
        &d.join("stopped-container/app.log"),
        b"old, not protected",
        3,
    );
    let params = json!({"target_dirs": [d.to_str().unwrap()], "max_age_mins": 60});
    let rocklet = RockletProcess::start();
    let rt = runtime(256, Duration::from_secs(30));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let status = tmp.path().join("status");
    let (report, runs) = within(
        "file_cleanup tick",
        60,
        run_tick(
            &rt,
            &task(&set, "file_cleanup", params),
            &[rocklet_worker(&rocklet.addr)],
            &settings(status.to_str().unwrap(), None, 60),
        ),
    )
    .await;
    assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    assert!(
        d.join(&name).join("app.log").exists(),
        "a running container's directory was cleaned"
    );
    assert!(!d.join("stopped-container/app.log").exists());
    let detail = runs[0].detail.as_ref().unwrap();
    assert_eq!(detail["docker"], "present");
    assert!(
        detail["protected_containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == name.as_str()),
        "{detail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pooling_allocator_runs_tasks_and_keeps_the_memory_limit() {
    let tmp = TempDir::new("pooled");
    let limits = quarry_host::runtime::RuntimeLimits {
        memory_bytes: 64 << 20,
        call_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let rt = Arc::new(quarry_host::runtime::Runtime::new_pooled(limits, 4).unwrap());
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let local = workers::connect(&[WorkerAddr::Local], Limits::default());
    for _ in 0..3 {
        let (report, _) = within(
            "pooled ok",
            30,
            run_tick(
                &rt,
                &task(&set, "probe", json!({"mode": "ok"})),
                &local,
                &settings(tmp.str(), None, 10),
            ),
        )
        .await;
        assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    }
    let (report, _) = within(
        "pooled alloc",
        30,
        run_tick(
            &rt,
            &task(&set, "probe", json!({"mode": "alloc", "mib": 512})),
            &local,
            &settings(tmp.str(), None, 10),
        ),
    )
    .await;
    assert_eq!(report.worker_results[0].outcome, WorkerOutcome::Failed);
    assert_eq!(
        report.worker_results[0].error_type.map(|t| t.as_str()),
        Some("MemoryLimitExceeded"),
        "{}",
        report.to_json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_beyond_the_pool_wait_for_a_slot_instead_of_failing() {
    // One slot, three ticks at once: wasmtime's pool would refuse the second and third
    // instantiation; the runtime makes them wait for the slot instead.
    let tmp = TempDir::new("pool-wait");
    let rt = Arc::new(
        quarry_host::runtime::Runtime::new_pooled(
            quarry_host::runtime::RuntimeLimits::default(),
            1,
        )
        .unwrap(),
    );
    assert_eq!(rt.pool_slots(), Some(1));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let local = workers::connect(&[WorkerAddr::Local], Limits::default());
    let sleepy = task(&set, "probe", json!({"mode": "sleep", "secs": "0.2"}));
    let dirs: Vec<String> = (0..3).map(|i| format!("{}/s{i}", tmp.str())).collect();
    let [a, b, c] = [0, 1, 2].map(|i| settings(&dirs[i], None, 10));
    let (ra, rb, rc) = within("three ticks on one slot", 30, async {
        tokio::join!(
            run_tick(&rt, &sleepy, &local, &a),
            run_tick(&rt, &sleepy, &local, &b),
            run_tick(&rt, &sleepy, &local, &c),
        )
    })
    .await;
    let results = [ra, rb, rc];
    for (report, _) in &results {
        assert_eq!(report.outcome, TickOutcome::Success, "{}", report.to_json());
    }
}
