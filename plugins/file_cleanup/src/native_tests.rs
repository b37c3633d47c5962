//! Native tests of the whole [`crate::cleanup`] against the real bash and GNU `find`: the SDK's
//! [`FakeWorker`] runs the one argv for real on a [`Machine`], in a scratch directory and with a
//! PATH of its own that holds exactly the tools the script may use, plus a fake `docker`
//! (absent, running, broken) and, where a test needs it, a `find` wrapper (slow, or failing).
//! Scratch trees check exactly what is deleted and kept, and the outcome.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quarry_sdk::Status;
use quarry_sdk::host::{self, Error, LogLevel};
use quarry_sdk::worker::fake::{self, FakeWorker, LocalRunner};
use serde_json::{Value, json};

use crate::params::{Config, Params, check_target_path};
use crate::script::SCRIPT;
use crate::{SCRIPT_BUDGET, cleanup};

/// How old "old" entries are: two days, far beyond the tests' `max_age_mins` (60).
const OLD_AGE_SECS: u64 = 2 * 24 * 3600;
/// A file name that `find` would read as a glob if it were not escaped.
const GLOB_NAME: &str = "[x]*";
/// A file name full of shell syntax; as an argument it is just bytes.
const SHELL_NAME: &str = "it's $(touch pwned) `touch pwned2` a b.log";
/// The tools the script may run (besides `docker`): anything else is missing on the fake
/// worker's PATH.
const SCRIPT_TOOLS: [&str; 7] = ["bash", "find", "timeout", "head", "tr", "mktemp", "rm"];

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
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

