//! Dry runs of the destructive built-ins (`quarry run --dry-run`, `dry_run: true` on a task):
//! they report what they would delete, remove, prune, start, log in to or pull, and change
//! nothing. Each is checked against the real thing: a fabricated tree hashed byte for byte
//! (content, mode, mtime of every entry) through the `local` worker and a real rocklet; a
//! private dockerd whose containers, images and disk usage are compared before and after;
//! docuum, pip's cache and Docker's login store on disk. Where a real run can follow, it does,
//! and it deletes (removes) exactly what the dry run listed.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use quarry_host::state::{Page, RunFilter, StateDb};
use serde_json::{Value, json};

use crate::cli::quarry;
use crate::harness::*;
use crate::image_cleanup::{PrivateDockerd, docuum_bin};
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Every entry at or below `root`: (is a directory, content, permission bits, mtime).
type Snapshot = BTreeMap<PathBuf, (bool, Vec<u8>, u32, SystemTime)>;

/// What a cleanup could change below `root`, for a byte-for-byte comparison.
fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let content = if meta.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        let mode = meta.permissions().mode();
        out.insert(p, (meta.is_dir(), content, mode, meta.modified().unwrap()));
    }
    out
}

/// `quarry run TASK` on `worker` with `params`, with `--dry-run` when `dry`: the exit code
/// and the task's detail (which `quarry run` prints on stderr after the worker's outcome).
async fn run(
    task: &str,
    worker: &str,
    params: &Value,
    tmp: &TempDir,
    plugins: &TempDir,
    dry: bool,
) -> (ExitCode, Value) {
    let status = format!("{}/status", tmp.str());
    let params = params.to_string();
    let mut args = vec![
        "run",
        task,
        "--worker",
        worker,
        "--params",
        &params,
        "--plugins-dir",
        plugins.str(),
        "--status-dir",
        &status,
    ];
    if dry {
        args.push("--dry-run");
    }
    let (code, _, err) = quarry(&args).await;
    let start = err
        .find("\n{")
        .unwrap_or_else(|| panic!("no detail in quarry run's stderr: {err}"));
    let detail = serde_json::Deserializer::from_str(&err[start..])
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap_or_else(|e| panic!("quarry run's detail is not JSON ({e}): {err}"));
    (code, detail)
}

