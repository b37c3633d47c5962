//! Native tests against the real GNU `find`:
//! - the generated argument vectors, run the way the worker runs them (argv, no shell), on a
//!   scratch tree, checking exactly what is deleted and kept;
//! - the whole [`crate::cleanup`] with a fake [`crate::Worker`] that runs argvs for real and
//!   plays Docker (absent, running, broken), checking the outcome and that it fails closed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use quarry_sdk::Status;
use quarry_sdk::host::{Error, LogLevel, Output};
use serde_json::{Value, json};

use crate::find::{self, Listing};
use crate::params::{Config, Params, TargetConfig, check_target_path};
use crate::{Program, Worker, cleanup};

/// The age limit used by the test, in minutes.
const MAX_AGE_MINS: u64 = 60;
/// The size limit used by the test, in bytes.
const MAX_BYTES: u64 = 1024;
/// How old "old" entries are: two days, far beyond `MAX_AGE_MINS`.
const OLD_AGE_SECS: u64 = 2 * 24 * 3600;
/// A file name that `find` would read as a glob if it were not escaped.
const GLOB_NAME: &str = "[x]*";
/// A file name full of shell syntax; with argv it is just bytes.
const SHELL_NAME: &str = "it's $(touch pwned) `touch pwned2` a b.log";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn set_old(path: &Path) {
    let then = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - OLD_AGE_SECS;
    let status = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{then}"))
        .arg(path)
        .status()
        .expect("touch runs");
    assert!(status.success(), "touch {}", path.display());
}

fn write(root: &Path, rel: &str, bytes: usize) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, vec![b'x'; bytes]).unwrap();
}

fn run_find(argv: &[String]) -> Listing {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .expect("find runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{argv:?} failed: {stderr}");
    assert!(stderr.is_empty(), "{argv:?} warned: {stderr}");
    find::parse_listing(&String::from_utf8(out.stdout).unwrap())
}

