//! ray_log_cleanup and sandbox_log_archive loaded by the host and run through a real rocklet:
//! the cleanup on a fabricated Ray temp dir (exactly which files go and which stay), the
//! archive against a real S3-compatible store (moto in server mode with authentication,
//! scripts/test-s3.sh) — objects read back through the S3 API, local dirs deleted only after a
//! verified upload, kept on a wrong credential — and the store's secret in no command line,
//! no rocklet log (which holds every request body), no Quarry log, report or status file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use quarry_host::config::Config;
use quarry_host::report::TickOutcome;
use quarry_host::server::resolve_tasks;
use serde_json::{Value, json};

use crate::harness::*;
use crate::image_pull::{
    Captured, CmdlineWatch, assert_no_secret, local_worker, rocklet_worker, tick_task,
};
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Sets `path`'s modification time to `minutes` ago with `touch -d` (a symbolic link itself).
fn touch(path: &Path, minutes: u64) {
    let status = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("{minutes} minutes ago"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "touch {}", path.display());
}

/// Writes a file aged `minutes`.
fn put(path: &Path, minutes: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"log line\n").unwrap();
    touch(path, minutes);
}

/// Every file and directory under `root`, relative, sorted (symbolic links not followed).
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A PID of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

const H: u64 = 60;
const D: u64 = 24 * 60;

#[tokio::test(flavor = "current_thread")]
async fn ray_log_cleanup_through_a_rocklet_removes_exactly_the_stale_entries() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("ray-log");
    let ray = tmp.path().join("ray");
    let live = "session_2026-12-01_10-00-00_000001_7";
    let logs = ray.join(live).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::os::unix::fs::symlink(ray.join(live), ray.join("session_latest")).unwrap();
    let (dead, alive) = (dead_pid(), std::process::id());
    let keep: Vec<String> = vec![
        "raylet.out".into(),
        "gcs_server.err".into(),
        "agent-4242424242.err".into(),
        "raylet.1.out.young".into(),
        "gcs_server.1.err".into(),
        "runtime_env_setup-02000000.log".into(),
        format!("worker-aa-01000000-{alive}.out"),
        format!("worker-aa-01000000-{dead}.err"),
        "debug_state.txt".into(),
        "old/raylet.out.2".into(),
    ];
    let remove: Vec<String> = vec![
        "raylet.2.out".into(),
        "runtime_env_setup-01000000.log".into(),
        "runtime_env_setup-f4060000.log".into(),
        format!("worker-aa-01000000-{dead}.out"),
        "events_old.txt".into(),
        "it's $(touch pwned).txt".into(),
        "old/raylet.out.1".into(),
    ];
    let ages = |name: &str| -> u64 {
        match name {
            "raylet.out" | "gcs_server.err" | "agent-4242424242.err" => 30 * D,
            "raylet.1.out.young" => 30 * D, // not a rotated name: a daemon log
            "gcs_server.1.err" => 23 * H,
            "raylet.2.out" => 25 * H,
            "runtime_env_setup-02000000.log" => 50,
            n if n.starts_with("runtime_env_setup-") => 70,
            n if n.ends_with(&format!("{dead}.err")) => 50,
            n if n.starts_with("worker-") => 10 * D,
            "debug_state.txt" => 6 * D,
            "old/raylet.out.2" => 23 * H,
            "old/raylet.out.1" => 25 * H,
            _ => 8 * D,
        }
    };
    for name in keep.iter().chain(&remove) {
        put(&logs.join(name), ages(name));
    }
    for (name, minutes) in [("session_old_a", 25 * H), ("session_young", 23 * H)] {
        put(&ray.join(name).join("logs/raylet.out"), 30 * D);
        touch(&ray.join(name), minutes);
    }
    touch(&ray.join(live), 30 * D);
    let before = tree(&ray);

    let rocklet = RockletProcess::start();
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let params = json!({"ray_temp_dir": ray.to_str().unwrap()});
    let ran = tick_task(
        &rt,
        &set,
        "ray_log_cleanup",
        params,
        &rocklet_worker(&rocklet.addr),
        tmp.path(),
    )
    .await;
    let d = ran.expect(TickOutcome::Success, "ray_log_cleanup");

    let mut want: Vec<String> = before
        .into_iter()
        .filter(|p| {
            !p.starts_with("session_old_a")
                && !remove.iter().any(|r| *p == format!("{live}/logs/{r}"))
        })
        .collect();
    want.sort();
    assert_eq!(tree(&ray), want);
    assert_eq!(d["live_session"], live);
    assert_eq!(
        d["removed"],
        json!({"sessions": 1, "dead_pid": 1, "setup": 2, "rotated_daemon": 1, "stale": 2, "old": 1})
    );
    assert_eq!(d["removed_sessions"], json!(["session_old_a"]));
    assert!(!tmp.path().join("pwned").exists() && !logs.join("pwned").exists());
    let status: Value = serde_json::from_str(&ran.status).unwrap();
    assert_eq!(status["extra"]["removed_count"], 1, "{status:#}");
}

