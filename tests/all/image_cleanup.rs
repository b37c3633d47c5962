//! image_cleanup against real parts: a private dockerd of its own (docuum evicts images, so
//! it must not share a daemon with the other tests), a real rl-rock rocklet, real docuum from
//! crates.io (scripts/test.sh installs it and sets QUARRY_TEST_DOCUUM_BIN).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quarry_host::report::WorkerOutcome;
use quarry_host::run::{WorkerRun, run_tick, uninstall};
use quarry_host::state::{Page, RunFilter, RunOutcome, StateDb, TickStatus};
use quarry_host::workers::{self, Limits, WorkerAddr};
use serde_json::json;

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// docuum installed by scripts/test.sh (`cargo install --locked docuum`).
pub fn docuum_bin() -> String {
    std::env::var("QUARRY_TEST_DOCUUM_BIN").unwrap_or_else(|_| {
        panic!("QUARRY_TEST_DOCUUM_BIN is not set: run scripts/test.sh, which installs docuum")
    })
}

/// A dockerd of this test's own (Debian docker.io), stopped by pid when dropped.
pub struct PrivateDockerd {
    child: Child,
    /// Its `DOCKER_HOST`.
    pub host: String,
    dir: PathBuf,
}

impl PrivateDockerd {
    /// Starts one with its files in `dir` (keep the path short: the socket lives there).
    pub fn start(dir: &Path) -> PrivateDockerd {
        Self::start_with_env(dir, &[])
    }

