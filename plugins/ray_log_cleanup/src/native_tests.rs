//! Native tests: the script run by this machine's bash (the SDK's [`FakeWorker`] with a
//! [`LocalRunner`]) on a fabricated Ray temp dir whose files have chosen ages, asserting
//! exactly which entries go and which stay; and the report's parsing and failures.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use quarry_sdk::Status;
use quarry_sdk::host::Error;
use quarry_sdk::worker::fake::{self, FakeWorker, LocalRunner};
use serde_json::json;

use crate::params::{Config, Params};
use crate::{cleanup, command, parse_report};

fn config(v: serde_json::Value) -> Config {
    let p: Params = serde_json::from_value(v).unwrap();
    Config::from_params(&p).unwrap()
}

/// A temporary directory removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("quarry-ray-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets `path`'s modification time to `minutes` ago (a directory too).
fn age(path: &Path, minutes: u64) {
    let when = SystemTime::now() - Duration::from_secs(minutes * 60);
    std::fs::File::open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// Writes a file aged `minutes`.
fn put(path: &Path, minutes: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"log\n").unwrap();
    age(path, minutes);
}

/// A worker that runs every argv with this machine's programs.
fn local() -> FakeWorker {
    let runner = LocalRunner::new();
    let mut w = FakeWorker::new();
    w.on_with(fake::any(), move |c| runner.run(c));
    w
}

/// A PID that belonged to a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

const H: u64 = 60;
const D: u64 = 24 * 60;

#[test]
fn removes_exactly_the_stale_entries_and_spares_the_live_ones() {
    let tmp = Tmp::new("tree");
    let ray = tmp.0.join("ray");
    let live = ray.join("session_2026-12-01_live");
    let logs = live.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::os::unix::fs::symlink(&live, ray.join("session_latest")).unwrap();
    let me = std::process::id();
    let dead = dead_pid();
    // (path under logs/, age in minutes, removed?)
    let files: Vec<(String, u64, bool)> = vec![
        // active daemon logs: never, however old
        ("raylet.out".into(), 30 * D, false),
        ("gcs_server.err".into(), 30 * D, false),
        ("dashboard_agent.log".into(), 30 * D, false),
        ("log_monitor.log".into(), 30 * D, false),
        ("agent-424242424.err".into(), 30 * D, false),
        ("runtime_env_agent.log".into(), 30 * D, false),
        // rotated daemon copies: after 24 h
        ("raylet.1.out".into(), 25 * H, true),
        ("gcs_server.2.err".into(), 23 * H, false),
        // runtime_env_setup-*: after 60 min, digit or hex job id alike
        ("runtime_env_setup-31050000.log".into(), 61, true),
        ("runtime_env_setup-f4060000.log".into(), 61, true),
        ("runtime_env_setup-01000000.log".into(), 30, false),
        // process-named logs: dead PID past 60 min goes; alive, or too young, stays
        (format!("worker-abc-01000000-{dead}.out"), 61, true),
        (format!("python-core-worker-abc_{dead}.log"), 61, true),
        (format!("worker-abc-01000000-{dead}.err"), 59, false),
        (format!("worker-abc-01000000-{me}.out"), 10 * D, false),
        // a trailing number that cannot be a PID: the long-tail rule
        ("worker-abc-99999999999.out".into(), 61, false),
        ("worker-abc-99999999998.out".into(), 8 * D, true),
        // everything else: after 7 days
        ("events.txt".into(), 8 * D, true),
        ("debug_state.txt".into(), 6 * D, false),
        ("name with spaces $(touch pwned).txt".into(), 8 * D, true),
        ("line\nbreak.txt".into(), 8 * D, true),
        // logs/old: after 24 h, at any depth
        ("old/raylet.out.1".into(), 25 * H, true),
        ("old/nested/worker-1.out".into(), 25 * H, true),
        ("old/gcs_server.out.1".into(), 23 * H, false),
    ];
    for (name, minutes, _) in &files {
        put(&logs.join(name), *minutes);
    }
    // Session dirs: stale ones go; the live one (old too) and young ones stay.
    let sessions = [
        ("session_2026-11-01_old", 25 * H, true),
        ("session_2026-11-02_old", 30 * D, true),
        ("session_2026-12-02_young", 23 * H, false),
        ("not_a_session", 30 * D, false),
    ];
    for (name, minutes, _) in sessions {
        put(&ray.join(name).join("logs/raylet.out"), 30 * D);
        age(&ray.join(name), minutes);
    }
    age(&live, 30 * D);
    put(&ray.join("session_2026-11-09_file"), 30 * D);

    let expected_counts = json!({"sessions": 2, "dead_pid": 2, "setup": 2, "rotated_daemon": 1, "stale": 4, "old": 2});

    // A dry run selects the same entries and removes none of them.
    let mut dry = local();
    dry.set_dry_run(true);
    let out = cleanup(
        &mut dry,
        &config(json!({"ray_temp_dir": ray.to_str().unwrap()})),
    );
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert_eq!(out.detail["dry_run"], true);
    assert_eq!(out.detail["removed"], expected_counts);
    for (name, _, _) in &files {
        assert!(logs.join(name).exists(), "a dry run removed {name:?}");
    }
    for (name, _, _) in sessions {
        assert!(ray.join(name).exists(), "a dry run removed {name}");
    }

    let mut w = local();
    let out = cleanup(
        &mut w,
        &config(json!({"ray_temp_dir": ray.to_str().unwrap()})),
    );
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert!(out.detail.get("dry_run").is_none());
    for (name, _, removed) in &files {
        assert_eq!(
            !logs.join(name).exists(),
            *removed,
            "{name:?} should be {}",
            if *removed { "removed" } else { "kept" }
        );
    }
    for (name, _, removed) in sessions {
        assert_eq!(!ray.join(name).exists(), removed, "{name}");
    }
    assert!(live.is_dir() && ray.join("session_latest").exists());
    assert!(
        ray.join("session_2026-11-09_file").exists(),
        "files are not sessions"
    );
    assert!(!tmp.0.join("pwned").exists() && !logs.join("pwned").exists());
    assert!(logs.join("old").is_dir(), "directories under logs/old stay");

    let d = &out.detail;
    assert_eq!(d["found"], true);
    assert_eq!(d["live_session"], "session_2026-12-01_live");
    assert_eq!(d["removed"], expected_counts);
    assert_eq!(d["removed_count"], 2);
    assert_eq!(d["removed_stale_count"], 4);
    assert_eq!(d["failed_count"], 0);
    let mut names: Vec<String> = serde_json::from_value(d["removed_sessions"].clone()).unwrap();
    names.sort();
    assert_eq!(names, ["session_2026-11-01_old", "session_2026-11-02_old"]);
    assert!(
        d["removed_names"]["stale"]
            .as_array()
            .unwrap()
            .contains(&json!("line?break.txt")),
        "a line break in a name is shown as `?`: {d:?}"
    );
    assert_eq!(w.calls().len(), 1, "one execute");
}