/// Writes `count` files of `bytes` bytes, named `<prefix><number>.log`, in `dir`.
fn write_many(dir: &Path, prefix: &str, count: usize, bytes: usize) -> String {
    for i in 0..count {
        write(dir, &format!("{prefix}{i:04}.log"), bytes);
    }
    dir.to_str().unwrap().to_string()
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

/// Where `tool` is on this machine's PATH.
fn which(tool: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}

fn executable(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// How the fake worker's Docker behaves.
enum FakeDocker {
    /// No docker CLI on PATH.
    Absent,
    /// `docker ps` prints this.
    Running(&'static str),
    /// `docker ps` exits with this code and stderr (124: as if its `timeout` expired).
    Broken(i32, &'static str),
}

/// The start of the one argv the cleanup runs: any other command fails the test.
const SCRIPT_ARGV: [&str; 4] = ["bash", "-c", SCRIPT, "file_cleanup"];

/// The fake worker's machine: this one, in a scratch directory, with a PATH of its own.
struct Machine {
    /// The PATH directory: the script's tools, the fake `docker`, maybe a `find` wrapper.
    bin: Scratch,
    /// The working directory (empty): a script bug that globbed in its cwd finds nothing.
    cwd: Scratch,
    /// Cut stdout at this many bytes, as the host does at its output limit.
    max_output_bytes: Option<usize>,
    /// The worker's TMPDIR, where the script makes its temp dir.
    tmpdir: Option<PathBuf>,
    /// The raw stdout of each execute.
    stdouts: Rc<RefCell<Vec<String>>>,
}

impl Machine {
    fn new(docker: FakeDocker) -> Self {
        let bin = scratch("bin");
        for tool in SCRIPT_TOOLS {
            symlink(which(tool), bin.0.join(tool)).unwrap();
        }
        let fake = |code: i32, stdout: &str, stderr: &str| {
            let (out, err) = (bin.0.join("ps.out"), bin.0.join("ps.err"));
            fs::write(&out, stdout).unwrap();
            fs::write(&err, stderr).unwrap();
            let cat = which("cat");
            executable(
                &bin.0.join("docker"),
                &format!(
                    "[ \"$*\" = 'ps --format {{{{.Names}}}}' ] || exit 99\n\
                     {cat} {out}\n{cat} {err} >&2\nexit {code}",
                    cat = cat.display(),
                    out = out.display(),
                    err = err.display(),
                ),
            );
        };
        match docker {
            FakeDocker::Absent => {}
            FakeDocker::Running(names) => fake(0, names, ""),
            FakeDocker::Broken(code, stderr) => fake(code, "", stderr),
        }
        Machine {
            bin,
            cwd: scratch("cwd"),
            max_output_bytes: None,
            tmpdir: None,
            stdouts: Rc::default(),
        }
    }

    /// Takes `tool` off this machine's PATH.
    fn remove_tool(&self, tool: &str) {
        fs::remove_file(self.bin.0.join(tool)).unwrap();
    }

    /// Replaces `find` with a script: `$FIND` in `body` is the real one.
    fn wrap_find(&self, body: &str) {
        let path = self.bin.0.join("find");
        fs::remove_file(&path).unwrap();
        let real = which("find");
        executable(&path, &body.replace("$FIND", real.to_str().unwrap()));
    }

    /// Runs commands as this machine does (output decoded as the host does).
    fn local(&self) -> LocalRunner {
        let local = LocalRunner::new().cwd(&self.cwd.0).env("PATH", &self.bin.0);
        match &self.tmpdir {
            Some(dir) => local.env("TMPDIR", dir),
            None => local,
        }
    }

    /// A worker that runs the cleanup's argv on this machine (its stdout cut at
    /// `max_output_bytes`, as the host would) and fails the test on any other command or on a
    /// time limit that is not in (0, 60 s].
    fn worker(&self) -> FakeWorker {
        let local = self.local();
        let stdouts = Rc::clone(&self.stdouts);
        let max_output_bytes = self.max_output_bytes;
        let mut w = FakeWorker::new();
        w.require_timeout(Duration::from_secs(60))
            .on_with(fake::prefix(SCRIPT_ARGV), move |c| {
                let mut out = local.run(c).expect("the script runs");
                stdouts.borrow_mut().push(out.stdout.clone());
                if let Some(max) = max_output_bytes.filter(|&m| out.stdout.len() > m) {
                    let dropped = out.stdout.len() - max;
                    out.stdout.truncate(max);
                    out.stdout
                        .push_str(&format!("\n...[quarry: {dropped} more bytes truncated]"));
                }
                Ok(out)
            });
        w
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

fn paths(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// A target that exercises every rule, made in `root`: old and young files, big files,
/// exclusions of every form, a running container's directory (`web-1`), old empty directories
/// (a chain of them too), an old directory emptied by the file pass; its name has glob
/// characters, a space and shell syntax. And a second target, old and empty.
struct TrickyTree {
    /// The first target, normalised.
    target_path: String,
    /// The same, as a path.
    t: PathBuf,
    /// The second target.
    empty_target: PathBuf,
    /// The checked params naming both.
    config: Config,
}

fn tricky_tree(root: &Path) -> TrickyTree {
    // The target's own name has glob characters, a space and shell syntax: every pattern built
    // from it must be escaped to match, and nothing in it may run.
    let raw_target = format!(
        "{}/tar[g]et * $(touch pwned) `touch pwned2` 'q'//",
        root.display()
    );
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
        "web-1/sub/old.log",
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
    write(&t, "web-1/big.bin", 2048);
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
    let empty_target = root.join("empty-target");
    fs::create_dir(&empty_target).unwrap();
    set_old(&empty_target);
    let config = config(json!({
        "target_dirs": [
            {
                "path": raw_target,
                "exclude_files": [
                    "keep.me",                          // plain name, any depth
                    "./rocklet.log",                    // relative to the target only
                    "data/keep/x.old",                  // relative path
                    format!("{target_path}/abs.old/"),  // absolute, trailing slash
                    GLOB_NAME,                          // glob characters, literal
                    SHELL_NAME,                         // quotes, $(), backticks, spaces
                ],
                "exclude_dirs": ["cachedir", "keepdir/"],
            },
            empty_target.to_str().unwrap(),
        ],
        "max_age_mins": 60,
        "max_file_size": 1024,
    }));
    TrickyTree {
        target_path,
        t,
        empty_target,
        config,
    }
}

#[test]
fn deletes_exactly_the_expected_entries() {
    let s = scratch("tree");
    let TrickyTree {
        target_path,
        t,
        empty_target,
        config,
    } = tricky_tree(&s.0);
    let before = tree(&t);

    let m = Machine::new(FakeDocker::Running("web-1\n"));
    let mut w = m.worker();
    let o = cleanup(&mut w, &config, SCRIPT_BUDGET);
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    assert_eq!(w.calls().len(), 1, "one execute per run");

    let under = |rels: &BTreeSet<String>| -> BTreeSet<String> {
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
    let d = &o.detail["details"][&target_path];
    assert_eq!(paths(&d["deleted_files"]), under(&deleted_files), "{d:#}");
    assert_eq!(d["deleted_files_count"], deleted_files.len());
    assert_eq!(paths(&d["deleted_dirs"]), under(&deleted_dirs), "{d:#}");
    assert_eq!(d["deleted_dirs_count"], deleted_dirs.len());
    assert_eq!(d["errors"], "", "no warnings from find: {d:#}");
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
        "web-1/sub/old.log",
        "web-1/big.bin",
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
    assert_eq!(
        o.detail["details"][empty_target.to_str().unwrap()]["deleted_dirs_count"],
        0
    );
    assert!(
        empty_target.is_dir(),
        "an old, empty target directory is kept"
    );
    // Had a value been run by a shell, `touch pwned` would have created `pwned` in the
    // worker's directory or next to the file.
    let executed = |name: &str| {
        m.cwd.0.join(name).exists() || tree(&s.0).iter().any(|p| p.ends_with(&format!("/{name}")))
    };
    assert!(
        !executed("pwned") && !executed("pwned2"),
        "a value was executed"
    );
}

/// Every entry at or below `root`: whether it is a directory, its content (files), its
/// permissions and its mtime — what a cleanup could change.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (bool, Vec<u8>, u32, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        let content = if meta.is_file() {
            fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        if meta.is_dir() {
            todo.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        let mode = meta.permissions().mode();
        out.insert(p, (meta.is_dir(), content, mode, meta.modified().unwrap()));
    }
    out
}

#[test]
fn a_dry_run_changes_nothing_and_lists_what_a_real_run_then_deletes() {
    let s = scratch("dry");
    let TrickyTree {
        target_path,
        t,
        empty_target,
        config,
    } = tricky_tree(&s.0);
    // Chains of old, empty directories whose names bash would misread as array subscripts or
    // globs, if the dry run's bookkeeping used them as code; and an old directory kept by its
    // young child.
    let odd = "odd ] $(touch pwned) [x]";
    for d in [&format!("{odd}/c*"), "x]/y", "parent/young"] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    for d in [&format!("{odd}/c*"), odd, "x]/y", "x]", "parent"] {
        set_old(&t.join(d));
    }
    let before = snapshot(&s.0);

    let m = Machine::new(FakeDocker::Running("web-1\n"));
    let mut w = m.worker();
    w.set_dry_run(true);
    let dry = cleanup(&mut w, &config, SCRIPT_BUDGET);
    assert_eq!(dry.status, Status::Success, "{:?}", dry.detail);
    assert_eq!(dry.detail["dry_run"], true);
    assert_eq!(w.calls().len(), 1, "one execute per run");
    assert!(
        !w.argvs()[0].iter().any(|a| a == "-delete"),
        "a dry run never asks find to delete"
    );
    assert!(w.writes().is_empty());
    assert_eq!(snapshot(&s.0), before, "a dry run changes nothing");
    assert!(
        w.logs()
            .iter()
            .any(|(_, l)| l.contains("dry run: would delete")),
        "{:?}",
        w.logs()
    );

    let mut w = m.worker();
    let real = cleanup(&mut w, &config, SCRIPT_BUDGET);
    assert_eq!(real.status, Status::Success, "{:?}", real.detail);
    assert!(real.detail.get("dry_run").is_none());
    let mut listed = BTreeSet::new();
    for target in [target_path.as_str(), empty_target.to_str().unwrap()] {
        let (d, r) = (
            &dry.detail["details"][target],
            &real.detail["details"][target],
        );
        for what in ["files", "dirs"] {
            let (would, did) = (format!("would_delete_{what}"), format!("deleted_{what}"));
            assert_eq!(paths(&d[&would]), paths(&r[&did]), "{what} in {target}");
            assert_eq!(d[format!("{would}_count")], r[format!("{did}_count")]);
            assert!(d.get(&did).is_none(), "{d:#}");
            listed.extend(paths(&d[&would]));
        }
    }
    let under = |rels: &[&str]| -> BTreeSet<String> {
        rels.iter().map(|r| format!("{target_path}/{r}")).collect()
    };
    let dirs = paths(&dry.detail["details"][&target_path]["would_delete_dirs"]);
    let odd_child = format!("{odd}/c*");
    let chains = under(&[odd_child.as_str(), odd, "x]/y", "x]"]);
    assert!(dirs.is_superset(&chains), "{dirs:?}");
    assert!(!dirs.contains(&format!("{target_path}/parent")), "{dirs:?}");
    // What the real run deleted is exactly what the dry run listed.
    let after = snapshot(&s.0);
    let gone: BTreeSet<String> = before
        .keys()
        .filter(|p| !after.contains_key(*p))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    assert_eq!(gone, listed);
}

#[test]
fn no_targets_means_no_calls() {
    let m = Machine::new(FakeDocker::Running("web-1"));
    let mut w = m.worker();
    let o = cleanup(&mut w, &config(json!({})), SCRIPT_BUDGET);
    assert_eq!(o.status, Status::Success);
    assert_eq!(
        Value::Object(o.detail),
        json!({"status": "success", "message": "no target directories configured"})
    );
    assert!(w.calls().is_empty() && w.logs().is_empty());
}

#[test]
fn cleans_and_reports_per_directory() {
    let s = scratch("run");
    let t = populated_target(&s.0);
    let missing = s.0.join("missing").to_str().unwrap().to_string();
    let m = Machine::new(FakeDocker::Running("web-1\n\n"));
    let mut w = m.worker();
    let o = cleanup(
        &mut w,
        &config(json!({
            "target_dirs": [format!("{t}/"), {"path": missing, "exclude_files": ["x"]}],
            "max_age_mins": 60,
            "max_file_size": "1K",
        })),
        SCRIPT_BUDGET,
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
    assert_eq!(w.logs().len(), 1, "{:?}", w.logs());
    assert_eq!(
        w.logs()[0].1,
        "file_cleanup: deleted 1 files and 1 empty dirs in 2 target dirs (1 not found, 0 failed); \
         1 running containers protected"
    );
}

#[test]
fn one_execute_per_run_whatever_the_number_of_targets() {
    let s = scratch("three");
    let roots: Vec<PathBuf> = (0..3).map(|i| s.0.join(format!("t{i}"))).collect();
    let targets: Vec<String> = roots.iter().map(|r| populated_target(r)).collect();
    let m = Machine::new(FakeDocker::Running("web-1"));
    let mut w = m.worker();
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": targets, "max_age_mins": 60})),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    assert_eq!(w.calls().len(), 1, "exactly one execute for three targets");
    assert_eq!(w.argvs()[0][4], SCRIPT_BUDGET.as_secs().to_string());
    for t in &targets {
        assert_eq!(o.detail["details"][t]["deleted_files_count"], 1);
        assert!(!Path::new(t).join("old.log").exists());
        assert!(Path::new(t).join("web-1/old.log").exists());
    }
}

#[test]
fn docker_absent_protects_nothing_but_still_cleans() {
    let s = scratch("nodocker");
    let t = populated_target(&s.0);
    let m = Machine::new(FakeDocker::Absent);
    let mut w = m.worker();
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [t.clone()], "max_age_mins": 60})),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    assert_eq!(o.detail["docker"], "absent");
    assert_eq!(o.detail["protected_containers"], json!([]));
    assert_eq!(o.detail["details"][&t]["deleted_files_count"], 2);
    assert!(!Path::new(&t).join("web-1/old.log").exists());
    assert_eq!(w.calls().len(), 1);
}

#[test]
fn docker_trouble_fails_closed() {
    let bad_name = |line: &str| {
        format!(
            "docker is installed but listing running containers failed (docker ps printed \
             {line:?}, which is not a container name); refusing to delete anything"
        )
    };
    let cases = [
        (
            FakeDocker::Broken(
                1,
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n",
            ),
            "docker is installed but listing running containers failed (exit 1): Cannot connect \
             to the Docker daemon at unix:///var/run/docker.sock.; refusing to delete anything"
                .to_string(),
        ),
        (
            // What the script sees when its `timeout` stops `docker ps`.
            FakeDocker::Broken(124, ""),
            "docker is installed but listing running containers failed (timeout: docker ps \
             timed out after 30 s); refusing to delete anything"
                .to_string(),
        ),
        (
            FakeDocker::Running("web-1\nWARNING: something odd\n"),
            bad_name("WARNING: something odd"),
        ),
        (FakeDocker::Running("web-1\n$(id)\n"), bad_name("$(id)")),
        (FakeDocker::Running("-x"), bad_name("-x")),
        (FakeDocker::Running("web-1/../x"), bad_name("web-1/../x")),
        (FakeDocker::Running("we*b"), bad_name("we*b")),
        // A NUL byte would vanish in bash's `read` ("web" would pass): it is shown as \x01.
        (FakeDocker::Running("we\0b\n"), bad_name("we\u{1}b")),
    ];
    for (docker, error) in cases {
        let s = scratch("docker");
        let t = populated_target(&s.0);
        let before = tree(Path::new(&t));
        let m = Machine::new(docker);
        let mut w = m.worker();
        let o = cleanup(
            &mut w,
            &config(json!({"target_dirs": [t.clone()], "max_age_mins": 60})),
            SCRIPT_BUDGET,
        );
        assert_eq!(o.status, Status::Failed);
        assert_eq!(o.detail["error"], error);
        assert_eq!(o.detail["docker"], "present");
        assert!(o.detail.get("details").is_none());
        assert_eq!(
            tree(Path::new(&t)),
            before,
            "nothing may be deleted: {error}"
        );
        assert_eq!(w.logs()[0].0, LogLevel::Debug);
        assert_eq!(w.calls().len(), 1);
    }
}

#[test]
fn a_missing_tool_never_leaves_containers_unprotected() {
    let s = scratch("notr");
    let t = populated_target(&s.0);
    let before = tree(Path::new(&t));
    let m = Machine::new(FakeDocker::Running("web-1"));
    m.remove_tool("tr");
    let mut w = m.worker();
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [t.clone()], "max_age_mins": 60})),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Failed);
    assert_eq!(
        o.detail["error"],
        "the cleanup script refused to start: cannot read the output of docker ps; nothing was \
         deleted"
    );
    assert_eq!(o.detail["docker"], "unknown");
    assert_eq!(tree(Path::new(&t)), before);
}

#[test]
fn find_errors_fail_the_run_with_details_kept() {
    let s = scratch("finderr");
    let t = populated_target(&s.0);
    let m = Machine::new(FakeDocker::Running("web-1"));
    m.wrap_find(&format!(
        "$FIND \"$@\"\necho \"find: '{t}/locked': Permission denied\" >&2\nexit 1"
    ));
    let w = &mut m.worker();
    let o = cleanup(
        w,
        &config(json!({"target_dirs": [t.clone()], "max_age_mins": 60})),
        SCRIPT_BUDGET,
    );
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
fn a_target_that_is_not_a_directory_is_an_error_a_missing_one_is_not() {
    let s = scratch("notdir");
    let file = s.0.join("file");
    write(&s.0, "file", 1);
    let dangling = s.0.join("dangling");
    symlink(s.0.join("nowhere"), &dangling).unwrap();
    let missing = s.0.join("a/b/c");
    let under_a_file = file.join("x");
    let m = Machine::new(FakeDocker::Absent);
    let mut w = m.worker();
    let targets: Vec<&str> = [&file, &dangling, &missing, &under_a_file]
        .map(|p| p.to_str().unwrap())
        .to_vec();
    let o = cleanup(
        &mut w,
        &config(json!({ "target_dirs": targets })),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Failed);
    let details = &o.detail["details"];
    for p in &targets[..2] {
        assert_eq!(
            details[*p],
            json!({"result": "check_failed", "error": format!("{p} exists but is not a directory")})
        );
    }
    for p in &targets[2..] {
        assert_eq!(details[*p], json!({"result": "dir_not_found"}));
    }
    assert!(file.exists());
}

#[test]
fn file_names_cannot_forge_records() {
    let s = scratch("forge");
    let t = s.0.join("t");
    let other = s.0.join("other");
    // Names that would read as records if paths were framed by newlines, or taken for
    // control records if they started a line: the end, another target's result, a count.
    let names = [
        "a\nZ",
        "b\nT1\nSmissing\nZ",
        "c\nC99\nX0\nE",
        "Z",
        "d\n/etc/passwd",
    ];
    for n in names {
        write(&t, n, 10);
        set_old(&t.join(n));
    }
    write(&other, "old.log", 10);
    set_old(&other.join("old.log"));
    let m = Machine::new(FakeDocker::Absent);
    let mut w = m.worker();
    let (t, other) = (t.to_str().unwrap(), other.to_str().unwrap());
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [t, other], "max_age_mins": 60})),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    let d = &o.detail["details"][t];
    let listed: BTreeSet<String> = names.iter().map(|n| format!("{t}/{n}")).collect();
    assert_eq!(paths(&d["deleted_files"]), listed);
    assert_eq!(d["deleted_files_count"], names.len());
    assert_eq!(d["listing_truncated"], false);
    assert_eq!(
        o.detail["details"][other]["deleted_files"],
        json!([format!("{other}/old.log")])
    );
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn a_thousand_deletions_are_counted_and_two_hundred_listed() {
    let s = scratch("many");
    let t = &write_many(&s.0.join("t"), "f", 1000, 2048);
    let m = Machine::new(FakeDocker::Absent);
    let mut w = m.worker();
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [t], "max_file_size": "1K"})),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    let d = &o.detail["details"][t];
    assert_eq!(d["deleted_files_count"], 1000);
    assert_eq!(d["deleted_files"].as_array().unwrap().len(), 200);
    assert_eq!(d["listing_truncated"], false);
    // The script itself sends no more than 200 paths: the output stays small.
    let sent = m.stdouts.borrow()[0]
        .split('\0')
        .filter(|r| r.starts_with('/'))
        .count();
    assert_eq!(sent, 200);
    assert_eq!(fs::read_dir(t).unwrap().count(), 0);
}

