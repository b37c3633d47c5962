//! Native tests of [`crate::pull_all`], on the SDK's [`FakeWorker`]:
//! - on a [`Machine`] that runs every argv for real (`/bin/sh`, `mktemp`, `base64`, `rm`) against
//!   a fake `docker` first on PATH, which records its arguments and the stdin it was given: the
//!   password reaches `docker login` byte for byte, never through any argv, the private
//!   directory is 0700 and gone before docker runs, hostile values execute nothing;
//! - with a scripted worker: login reuse, redaction of echoed secrets, and the stop rules
//!   (time budget, run deadline, unreachable worker, docker missing).

use std::cell::{Cell, RefCell};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use quarry_sdk::Status;
use quarry_sdk::host::{Error, LogLevel};
use quarry_sdk::worker::fake::{self, Answer, FakeWorker, LocalRunner, output};
use serde_json::{Value, json};

use crate::params::{Config, Params};
use crate::secret::REDACTED;
use crate::{START_BUDGET, pull_all};

/// The registry password of the tests, and its base64 form (ROCK's config form).
const PLAIN: &str = "s3cr3t-P@ss 'q' $(x)";
fn b64() -> String {
    crate::secret::encode_base64(PLAIN.as_bytes())
}

fn config(params: Value) -> Config {
    let p: Params = serde_json::from_value(params).unwrap();
    Config::from_params(&p).unwrap()
}

fn ok(stdout: &str) -> Answer {
    Ok(output(0, stdout, ""))
}

fn exit(code: i32, stderr: &str) -> Answer {
    Ok(output(code, "", stderr))
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        thread_local!(static N: Cell<u32> = const { Cell::new(0) });
        let n = N.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        let dir = std::env::temp_dir().join(format!(
            "quarry-image-pull-{label}-{}-{:?}-{n}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A fake `docker`: records each call's arguments (one per line, calls separated by `--end--`)
/// in `calls.log`; `login` stores its stdin in `stdin.<n>` and whether any private directory
/// still existed, succeeds when stdin is the expected password (`expected`), and echoes its
/// stdin to stderr when `echo-secret` exists; `pull` fails for images containing `fail`.
const FAKE_DOCKER: &str = r#"#!/bin/sh
d=$(dirname "$0")
for a in "$@"; do printf '%s\n' "$a"; done >>"$d/calls.log"
echo --end-- >>"$d/calls.log"
cmd=
for a in "$@"; do case "$a" in --*) ;; *) cmd=$a; break;; esac; done
case "$cmd" in
login)
    n=$(ls "$d" | grep -c '^stdin\.')
    cat >"$d/stdin.$n"
    if ls -d "$TMPDIR"/quarry-image-pull.* >/dev/null 2>&1; then echo yes; else echo no; fi >"$d/dir-left.$n"
    [ -e "$d/echo-secret" ] && cat "$d/stdin.$n" >&2
    if cmp -s "$d/stdin.$n" "$d/expected"; then echo 'Login Succeeded'; exit 0; fi
    echo 'Error response from daemon: login attempt failed with status: 401 Unauthorized' >&2
    exit 1;;
pull)
    for last in "$@"; do :; done
    case "$last" in *fail*) echo "Error response from daemon: pull access denied for $last" >&2; exit 1;; esac
    echo "Status: Downloaded newer image for $last"
    exit 0;;
esac
exit 2
"#;

/// This machine with the fake docker first on PATH and a `TMPDIR` private to the test.
struct Machine {
    bin: PathBuf,
    tmp: PathBuf,
    /// Mode of the directory holding each written file, at write time.
    write_dir_modes: Rc<RefCell<Vec<u32>>>,
}

