//! Native tests: params, and the launch and prune scripts run by a real `/bin/sh` (the SDK's
//! [`FakeWorker`] with a [`LocalRunner`]) with a fake docuum, including hostile values that must
//! arrive as plain arguments.

use std::path::{Path, PathBuf};

use quarry_sdk::worker::fake::{self, FakeWorker, LocalRunner};
use serde_json::json;

use crate::params::{Config, Params};
use crate::{launch_script, prune_script, tick};

fn config(v: serde_json::Value) -> Result<Config, String> {
    let p: Params = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Config::from_params(&p)
}

#[test]
fn defaults_and_rocks_sample_params() {
    let c = config(json!({})).unwrap();
    assert_eq!(c.disk_threshold, "1T");
    assert_eq!(c.keep_build_storage.as_deref(), Some("20GB"));
    assert_eq!(c.docuum_path, "docuum");
    assert!(c.image_whitelist.is_empty());
    let c = config(json!({"disk_threshold": "70%", "image_whitelist": ["python:3.11"]})).unwrap();
    assert_eq!(c.disk_threshold, "70%");
    assert_eq!(c.image_whitelist, vec!["python:3.11".to_string()]);
    for off in [json!(null), json!("")] {
        let c = config(json!({"keep_build_storage": off})).unwrap();
        assert_eq!(c.keep_build_storage, None);
    }
    for ok in ["500G", "10 GB", "6 MB", "1.5TiB", "100%", "2048"] {
        assert!(config(json!({"disk_threshold": ok})).is_ok(), "{ok}");
    }
}

#[test]
fn bad_params_are_named_with_the_reason() {
    let cases = [
        (
            json!({"disk_threshold": "lots"}),
            "disk_threshold \"lots\": expected a size",
        ),
        (json!({"disk_threshold": "150%"}), "disk_threshold \"150%\""),
        (json!({"disk_threshold": "1T; rm -rf /"}), "disk_threshold"),
        (
            json!({"image_whitelist": "python"}),
            "image_whitelist \"python\": expected a list",
        ),
        (
            json!({"image_whitelist": ["ok", 3]}),
            "image_whitelist[1] 3: expected a string",
        ),
        (
            json!({"image_whitelist": ["a(b"]}),
            "image_whitelist[0] \"a(b\" is not a valid regular expression",
        ),
        (
            json!({"image_whitelist": ["a\nb"]}),
            "image_whitelist[0] \"a\\nb\": control characters",
        ),
        (
            json!({"image_whitelist": [""]}),
            "image_whitelist[0] is empty",
        ),
        (
            json!({"keep_build_storage": "$(id)"}),
            "keep_build_storage \"$(id)\"",
        ),
        (
            json!({"docuum_path": "../docuum"}),
            "docuum_path \"../docuum\"",
        ),
        (json!({"docuum_path": "/opt/../bin/docuum"}), "docuum_path"),
        (
            json!({"log_file": "relative.log"}),
            "log_file \"relative.log\": expected an absolute path",
        ),
        (json!({"min_age": "soon"}), "min_age \"soon\""),
        (json!({"threshold": "1T"}), "unknown field `threshold`"),
    ];
    for (params, want) in cases {
        let err = config(params.clone()).unwrap_err();
        assert!(
            err.contains(want),
            "{params}: {err:?} should contain {want:?}"
        );
    }
}

/// A temporary directory removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p =
            std::env::temp_dir().join(format!("quarry-image-cleanup-{tag}-{}", std::process::id()));
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

/// A worker whose scripts run with this machine's `/bin/sh` in `dir` (without
/// `ROCK_LOGGING_PATH`), and whose host vouches for the docuum `previous`; any command that is
/// not a script fails the test.
fn sh(dir: &Path, previous: Option<u32>) -> FakeWorker {
    let local = LocalRunner::new().cwd(dir).env_remove("ROCK_LOGGING_PATH");
    let mut w = FakeWorker::new();
    w.set_previous_pid(previous)
        .on_with(fake::shell(), move |c| local.run(c));
    w
}