#[test]
fn the_scripts_temp_files_survive_a_target_that_holds_them() {
    // TMPDIR inside the target and every file "too large": the script's own listing must be
    // neither deleted nor listed, and its temp dir is gone afterwards.
    let s = scratch("tmpin");
    let t = &write_many(&s.0.join("t"), "file-with-a-long-name-", 300, 2);
    let tmpdir = s.0.join("t/tmp");
    fs::create_dir_all(&tmpdir).unwrap();
    let mut m = Machine::new(FakeDocker::Absent);
    m.tmpdir = Some(tmpdir.clone());
    let mut w = m.worker();
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [t], "max_file_size": 1})),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    let d = &o.detail["details"][t];
    assert_eq!(d["deleted_files_count"], 300, "{d:#}");
    assert!(
        paths(&d["deleted_files"])
            .iter()
            .all(|p| p.contains("/file-with-a-long-name-")),
        "{d:#}"
    );
    assert_eq!(tree(&tmpdir), BTreeSet::new(), "the temp dir is removed");
}

#[test]
fn a_find_past_the_budget_times_out_and_later_targets_are_skipped() {
    let s = scratch("slow");
    let (a, b) = (
        populated_target(&s.0.join("a")),
        populated_target(&s.0.join("b")),
    );
    let m = Machine::new(FakeDocker::Absent);
    // Killed mid-way, as `find` would be: one whole path out, the next one cut.
    m.wrap_find(r#"printf '%s/old.log\0%s/ol' "$1" "$1"; exec sleep 30"#);
    symlink(which("sleep"), m.bin.0.join("sleep")).unwrap();
    let w = &mut m.worker();
    let started = Instant::now();
    let o = cleanup(
        w,
        &config(json!({"target_dirs": [a.clone(), b.clone()], "max_age_mins": 60})),
        Duration::from_secs(2),
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the script keeps its budget: {:?}",
        started.elapsed()
    );
    assert_eq!(o.status, Status::Failed);
    let d = &o.detail["details"][&a];
    assert_eq!(d["exit_code"], 124, "{d:#}");
    let errors = d["errors"].as_str().unwrap();
    assert!(
        errors.starts_with(
            "find (deleting files) timed out: the run's time budget of 2 s ran out (the next \
             run continues)\nfind (pruning empty dirs) not started"
        ),
        "{errors}"
    );
    assert_eq!(d["deleted_files"], json!([format!("{a}/old.log")]));
    assert_eq!(d["deleted_files_count"], 1);
    assert_eq!(o.detail["details"][&b], json!({"result": "skipped"}));
    assert!(Path::new(&b).join("old.log").exists());
    assert_eq!(
        o.detail["error"],
        format!(
            "cleanup failed in {a}: find (deleting files) timed out: the run's time budget of \
             2 s ran out (the next run continues)"
        )
    );
}

#[test]
fn output_cut_by_the_host_marks_listings_truncated_and_the_rest_unfinished() {
    let s = scratch("cut");
    let a = write_many(&s.0.join("a"), "f", 100, 2048);
    let b = populated_target(&s.0.join("b"));
    let mut m = Machine::new(FakeDocker::Absent);
    m.max_output_bytes = Some(2000);
    let mut w = m.worker();
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [a.clone(), b.clone()], "max_file_size": "1K"})),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Failed);
    let d = &o.detail["details"][&a];
    assert_eq!(d["listing_truncated"], true, "{d:#}");
    assert_eq!(d["exit_code"], Value::Null);
    let listed = d["deleted_files"].as_array().unwrap().len();
    assert!(listed > 0 && listed < 100, "{listed}");
    let cut = "did not finish: the worker script's output was cut at the host's size limit";
    assert_eq!(
        o.detail["details"][&b],
        json!({"result": "did_not_finish", "error": cut})
    );
    assert!(
        o.detail["error"].as_str().unwrap().starts_with(&format!(
            "cleanup failed in {a}, {b}: find (deleting files) {cut}"
        )),
        "{}",
        o.detail["error"]
    );
}