/// The S3-compatible store started by scripts/test-s3.sh.
struct Store {
    endpoint: String,
    region: String,
    bucket: String,
    access_key: String,
    secret_key: String,
}

fn store() -> Store {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run scripts/test.sh, or source scripts/test-s3.sh first")
        })
    };
    Store {
        endpoint: var("QUARRY_TEST_S3_ENDPOINT"),
        region: var("QUARRY_TEST_S3_REGION"),
        bucket: var("QUARRY_TEST_S3_BUCKET"),
        access_key: var("QUARRY_TEST_S3_ACCESS_KEY"),
        secret_key: var("QUARRY_TEST_S3_SECRET_KEY"),
    }
}

impl Store {
    /// Writes a curl config holding `key:secret`, mode 600, as an operator would.
    fn credentials(&self, path: &Path, secret: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("user = \"{}:{secret}\"\n", self.access_key)).unwrap();
        let status = Command::new("chmod").arg("600").arg(path).status().unwrap();
        assert!(status.success());
    }

    /// GETs `key` through the S3 API (signed with the right key) into `dest`; the HTTP status.
    fn get(&self, key: &str, creds: &Path, dest: &Path) -> String {
        let out = Command::new("curl")
            .args(["-q", "-sS", "--max-time", "30", "--aws-sigv4"])
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("-K")
            .arg(creds)
            .args([
                "-H",
                "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "-w",
                "%{http_code}",
                "-o",
            ])
            .arg(dest)
            .arg(format!("{}/{}/{key}", self.endpoint, self.bucket))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn params(&self, root: &Path, creds: &Path, prefix: &str) -> Value {
        json!({
            "endpoint": self.endpoint, "bucket": self.bucket, "region": self.region,
            "prefix": prefix, "credentials_file": creds.to_str().unwrap(),
            "log_root": root.to_str().unwrap(), "keep_days_before_archive": 3,
        })
    }
}