/// Writes an executable fake docuum that records its arguments (one per line) in `args` and
/// then sleeps, or exits with 2 when `exit_at_once`.
fn fake_docuum(dir: &Path, exit_at_once: bool) -> String {
    let path = dir.join("docuum");
    let body = if exit_at_once {
        "#!/bin/sh\necho 'error: cannot connect to docker' >&2\nexit 2\n".to_string()
    } else {
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}/args\nexec sleep 30\n",
            dir.display()
        )
    };
    std::fs::write(&path, body).unwrap();
    std::process::Command::new("chmod")
        .args(["+x", path.to_str().unwrap()])
        .status()
        .unwrap();
    path.to_string_lossy().into_owned()
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

#[test]
fn hostile_patterns_reach_docuum_verbatim_and_never_run() {
    let tmp = Tmp::new("hostile");
    let docuum = fake_docuum(&tmp.0, false);
    let hostile = [
        "x'; touch pwned1; echo '",
        "$(touch pwned2)",
        "`touch pwned3`",
        "a;touch pwned4",
        "\"; touch pwned5; \"",
        "^t/keep:.*$",
    ];
    let c = config(json!({
        "docuum_path": docuum,
        "disk_threshold": "10 GB",
        "image_whitelist": hostile,
        "min_age": "2h",
        "log_file": format!("{}/docuum.log", tmp.0.display()),
        "keep_build_storage": null,
    }))
    .unwrap();
    let mut w = sh(&tmp.0, None);
    let out = tick(&mut w, &c);
    let pid = out.pid.expect("the fake docuum runs");
    kill(pid);
    assert_eq!(out.detail["action"], "launched", "{:?}", out.detail);
    assert_eq!(w.calls().len(), 1, "prune off: one call, the launch");
    let args = std::fs::read_to_string(tmp.0.join("args")).unwrap();
    let mut want = vec!["--threshold", "10 GB"];
    for h in hostile {
        want.extend(["--keep", h]);
    }
    want.extend(["--min-age", "2h"]);
    assert_eq!(args.lines().collect::<Vec<_>>(), want);
    for i in 1..=5 {
        assert!(
            !tmp.0.join(format!("pwned{i}")).exists(),
            "pattern {i} was executed"
        );
    }
}

#[test]
fn a_live_docuum_means_prune_only_and_its_pid_is_kept() {
    let tmp = Tmp::new("alive");
    let mut w = sh(&tmp.0, Some(4242));
    // `docker` here may be absent or not answer: the prune's result is reported either way,
    // and the pid stays on record even when the run fails.
    let out = tick(&mut w, &config(json!({})).unwrap());
    assert_eq!(out.pid, Some(4242));
    assert_eq!(out.detail["action"], "prune_only");
    assert_eq!(w.calls().len(), 1, "one call: the prune");
    assert!(
        w.calls()[0]
            .get_script()
            .unwrap()
            .contains("docker builder prune -f --keep-storage 20GB")
    );
}

#[test]
fn a_missing_docuum_fails_with_how_to_install_it() {
    let tmp = Tmp::new("missing");
    let mut w = sh(&tmp.0, None);
    let c = config(json!({"docuum_path": "docuum-not-installed-here", "keep_build_storage": ""}))
        .unwrap();
    let out = tick(&mut w, &c);
    assert_eq!(out.pid, None);
    let err = out.detail["error"].as_str().unwrap();
    assert!(
        err.contains("docuum is not installed on this worker"),
        "{err}"
    );
    assert!(err.contains("cargo install --locked docuum"), "{err}");
    assert!(err.contains("never downloads"), "{err}");
}

#[test]
fn a_docuum_that_exits_at_once_is_a_failed_launch_with_its_output() {
    let tmp = Tmp::new("exits");
    let docuum = fake_docuum(&tmp.0, true);
    let c = config(json!({
        "docuum_path": docuum,
        "keep_build_storage": "",
        "log_file": format!("{}/docuum.log", tmp.0.display()),
    }))
    .unwrap();
    let mut w = sh(&tmp.0, None);
    let out = tick(&mut w, &c);
    assert_eq!(out.pid, None);
    let err = out.detail["error"].as_str().unwrap();
    assert!(
        err.contains("docuum exited with 2 right after its start"),
        "{err}"
    );
    assert!(err.contains("cannot connect to docker"), "{err}");
}