#[test]
fn host_errors_fail_the_run() {
    let s = scratch("hosterr");
    let t = populated_target(&s.0);
    let m = Machine::new(FakeDocker::Absent);
    let mut w = m.worker();
    w.on(
        fake::prefix(SCRIPT_ARGV),
        Err(Error::Unreachable("connection refused".into())),
    );
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [t.clone()]})),
        SCRIPT_BUDGET,
    );
    assert_eq!(o.status, Status::Failed);
    assert_eq!(
        o.detail["error"],
        "the cleanup script did not finish (unreachable: connection refused)"
    );
    assert_eq!(o.detail["docker"], "unknown");
    assert_eq!(
        o.detail["details"][&t],
        json!({"result": "did_not_finish", "error": "did not finish: unreachable: connection refused"})
    );
    assert_eq!(w.calls().len(), 1);

    w.on(
        fake::prefix(SCRIPT_ARGV),
        Err(Error::NotFound(
            "program \"bash\" not found on the worker".into(),
        )),
    );
    let o = cleanup(
        &mut w,
        &config(json!({"target_dirs": [t.clone()]})),
        SCRIPT_BUDGET,
    );
    assert_eq!(
        o.detail["error"],
        "cannot run the cleanup script (not found: program \"bash\" not found on the worker); \
         nothing was deleted"
    );
    assert!(o.detail.get("details").is_none());
    assert!(Path::new(&t).join("old.log").exists());
}