/// The names in a `.tar.gz`, sorted.
fn tar_names(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{} is a tar.gz", archive.display());
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// A sandbox log dir with two files, all aged `days`.
fn sandbox(root: &Path, id: &str, days: u64) -> PathBuf {
    let dir = root.join(id);
    for f in ["rocklet.log", "sub/command.log"] {
        put(&dir.join(f), days * D);
    }
    touch(&dir.join("sub"), days * D);
    touch(&dir, days * D);
    dir
}

/// A prefix of this test run's own, so that runs never see each other's objects.
fn prefix(label: &str) -> String {
    format!("t{}-{label}", std::process::id())
}

#[tokio::test(flavor = "current_thread")]
async fn sandbox_log_archive_uploads_verifies_then_deletes_and_the_secret_stays_on_the_worker() {
    needs_real_parts!("the test S3 store (moto) and a real rocklet");
    let s3 = store();
    let secrets = vec![s3.secret_key.clone()];
    let tmp = TempDir::new("sla-ok");
    let root = tmp.path().join("logs");
    let old = sandbox(&root, "sb-old", 4);
    let older = sandbox(&root, "sb-older", 10);
    let young = sandbox(&root, "sb-young", 1);
    put(&root.join("rocklet.log"), 10 * D);
    let creds = tmp.path().join("secrets/s3.curl");
    s3.credentials(&creds, &s3.secret_key);
    let prefix = prefix("ok");

    let rocklet = RockletProcess::start_logging_requests();
    let (log, _guard) = Captured::start();
    let watch = CmdlineWatch::start(secrets.clone());
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let params = s3.params(&root, &creds, &prefix);
    let ran = tick_task(
        &rt,
        &set,
        "sandbox_log_archive",
        params,
        &rocklet_worker(&rocklet.addr),
        tmp.path(),
    )
    .await;
    watch.finish();

    let d = ran.expect(TickOutcome::Success, "sandbox_log_archive");
    assert_eq!(d["archived"], 2, "{d:#}");
    assert_eq!(d["skipped_too_young"], 1);
    assert_eq!(d["scanned"], 3);
    assert!(
        !old.exists() && !older.exists(),
        "archived dirs are deleted"
    );
    assert!(young.join("sub/command.log").exists() && root.join("rocklet.log").exists());
    for id in ["sb-old", "sb-older"] {
        let got = tmp.path().join(format!("{id}.tar.gz"));
        let key = format!("{prefix}/sandbox-logs/{id}.tar.gz");
        assert_eq!(s3.get(&key, &creds, &got), "200", "{key} is in the store");
        assert_eq!(
            tar_names(&got),
            [
                format!("{id}/"),
                format!("{id}/rocklet.log"),
                format!("{id}/sub/"),
                format!("{id}/sub/command.log")
            ]
        );
    }

    ran.assert_no_secret(&secrets);
    assert_no_secret("Quarry's log", &log.text(), &secrets);
    let rocklet_log = std::fs::read_to_string(&rocklet.log).unwrap();
    assert!(
        rocklet_log.contains("--aws-sigv4") && rocklet_log.contains(creds.to_str().unwrap()),
        "the rocklet logged the archive request"
    );
    assert_no_secret("the rocklet's log", &rocklet_log, &secrets);
}

#[tokio::test(flavor = "current_thread")]
async fn sandbox_log_archive_with_a_wrong_secret_keeps_every_dir_and_says_why() {
    needs_real_parts!("the test S3 store (moto) and a real rocklet");
    let s3 = store();
    let tmp = TempDir::new("sla-wrong");
    let rocklet = RockletProcess::start_logging_requests();
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let right = tmp.path().join("right.curl");
    s3.credentials(&right, &s3.secret_key);
    let wrong_secret = "wrong-secret-Zq0x9";
    for (label, worker) in [
        ("rocklet", rocklet_worker(&rocklet.addr)),
        ("local", local_worker()),
    ] {
        let dir = tmp.path().join(label);
        let root = dir.join("logs");
        let a = sandbox(&root, "sb-a", 5);
        let before = tree(&root);
        let creds = dir.join("wrong.curl");
        s3.credentials(&creds, wrong_secret);
        let prefix = prefix(&format!("wrong-{label}"));
        let params = s3.params(&root, &creds, &prefix);
        let ran = tick_task(&rt, &set, "sandbox_log_archive", params, &worker, &dir).await;
        let d = ran.expect(TickOutcome::Failed, label);
        let error = d["error"].as_str().unwrap();
        assert!(
            error.starts_with(
                "could not archive 1 of 1 sandbox log dirs, which stay on the worker (first: \
                 sb-a: upload: HTTP 403 SignatureDoesNotMatch: "
            ),
            "{label}: {error}"
        );
        assert_eq!(tree(&root), before, "{label}: nothing changed locally");
        assert!(a.join("rocklet.log").exists());
        let key = format!("{prefix}/sandbox-logs/sb-a.tar.gz");
        let got = dir.join("got");
        assert_eq!(s3.get(&key, &right, &got), "404", "{label}: nothing stored");
        ran.assert_no_secret(&[wrong_secret.to_string()]);
    }
    let rocklet_log = std::fs::read_to_string(&rocklet.log).unwrap();
    assert_no_secret(
        "the rocklet's log",
        &rocklet_log,
        &[wrong_secret.to_string()],
    );
}

/// Loads a config of one task, as `quarry serve` and `check-config` do, with both plugins: the
/// plugin it resolves to, or the problems, one per line.
async fn resolve(task_class: &str, params: &str) -> Result<String, String> {
    let yaml =
        format!("scheduler:\n  tasks:\n    - task_class: {task_class}\n      params: {params}\n");
    let plugins = plugins_dir(&["ray_log_cleanup", "sandbox_log_archive"]);
    let mut cfg = Config::from_yaml(&yaml, plugins.path()).map_err(|p| format!("{p:?}"))?;
    cfg.paths.plugins_dir = plugins.path().to_path_buf();
    let rt = runtime(64, Duration::from_secs(5));
    let set = load(&rt, plugins.path()).await;
    match resolve_tasks(&rt, &cfg, &set).await {
        Ok(tasks) => Ok(tasks[0].plugin.to_string()),
        Err(p) => Err(p
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocks_class_path_class_name_and_quarry_name_load_and_bad_params_are_named() {
    let archive = r#"{endpoint: "http://127.0.0.1:9000", bucket: logs, credentials_file: /etc/quarry/s3.curl}"#;
    for (class, name, params) in [
        ("RayLogCleanupTask", "ray_log_cleanup", "{}"),
        ("SandboxLogArchiveTask", "sandbox_log_archive", archive),
    ] {
        let path = format!("rock.admin.scheduler.tasks.{name}_task.{class}");
        for form in [path.as_str(), class, name] {
            assert_eq!(resolve(form, params).await.as_deref(), Ok(name), "{form}");
        }
    }
    let err = resolve("RayLogCleanupTask", "{min_age_hours: 0}")
        .await
        .unwrap_err();
    assert!(
        err.starts_with("scheduler.tasks[0].params: ")
            && err.ends_with("min_age_hours 0: must be at least 1"),
        "{err}"
    );
    let err = resolve(
        "SandboxLogArchiveTask",
        "{endpoint: http://h, bucket: logs}",
    )
    .await
    .unwrap_err();
    assert!(err.contains("credentials_file: required"), "{err}");
}