/// The paths of a JSON list.
fn paths(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// A target with old files, a big young file, a young file, an excluded directory, an old
/// directory the file pass empties, a chain of old empty directories and a young empty one.
/// Returns the target and the entries (relative) a real run deletes: files, then dirs.
fn fabricated_tree(root: &Path) -> (PathBuf, BTreeSet<&'static str>, BTreeSet<&'static str>) {
    let t = root.join("target");
    file(&t.join("old.log"), b"old", 10);
    file(&t.join("sub/old 2.log"), b"old too", 10);
    file(&t.join("big.bin"), &[7u8; 4096], 0);
    file(&t.join("young.txt"), b"young", 0);
    file(&t.join("keep/old.keep"), b"excluded", 10);
    file(&t.join("olddir/f.old"), b"emptied", 10);
    std::fs::create_dir_all(t.join("chain/a/b")).unwrap();
    std::fs::create_dir_all(t.join("emptyyoung")).unwrap();
    // Directories last: creating entries makes their parents young again.
    for d in ["chain/a/b", "chain/a", "chain", "olddir", "keep"] {
        age(&t.join(d), 10);
    }
    let files = ["old.log", "sub/old 2.log", "big.bin", "olddir/f.old"];
    let dirs = ["chain/a/b", "chain/a", "chain"];
    (t, files.into(), dirs.into())
}

/// `quarry run --dry-run file_cleanup` on the rocklet `worker` leaves the fabricated tree as it was, byte
/// for byte, and lists exactly what the real run then deletes.
async fn file_cleanup_dry_then_real(worker: &str) {
    let tmp = TempDir::new("dry-file-cleanup");
    let plugins = plugins_dir(&["file_cleanup"]);
    let (t, files, dirs) = fabricated_tree(tmp.path());
    let target = t.to_str().unwrap();
    let params = json!({
        "target_dirs": [{"path": target, "exclude_dirs": ["keep"]}],
        "max_age_mins": 60,
        "max_file_size": 1024,
    });
    let under = |rels: &BTreeSet<&str>| -> BTreeSet<String> {
        rels.iter().map(|r| format!("{target}/{r}")).collect()
    };
    let before = snapshot(&t);

    let (code, dry) = run("file_cleanup", worker, &params, &tmp, &plugins, true).await;
    assert_eq!(code, ExitCode::SUCCESS, "{dry:#}");
    assert_eq!(snapshot(&t), before, "a dry run changes nothing: {dry:#}");
    assert_eq!(dry["dry_run"], true, "{dry:#}");
    let d = &dry["details"][target];
    assert_eq!(paths(&d["would_delete_files"]), under(&files), "{d:#}");
    assert_eq!(paths(&d["would_delete_dirs"]), under(&dirs), "{d:#}");
    assert_eq!(d["would_delete_files_count"], files.len());
    assert!(d.get("deleted_files").is_none(), "{d:#}");

    let (code, real) = run("file_cleanup", worker, &params, &tmp, &plugins, false).await;
    assert_eq!(code, ExitCode::SUCCESS, "{real:#}");
    assert!(real.get("dry_run").is_none(), "{real:#}");
    let r = &real["details"][target];
    assert_eq!(paths(&r["deleted_files"]), paths(&d["would_delete_files"]));
    assert_eq!(paths(&r["deleted_dirs"]), paths(&d["would_delete_dirs"]));
    let after = snapshot(&t);
    let gone: BTreeSet<String> = before
        .keys()
        .filter(|p| !after.contains_key(*p))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let listed: BTreeSet<String> = under(&files).union(&under(&dirs)).cloned().collect();
    assert_eq!(
        gone, listed,
        "the real run deleted exactly what the dry run listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cleanup_dry_run_through_a_rocklet_changes_nothing() {
    // A rocklet (not the local worker): file_cleanup asks Docker for the running containers,
    // and only the real-parts tier has a daemon (scripts/test.sh's DOCKER_HOST, inherited).
    needs_real_parts!("a real rocklet and the test dockerd");
    let rocklet = RockletProcess::start();
    file_cleanup_dry_then_real(&rocklet.addr).await;
}

/// `quarry run --dry-run ray_log_cleanup` through a rocklet: the Ray dir is unchanged byte for
/// byte and the counts are what the real run then removes (a stale session, a stale log; the
/// live session and an active daemon log stay in both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ray_log_cleanup_dry_run_through_a_rocklet_changes_nothing() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("dry-ray-log");
    let plugins = plugins_dir(&["ray_log_cleanup"]);
    let ray = tmp.path().join("ray");
    let logs = ray.join("session_live/logs");
    file(&logs.join("raylet.out"), b"daemon", 30);
    file(&logs.join("events_old.txt"), b"stale", 8);
    file(&ray.join("session_old/logs/raylet.out"), b"old session", 30);
    age(&ray.join("session_old"), 2);
    age(&ray.join("session_live"), 30);
    std::os::unix::fs::symlink(ray.join("session_live"), ray.join("session_latest")).unwrap();
    let params = json!({"ray_temp_dir": ray.to_str().unwrap()});
    let before = snapshot(&ray);
    let rocklet = RockletProcess::start();

    let (code, dry) = run(
        "ray_log_cleanup",
        &rocklet.addr,
        &params,
        &tmp,
        &plugins,
        true,
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{dry:#}");
    assert_eq!(snapshot(&ray), before, "a dry run changes nothing: {dry:#}");
    assert_eq!(dry["dry_run"], true, "{dry:#}");
    let expected = json!({"sessions": 1, "dead_pid": 0, "setup": 0, "rotated_daemon": 0, "stale": 1, "old": 0});
    assert_eq!(dry["removed"], expected, "{dry:#}");

    let (code, real) = run(
        "ray_log_cleanup",
        &rocklet.addr,
        &params,
        &tmp,
        &plugins,
        false,
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{real:#}");
    assert_eq!(real["removed"], expected, "{real:#}");
    assert!(!ray.join("session_old").exists() && !logs.join("events_old.txt").exists());
    assert!(logs.join("raylet.out").exists());
}

/// Imports a busybox image (Debian's busybox-static, as scripts/test-dockerd.sh does) into
/// `dockerd` as `tag`, so that containers can run there.
fn import_busybox(dockerd: &PrivateDockerd, dir: &Path, tag: &str) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    // Every import a distinct image, even of the same tag within one second.
    let nanos = SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    std::fs::write(root.join("made"), format!("{tag} {nanos}")).unwrap();
    for a in ["sh", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-cf", "rootfs.tar", "."])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(tar.success());
    let tarball = dir.join("rootfs.tar");
    dockerd.docker(&["import", tarball.to_str().unwrap(), tag]);
}

/// What the daemon holds: every container with its state, every image (dangling too), and
/// the disk usage of images, containers, volumes and the build cache (without the columns that
/// move with the clock, such as "Up 5 seconds").
fn docker_state(dockerd: &PrivateDockerd) -> [Vec<String>; 3] {
    // Sorted: docker lists images created within one second in any order.
    let sorted = |text: String| -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    [
        sorted(dockerd.docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Names}} {{.State}}",
        ])),
        sorted(dockerd.docker(&[
            "images",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
        ])),
        sorted(dockerd.docker(&[
            "system",
            "df",
            "--format",
            "{{.Type}} {{.TotalCount}} {{.Active}} {{.Size}} {{.Reclaimable}}",
        ])),
    ]
}

/// Pids of live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_tasks_dry_runs_change_nothing_on_a_real_daemon() {
    needs_real_parts!("a real rocklet, a private dockerd, docuum and pip");
    // Strategy: one private dockerd holding a running, an exited and a created container, a
    // tagged and a dangling image; a rocklet on it with pip's cache in a temp dir. Each
    // destructive task runs with --dry-run: the daemon's state, the temp dir (pip's cache,
    // Docker's login store, docuum's log and state) are unchanged and no docuum runs; then
    // container_cleanup and build_cache_cleanup run for real and do what the dry runs said.
    let tmp = TempDir::new("dry-docker");
    let ddir = PathBuf::from(format!("/tmp/quarry-dry-{}", std::process::id()));
    let dockerd = PrivateDockerd::start(&ddir);
    import_busybox(&dockerd, tmp.path(), "t/busybox:1");
    let label = format!("quarry-dry-{}", std::process::id());
    let labelled = ["--label", label.as_str()];
    let run_args = |name: &str, cmd: &[&str]| -> Vec<String> {
        [
            &["run", "--name", name][..],
            &labelled[..],
            &["t/busybox:1"][..],
            cmd,
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let docker =
        |args: Vec<String>| dockerd.docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    docker(run_args("exited", &["true"]));
    let mut detached = run_args("running", &["sleep", "600"]);
    detached.insert(1, "-d".into());
    docker(detached);
    let mut created = run_args("created", &["true"]);
    created[0] = "create".into();
    docker(created);
    // A dangling image: a tag imported twice leaves the first image untagged.
    import_busybox(&dockerd, &tmp.path().join("again"), "t/dangle:1");
    std::fs::remove_dir_all(tmp.path().join("again")).unwrap();
    import_busybox(&dockerd, &tmp.path().join("again"), "t/dangle:1");
    let exited_id = dockerd.docker(&["inspect", "--format", "{{.Id}}", "exited"]);
    let created_id = dockerd.docker(&["inspect", "--format", "{{.Id}}", "created"]);
    // Older than container_cleanup's cutoff below (0.0003 h ≈ 1 s).
    std::thread::sleep(Duration::from_secs(2));

    let pip_cache = tmp.path().join("pip-cache");
    file(
        &pip_cache.join("wheels/ab/cd/quarry_dry-1.0-py3-none-any.whl"),
        b"not really a wheel",
        0,
    );
    let pip_cache_str = pip_cache.to_str().unwrap().to_string();
    let rocklet = RockletProcess::start_with_env(&[
        ("DOCKER_HOST", dockerd.host.as_str()),
        ("PIP_CACHE_DIR", pip_cache_str.as_str()),
    ]);
    let w = rocklet.addr.as_str();
    let plugins = plugins_dir(&[
        "container_cleanup",
        "image_cleanup",
        "image_pull",
        "build_cache_cleanup",
        "docker_health",
    ]);
    let marker = format!("^quarry-dry-{}:", std::process::id());
    let cleanup = json!({"max_age_hours": 0.0003, "created_max_age_hours": 0.0003, "label": label});
    let docuum = json!({
        "docuum_path": docuum_bin(),
        "disk_threshold": "10 MB",
        "image_whitelist": [marker],
        "keep_build_storage": "1MB",
        "state_dir": format!("{}/docuum-state", tmp.str()),
        "log_file": format!("{}/docuum.log", tmp.str()),
    });
    let pull = json!({
        "images": [
            "t/busybox:1",
            {"image": "127.0.0.1:9/quarry/absent:1", "registry_username": "u",
             "registry_password": "c2VjcmV0"},
        ],
        "docker_config": format!("{}/docker-config", tmp.str()),
    });
    let pip_only = json!({"tools": ["pip"]});

    let daemon_before = docker_state(&dockerd);
    let pip_before = snapshot(&pip_cache);

    let (code, d) = run("container_cleanup", w, &cleanup, &tmp, &plugins, true).await;
    assert_eq!(code, ExitCode::SUCCESS, "{d:#}");
    assert_eq!(d["dry_run"], true);
    let would_remove = paths(&d["would_remove"]);
    assert_eq!(
        would_remove,
        [exited_id.clone(), created_id.clone()].into(),
        "{d:#}"
    );

    let (code, d) = run("image_cleanup", w, &docuum, &tmp, &plugins, true).await;
    assert_eq!(code, ExitCode::SUCCESS, "{d:#}");
    assert_eq!(d["action"], "would_launch", "{d:#}");
    assert!(
        d["would_start"].as_str().unwrap().contains(&marker),
        "{d:#}"
    );
    assert_eq!(d["would_prune"]["dangling_images_count"], 1, "{d:#}");
    assert!(d.get("pid").is_none(), "{d:#}");

    let (code, d) = run("image_pull", w, &pull, &tmp, &plugins, true).await;
    assert_eq!(code, ExitCode::SUCCESS, "{d:#}");
    assert_eq!(d["would_pull_count"], 2, "{d:#}");
    assert_eq!(d["would_log_in"], json!(["127.0.0.1:9"]));
    assert_eq!(
        (&d["images"][0]["present"], &d["images"][1]["present"]),
        (&json!(true), &json!(false)),
        "{d:#}"
    );

    let (code, d) = run("build_cache_cleanup", w, &pip_only, &tmp, &plugins, true).await;
    assert_eq!(code, ExitCode::SUCCESS, "{d:#}");
    let pip = &d["details"]["pip"];
    assert_eq!(pip["result"], "would prune", "{d:#}");
    assert!(
        pip["output_head"]
            .as_str()
            .unwrap()
            .contains(&pip_cache_str),
        "pip cache info names the cache: {d:#}"
    );

    let (code, d) = run("docker_health", w, &json!({}), &tmp, &plugins, true).await;
    assert_eq!(code, ExitCode::SUCCESS, "{d:#}");
    assert_eq!(d["dry_run"], true);

    assert_eq!(
        docker_state(&dockerd),
        daemon_before,
        "the daemon is unchanged"
    );
    assert_eq!(snapshot(&pip_cache), pip_before, "pip's cache is unchanged");
    for made_by_a_real_run in ["docker-config/config.json", "docuum-state", "docuum.log"] {
        assert!(
            !tmp.path().join(made_by_a_real_run).exists(),
            "{made_by_a_real_run} was made"
        );
    }
    assert!(processes_with(&marker).is_empty(), "no docuum was started");

    // The real runs do what the dry runs said.
    let (code, d) = run("container_cleanup", w, &cleanup, &tmp, &plugins, false).await;
    assert_eq!(code, ExitCode::SUCCESS, "{d:#}");
    assert_eq!(paths(&d["removed"]), would_remove, "{d:#}");
    let left = dockerd.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(left, "running");
    let (code, d) = run("build_cache_cleanup", w, &pip_only, &tmp, &plugins, false).await;
    assert_eq!(code, ExitCode::SUCCESS, "{d:#}");
    assert_eq!(d["details"]["pip"]["result"], "pruned", "{d:#}");
    assert!(
        !pip_cache
            .join("wheels/ab/cd/quarry_dry-1.0-py3-none-any.whl")
            .exists()
    );

    dockerd.docker(&["rm", "-f", "running"]);
    drop(rocklet);
    drop(dockerd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_dry_run_in_the_config_changes_nothing_tick_after_tick() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("dry-serve");
    let plugins = plugins_dir(&["file_cleanup"]);
    let (t, files, dirs) = fabricated_tree(tmp.path());
    let target = t.to_str().unwrap();
    let rocklet = RockletProcess::start();
    let params = json!({
        "target_dirs": [{"path": target, "exclude_dirs": ["keep"]}],
        "max_age_mins": 60,
        "max_file_size": 1024,
    });
    let file = tmp.path().join("quarry.yml");
    std::fs::write(
        &file,
        format!(
            "scheduler:\n  enabled: true\n  tasks:\n    - task_class: file_cleanup\n      interval_seconds: 1\n      dry_run: true\n      params: {params}\nquarry:\n  plugins_dir: {}\n  workers: [\"{}\"]\n  status_dir: {}/status\n  report_dir: {}/reports\n  run_timeout_seconds: 60\n  cache_dir: none\n  api: {{listen: \"127.0.0.1:0\"}}\n",
            plugins.str(),
            rocklet.addr,
            tmp.str(),
            tmp.str()
        ),
    )
    .unwrap();
    let before = snapshot(&t);
    let log = tmp.path().join("serve.log");
    let mut serve = quarry_serve(&file, &log);
    let _reap = KillOnDrop(u64::from(serve.id()));
    // Two ticks: the run report (host side: a dry run writes no status file on the worker)
    // says success, then success again with another timestamp.
    let report = tmp.path().join("reports/file_cleanup_run_report.json");
    let success = || {
        std::fs::read_to_string(&report)
            .ok()
            .filter(|s| s.contains("\"outcome\": \"success\""))
    };
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut first = None;
    loop {
        match (success(), &first) {
            (Some(s), None) => first = Some(s),
            (Some(s), Some(f)) if &s != f => break,
            _ => {}
        }
        let now = std::time::Instant::now();
        assert!(now < deadline, "no two dry runs within 120 s: {}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = stop_child(&mut serve, "quarry serve");
    assert!(code.success(), "serve exited with {code}: {}", logs());
    assert_eq!(snapshot(&t), before, "dry runs change nothing: {}", logs());
    assert!(
        !tmp.path().join("status").exists(),
        "a dry run writes no status file"
    );

    let db = StateDb::open(tmp.path().join("reports/quarry-state.db")).unwrap();
    let state = db.handle();
    let runs = state
        .runs(RunFilter::default(), Page::first(100))
        .await
        .unwrap();
    let under = |rels: &BTreeSet<&str>| -> BTreeSet<String> {
        rels.iter().map(|r| format!("{target}/{r}")).collect()
    };
    assert!(runs.len() >= 2, "{runs:#?}");
    for r in runs.iter().filter(|r| r.ended_at.is_some()) {
        let full = state.run(r.id).await.unwrap().unwrap();
        let d = full.detail.unwrap_or_default();
        assert_eq!(d["dry_run"], true, "{d:#}");
        let t = &d["details"][target];
        assert_eq!(paths(&t["would_delete_files"]), under(&files), "{d:#}");
        assert_eq!(paths(&t["would_delete_dirs"]), under(&dirs), "{d:#}");
    }
}