    /// Like [`PrivateDockerd::start`], with extra environment variables for dockerd.
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> PrivateDockerd {
        std::fs::create_dir_all(dir).unwrap();
        let host = format!("unix://{}/docker.sock", dir.display());
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(&host)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start dockerd (scripts/test-dockerd.sh installs docker.io)");
        let d = PrivateDockerd {
            child,
            host,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.try_docker(&["info"]).0 {
            assert!(
                Instant::now() < deadline,
                "private dockerd not ready after 60 s; see {}/dockerd.log",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn try_docker(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success(), text)
    }

    /// Runs the docker CLI against this daemon; panics unless it succeeds.
    pub fn docker(&self, args: &[&str]) -> String {
        let (ok, out) = self.try_docker(args);
        assert!(ok, "docker {args:?} failed against {}", self.host);
        out
    }

    /// Imports an image of one file with `mib` MiB of random bytes as `tag`.
    fn import(&self, tag: &str, mib: usize) {
        let root = self
            .dir
            .join(format!("rootfs-{}", tag.replace([':', '/'], "_")));
        std::fs::create_dir_all(&root).unwrap();
        // A few random bytes at least, so that every import is a distinct image.
        let mut bytes = vec![0u8; (mib << 20).max(64)];
        let mut f = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut f, &mut bytes).unwrap();
        std::fs::write(root.join("blob"), bytes).unwrap();
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(["import", "-", tag])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(
            tar.wait().unwrap().success(),
            "tar of {tag}'s rootfs failed"
        );
        assert!(
            out.status.success(),
            "docker import {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .filter(|l| !l.starts_with("<none>"))
            .map(String::from)
            .collect();
        tags.sort();
        tags
    }

    fn dangling(&self) -> usize {
        self.docker(&["image", "ls", "-q", "--filter", "dangling=true"])
            .lines()
            .count()
    }

    /// Makes one dangling image and returns its short id: a tag imported twice leaves the
    /// first image untagged; the second is removed again. Both are a few bytes, so they never
    /// move docuum's threshold.
    fn make_dangling(&self, tag: &str) -> String {
        let before = self.dangling();
        self.import(tag, 0);
        self.import(tag, 0);
        self.docker(&["rmi", tag]);
        let ids = self.docker(&["image", "ls", "-q", "--filter", "dangling=true"]);
        assert_eq!(ids.lines().count(), before + 1);
        ids.lines().next().unwrap().to_string()
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on the dockerd this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    within(what, secs, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

fn detail(runs: &[WorkerRun]) -> serde_json::Value {
    serde_json::Value::Object(runs[0].detail.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_cleanup_keeps_docuum_running_prunes_every_tick_and_stops_it_on_removal() {
    needs_real_parts!("a dockerd, docuum and a real rocklet");
    let tmp = TempDir::new("image-cleanup");
    // A short path: unix socket paths are limited to 108 bytes.
    let ddir = PathBuf::from(format!("/tmp/quarry-ic-{}", std::process::id()));
    let dockerd = PrivateDockerd::start(&ddir);
    // Oldest first: docuum treats images it has never seen as last used when created, and
    // reads creation times in whole seconds (hence the pauses).
    dockerd.import("t/keep:1", 3);
    std::thread::sleep(Duration::from_millis(1100));
    dockerd.import("t/old:1", 3);
    std::thread::sleep(Duration::from_millis(1100));
    dockerd.import("t/new:1", 3);
    dockerd.make_dangling("t/dangle:1");

    let rocklet = RockletProcess::start_with_env(&[("DOCKER_HOST", dockerd.host.as_str())]);
    let rt = runtime(64, Duration::from_secs(30));
    let set = load(&rt, plugins_dir(&["image_cleanup"]).path()).await;
    assert!(!set.get("image_cleanup").unwrap().meta().idempotent);
    let w = workers::connect(
        &[WorkerAddr::parse(&rocklet.addr, 22555).unwrap()],
        Limits::default(),
    );
    let s = settings(&format!("{}/status", tmp.str()), None, 60);
    let status = || -> serde_json::Value {
        let text = std::fs::read_to_string(tmp.path().join("status/image_cleanup_status.json"));
        serde_json::from_str(&text.unwrap()).unwrap()
    };
    let t = task(
        &set,
        "image_cleanup",
        json!({
            // 9.4 MB of images with a 7 MB threshold: docuum must evict exactly one, the least
            // recently used that the whitelist does not protect.
            "disk_threshold": "7 MB",
            "image_whitelist": ["^t/keep:"],
            "keep_build_storage": "1MB",
            "docuum_path": docuum_bin(),
            "state_dir": format!("{}/docuum-state", tmp.str()),
            "log_file": format!("{}/docuum.log", tmp.str()),
        }),
    );

    // Tick 1: the prune removes the dangling image, docuum starts and evicts t/old.
    let (r, runs) = within("tick 1", 90, run_tick(&rt, &t, &w, &s)).await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    let d = detail(&runs);
    assert_eq!(d["action"], "launched", "{d}");
    assert_eq!(d["prune_exit_code"], 0, "{d}");
    assert_eq!(dockerd.dangling(), 0, "the prune ran");
    let pid = status()["pid"].as_u64().unwrap();
    let _reap = KillOnDrop(pid);
    assert_eq!(d["pid"], pid);
    assert!(alive(pid));
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("docuum"), "{cmdline:?}");
    let log = || std::fs::read_to_string(tmp.path().join("docuum.log")).unwrap_or_default();
    wait_for("docuum's first vacuum", 60, || dockerd.tags().len() < 3).await;
    assert_eq!(
        dockerd.tags(),
        vec!["t/keep:1", "t/new:1"],
        "docuum's log:\n{}",
        log()
    );

    // docuum follows Docker's events: a new image makes it evict the least recently used
    // unprotected one (t/new), never t/keep.
    dockerd.import("t/newer:1", 3);
    wait_for("docuum's eviction after an import", 30, || {
        !dockerd.tags().contains(&"t/new:1".into())
    })
    .await;
    assert_eq!(dockerd.tags(), vec!["t/keep:1", "t/newer:1"]);

    // Tick 2, docuum alive: the prune still runs; docuum is left alone.
    let dangling = dockerd.make_dangling("t/dangle:2");
    let (r, runs) = within("tick 2", 90, run_tick(&rt, &t, &w, &s)).await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Success,
        "{}",
        r.to_json()
    );
    let d = detail(&runs);
    assert_eq!(d["action"], "prune_only");
    assert_eq!(dockerd.dangling(), 0);
    let pruned = d["prune_output_head"].as_str().unwrap_or_default();
    assert!(
        pruned.contains(&dangling),
        "the prune (not docuum) removed {dangling} while docuum was alive: {pruned}"
    );
    assert_eq!(status()["pid"], pid);

    // docuum dies: the next tick starts a new one.
    kill(pid);
    wait_for("docuum's death", 10, || !alive(pid)).await;
    let (r, runs) = within("tick 3", 90, run_tick(&rt, &t, &w, &s)).await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    assert_eq!(detail(&runs)["action"], "launched");
    let pid2 = status()["pid"].as_u64().unwrap();
    let _reap2 = KillOnDrop(pid2);
    assert_ne!(pid2, pid);
    assert!(alive(pid2));

    // Removing the task stops docuum and removes its status file.
    let report = within("uninstall", 60, uninstall("image_cleanup", &w, &s)).await;
    let u = &report.worker_results[0];
    assert_eq!(
        (u.stopped_pid, u.status_removed),
        (Some(pid2 as u32), true),
        "{u:?}"
    );
    wait_for("docuum stopped", 10, || !alive(pid2)).await;
    assert!(!tmp.path().join("status/image_cleanup_status.json").exists());

    drop(rocklet);
    drop(dockerd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_docuum_fails_with_how_to_install_it_and_is_retried() {
    needs_real_parts!("a real rocklet");
    let tmp = TempDir::new("no-docuum");
    let rocklet = RockletProcess::start();
    let rt = runtime(64, Duration::from_secs(30));
    let set = load(&rt, plugins_dir(&["image_cleanup"]).path()).await;
    let w = workers::connect(
        &[WorkerAddr::parse(&rocklet.addr, 22555).unwrap()],
        Limits::default(),
    );
    let s = settings(tmp.str(), None, 60);
    let t = task(
        &set,
        "image_cleanup",
        json!({"docuum_path": "quarry-test-no-such-docuum", "keep_build_storage": null}),
    );
    for _ in 0..2 {
        // Not sticky: every tick tries again (and says why it failed).
        let (r, _) = within("tick", 60, run_tick(&rt, &t, &w, &s)).await;
        let res = &r.worker_results[0];
        assert_eq!(res.outcome, WorkerOutcome::Failed, "{}", r.to_json());
        let err = res.error.as_deref().unwrap();
        assert!(
            err.contains("docuum is not installed on this worker"),
            "{err}"
        );
        assert!(err.contains("cargo install --locked docuum"), "{err}");
    }
}

/// Pids of the live docuum processes whose program is `program` and whose command line
/// contains `marker` (a whitelist pattern unique to one test).
fn docuums(program: &str, marker: &str) -> Vec<u64> {
    let mut pids: Vec<u64> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            args.first() == Some(&program.as_bytes()) && args.contains(&marker.as_bytes())
        })
        .filter(|pid| alive(*pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Kills every docuum of one test when dropped, so a failing test leaves none behind.
struct ReapDocuums<'a>(&'a str, &'a str);

impl Drop for ReapDocuums<'_> {
    fn drop(&mut self) {
        for pid in docuums(self.0, self.1) {
            kill(pid);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_serve_inside_docuums_launch_then_restart_adopts_the_orphan() {
    needs_real_parts!("a real rocklet, a private dockerd and docuum");
    // Strategy: `quarry serve` runs image_cleanup on a real rocklet; it is SIGKILLed as soon
    // as docuum exists, inside the launch script's 1 s settle, before the pid reaches the host.
    // The restarted server must adopt that docuum (not start a second one) and record it.
    let tmp = TempDir::new("docuum-adopt");
    let ddir = PathBuf::from(format!("/tmp/quarry-ica-{}", std::process::id()));
    let dockerd = PrivateDockerd::start(&ddir);
    let rocklet = RockletProcess::start_with_env(&[("DOCKER_HOST", dockerd.host.as_str())]);
    let plugins = plugins_dir(&["image_cleanup"]);
    let program = docuum_bin();
    // Unique to this test run: tells its docuum apart from any other on the machine.
    let marker = format!("^quarry-adopt-{}:", std::process::id());
    let reap_docuums = ReapDocuums(&program, &marker);
    let params = json!({
        "disk_threshold": "10 GB",
        "image_whitelist": [marker],
        "keep_build_storage": null,
        "docuum_path": program,
        "state_dir": format!("{}/docuum-state", tmp.str()),
        "log_file": format!("{}/docuum.log", tmp.str()),
    });
    let file = tmp.path().join("quarry.yml");
    std::fs::write(
        &file,
        format!(
            "scheduler:\n  enabled: true\n  tasks:\n    - task_class: image_cleanup\n      interval_seconds: 1\n      params: {params}\nquarry:\n  plugins_dir: {}\n  workers: [\"{}\"]\n  status_dir: {}/status\n  report_dir: {}/reports\n  run_timeout_seconds: 30\n  cache_dir: none\n  api: {{listen: \"127.0.0.1:0\"}}\n",
            plugins.str(),
            rocklet.addr,
            tmp.str(),
            tmp.str()
        ),
    )
    .unwrap();
    let status_file = tmp.path().join("status/image_cleanup_status.json");
    let status = || -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(&status_file).ok()?).ok()
    };

    // 1. The first server, killed as soon as its docuum exists.
    let log1 = tmp.path().join("serve1.log");
    let mut first = quarry_serve(&file, &log1);
    let _reap1 = KillOnDrop(u64::from(first.id()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let orphan = loop {
        let found = docuums(&program, &marker);
        if !found.is_empty() {
            assert_eq!(found.len(), 1, "one launch started {found:?}");
            break found[0];
        }
        assert!(
            Instant::now() < deadline,
            "no docuum within 90 s; serve's log:\n{}",
            std::fs::read_to_string(&log1).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let _reap_orphan = KillOnDrop(orphan);
    let killed_in = status();
    eprintln!("serve killed with docuum {orphan} up; status file then: {killed_in:?}");
    assert_eq!(
        killed_in.as_ref().map(|s| s["status"].clone()),
        Some(json!("pending")),
        "serve was not killed inside the launch's settle window: {killed_in:?}"
    );
    // The launch script's settle second passes with nobody to hear its pid.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(orphan), "docuum died with serve");

    // 2. The restarted server: its first run finds no pid on record.
    let log2 = tmp.path().join("serve2.log");
    let mut second = quarry_serve(&file, &log2);
    let _reap2 = KillOnDrop(u64::from(second.id()));
    let logs2 = || std::fs::read_to_string(&log2).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    // `running` after the adopting run, `success` after the next ones (prune only, pid kept).
    while !status().is_some_and(|s| s["status"] != "pending" && s["pid"].is_u64()) {
        assert!(
            Instant::now() < deadline,
            "no run recorded docuum within 90 s of the restart; status {:?}; serve's log:\n{}",
            status(),
            logs2()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let code = stop_child(&mut second, "the restarted serve");
    assert!(code.success(), "serve exited with {code}: {}", logs2());
    assert!(logs2().contains("recorded as interrupted"), "{}", logs2());

    // 3. One docuum, the original, and it is on record.
    assert_eq!(
        docuums(&program, &marker),
        vec![orphan],
        "exactly the orphaned docuum runs; serve's log:\n{}",
        logs2()
    );
    let s = status().unwrap();
    assert_eq!(s["pid"], orphan, "{s}");

    let db = StateDb::open(tmp.path().join("reports/quarry-state.db")).unwrap();
    let state = db.handle();
    let runs = state
        .runs(RunFilter::default(), Page::first(100))
        .await
        .unwrap();
    // Newest first: the killed server's run is the oldest.
    let (oldest, after) = runs.split_last().expect("runs recorded");
    assert_eq!(oldest.outcome, RunOutcome::Interrupted, "{runs:#?}");
    assert!(oldest.ended_at.is_some());
    assert!(
        runs.iter().all(|r| r.outcome != RunOutcome::Running),
        "no run is left running: {runs:#?}"
    );
    let mut actions = Vec::new();
    for r in after.iter().rev() {
        let full = state.run(r.id).await.unwrap().unwrap();
        let d = full.detail.unwrap_or_default();
        actions.push((d["action"].as_str().unwrap_or("").to_string(), full.pid));
    }
    assert!(!actions.is_empty(), "the restarted server ran the task");
    assert_eq!(
        actions[0],
        ("adopted".to_string(), Some(orphan as u32)),
        "{actions:?}"
    );
    assert!(
        actions[1..]
            .iter()
            .all(|a| *a == ("prune_only".to_string(), Some(orphan as u32))),
        "{actions:?}"
    );
    // One run per tick: nothing lost, nothing recorded twice.
    let ticks = state.ticks(None, Page::first(100)).await.unwrap();
    assert_eq!(ticks.len(), runs.len(), "{ticks:#?}\n{runs:#?}");
    assert_eq!(ticks.last().unwrap().outcome, TickStatus::Interrupted);
    db.shutdown().await;

    drop(reap_docuums);
    drop(rocklet);
    drop(dockerd);
}