#[test]
fn thresholds_are_the_configured_ones() {
    let tmp = Tmp::new("thresholds");
    let ray = tmp.0.join("ray");
    let logs = ray.join("session_a/logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::os::unix::fs::symlink("session_a", ray.join("session_latest")).unwrap();
    put(&logs.join("raylet.3.log"), 2 * H + 1);
    put(&logs.join("raylet.4.log"), 2 * H - 1);
    put(&logs.join("runtime_env_setup-1.log"), 11);
    put(&logs.join("runtime_env_setup-2.log"), 9);
    put(&logs.join("x.txt"), 2 * D + 1);
    put(&logs.join("y.txt"), 2 * D - 1);
    put(&logs.join("old/a"), 3 * H + 1);
    put(&logs.join("old/b"), 3 * H - 1);
    put(&ray.join("session_b/f"), 0);
    age(&ray.join("session_b"), 5 * H + 1);
    put(&ray.join("session_c/f"), 0);
    age(&ray.join("session_c"), 5 * H - 1);
    // The live session is named by a relative link and is old: it stays.
    age(&ray.join("session_a"), 30 * D);
    let c = config(json!({
        "ray_temp_dir": format!("{}/", ray.display()), "min_age_hours": 5,
        "live_log_keep_days": 2, "old_logs_keep_hours": 3, "setup_log_keep_minutes": 10,
        "rotated_daemon_keep_hours": 2,
    }));
    let out = cleanup(&mut local(), &c);
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    let gone = |p: &str| !ray.join(p).exists();
    assert!(gone("session_a/logs/raylet.3.log") && !gone("session_a/logs/raylet.4.log"));
    assert!(gone("session_a/logs/runtime_env_setup-1.log"));
    assert!(!gone("session_a/logs/runtime_env_setup-2.log"));
    assert!(gone("session_a/logs/x.txt") && !gone("session_a/logs/y.txt"));
    assert!(gone("session_a/logs/old/a") && !gone("session_a/logs/old/b"));
    assert!(gone("session_b") && !gone("session_c") && !gone("session_a"));
    assert_eq!(out.detail["live_session"], "session_a");
}

#[test]
fn a_missing_dir_or_logs_dir_is_a_success_with_nothing_removed() {
    let tmp = Tmp::new("missing");
    let missing = tmp.0.join("nope");
    let out = cleanup(
        &mut local(),
        &config(json!({"ray_temp_dir": missing.to_str().unwrap()})),
    );
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert_eq!(out.detail["found"], false);
    assert_eq!(out.detail["removed_count"], 0);
    // No session_latest: no live session, old sessions still go.
    put(&tmp.0.join("session_x/f"), 0);
    age(&tmp.0.join("session_x"), 2 * D);
    let out = cleanup(
        &mut local(),
        &config(json!({"ray_temp_dir": tmp.0.to_str().unwrap()})),
    );
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert_eq!(out.detail["live_session"], json!(null));
    assert_eq!(out.detail["removed"]["sessions"], 1);
    assert!(!tmp.0.join("session_x").exists());
}

#[test]
fn entries_that_cannot_be_removed_fail_the_run_with_the_counts() {
    let mut w = FakeWorker::new();
    w.on(
        fake::program("bash"),
        Ok(fake::output(
            0,
            "found 1\nlive_session s\nsample stale a.txt\nfailed old /r/s/logs/old/x\n\
             count sessions 0\ncount dead_pid 0\ncount setup 0\ncount rotated_daemon 0\n\
             count stale 1\ncount old 0\ncount failed 1\n",
            "rm: cannot remove '/r/s/logs/old/x': Permission denied\n",
        )),
    );
    let out = cleanup(&mut w, &config(json!({"ray_temp_dir": "/r"})));
    assert_eq!(out.status, Status::Failed);
    assert_eq!(
        out.detail["error"].as_str(),
        Some("could not remove 1 entries under /r (first: old \"/r/s/logs/old/x\")")
    );
    assert_eq!(out.detail["status"], "failed");
    assert_eq!(out.detail["removed_stale_count"], 1);
    assert!(
        out.detail["stderr_head"]
            .as_str()
            .unwrap()
            .contains("Permission denied")
    );
}

#[test]
fn a_script_that_did_not_run_or_was_cut_short_fails_the_run() {
    let mut w = FakeWorker::new();
    w.on(fake::any(), Err(Error::NotFound("bash: not found".into())));
    let out = cleanup(&mut w, &config(json!({})));
    assert_eq!(out.status, Status::Failed);
    assert_eq!(
        out.detail["error"].as_str(),
        Some(
            "the cleanup script did not finish (not found: bash: not found); ray_temp_dir \
             \"/data/tmp/ray\""
        )
    );
    let mut w = FakeWorker::new();
    w.on(
        fake::any(),
        Ok(fake::output(0, "found 1\nlive_session s\n", "")),
    );
    let out = cleanup(&mut w, &config(json!({})));
    assert_eq!(out.status, Status::Failed);
    assert!(
        out.detail["error"]
            .as_str()
            .unwrap()
            .starts_with("the cleanup script exited with 0")
    );
}

#[test]
fn values_are_arguments_and_the_call_has_a_time_limit() {
    let c = config(json!({"ray_temp_dir": "/tmp/x'; rm -rf / #", "min_age_hours": 2}));
    let cmd = command(&c, false);
    let argv = cmd.get_argv().unwrap();
    assert_eq!(&argv[..2], ["bash", "-c"]);
    assert_eq!(
        &argv[3..],
        [
            "ray_log_cleanup",
            "/tmp/x'; rm -rf / #",
            "120",
            "10080",
            "1440",
            "60",
            "1440",
            "60",
            "20",
            "remove"
        ]
    );
    assert!(!argv[2].contains("/tmp/x"), "no value in the script");
    assert!(cmd.get_timeout().unwrap() <= Duration::from_secs(60));
    assert!(cmd.get_env().is_empty());
}

#[test]
fn the_report_parser_ignores_noise() {
    let r = parse_report("junk\nfound 1\ncount stale x\ncount old 3\nsample old a b\n");
    assert!(r.found);
    assert_eq!(r.counts.get("old"), Some(&3));
    assert_eq!(r.counts.get("stale"), None);
    assert_eq!(r.samples["old"], ["a b"]);
}