impl Machine {
    fn new(root: &Path) -> Machine {
        let bin = root.join("bin");
        let tmp = root.join("tmp");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&tmp).unwrap();
        let docker = bin.join("docker");
        fs::write(&docker, FAKE_DOCKER).unwrap();
        fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(bin.join("expected"), PLAIN).unwrap();
        Machine {
            bin,
            tmp,
            write_dir_modes: Rc::default(),
        }
    }

    /// A worker that runs every argv and file write for real on this machine; the fake
    /// records them.
    fn worker(&self) -> FakeWorker {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let local = LocalRunner::new()
            .env("PATH", path)
            .env("TMPDIR", &self.tmp);
        let modes = Rc::clone(&self.write_dir_modes);
        let mut w = FakeWorker::new();
        w.on_with(fake::any(), move |c| local.run(c))
            .on_write(move |path, content| {
                let parent = Path::new(path).parent().unwrap();
                modes
                    .borrow_mut()
                    .push(fs::metadata(parent).unwrap().permissions().mode() & 0o777);
                fs::write(path, content).map_err(|e| Error::Other(e.to_string()))
            });
        w
    }

    /// The fake docker's calls, each as its argument list.
    fn docker_calls(&self) -> Vec<Vec<String>> {
        let log = fs::read_to_string(self.bin.join("calls.log")).unwrap_or_default();
        log.split("--end--\n")
            .filter(|c| !c.is_empty())
            .map(|c| c.lines().map(String::from).collect())
            .collect()
    }

    fn stdin(&self, n: usize) -> String {
        fs::read_to_string(self.bin.join(format!("stdin.{n}"))).unwrap()
    }

    fn dir_left(&self, n: usize) -> String {
        fs::read_to_string(self.bin.join(format!("dir-left.{n}")))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Entries left in the private TMPDIR.
    fn tmp_entries(&self) -> Vec<String> {
        fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Asserts that no secret form appears in `text`.
fn assert_no_secret(what: &str, text: &str) {
    for s in [PLAIN, &b64(), "s3cr3t"] {
        assert!(!text.contains(s), "{what} contains a secret: {text}");
    }
}

fn detail_text(o: &quarry_sdk::Outcome) -> String {
    Value::Object(o.detail.clone()).to_string()
}

#[test]
fn literal_password_reaches_docker_stdin_and_never_an_argv() {
    let root = Scratch::new("literal");
    let m = Machine::new(&root.0);
    let mut w = m.worker();
    let cfg = config(json!({
        "images": [
            {"image": "reg.example.com:5000/team/app:1", "registry_username": "bot", "registry_password": b64()},
            {"image": "reg.example.com:5000/team/other", "registry_username": "bot", "registry_password": b64()},
            "busybox:1.36",
        ],
        "docker_config": "/etc/quarry docker"
    }));
    let o = pull_all(&mut w, &cfg);
    assert_eq!(o.status, Status::Success, "{}", detail_text(&o));

    // One login for both images of the registry (same credentials), then three pulls.
    let calls = m.docker_calls();
    assert_eq!(
        calls,
        vec![
            vec![
                "--config=/etc/quarry docker",
                "login",
                "--username=bot",
                "--password-stdin",
                "reg.example.com:5000"
            ],
            vec![
                "--config=/etc/quarry docker",
                "pull",
                "reg.example.com:5000/team/app:1"
            ],
            vec![
                "--config=/etc/quarry docker",
                "pull",
                "reg.example.com:5000/team/other"
            ],
            vec!["--config=/etc/quarry docker", "pull", "busybox:1.36"],
        ]
    );
    assert_eq!(m.stdin(0), PLAIN, "docker login got the password on stdin");
    assert_eq!(
        m.dir_left(0),
        "no",
        "the private dir was gone before docker ran"
    );
    assert!(m.tmp_entries().is_empty(), "left: {:?}", m.tmp_entries());

    // The secret travels in exactly one place: the write-file into a 0700 directory.
    assert_eq!(w.writes().len(), 1);
    assert_eq!(w.writes()[0].1, format!("{}\n", b64()));
    assert_eq!(*m.write_dir_modes.borrow(), vec![0o700]);
    for argv in &w.argvs() {
        assert_no_secret("an argv", &argv.join(" "));
    }
    for (_, line) in w.logs() {
        assert_no_secret("a log line", line);
    }
    let text = detail_text(&o);
    assert_no_secret("the detail", &text);
    let d = &o.detail;
    assert_eq!(d["pulled_count"], 3);
    assert_eq!(d["images"][0]["login"], "ok");
    assert_eq!(d["images"][1]["login"], "ok");
    assert_eq!(d["images"][2]["login"], "none");
    assert_eq!(d["images"][0]["registry"], "reg.example.com:5000");
    assert_eq!(d["images"][2]["registry"], Value::Null);
    assert_eq!(d["warnings"].as_array().unwrap().len(), 2);
    assert!(
        d["warnings"][0]
            .as_str()
            .unwrap()
            .contains("prefer registry_password_file")
    );
}

#[test]
fn password_file_is_redirected_into_docker_login() {
    let root = Scratch::new("file");
    let m = Machine::new(&root.0);
    let mut w = m.worker();
    // A path full of shell syntax: it is a positional parameter, never parsed.
    let secret_dir = root.0.join("sec $(touch pwned) `touch pwned2`; 'x'");
    fs::create_dir_all(&secret_dir).unwrap();
    let pw_file = secret_dir.join("pw");
    fs::write(&pw_file, PLAIN).unwrap();
    let cfg = config(json!({"images": [
        {"image": "localhost:5000/app", "registry_username": "$(touch pwned3) `touch pwned4` ; \"u'", "registry_password_file": pw_file.to_str().unwrap()},
    ]}));
    let o = pull_all(&mut w, &cfg);
    // The user name is wrong for the fake? No: the fake only checks the password.
    assert_eq!(o.status, Status::Success, "{}", detail_text(&o));
    assert_eq!(m.stdin(0), PLAIN);
    let calls = m.docker_calls();
    assert_eq!(
        calls[0][1], "--username=$(touch pwned3) `touch pwned4` ; \"u'",
        "the user name arrived verbatim"
    );
    assert!(w.writes().is_empty(), "a password file means no write-file");
    for argv in &w.argvs() {
        assert_no_secret("an argv", &argv.join(" "));
    }
    assert_no_secret("the detail", &detail_text(&o));
    assert!(o.detail["warnings"].as_array().unwrap().is_empty());
    for marker in ["pwned", "pwned2", "pwned3", "pwned4"] {
        for dir in [
            root.0.clone(),
            secret_dir.clone(),
            std::env::current_dir().unwrap(),
        ] {
            assert!(
                !dir.join(marker).exists(),
                "{marker} was created: a value executed"
            );
        }
    }
}

#[test]
fn missing_password_file_fails_the_login_and_the_pull_still_runs() {
    let root = Scratch::new("nofile");
    let m = Machine::new(&root.0);
    let mut w = m.worker();
    let cfg = config(json!({"images": [
        {"image": "reg.io/app", "registry_username": "u", "registry_password_file": "/nonexistent/quarry/pw"},
    ]}));
    let o = pull_all(&mut w, &cfg);
    assert_eq!(o.status, Status::Failed);
    let img = &o.detail["images"][0];
    assert_eq!(img["login"], "failed");
    assert!(
        img["login_error"]
            .as_str()
            .unwrap()
            .contains("docker login exited with 125: password file /nonexistent/quarry/pw is missing or not readable"),
        "{img}"
    );
    assert_eq!(img["pulled"], true, "the pull is still attempted");
    let error = o.detail["error"].as_str().unwrap();
    assert!(error.contains("1 logins failed"), "{error}");
    assert!(
        error.contains("reg.io/app: login: docker login exited with 125"),
        "{error}"
    );
    // Only the pull reached docker.
    assert_eq!(m.docker_calls(), vec![vec!["pull", "reg.io/app"]]);
}

#[test]
fn wrong_password_and_echoed_secret_are_redacted() {
    let root = Scratch::new("wrong");
    let m = Machine::new(&root.0);
    let mut w = m.worker();
    fs::write(m.bin.join("expected"), "something else").unwrap();
    fs::write(m.bin.join("echo-secret"), "").unwrap();
    let cfg = config(json!({"images": [
        {"image": "reg.io/app-fail", "registry_username": "u", "registry_password": b64()},
        {"image": "reg.io/app2", "registry_username": "u", "registry_password": b64()},
    ]}));
    let o = pull_all(&mut w, &cfg);
    assert_eq!(o.status, Status::Failed);
    let text = detail_text(&o);
    assert_no_secret("the detail", &text);
    let e0 = o.detail["images"][0]["login_error"].as_str().unwrap();
    assert!(
        e0.contains(REDACTED) && e0.contains("401 Unauthorized"),
        "{e0}"
    );
    // The failed login is not retried for the same credentials.
    let e1 = o.detail["images"][1]["login_error"].as_str().unwrap();
    assert!(e1.contains("same credentials as an earlier image"), "{e1}");
    assert_eq!(
        m.docker_calls()
            .iter()
            .filter(|c| c.contains(&"login".to_string()))
            .count(),
        1
    );
    // The private directory was removed (by the script, and again after the failure).
    assert!(m.tmp_entries().is_empty(), "left: {:?}", m.tmp_entries());
    assert_eq!(o.detail["images"][0]["pulled"], false);
    assert!(
        o.detail["images"][0]["error"]
            .as_str()
            .unwrap()
            .contains("docker pull exited with 1: Error response from daemon: pull access denied")
    );
    assert_eq!(o.detail["images"][1]["pulled"], true);
    assert_eq!(o.detail["failed_count"], 1);
    assert_eq!(o.detail["login_failed_count"], 2);
    let error = o.detail["error"].as_str().unwrap();
    assert!(
        error.starts_with("1 of 2 images failed to pull, 2 logins failed; first error: reg.io/app-fail: login: docker login exited with 1"),
        "{error}"
    );
}

#[test]
fn no_images_touches_nothing() {
    let root = Scratch::new("none");
    let m = Machine::new(&root.0);
    let mut w = m.worker();
    let o = pull_all(&mut w, &config(json!({})));
    assert_eq!(o.status, Status::Success);
    assert_eq!(
        Value::Object(o.detail.clone()),
        json!({"status": "success", "message": "no images configured"})
    );
    assert!(w.calls().is_empty());
}

/// A worker answering from a script: `answer(argv)` decides; the clock advances by `tick` per
/// call.
fn scripted(tick: Duration, mut answer: impl FnMut(&[String]) -> Answer + 'static) -> FakeWorker {
    let mut w = FakeWorker::new();
    w.call_cost(tick)
        .on_with(fake::any(), move |c| answer(c.get_argv().expect("an argv")));
    w
}

fn images(n: usize) -> Value {
    json!({"images": (0..n).map(|i| format!("img{i}")).collect::<Vec<_>>()})
}

#[test]
fn no_pull_starts_after_the_time_budget() {
    // Each call takes 25 s: pulls start at 0, 25 and 50 s; the fourth would start at 75 s.
    let mut w = scripted(Duration::from_secs(25), |_| ok(""));
    let o = pull_all(&mut w, &config(images(5)));
    assert_eq!(o.status, Status::Failed);
    assert_eq!(w.calls().len(), 3);
    assert!(START_BUDGET <= Duration::from_secs(75));
    assert_eq!(o.detail["pulled_count"], 3);
    assert_eq!(o.detail["not_attempted_count"], 2);
    assert_eq!(
        o.detail["images"][3]["error"],
        "not attempted (time budget)"
    );
    assert_eq!(o.detail["images"][4]["pulled"], false);
    assert_eq!(
        o.detail["error"], "2 not attempted (time budget)",
        "{:?}",
        o.detail
    );
    assert_eq!(w.logs()[0].0, LogLevel::Warn);
}

#[test]
fn a_failed_pull_does_not_stop_the_rest() {
    let mut w = scripted(Duration::from_secs(1), |argv| {
        if argv.last().unwrap() == "img1" {
            exit(1, "Error response from daemon: manifest unknown")
        } else {
            ok("Status: Image is up to date")
        }
    });
    let o = pull_all(&mut w, &config(images(3)));
    assert_eq!(o.status, Status::Failed);
    assert_eq!(w.calls().len(), 3);
    assert_eq!(o.detail["pulled_count"], 2);
    assert_eq!(o.detail["failed_count"], 1);
    assert_eq!(
        o.detail["error"],
        "1 of 3 images failed to pull; first error: img1: docker pull exited with 1: Error \
         response from daemon: manifest unknown"
    );
    assert_eq!(
        w.argvs()[1],
        vec!["docker", "pull", "img1"],
        "an argv, no shell"
    );
}

#[test]
fn an_unreachable_worker_stops_the_run() {
    let mut w = scripted(Duration::from_secs(1), |_| {
        Err(Error::Unreachable(
            "worker 10.0.0.1: connection refused".into(),
        ))
    });
    let o = pull_all(&mut w, &config(images(3)));
    assert_eq!(w.calls().len(), 1);
    assert_eq!(o.detail["failed_count"], 1);
    assert_eq!(o.detail["not_attempted_count"], 2);
    assert_eq!(
        o.detail["images"][2]["error"],
        "not attempted (worker unreachable)"
    );
}

#[test]
fn a_deadline_timeout_stops_the_run_but_a_slow_pull_does_not() {
    // A pull that used its whole limit: the next one is still tried.
    let mut n = 0;
    let mut w = scripted(Duration::from_secs(20), move |_| {
        n += 1;
        if n == 1 {
            Err(Error::Timeout("execute timed out after 20s".into()))
        } else {
            ok("")
        }
    });
    let o = pull_all(&mut w, &config(images(2)));
    assert_eq!(w.calls().len(), 2);
    assert_eq!(o.detail["pulled_count"], 1);
    // A timeout straight away means the run's deadline: nothing more starts.
    let mut w = scripted(Duration::from_millis(300), |_| {
        Err(Error::Timeout("execute timed out after 0.0s".into()))
    });
    let o = pull_all(&mut w, &config(images(3)));
    assert_eq!(w.calls().len(), 1);
    assert_eq!(
        o.detail["images"][1]["error"],
        "not attempted (run deadline reached)"
    );
}

#[test]
fn missing_docker_stops_the_run() {
    let mut w = scripted(Duration::from_secs(1), |_| {
        Err(Error::NotFound(
            "worker local: program docker not found".into(),
        ))
    });
    let o = pull_all(&mut w, &config(images(2)));
    assert_eq!(w.calls().len(), 1);
    assert!(
        o.detail["images"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("docker pull did not finish (not found: ")
    );
    assert_eq!(
        o.detail["images"][1]["error"],
        "not attempted (docker not found on the worker)"
    );
}

#[test]
fn logins_are_redone_when_another_user_logged_in_to_the_registry() {
    let mut w = scripted(Duration::from_secs(1), |_| ok(""));
    let cfg = config(json!({"images": [
        {"image": "reg.io/a", "registry_username": "u1", "registry_password_file": "/p1"},
        {"image": "reg.io/b", "registry_username": "u2", "registry_password_file": "/p2"},
        {"image": "reg.io/c", "registry_username": "u1", "registry_password_file": "/p1"},
        {"image": "other.io/d", "registry_username": "u1", "registry_password_file": "/p1"},
        {"image": "reg.io/e", "registry_username": "u1", "registry_password_file": "/p1"},
    ]}));
    let o = pull_all(&mut w, &cfg);
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    let logins: Vec<String> = w
        .argvs()
        .iter()
        .filter(|a| a[0] == "/bin/sh")
        .map(|a| format!("{} {}", a[4], a[a.len() - 1]))
        .collect();
    assert_eq!(
        logins,
        ["/p1 reg.io", "/p2 reg.io", "/p1 reg.io", "/p1 other.io"],
        "e reuses c's login"
    );
}

#[test]
fn a_login_call_that_fails_cleans_up_the_private_dir() {
    let mut w = scripted(Duration::from_secs(5), |argv| match argv[0].as_str() {
        "mktemp" => ok("/tmp/quarry-image-pull.abc123\n"),
        "/bin/sh" => Err(Error::Timeout(format!(
            "worker x: execute timed out; {}",
            b64()
        ))),
        _ => ok(""),
    });
    let cfg = config(json!({"images": [
        {"image": "reg.io/a", "registry_username": "u", "registry_password": b64()},
    ]}));
    let o = pull_all(&mut w, &cfg);
    let written: Vec<&str> = w.writes().iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(written, ["/tmp/quarry-image-pull.abc123/password.b64"]);
    let argvs = w.argvs();
    let programs: Vec<&str> = argvs.iter().map(|a| a[0].as_str()).collect();
    assert_eq!(programs, ["mktemp", "/bin/sh", "rm", "docker"]);
    assert_eq!(
        argvs[2],
        ["rm", "-rf", "--", "/tmp/quarry-image-pull.abc123"]
    );
    let e = o.detail["images"][0]["login_error"].as_str().unwrap();
    assert!(
        e.starts_with("docker login did not finish (timeout: "),
        "{e}"
    );
    assert_no_secret("the login error", e);
    assert!(e.contains(REDACTED));
}

#[test]
fn a_bad_mktemp_answer_fails_the_login_without_writing() {
    let mut w = scripted(Duration::from_secs(1), |argv| match argv[0].as_str() {
        "mktemp" => ok("relative\n"),
        _ => ok(""),
    });
    let cfg = config(json!({"images": [
        {"image": "reg.io/a", "registry_username": "u", "registry_password": b64()},
    ]}));
    let o = pull_all(&mut w, &cfg);
    assert!(w.writes().is_empty());
    assert_eq!(
        o.detail["images"][0]["login_error"],
        "mktemp -d printed \"relative\", not a directory path"
    );
    assert_eq!(o.detail["images"][0]["pulled"], true);
}

#[test]
fn a_dry_run_inspects_and_reports_what_it_would_pull_and_log_in_to() {
    let mut w = scripted(Duration::from_secs(1), |argv| {
        match argv.last().map(String::as_str) {
            Some("busybox:1.36") => ok("sha256:1111\n"),
            Some("reg.example:5000/app:1") => exit(
                1,
                "Error response from daemon: No such image: reg.example:5000/app:1\n",
            ),
            _ => exit(1, "Cannot connect to the Docker daemon\n"),
        }
    });
    w.set_dry_run(true);
    let c = config(json!({
        "images": [
            "busybox:1.36",
            {"image": "reg.example:5000/app:1", "registry_username": "u",
             "registry_password": b64()},
        ],
        "docker_config": "/etc/quarry/docker",
    }));
    let o = pull_all(&mut w, &c);
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    assert_eq!(
        w.argvs(),
        [
            [
                "docker",
                "--config=/etc/quarry/docker",
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "busybox:1.36"
            ],
            [
                "docker",
                "--config=/etc/quarry/docker",
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "reg.example:5000/app:1"
            ],
        ],
        "only read-only inspects: no login, no mktemp, no pull"
    );
    assert!(w.writes().is_empty(), "no password file is written");
    let d = Value::Object(o.detail.clone());
    assert_eq!(d["dry_run"], true);
    assert_eq!(
        d["would_pull"],
        json!(["busybox:1.36", "reg.example:5000/app:1"])
    );
    assert_eq!(d["would_pull_count"], 2);
    assert_eq!(d["would_log_in"], json!(["reg.example:5000"]));
    assert_eq!(
        d["images"][0],
        json!({"image": "busybox:1.36", "registry": null, "would_log_in": false,
               "present": true, "local_id": "sha256:1111", "error": null})
    );
    assert_eq!(d["images"][1]["present"], false);
    assert_eq!(d["images"][1]["would_log_in"], true);
    assert_no_secret("the dry run's detail", &detail_text(&o));

    // A daemon that does not answer fails the dry run, as it would fail the pull.
    let mut w = scripted(Duration::from_secs(1), |_| {
        exit(1, "Cannot connect to the Docker daemon\n")
    });
    w.set_dry_run(true);
    let o = pull_all(&mut w, &config(images(2)));
    assert_eq!(o.status, Status::Failed);
    assert!(
        o.detail["error"]
            .as_str()
            .unwrap()
            .starts_with("dry run: 2 of 2 images could not be inspected; first error: img0: "),
        "{:?}",
        o.detail
    );
    // Docker missing: the first inspect says so and nothing more is tried.
    let mut w = scripted(Duration::from_secs(1), |_| {
        Err(Error::NotFound("program \"docker\" not found".into()))
    });
    w.set_dry_run(true);
    let o = pull_all(&mut w, &config(images(3)));
    assert_eq!(o.status, Status::Failed);
    assert_eq!(w.calls().len(), 1);
    assert_eq!(
        o.detail["images"][2]["error"],
        "not attempted (docker not found on the worker)"
    );
}

#[test]
fn grants_honour_dry_runs_and_a_dry_run_needs_only_docker() {
    use quarry_sdk::Task as _;
    // What a dry run calls (`docker image inspect`) is granted whatever the images.
    let g = crate::ImagePull::grants(&config(images(1))).unwrap();
    assert_eq!(g.programs(), ["docker"]);
    assert!(!g.allows_shell() && g.allows_dry_run());
    let literal = config(json!({"images": [{"image": "reg.example:5000/a:1",
        "registry_username": "u", "registry_password": b64()}]}));
    let g = crate::ImagePull::grants(&literal).unwrap();
    assert_eq!(g.programs(), ["docker", "/bin/sh", "mktemp", "rm"]);
    assert!(g.allows_dry_run());
}