#[test]
fn the_prune_script_quotes_its_value() {
    assert_eq!(
        prune_script("20GB"),
        "docker image prune -f 2>&1; echo \"@@quarry-exit=$?\"; docker builder prune -f \
         --keep-storage 20GB 2>&1; echo \"@@quarry-exit=$?\""
    );
    let c = config(json!({"state_dir": "/var/lib/it's here"})).unwrap();
    assert!(launch_script(&c).contains("XDG_DATA_HOME='/var/lib/it'\\''s here'"));
}

/// A fake docuum that keeps its own command line (it waits for a child instead of `exec`), as
/// the real binary does.
fn waiting_docuum(dir: &Path) -> String {
    let path = dir.join("docuum");
    std::fs::write(&path, "#!/bin/sh\nsleep 30 &\nwait\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x", path.to_str().unwrap()])
        .status()
        .unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_docuum_with_this_tasks_arguments_is_adopted_not_started_twice() {
    // What a restart after `kill -9` of Quarry inside the launch window finds: docuum runs, but
    // no pid is on record. Two must never run.
    let tmp = Tmp::new("adopt");
    let docuum = waiting_docuum(&tmp.0);
    let c = config(json!({
        "docuum_path": docuum,
        "disk_threshold": "10 GB",
        "image_whitelist": ["^keep/*:x y$"],
        "keep_build_storage": null,
    }))
    .unwrap();
    let mut running = std::process::Command::new(&docuum)
        .args(["--threshold", "10 GB", "--keep", "^keep/*:x y$"])
        .spawn()
        .unwrap();
    // Another docuum with other arguments is not this task's.
    let mut other = std::process::Command::new(&docuum)
        .args(["--threshold", "99 GB"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut w = sh(&tmp.0, None);
    let out = tick(&mut w, &c);
    let _ = running.kill();
    let _ = other.kill();
    let _ = running.wait();
    let _ = other.wait();
    assert_eq!(out.detail["action"], "adopted", "{:?}", out.detail);
    assert_eq!(out.pid, Some(running.id()));
    // Without it, a launch starts a new one.
    let mut w = sh(&tmp.0, None);
    let out = tick(&mut w, &c);
    let pid = out.pid.expect("launched");
    kill(pid);
    assert_eq!(out.detail["action"], "launched", "{:?}", out.detail);
    assert_ne!(Some(pid), Some(running.id()));
}

/// [`sh`] in a dry run, whose `docker image ls` and `docker system df` answer as a daemon with
/// two dangling images and a build cache would.
fn dry(dir: &Path, previous: Option<u32>) -> FakeWorker {
    let mut w = sh(dir, previous);
    w.set_dry_run(true)
        .on(
            fake::prefix(["docker", "image", "ls"]),
            Ok(fake::output(0, "sha256:aa\nsha256:bb\n", "")),
        )
        .on(
            fake::prefix(["docker", "system", "df"]),
            Ok(fake::output(
                0,
                "Images\t1GB\t0B (0%)\nBuild Cache\t2.5GB\t2.5GB\n",
                "",
            )),
        );
    w
}

/// Every command of a dry run: the two read-only docker listings, and scripts that start
/// nothing and prune nothing.
fn assert_read_only(w: &FakeWorker) {
    for c in w.calls() {
        match c.get_script() {
            Some(script) => assert!(
                !script.contains("nohup") && !script.contains("prune") && !script.contains("mkdir"),
                "{script}"
            ),
            None => {
                let argv = c.get_argv().unwrap();
                assert!(
                    argv.starts_with(&["docker".into(), "image".into(), "ls".into()])
                        || argv.starts_with(&["docker".into(), "system".into(), "df".into()]),
                    "{argv:?}"
                );
            }
        }
    }
}

#[test]
fn a_dry_run_lists_the_prune_and_the_launch_and_starts_nothing() {
    let tmp = Tmp::new("dry");
    let docuum = fake_docuum(&tmp.0, false);
    let c = config(json!({
        "docuum_path": docuum,
        "disk_threshold": "10 GB",
        "image_whitelist": ["^keep:.*$"],
        "state_dir": format!("{}/state", tmp.0.display()),
    }))
    .unwrap();
    let mut w = dry(&tmp.0, None);
    let out = tick(&mut w, &c);
    assert_eq!(out.status, quarry_sdk::Status::Success, "{:?}", out.detail);
    assert_eq!(out.pid, None);
    assert_eq!(out.detail["dry_run"], true);
    assert_eq!(out.detail["action"], "would_launch");
    assert_eq!(
        out.detail["would_start"],
        format!("{docuum} --threshold '10 GB' --keep '^keep:.*$'")
    );
    assert_eq!(
        out.detail["would_prune"],
        json!({
            "dangling_images": ["sha256:aa", "sha256:bb"],
            "dangling_images_count": 2,
            "build_cache": {"size": "2.5GB", "reclaimable": "2.5GB"},
            "keep_storage": "20GB",
        })
    );
    assert_read_only(&w);
    assert!(!tmp.0.join("args").exists(), "docuum was started");
    assert!(!tmp.0.join("state").exists(), "the state dir was made");

    // A docuum on record is kept on record, as a real tick keeps it; nothing is started.
    let mut w = dry(&tmp.0, Some(4242));
    let out = tick(&mut w, &c);
    assert_eq!(
        (out.pid, &out.detail["action"]),
        (Some(4242), &json!("prune_only"))
    );
    assert_read_only(&w);
    assert_eq!(w.calls().len(), 2, "the two listings");

    // A missing docuum fails the dry run as it would fail the real one.
    let missing = config(json!({"docuum_path": "docuum-not-installed-here"})).unwrap();
    let mut w = dry(&tmp.0, None);
    let out = tick(&mut w, &missing);
    assert_eq!(out.status, quarry_sdk::Status::Failed);
    assert!(
        out.detail["error"]
            .as_str()
            .unwrap()
            .contains("docuum is not installed"),
        "{:?}",
        out.detail
    );
}

#[test]
fn a_dry_run_finds_an_adoptable_docuum_and_does_not_take_it_on_record() {
    let tmp = Tmp::new("dry-adopt");
    let docuum = waiting_docuum(&tmp.0);
    let c = config(json!({
        "docuum_path": docuum,
        "disk_threshold": "10 GB",
        "keep_build_storage": null,
    }))
    .unwrap();
    let mut running = std::process::Command::new(&docuum)
        .args(["--threshold", "10 GB"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut w = dry(&tmp.0, None);
    let out = tick(&mut w, &c);
    let _ = running.kill();
    let _ = running.wait();
    assert_eq!(out.detail["action"], "would_adopt", "{:?}", out.detail);
    assert_eq!(out.detail["adoptable_pid"], running.id());
    assert_eq!(out.pid, None);
    assert_read_only(&w);
}

#[test]
fn grants_allow_the_scripts_docker_and_docuum_and_honour_dry_runs() {
    use quarry_sdk::Task as _;
    let g = crate::ImageCleanup::grants(&config(json!({})).unwrap()).unwrap();
    // `docker` also for a dry run's read-only listings (`docker image ls`, `docker system df`).
    assert_eq!(g.programs(), ["docker", "docuum"]);
    assert!(g.allows_shell() && g.allows_dry_run());
    assert!(g.write_paths().is_empty());
    let c = config(json!({"log_file": "/var/log/docuum.log", "state_dir": "/var/lib/docuum"}));
    let g = crate::ImageCleanup::grants(&c.unwrap()).unwrap();
    assert_eq!(g.write_paths(), ["/var/lib/docuum", "/var/log/docuum.log"]);
}