#[test]
fn the_script_refuses_malformed_arguments() {
    let m = Machine::new(FakeDocker::Absent);
    let local = m.local();
    let run = |args: &[&str]| {
        let mut argv: Vec<String> = ["bash", "-c", SCRIPT, "file_cleanup"]
            .map(String::from)
            .to_vec();
        argv.extend(args.iter().map(|a| a.to_string()));
        local.run(&host::Command::argv(argv)).unwrap().stdout
    };
    let ok = ["5", "30", "200", "8000", "0"];
    for (args, reason) in [
        (&["5", "30", "200", "8000"][..], "bad arguments"),
        (&["5", "0", "200", "8000", "0"][..], "bad arguments"),
        (&["08", "30", "200", "8000", "0"][..], "bad arguments"),
        (&["5", "30", "200", "8000", "2"][..], "bad arguments"),
        (&["5", "30", "200", "8000", "$(id)"][..], "bad arguments"),
        (
            &["5", "30", "200", "8000", "0", "/x", "/x"][..],
            "bad arguments: a target is cut short",
        ),
        (
            &[&ok[..], &["/x", "/x", "0", "1", "-print", "0", "9", "-x"]].concat()[..],
            "bad arguments: a bad count",
        ),
        (
            &[&ok[..], &["x", "x", "0", "0", "0", "0"]].concat()[..],
            "bad arguments: a target is not an absolute path",
        ),
        (
            &[&ok[..], &["/x", "/x", "$(id)", "0", "0", "0"]].concat()[..],
            "bad arguments: a bad count",
        ),
    ] {
        assert_eq!(run(args), format!("A{reason}\0Z\0"), "{args:?}");
    }
    assert_eq!(run(&ok), "Dabsent\0Z\0");
}

#[test]
fn grants_name_bash_and_the_targets_and_honour_dry_runs() {
    use quarry_sdk::Task as _;
    let c = config(json!({"target_dirs": ["/data/logs", {"path": "/srv/x/"}]}));
    let g = crate::FileCleanup::grants(&c).expect("declared");
    assert_eq!(g.programs(), ["bash"]);
    assert!(!g.allows_shell() && g.allows_dry_run());
    assert_eq!(g.write_paths(), ["/data/logs", "/srv/x"]);
    assert!(g.read_paths().is_empty());
}