/// Every file and directory below `root`, relative to it.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn generated_find_deletes_exactly_the_expected_entries() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "quarry-file-cleanup-{}-{nanos}",
        std::process::id()
    )));
    // The target's own name has glob characters and a space: every pattern built from it must
    // be escaped to match.
    let raw_target = format!("{}/tar[g]et *//", scratch.0.display());
    let target_path = check_target_path(&raw_target).unwrap();
    let t = PathBuf::from(&target_path);

    let old_files = [
        "old.log",
        "keep.me",
        "sub/keep.me",
        "rocklet.log",
        "sub/rocklet.log",
        "data/keep/x.old",
        "data/other.old",
        "abs.old",
        "cachedir/old.bin",
        "cachedir/deep/x",
        "keepdir/f.old",
        "web-1/old.log",
        "olddir/f.old",
        GLOB_NAME,
        "[x]y",
        "xylophone",
        SHELL_NAME,
    ];
    for f in old_files {
        write(&t, f, 10);
    }
    write(&t, "big.bin", 2048);
    write(&t, "young.txt", 10);
    write(&t, "keepdir/big.bin", 2048);
    for d in [
        "emptyold",
        "emptyyoung",
        "cachedir/emptyold",
        "web-1/emptyold",
        "nested/a/b",
    ] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    // Ages last: creating entries updates their parent directory's mtime.
    for f in old_files {
        set_old(&t.join(f));
    }
    for d in [
        "emptyold",
        "cachedir/emptyold",
        "web-1/emptyold",
        "nested/a/b",
        "nested/a",
        "nested",
        "olddir",
    ] {
        set_old(&t.join(d));
    }
    // A second target: old and empty, it must survive (`-mindepth 1`).
    let empty_target = scratch.0.join("empty-target");
    fs::create_dir(&empty_target).unwrap();
    set_old(&empty_target);

    let target = TargetConfig {
        path: target_path.clone(),
        exclude_files: vec![
            "keep.me".into(),                  // plain name, any depth
            "./rocklet.log".into(),            // relative to the target only
            "data/keep/x.old".into(),          // relative path
            format!("{target_path}/abs.old/"), // absolute, trailing slash
            GLOB_NAME.into(),                  // glob characters, literal
            SHELL_NAME.into(),                 // quotes, $(), backticks, spaces
        ],
        exclude_dirs: vec!["cachedir".into(), "keepdir/".into()],
    };
    let containers = vec!["web-1".to_string()];
    let excl = find::exclusions(&target, &containers);
    let before = tree(&t);

    let files = run_find(&find::delete_files_argv(
        &target_path,
        &excl,
        MAX_AGE_MINS,
        MAX_BYTES,
    ));
    let dirs = run_find(&find::prune_dirs_argv(&target_path, &excl, MAX_AGE_MINS));

    let under = |rels: &[&str]| -> BTreeSet<String> {
        rels.iter().map(|r| format!("{target_path}/{r}")).collect()
    };
    let deleted_files = set(&[
        "old.log",
        "big.bin",
        "sub/rocklet.log",
        "data/other.old",
        "olddir/f.old",
        "[x]y",
        "xylophone",
    ]);
    // The whole chain of old, empty directories goes in one run.
    let deleted_dirs = set(&["emptyold", "nested/a/b", "nested/a", "nested"]);
    assert_eq!(
        files.paths.iter().cloned().collect::<BTreeSet<_>>(),
        under(&deleted_files.iter().map(String::as_str).collect::<Vec<_>>())
    );
    assert_eq!(files.count, deleted_files.len());
    assert_eq!(
        dirs.paths.iter().cloned().collect::<BTreeSet<_>>(),
        under(&deleted_dirs.iter().map(String::as_str).collect::<Vec<_>>())
    );
    let expected_after: BTreeSet<String> = before
        .difference(&deleted_files)
        .cloned()
        .collect::<BTreeSet<_>>()
        .difference(&deleted_dirs)
        .cloned()
        .collect();
    assert_eq!(tree(&t), expected_after);
    // Spelled out, the ones that matter most:
    for kept in [
        "young.txt",
        "keep.me",
        "sub/keep.me",
        "rocklet.log",
        "data/keep/x.old",
        "abs.old",
        "cachedir/old.bin",
        "cachedir/deep/x",
        "cachedir/emptyold",
        "keepdir/f.old",
        "keepdir/big.bin",
        "web-1/old.log",
        "web-1/emptyold",
        GLOB_NAME,
        SHELL_NAME,
        "emptyyoung",
        // old, but emptied by this run's file deletion, which made it young again
        "olddir",
    ] {
        assert!(t.join(kept).exists(), "{kept} must be kept");
    }
    assert!(t.exists(), "the target directory itself is kept");
    // Had a name been run by a shell, `touch pwned` would have created `pwned` in the current
    // directory (find's cwd) or next to the file.
    let executed = |name: &str| {
        Path::new(name).exists()
            || tree(&scratch.0)
                .iter()
                .any(|p| p.ends_with(&format!("/{name}")))
    };
    assert!(
        !executed("pwned") && !executed("pwned2"),
        "a file name was executed"
    );

    let none = find::Exclusions {
        files: vec![],
        dirs: vec![],
    };
    let et = empty_target.to_str().unwrap();
    assert_eq!(
        run_find(&find::delete_files_argv(et, &none, MAX_AGE_MINS, MAX_BYTES)).count,
        0
    );
    assert_eq!(
        run_find(&find::prune_dirs_argv(et, &none, MAX_AGE_MINS)).count,
        0
    );
    assert!(
        empty_target.is_dir(),
        "an old, empty target directory is kept"
    );
}

