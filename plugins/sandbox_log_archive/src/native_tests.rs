//! Native tests: the scripts run by this machine's bash (the SDK's [`FakeWorker`] with a
//! [`LocalRunner`]) on a fabricated log root, with a fake `curl` (an object store in a
//! directory that records its arguments) and a fake `docker` first on `PATH`. The real store
//! (moto) and a real rocklet are in tests/all/sandbox_log_archive.rs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use quarry_sdk::Status;
use quarry_sdk::worker::fake::{self, FakeWorker, LocalRunner};
use serde_json::{Value, json};

use crate::archive;
use crate::params::{Config, Params};

/// The secret in the credentials file: it must appear in no command.
const SECRET: &str = "s3cr3t-'$(touch pwned)'";

/// A fake `curl`: PUT (`-T`) copies the file into `$FAKE_S3_DIR/objects`, HEAD (`-I`) writes
/// headers with its size; `$FAKE_S3_MODE` = `403` refuses everything, `short` reports one byte
/// less. Every argument is appended to `$FAKE_S3_DIR/argv`.
const FAKE_CURL: &str = r#"#!/bin/sh
printf '%s\n' "$@" >>"$FAKE_S3_DIR/argv"
upload= out= head= url=
while [ $# -gt 0 ]; do
    case $1 in
    -T) upload=$2; shift ;;
    -o) out=$2; shift ;;
    -I) head=1 ;;
    --) url=$2; shift ;;
    -K | -w | -H | --max-time | --aws-sigv4) shift ;;
    esac
    shift
done
key=$(printf '%s' "$url" | sed 's|^[a-z]*://[^/]*/||' | tr / _)
mkdir -p "$FAKE_S3_DIR/objects"
if [ "${FAKE_S3_MODE:-}" = 403 ]; then
    printf '<Error><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message></Error>' >"$out"
    printf 403
elif [ -n "$upload" ]; then
    cp "$upload" "$FAKE_S3_DIR/objects/$key"
    : >"$out"
    printf 200
elif [ -f "$FAKE_S3_DIR/objects/$key" ]; then
    size=$(stat -c %s "$FAKE_S3_DIR/objects/$key")
    [ "${FAKE_S3_MODE:-}" = short ] && size=$((size - 1))
    printf 'HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n' "$size" >"$out"
    printf 200
else
    printf 404
fi
"#;

/// A temporary directory removed on drop.
struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A log root, a fake store, fake tools and a credentials file.
struct Setup {
    tmp: Tmp,
    root: PathBuf,
    store: PathBuf,
    bin: PathBuf,
    creds: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("quarry-sla-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (root, store, bin) = (dir.join("logs"), dir.join("store"), dir.join("bin"));
        for d in [&root, &store, &bin] {
            std::fs::create_dir_all(d).unwrap();
        }
        let creds = dir.join("s3.curl");
        std::fs::write(&creds, format!("user = \"AKIATEST:{SECRET}\"\n")).unwrap();
        chmod(&creds, 0o600);
        let curl = bin.join("curl");
        std::fs::write(&curl, FAKE_CURL).unwrap();
        chmod(&curl, 0o755);
        let s = Setup {
            tmp: Tmp(dir),
            root,
            store,
            bin,
            creds,
        };
        s.docker("exit 0");
        s
    }

    /// Replaces the fake `docker` with one running `body`.
    fn docker(&self, body: &str) {
        let docker = self.bin.join("docker");
        std::fs::write(&docker, format!("#!/bin/sh\n{body}\n")).unwrap();
        chmod(&docker, 0o755);
    }

