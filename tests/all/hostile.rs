//! Hostile param values (quotes, `$()`, backticks, `;`, newlines) through a real rocklet:
//! each is either refused at load with a message naming it, or reaches the worker as plain
//! data. A marker file proves nothing was executed.

use std::time::Duration;

use quarry_host::report::WorkerOutcome;
use quarry_host::run::run_tick;
use quarry_host::workers::{self, Limits, WorkerAddr};
use serde_json::json;

use crate::harness::*;
use crate::image_cleanup::docuum_bin;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Shell fragments that would create `marker` if any layer pasted them into a shell.
fn payloads(marker: &str) -> Vec<String> {
    vec![
        format!("x'; touch {marker}; echo '"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("a;touch {marker}"),
        format!("\"; touch {marker}; \""),
        format!("a && touch {marker} || b"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_file_cleanup_paths_and_exclusions_are_data_on_a_rocklet() {
    // file_cleanup asks the rocklet's `docker` (the test daemon's) for running containers.
    needs_real_parts!("a real rocklet and the test dockerd");
    let tmp = TempDir::new("hostile-fc");
    let marker = tmp.path().join("pwned");
    let m = marker.to_str().unwrap();
    let rocklet = RockletProcess::start();
    let rt = runtime(64, Duration::from_secs(30));
    let set = load(&rt, plugins_dir(&["file_cleanup"]).path()).await;
    let w = workers::connect(
        &[WorkerAddr::parse(&rocklet.addr, 22555).unwrap()],
        Limits::default(),
    );
    // A target directory whose name is itself a payload, holding an old file and files named
    // like the payloads that the exclusions protect.
    let target = tmp
        .path()
        .join(format!("logs $(touch {m}) `touch {m}` ; it's"));
    file(&target.join("old.log"), b"old", 3);
    let excluded: Vec<String> = payloads(m)
        .into_iter()
        .map(|p| p.replace('/', "_"))
        .collect();
    for name in &excluded {
        file(&target.join(name), b"old but excluded", 3);
    }
    let params = json!({
        "target_dirs": [{"path": target.to_str().unwrap(), "exclude_files": excluded}],
        "max_age_mins": 60,
    });
    let t = task(&set, "file_cleanup", params);
    let s = settings(&format!("{}/status", tmp.str()), None, 60);
    let (r, _) = within("file_cleanup tick", 60, run_tick(&rt, &t, &w, &s)).await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Success,
        "{}",
        r.to_json()
    );
    assert!(!target.join("old.log").exists(), "the old file is deleted");
    for name in &excluded {
        assert!(target.join(name).exists(), "{name:?} is excluded and kept");
    }
    assert!(!marker.exists(), "a param value was executed");

    // A `..` in a path, or a relative path, is refused at load, naming the param.
    for bad in [format!("{}/../etc", tmp.str()), "relative/logs".to_string()] {
        let params = json!({"target_dirs": [bad]});
        let verdict = rt
            .validate_config(set.get("file_cleanup").unwrap(), &params.to_string())
            .await
            .unwrap();
        let err = verdict.unwrap_err();
        assert!(err.contains("target_dirs[0]"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_image_whitelist_entries_reach_real_docuum_as_single_arguments() {
    needs_real_parts!("a real rocklet and docuum");
    let tmp = TempDir::new("hostile-ic");
    let marker = tmp.path().join("pwned");
    let m = marker.to_str().unwrap();
    // No Docker daemon answers here: docuum keeps retrying, which is all this test needs.
    let rocklet = RockletProcess::start_with_env(&[("DOCKER_HOST", "unix:///nonexistent.sock")]);
    let rt = runtime(64, Duration::from_secs(30));
    let set = load(&rt, plugins_dir(&["image_cleanup"]).path()).await;
    let w = workers::connect(
        &[WorkerAddr::parse(&rocklet.addr, 22555).unwrap()],
        Limits::default(),
    );
    let whitelist = payloads(m);
    let t = task(
        &set,
        "image_cleanup",
        json!({
            "disk_threshold": "10 GB",
            "image_whitelist": whitelist,
            "keep_build_storage": null,
            "docuum_path": docuum_bin(),
            "state_dir": format!("{}/state $(touch {m})", tmp.str()),
            "log_file": format!("{}/docuum '$(touch pwned-log) `touch pwned-log`.log", tmp.str()),
        }),
    );
    let s = settings(&format!("{}/status", tmp.str()), None, 60);
    let (r, runs) = within("image_cleanup tick", 60, run_tick(&rt, &t, &w, &s)).await;
    assert_eq!(
        r.worker_results[0].outcome,
        WorkerOutcome::Started,
        "{}",
        r.to_json()
    );
    let pid = runs[0].detail.as_ref().unwrap()["pid"].as_u64().unwrap();
    let _reap = KillOnDrop(pid);
    assert!(alive(pid));
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&str> = cmdline.split('\0').filter(|a| !a.is_empty()).collect();
    let mut want = vec!["--threshold".to_string(), "10 GB".to_string()];
    for p in &whitelist {
        want.push("--keep".into());
        want.push(p.clone());
    }
    assert_eq!(args[1..], want, "{args:?}");
    assert!(
        tmp.path()
            .join("docuum '$(touch pwned-log) `touch pwned-log`.log")
            .exists(),
        "the log file is the literal path"
    );
    assert!(!marker.exists(), "a param value was executed");

    // A newline cannot even be configured.
    let verdict = rt
        .validate_config(
            set.get("image_cleanup").unwrap(),
            &json!({"image_whitelist": [format!("a\ntouch {m}")]}).to_string(),
        )
        .await
        .unwrap();
    assert!(verdict.unwrap_err().contains("image_whitelist[0]"));
}