/// A fresh scratch directory (removed on drop).
fn scratch(tag: &str) -> Scratch {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "quarry-file-cleanup-{tag}-{}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// How the fake worker's Docker behaves.
enum FakeDocker {
    /// No docker CLI: running it answers `not-found`.
    Absent,
    /// `docker ps` prints this.
    Running(&'static str),
    /// `docker ps` exits with this code and stderr.
    Broken(i32, &'static str),
    /// `docker ps` hits this host error.
    HostError(Error),
}

/// A worker that runs argvs on this machine (no shell), except `docker`, which it fakes, and
/// `find`/`test` answers it is told to fake.
struct FakeWorker {
    docker: FakeDocker,
    /// Answer every `find` with this output instead of running it.
    find_answer: Option<Output>,
    /// Answer `test -d` with this host error.
    test_error: Option<Error>,
    calls: Vec<Program>,
    logs: Vec<(LogLevel, String)>,
}

impl FakeWorker {
    fn new(docker: FakeDocker) -> Self {
        FakeWorker {
            docker,
            find_answer: None,
            test_error: None,
            calls: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn ran(&self, program: &str) -> bool {
        self.calls
            .iter()
            .any(|c| matches!(c, Program::Argv(a) if a[0] == program))
    }
}

fn output(exit_code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit_code,
    }
}

impl Worker for FakeWorker {
    fn execute(&mut self, program: Program, timeout: Duration) -> Result<Output, Error> {
        assert!(timeout > Duration::ZERO && timeout <= Duration::from_secs(60));
        self.calls.push(program.clone());
        let argv = match program {
            Program::Shell(script) => panic!("file_cleanup runs no shell script: {script:?}"),
            Program::Argv(argv) => argv,
        };
        match argv[0].as_str() {
            "docker" => {
                assert_eq!(argv, ["docker", "ps", "--format", "{{.Names}}"]);
                match &self.docker {
                    FakeDocker::Absent => Err(Error::NotFound(
                        "program \"docker\" not found on the worker".into(),
                    )),
                    FakeDocker::Running(names) => Ok(output(0, names, "")),
                    FakeDocker::Broken(code, stderr) => Ok(output(*code, "", stderr)),
                    FakeDocker::HostError(e) => Err(e.clone()),
                }
            }
            "test" if self.test_error.is_some() => Err(self.test_error.clone().unwrap()),
            "find" if self.find_answer.is_some() => Ok(self.find_answer.clone().unwrap()),
            "test" | "find" => {
                let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
                Ok(output(
                    out.status.code().unwrap(),
                    &String::from_utf8(out.stdout).unwrap(),
                    &String::from_utf8(out.stderr).unwrap(),
                ))
            }
            other => panic!("unexpected program {other:?}"),
        }
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}

fn config(params: Value) -> Config {
    let params: Params = serde_json::from_value(params).unwrap();
    Config::from_params(&params).unwrap()
}

/// A target with one old file, one young file, an old file in a running container's
/// directory, and an old empty directory.
fn populated_target(root: &Path) -> String {
    let t = root.join("target");
    write(&t, "old.log", 10);
    write(&t, "young.log", 10);
    write(&t, "web-1/old.log", 10);
    fs::create_dir_all(t.join("emptyold")).unwrap();
    for p in ["old.log", "web-1/old.log", "emptyold"] {
        set_old(&t.join(p));
    }
    t.to_str().unwrap().to_string()
}

#[test]
fn no_targets_means_no_calls() {
    let mut w = FakeWorker::new(FakeDocker::Running("web-1"));
    let o = cleanup(&mut w, &config(json!({})));
    assert_eq!(o.status, Status::Success);
    assert_eq!(
        Value::Object(o.detail),
        json!({"status": "success", "message": "no target directories configured"})
    );
    assert!(w.calls.is_empty() && w.logs.is_empty());
}

#[test]
fn cleans_and_reports_per_directory() {
    let s = scratch("run");
    let t = populated_target(&s.0);
    let missing = s.0.join("missing").to_str().unwrap().to_string();
    let mut w = FakeWorker::new(FakeDocker::Running("web-1\n\n"));
    let o = cleanup(
        &mut w,
        &config(json!({
            "target_dirs": [format!("{t}/"), {"path": missing, "exclude_files": ["x"]}],
            "max_age_mins": 60,
            "max_file_size": "1K",
        })),
    );
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    assert_eq!(
        Value::Object(o.detail),
        json!({
            "status": "success",
            "target_dirs": [t, missing],
            "max_age_mins": 60,
            "max_file_size": "1K",
            "max_file_size_bytes": 1024,
            "docker": "present",
            "protected_containers": ["web-1"],
            "details": {
                t.clone(): {
                    "exit_code": 0,
                    "deleted_files": [format!("{t}/old.log")],
                    "deleted_files_count": 1,
                    "deleted_dirs": [format!("{t}/emptyold")],
                    "deleted_dirs_count": 1,
                    "listing_truncated": false,
                    "errors": "",
                },
                missing.clone(): {"result": "dir_not_found"},
            },
        })
    );
    assert!(Path::new(&t).join("web-1/old.log").exists());
    assert!(Path::new(&t).join("young.log").exists());
    assert_eq!(w.logs.len(), 1);
    assert_eq!(
        w.logs[0].1,
        "file_cleanup: deleted 1 files and 1 empty dirs in 2 target dirs (1 not found, 0 failed); \
         1 running containers protected"
    );
}

#[test]
fn docker_absent_protects_nothing_but_still_cleans() {
    let s = scratch("nodocker");
    let t = populated_target(&s.0);
    let mut w = FakeWorker::new(FakeDocker::Absent);
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [t.clone()], "max_age_mins": 60})),
    );
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    assert_eq!(o.detail["docker"], "absent");
    assert_eq!(o.detail["protected_containers"], json!([]));
    assert_eq!(o.detail["details"][&t]["deleted_files_count"], 2);
    // One `docker ps` found no docker; nothing else was tried for it.
    let docker_calls = w
        .calls
        .iter()
        .filter(|c| matches!(c, Program::Argv(a) if a[0] == "docker"))
        .count();
    assert_eq!(docker_calls, 1);
}

#[test]
fn docker_trouble_fails_closed() {
    let cases = [
        (
            FakeDocker::Broken(
                1,
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n",
            ),
            "docker is installed but listing running containers failed (exit 1): Cannot connect \
             to the Docker daemon at unix:///var/run/docker.sock.; refusing to delete anything",
        ),
        (
            FakeDocker::HostError(Error::Timeout("docker ps timed out after 30 s".into())),
            "docker is installed but listing running containers failed (timeout: docker ps \
             timed out after 30 s); refusing to delete anything",
        ),
        (
            FakeDocker::Running("web-1\nWARNING: something odd\n"),
            "docker is installed but listing running containers failed (docker ps printed \
             \"WARNING: something odd\", which is not a container name); refusing to delete \
             anything",
        ),
    ];
    for (docker, error) in cases {
        let s = scratch("docker");
        let t = populated_target(&s.0);
        let mut w = FakeWorker::new(docker);
        let o = cleanup(&mut w, &config(json!({"target_dirs": [t.clone()]})));
        assert_eq!(o.status, Status::Failed);
        assert_eq!(o.detail["error"], error);
        assert_eq!(o.detail["docker"], "present");
        assert!(o.detail.get("details").is_none());
        assert!(
            !w.ran("find") && !w.ran("test"),
            "nothing may run after a docker failure"
        );
        assert!(Path::new(&t).join("old.log").exists());
        assert_eq!(w.logs[0].0, LogLevel::Debug);
    }
}

#[test]
fn find_errors_fail_the_run_with_details_kept() {
    let s = scratch("finderr");
    let t = populated_target(&s.0);
    let mut w = FakeWorker::new(FakeDocker::Absent);
    w.find_answer = Some(output(
        1,
        &format!("{t}/old.log\n"),
        &format!("find: '{t}/locked': Permission denied\n"),
    ));
    let o = cleanup(&mut w, &config(json!({"target_dirs": [t.clone()]})));
    assert_eq!(o.status, Status::Failed);
    assert_eq!(
        o.detail["error"],
        format!("cleanup failed in {t}: find: '{t}/locked': Permission denied")
    );
    let d = &o.detail["details"][&t];
    assert_eq!(d["exit_code"], 1);
    assert_eq!(d["deleted_files"], json!([format!("{t}/old.log")]));
    assert_eq!(
        d["errors"],
        format!("find: '{t}/locked': Permission denied\nfind: '{t}/locked': Permission denied")
    );
    assert_eq!(o.detail["status"], "failed");
}

#[test]
fn unreachable_worker_skips_the_remaining_dirs() {
    let s = scratch("unreach");
    let a = populated_target(&s.0);
    let mut w = FakeWorker::new(FakeDocker::Absent);
    w.test_error = Some(Error::Unreachable("connection refused".into()));
    let b = s.0.join("other").to_str().unwrap().to_string();
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [a.clone(), b.clone()]})),
    );
    assert_eq!(o.status, Status::Failed);
    assert_eq!(
        o.detail["error"],
        format!("cleanup failed in {a}: test -d did not finish (unreachable: connection refused)")
    );
    assert_eq!(o.detail["details"][&a]["result"], "check_failed");
    assert_eq!(o.detail["details"][&b], json!({"result": "skipped"}));
    assert_eq!(
        w.calls
            .iter()
            .filter(|c| matches!(c, Program::Argv(_)))
            .count(),
        2,
        "docker ps, then the one test -d that found the worker gone"
    );
}