    /// A sandbox log dir with two files, everything aged `days`.
    fn sandbox(&self, name: &str, days: u64) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["rocklet.log", "sub/command.log"] {
            std::fs::write(dir.join(f), format!("{name} {f}\n")).unwrap();
            age(&dir.join(f), days);
        }
        age(&dir.join("sub"), days);
        age(&dir, days);
        dir
    }

    fn config(&self, extra: Value) -> Config {
        let mut v = json!({
            "endpoint": "http://127.0.0.1:9", "bucket": "logs", "prefix": "p/",
            "credentials_file": self.creds.to_str().unwrap(),
            "log_root": self.root.to_str().unwrap(),
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let p: Params = serde_json::from_value(v).unwrap();
        Config::from_params(&p).unwrap()
    }

    /// A worker running every argv here, with the fakes first on `PATH`.
    fn worker(&self, mode: &str) -> FakeWorker {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap());
        let runner = LocalRunner::new()
            .cwd(&self.tmp.0)
            .env("PATH", path)
            .env("FAKE_S3_DIR", &self.store)
            .env("FAKE_S3_MODE", mode)
            .env_remove("ROCK_LOGGING_PATH");
        let mut w = FakeWorker::new();
        w.on_with(fake::any(), move |c| runner.run(c));
        w
    }

    /// The names of the files in the stored archive of `id`.
    fn stored(&self, id: &str) -> Vec<String> {
        let object = self
            .store
            .join("objects")
            .join(format!("logs_p_sandbox-logs_{id}.tar.gz"));
        let out = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(&object)
            .output()
            .unwrap();
        assert!(out.status.success(), "{} is a tar.gz", object.display());
        let mut names: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        names.sort();
        names
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn age(path: &Path, days: u64) {
    let when = SystemTime::now() - Duration::from_secs(days * 86_400);
    std::fs::File::open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// Panics if the secret is in any command the task sent or any argument curl got.
fn assert_secret_unsent(w: &FakeWorker, s: &Setup) {
    for c in w.calls() {
        let text = format!("{:?} {:?} {:?}", c.get_argv(), c.get_script(), c.get_env());
        assert!(!text.contains("s3cr3t"), "a command holds the secret");
        assert!(c.get_env().is_empty(), "no environment is passed");
    }
    let argv = std::fs::read_to_string(s.store.join("argv")).unwrap_or_default();
    assert!(!argv.contains("s3cr3t"), "curl's arguments hold the secret");
}

#[test]
fn old_dirs_are_uploaded_verified_and_deleted_the_rest_stay() {
    let s = Setup::new("ok");
    let old = s.sandbox("sb-old", 4);
    let older = s.sandbox("sb-older", 9);
    let young = s.sandbox("sb-young", 2);
    let running = s.sandbox("sb-running", 30);
    let odd = s.sandbox("odd name", 30);
    // A young file deep inside makes the whole dir young.
    let touched = s.sandbox("sb-touched", 30);
    std::fs::write(touched.join("sub/new.log"), "x").unwrap();
    std::fs::write(s.root.join("rocklet.log"), "not a sandbox").unwrap();
    s.docker("echo sb-running; echo other");

    // A dry run lists and decides as a real run, then packs, uploads and deletes nothing.
    let mut dry = s.worker("ok");
    dry.set_dry_run(true);
    let out = archive(&mut dry, &s.config(json!({})));
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    let d = &out.detail;
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["would_archive_count"], 2);
    assert_eq!(
        d["would_archive"][0]["sandbox_id"], "sb-older",
        "oldest first"
    );
    assert_eq!(d["would_archive"][1]["key"], "p/sandbox-logs/sb-old.tar.gz");
    assert_eq!(d["skipped_alive"], 1);
    assert_eq!(d["skipped_too_young"], 2);
    assert!(old.join("rocklet.log").exists() && older.join("rocklet.log").exists());
    assert!(!s.store.join("argv").exists(), "a dry run never runs curl");
    assert_eq!(dry.calls().len(), 2, "discover and docker ps only");

    let mut w = s.worker("ok");
    let out = archive(&mut w, &s.config(json!({})));
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert!(
        !old.exists() && !older.exists(),
        "archived dirs are deleted"
    );
    for kept in [&young, &running, &odd, &touched] {
        assert!(
            kept.join("rocklet.log").exists(),
            "{} stays",
            kept.display()
        );
    }
    assert_eq!(
        s.stored("sb-old"),
        [
            "sb-old/",
            "sb-old/rocklet.log",
            "sb-old/sub/",
            "sb-old/sub/command.log"
        ]
    );
    assert_eq!(s.stored("sb-older").len(), 4);
    let d = &out.detail;
    assert_eq!(d["status"], "success");
    assert_eq!(d["scanned"], 6);
    assert_eq!(d["archived"], 2);
    assert_eq!(d["skipped_alive"], 1);
    assert_eq!(d["skipped_too_young"], 2);
    assert_eq!(d["skipped_invalid_name"], 1);
    assert_eq!(d["failed"], 0);
    assert_eq!(d["archives"][0]["sandbox_id"], "sb-older", "oldest first");
    assert_eq!(d["archives"][1]["key"], "p/sandbox-logs/sb-old.tar.gz");
    assert_eq!(d["archives"][1]["deleted"], true);
    assert!(d["archives"][1]["bytes"].as_u64().unwrap() > 0);
    // discover, docker ps, two archives.
    assert_eq!(w.calls().len(), 4);
    assert_secret_unsent(&w, &s);
    let argv = std::fs::read_to_string(s.store.join("argv")).unwrap();
    assert!(argv.contains("aws:amz:us-east-1:s3") && argv.contains(s.creds.to_str().unwrap()));
    assert!(!s.tmp.0.join("pwned").exists());
}

#[test]
fn a_refused_upload_leaves_every_dir_and_fails_the_run() {
    let s = Setup::new("403");
    let a = s.sandbox("sb-a", 5);
    let b = s.sandbox("sb-b", 4);
    let mut w = s.worker("403");
    let out = archive(&mut w, &s.config(json!({})));
    assert_eq!(out.status, Status::Failed);
    assert_eq!(
        out.detail["error"],
        "could not archive 2 of 2 sandbox log dirs, which stay on the worker (first: sb-a: \
         upload: HTTP 403 SignatureDoesNotMatch: bad sig)"
    );
    assert_eq!(out.detail["status"], "failed");
    assert_eq!(out.detail["failed"], 2);
    assert_eq!(out.detail["archived"], 0);
    assert!(a.join("sub/command.log").exists() && b.join("rocklet.log").exists());
    assert_secret_unsent(&w, &s);
}

#[test]
fn a_stored_object_of_the_wrong_size_leaves_the_dir() {
    let s = Setup::new("short");
    let a = s.sandbox("sb-a", 5);
    let out = archive(&mut s.worker("short"), &s.config(json!({})));
    assert_eq!(out.status, Status::Failed);
    let error = out.detail["error"].as_str().unwrap();
    assert!(
        error.contains("sb-a: verify: the stored object has ")
            && error.contains(" bytes, the archive "),
        "{error}"
    );
    assert!(a.join("rocklet.log").exists());
}

#[test]
fn a_credentials_file_others_can_read_is_refused_before_any_upload() {
    let s = Setup::new("mode");
    let a = s.sandbox("sb-a", 5);
    chmod(&s.creds, 0o644);
    let out = archive(&mut s.worker("ok"), &s.config(json!({})));
    assert_eq!(out.status, Status::Failed);
    let error = out.detail["error"].as_str().unwrap();
    assert!(
        error.ends_with(&format!(
            "credentials_file {}: mode 644 gives group or others access (chmod 600))",
            s.creds.display()
        )),
        "{error}"
    );
    assert!(a.exists());
    assert!(!s.store.join("argv").exists(), "curl never ran");
    std::fs::remove_file(&s.creds).unwrap();
    let out = archive(&mut s.worker("ok"), &s.config(json!({})));
    assert!(
        out.detail["error"]
            .as_str()
            .unwrap()
            .contains("not a readable file on the worker")
    );
}

#[test]
fn keeping_the_dirs_and_the_budget() {
    let s = Setup::new("keep");
    let a = s.sandbox("sb-a", 5);
    let out = archive(
        &mut s.worker("ok"),
        &s.config(json!({"delete_after_upload": false, "keep_days_before_archive": 5})),
    );
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert_eq!(out.detail["archives"][0]["deleted"], false);
    assert!(a.join("rocklet.log").exists());
    assert_eq!(s.stored("sb-a").len(), 4);
    let out = archive(
        &mut s.worker("ok"),
        &s.config(json!({"keep_days_before_archive": 6})),
    );
    assert_eq!(out.detail["skipped_too_young"], 1);
    // Calls that eat the budget: the upload is deferred to the next run.
    let mut w = s.worker("ok");
    w.call_cost(Duration::from_secs(30));
    let out = archive(&mut w, &s.config(json!({})));
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert_eq!(out.detail["deferred"], 1);
    assert_eq!(out.detail["archived"], 0);
    assert!(a.exists());
}

#[test]
fn a_failing_docker_refuses_and_no_docker_protects_nothing() {
    let s = Setup::new("docker");
    let a = s.sandbox("sb-a", 5);
    s.docker("echo 'Cannot connect to the Docker daemon' >&2; exit 1");
    let out = archive(&mut s.worker("ok"), &s.config(json!({})));
    assert_eq!(out.status, Status::Failed);
    assert_eq!(
        out.detail["error"],
        "docker is installed but `docker ps` exited with 1: Cannot connect to the Docker \
         daemon; refusing to archive anything"
    );
    assert!(a.exists());
    let mut w = FakeWorker::new();
    let runner = LocalRunner::new();
    w.on(
        fake::program("docker"),
        Err(quarry_sdk::host::Error::NotFound("docker".into())),
    )
    .on_with(fake::program("bash"), move |c| {
        // Only the listing runs for real; the upload is answered as done.
        if c.get_argv().unwrap().len() == 6 {
            runner.run(c)
        } else {
            Ok(fake::output(0, "archived 10 1\n", ""))
        }
    });
    let c = s.config(json!({}));
    let out = archive(&mut w, &c);
    assert_eq!(w.count(fake::program("docker")), 1);
    assert_eq!(out.detail["skipped_alive"], 0);
    assert_eq!(out.detail["archived"], 1);
}

#[test]
fn the_log_root_defaults_to_the_workers_rock_logging_path() {
    let s = Setup::new("env");
    let mut c = s.config(json!({}));
    c.log_root = None;
    let out = archive(&mut s.worker("ok"), &c);
    assert_eq!(out.status, Status::Success);
    assert_eq!(out.detail["message"], "no log root configured");
    let a = s.sandbox("sb-a", 5);
    let runner = LocalRunner::new()
        .env(
            "PATH",
            format!("{}:{}", s.bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("FAKE_S3_DIR", &s.store)
        .env("ROCK_LOGGING_PATH", format!("{}/", s.root.display()));
    let mut w = FakeWorker::new();
    w.on_with(fake::any(), move |c| runner.run(c));
    let out = archive(&mut w, &c);
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert_eq!(out.detail["log_root"], s.root.to_str().unwrap());
    assert_eq!(out.detail["archived"], 1);
    assert!(!a.exists());
    // A root that does not exist is nothing to do.
    c.log_root = Some(s.root.join("nope").to_string_lossy().into_owned());
    let out = archive(&mut s.worker("ok"), &c);
    assert_eq!(out.status, Status::Success, "{:?}", out.detail);
    assert_eq!(out.detail["found"], false);
    assert_eq!(out.detail["scanned"], 0);
}
