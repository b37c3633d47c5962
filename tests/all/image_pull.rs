//! image_pull loaded by the host and run through a real rocklet (and the local worker) against a
//! real registry with htpasswd auth (scripts/test-registry.sh) and the test dockerd
//! (scripts/test-dockerd.sh).
//!
//! Each test pushes the busybox test image to the registry under a name of its own, removes
//! that tag locally (so only an authenticated pull can bring it back), and runs the task with a
//! fresh `docker_config` directory (so no earlier login helps). Meanwhile a thread reads every
//! process's command line (`/proc/*/cmdline`) over and over; Quarry's own log is captured at
//! trace level; the rocklet logs like a production one (every request body, command and
//! output). The password, in any form, must appear in none of them, nor in the status file, the
//! run report or the outcome — except, for a literal `registry_password`, in the rocklet's log
//! of the `write-file` request, which is exactly why `registry_password_file` exists.
//!
//! The leak checks ([`CmdlineWatch`], [`Captured`], [`assert_no_secret`]) and [`tick_task`] serve
//! log_tasks.rs too.
//!
//! The tests run on a current-thread runtime so that the log capture (a thread-local tracing
//! subscriber) sees everything the host does for the run.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use quarry_host::plugins::PluginSet;
use quarry_host::report::{RunReport, TickOutcome};
use quarry_host::run::{WorkerRun, run_tick};
use quarry_host::runtime::Runtime;
use quarry_host::workers::{self, Limits, Worker, WorkerAddr};
use serde_json::{Value, json};

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Budget of one (task, worker) run: the host's default.
const RUN_TIMEOUT_SECS: u64 = 80;

/// Named timeout around one tick: the run budget plus slack for a loaded machine.
const TICK_TIMEOUT_SECS: u64 = 100;

/// Pause between two sweeps of `/proc/*/cmdline`.
const CMDLINE_POLL: Duration = Duration::from_millis(2);

/// The test registry started by scripts/test-registry.sh.
struct Registry {
    /// `127.0.0.1:PORT`.
    addr: String,
    user: String,
    /// Random, with quotes, `$()`, backticks and `;`.
    password: String,
}

fn registry() -> Registry {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run scripts/test.sh, or source scripts/test-dockerd.sh and \
                 scripts/test-registry.sh first"
            )
        })
    };
    Registry {
        addr: var("QUARRY_TEST_REGISTRY"),
        user: var("QUARRY_TEST_REGISTRY_USER"),
        password: var("QUARRY_TEST_REGISTRY_PASSWORD"),
    }
}

/// Standard padded base64, ROCK's form of a registry password.
fn base64(text: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Every form in which `password` could leak: itself, base64, JSON-escaped, and its random
/// core (`pw-<hex>`), which no encoding of a part of it can hide.
fn secret_forms(password: &str) -> Vec<String> {
    let json = serde_json::to_string(password).unwrap();
    let core = password.split('\'').next().unwrap().trim_end_matches('-');
    assert!(core.len() > 10, "the random core of the password: {core:?}");
    vec![
        password.to_string(),
        base64(password),
        json[1..json.len() - 1].to_string(),
        core.to_string(),
    ]
}

/// Panics if `text` (called `what`) holds any of `secrets`; the message does not repeat it.
pub(crate) fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for (i, s) in secrets.iter().enumerate() {
        if let Some(at) = text.find(s.as_str()) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(80)
                .map_or(0, |(i, _)| i);
            panic!(
                "{what} holds secret form #{i}, after: {:?}",
                &text[start..at]
            );
        }
    }
}

/// Runs the docker CLI with `DOCKER_CONFIG=config`, `stdin` as its standard input.
fn docker_with_config(config: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("docker")
        .args(args)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker {:?}: {}",
        &args[..1],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn image_present(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A tag in the test dockerd, removed when dropped.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Pushes the busybox test image as `<registry>/quarry-test/<name>-<pid>:1` (logged in with a
/// throw-away Docker config, logged out after), then removes that tag locally so that only a
/// pull can bring it back.
fn push_image(reg: &Registry, name: &str) -> Image {
    let config = TempDir::new("ip-push-config");
    let reference = format!("{}/quarry-test/{name}-{}:1", reg.addr, std::process::id());
    docker(&["tag", &docker_image(), &reference]);
    let image = Image(reference.clone());
    let login = [
        "login",
        reg.addr.as_str(),
        "--username",
        reg.user.as_str(),
        "--password-stdin",
    ];
    docker_with_config(config.path(), &login, Some(&reg.password));
    docker_with_config(config.path(), &["push", &reference], None);
    docker_with_config(config.path(), &["logout", &reg.addr], None);
    docker(&["rmi", &reference]);
    assert!(!image_present(&reference));
    image
}

/// Reads every process's command line until stopped, recording those that hold a secret.
pub(crate) struct CmdlineWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, Vec<String>)>,
}

impl CmdlineWatch {
    pub(crate) fn start(secrets: Vec<String>) -> CmdlineWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let own = std::process::id().to_string();
            let (mut sweeps, mut hits) = (0usize, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    let name = entry.file_name();
                    let pid = name.to_string_lossy();
                    if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own {
                        continue;
                    }
                    let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                        continue;
                    };
                    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                    if let Some(i) = secrets.iter().position(|s| cmdline.contains(s.as_str())) {
                        let program = cmdline.split(' ').next().unwrap_or("").to_string();
                        let hit = format!("pid {pid} ({program}) holds secret form #{i}");
                        if !hits.contains(&hit) {
                            hits.push(hit);
                        }
                    }
                }
                sweeps += 1;
                std::thread::sleep(CMDLINE_POLL);
            }
            (sweeps, hits)
        });
        CmdlineWatch { stop, handle }
    }

    /// Stops the watch; panics if any command line held a secret.
    pub(crate) fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (sweeps, hits) = self.handle.join().unwrap();
        assert!(sweeps > 0, "the command-line watch never ran");
        assert!(hits.is_empty(), "secret on a command line: {hits:?}");
    }
}

/// Quarry's log (every target, trace level) for the current thread, in memory.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// Starts capturing on this thread until the guard is dropped.
    pub(crate) fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

pub(crate) fn rocklet_worker(addr: &str) -> Worker {
    let a = WorkerAddr::parse(addr, 22555).unwrap();
    workers::connect(&[a], Limits::default()).remove(0)
}

pub(crate) fn local_worker() -> Worker {
    Worker::new(workers::local::LocalWorker::new(Limits::default()))
}

/// Everything one tick left behind.
pub(crate) struct Ran {
    pub(crate) report: RunReport,
    pub(crate) run: WorkerRun,
    /// The status file's text.
    pub(crate) status: String,
    /// The run report file's text.
    pub(crate) report_file: String,
}

impl Ran {
    /// Asserts the tick's outcome (`label` names the case) and returns the detail.
    pub(crate) fn expect(&self, outcome: TickOutcome, label: &str) -> Value {
        assert_eq!(
            self.report.outcome,
            outcome,
            "{label}: {}",
            self.report.to_json()
        );
        self.detail()
    }

    pub(crate) fn detail(&self) -> Value {
        Value::Object(
            self.run
                .detail
                .clone()
                .unwrap_or_else(|| panic!("no detail: {}", self.report.to_json())),
        )
    }

    /// Asserts that no secret is in the report, the report file, the status file or the detail.
    pub(crate) fn assert_no_secret(&self, secrets: &[String]) {
        assert_no_secret("the run report", &self.report.to_json(), secrets);
        assert_no_secret("the run report file", &self.report_file, secrets);
        assert_no_secret("the status file", &self.status, secrets);
        assert_no_secret("the outcome", &self.detail().to_string(), secrets);
    }
}

async fn tick(
    rt: &Arc<Runtime>,
    set: &PluginSet,
    params: Value,
    worker: &Worker,
    dir: &Path,
) -> Ran {
    tick_task(rt, set, "image_pull", params, worker, dir).await
}

/// One tick of the task `name` on `worker`, its status file and run report under `dir`.
pub(crate) async fn tick_task(
    rt: &Arc<Runtime>,
    set: &PluginSet,
    name: &str,
    params: Value,
    worker: &Worker,
    dir: &Path,
) -> Ran {
    let status_dir = dir.join("status");
    let report_dir = dir.join("reports");
    let (report, mut runs) = within(
        &format!("{name} tick"),
        TICK_TIMEOUT_SECS,
        run_tick(
            rt,
            &task(set, name, params),
            std::slice::from_ref(worker),
            &settings(
                status_dir.to_str().unwrap(),
                Some(&report_dir),
                RUN_TIMEOUT_SECS,
            ),
        ),
    )
    .await;
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Ran {
        status: read(&status_dir.join(format!("{name}_status.json"))),
        report_file: read(&report_dir.join(format!("{name}_run_report.json"))),
        report,
        run: runs.remove(0),
    }
}

/// `validate-config` as the host calls it when a config loads.
async fn validate(rt: &Runtime, set: &PluginSet, params: &Value) -> Result<(), String> {
    let plugin = set.get("image_pull").expect("image_pull loaded");
    within(
        "validate-config",
        60,
        rt.validate_config(plugin, &params.to_string()),
    )
    .await
    .expect("validate-config answered")
}

/// The login Docker stored in `config_dir` (base64 `user:password`), if any.
fn stored_login(config_dir: &Path, registry: &str) -> Option<String> {
    let text = std::fs::read_to_string(config_dir.join("config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["auths"][registry]["auth"].as_str().map(String::from)
}

/// Paths of the private directories the literal login made, as the rocklet logged `mktemp`'s
/// output.
fn private_dirs_in(log: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut rest = log;
    while let Some(at) = rest.find("quarry-image-pull.") {
        let start = rest[..at].rfind(['"', ' ', '\n']).map_or(0, |i| i + 1);
        let end = at
            + "quarry-image-pull.".len()
            + rest[at + "quarry-image-pull.".len()..]
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(0);
        let dir = &rest[start..end];
        if dir.starts_with('/') && !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_string());
        }
        rest = &rest[end..];
    }
    dirs
}

#[tokio::test(flavor = "current_thread")]
async fn a_password_file_logs_in_and_the_secret_never_leaves_the_worker() {
    needs_real_parts!("the test registry and dockerd and a real rocklet");
    let reg = registry();
    let secrets = secret_forms(&reg.password);
    let tmp = TempDir::new("ip-file");
    let image = push_image(&reg, "pw-file");
    // The password file as an operator writes it (`echo pw > file`: docker strips the newline).
    let pw_file = tmp.path().join("secrets/registry-password");
    file(&pw_file, format!("{}\n", reg.password).as_bytes(), 0);
    let docker_config = tmp.path().join("docker-config");
    let rocklet = RockletProcess::start_logging_requests();
    let (log, _guard) = Captured::start();
    let watch = CmdlineWatch::start(secrets.clone());

    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;
    let params = json!({
        "images": [{
            "image": image.0,
            "registry_username": reg.user,
            "registry_password_file": pw_file.to_str().unwrap(),
        }],
        "docker_config": docker_config.to_str().unwrap(),
    });
    validate(&rt, &set, &params).await.unwrap();
    let ran = tick(
        &rt,
        &set,
        params,
        &rocklet_worker(&rocklet.addr),
        tmp.path(),
    )
    .await;
    watch.finish();

    assert_eq!(
        ran.report.outcome,
        TickOutcome::Success,
        "{}",
        ran.report.to_json()
    );
    let d = ran.detail();
    assert_eq!(d["images"][0]["login"], "ok", "{d:#}");
    assert_eq!(d["images"][0]["pulled"], true, "{d:#}");
    assert_eq!(d["images"][0]["registry"], reg.addr.as_str());
    assert_eq!(d["warnings"], json!([]));
    assert!(image_present(&image.0), "the image was pulled");
    assert!(
        stored_login(&docker_config, &reg.addr).is_some(),
        "the login went to docker_config"
    );

    ran.assert_no_secret(&secrets);
    let quarry_log = log.text();
    assert!(
        quarry_log.contains("quarry.host.execute"),
        "the capture saw the host's calls"
    );
    assert_no_secret("Quarry's log", &quarry_log, &secrets);
    // The rocklet logged every request, command and output — and still never saw the secret.
    let rocklet_log = std::fs::read_to_string(&rocklet.log).unwrap();
    assert!(
        rocklet_log.contains("--password-stdin") && rocklet_log.contains("Login Succeeded"),
        "the rocklet logged the login request and its output"
    );
    assert_no_secret("the rocklet's log", &rocklet_log, &secrets);
}

#[tokio::test(flavor = "current_thread")]
async fn a_base64_password_logs_in_off_every_command_line_on_a_rocklet_and_locally() {
    needs_real_parts!("the test registry and dockerd and a real rocklet");
    let reg = registry();
    let secrets = secret_forms(&reg.password);
    let tmp = TempDir::new("ip-literal");
    let rocklet = RockletProcess::start_logging_requests();
    let (log, _guard) = Captured::start();
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;

    for (label, worker) in [
        ("rocklet", rocklet_worker(&rocklet.addr)),
        ("local", local_worker()),
    ] {
        let image = push_image(&reg, &format!("literal-{label}"));
        let dir = tmp.path().join(label);
        let docker_config = dir.join("docker-config");
        let params = json!({
            "images": [
                {"image": image.0, "registry_username": reg.user, "registry_password": base64(&reg.password)},
                // The same credentials again: no second login.
                {"image": image.0, "registry_username": reg.user, "registry_password": base64(&reg.password)},
            ],
            "docker_config": docker_config.to_str().unwrap(),
        });
        let watch = CmdlineWatch::start(secrets.clone());
        let before = log.text().len();
        validate(&rt, &set, &params).await.unwrap();
        let at_load = log.text()[before..].to_string();
        assert!(
            at_load.contains("images[0]: registry_password is configured literally")
                && at_load.contains("WARN"),
            "a warning at load: {at_load}"
        );
        let ran = tick(&rt, &set, params, &worker, &dir).await;
        watch.finish();

        assert_eq!(
            ran.report.outcome,
            TickOutcome::Success,
            "{label}: {}",
            ran.report.to_json()
        );
        let d = ran.detail();
        assert_eq!(d["pulled_count"], 2, "{label}: {d:#}");
        assert_eq!(d["images"][0]["login"], "ok");
        assert_eq!(d["images"][1]["login"], "ok");
        assert_eq!(d["warnings"].as_array().unwrap().len(), 2, "{d:#}");
        assert!(image_present(&image.0), "{label}: the image was pulled");
        let stored = stored_login(&docker_config, &reg.addr).expect("login stored");
        assert_eq!(stored, base64(&format!("{}:{}", reg.user, reg.password)));
        ran.assert_no_secret(&secrets);
    }
    assert_no_secret("Quarry's log", &log.text(), &secrets);

    let rocklet_log = std::fs::read_to_string(&rocklet.log).unwrap();
    let logins = rocklet_log
        .lines()
        .filter(|l| l.contains("[execute input]") && l.contains("--password-stdin"))
        .count();
    assert_eq!(
        logins, 1,
        "one login for two images with the same credentials"
    );
    // The documented cost of a literal password: the write-file request, whose body the rocklet
    // logs whole, holds its base64 — never the password itself, and nothing else holds either.
    let b64 = base64(&reg.password);
    let holding: Vec<&str> = rocklet_log.lines().filter(|l| l.contains(&b64)).collect();
    assert!(!holding.is_empty(), "the rocklet logs write-file bodies");
    for line in holding {
        assert!(
            line.trim_start().starts_with("\"content\": ") || line.contains("[write_file content]"),
            "the base64 password outside a write-file body in the rocklet's log"
        );
    }
    assert_no_secret(
        "the rocklet's log",
        &rocklet_log,
        &[reg.password.clone(), secrets[2].clone()],
    );
    let dirs = private_dirs_in(&rocklet_log);
    assert_eq!(dirs.len(), 1, "one private directory: {dirs:?}");
    for d in dirs {
        assert!(
            !Path::new(&d).exists(),
            "the private directory {d} was removed"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_values_are_refused_or_passed_verbatim_and_never_execute() {
    needs_real_parts!("the test registry and dockerd and a real rocklet");
    let reg = registry();
    let tmp = TempDir::new("ip-hostile");
    let m = |n: u32| tmp.path().join(format!("marker-{n}"));
    let markers: Vec<_> = (1..=9).map(m).collect();
    let [m1, m2, m3, m4, m5, m6, m7, m8, m9] = markers
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let rt = runtime(256, Duration::from_secs(60));
    let set = load(&rt, Path::new(PLUGINS)).await;

    // Image references with shell syntax are not references: refused when the config loads,
    // with the entry named.
    for (i, image) in [
        format!("busybox$(touch {m1})"),
        format!("busybox`touch {m2}`"),
        format!("busybox;touch {m3}"),
        format!("busybox\ntouch {m4}"),
        "busybox'\"".to_string(),
        format!("{}/a$(touch {m5})", reg.addr),
    ]
    .into_iter()
    .enumerate()
    {
        let params = json!({"images": ["busybox", image]});
        let e = validate(&rt, &set, &params).await.unwrap_err();
        assert!(e.starts_with("images[1] "), "{i}: {e}");
        // The run itself checks again and refuses before touching the worker.
        let ran = tick(&rt, &set, params, &local_worker(), tmp.path()).await;
        assert_eq!(ran.report.outcome, TickOutcome::Failed);
    }
    let e = validate(
        &rt,
        &set,
        &json!({"images": [{"image": format!("{}/x", reg.addr), "registry_username": "a\nb", "registry_password_file": "/p"}]}),
    )
    .await
    .unwrap_err();
    assert!(e.contains("must not contain control characters"), "{e}");

    // User names, password-file paths and the Docker config path may hold anything printable:
    // they are arguments, never shell text. The logins fail (no such user), nothing executes.
    let image = push_image(&reg, "hostile");
    let wrong = format!("wrong-{}", reg.password);
    let secrets = secret_forms(&reg.password);
    let pw_dir = tmp.path().join(format!("pw $(touch {m6}) `touch {m7}`"));
    let pw_file = pw_dir.join("pw;touch x");
    file(&pw_file, reg.password.as_bytes(), 0);
    let docker_config = tmp.path().join(format!("cfg $(touch {m8});'\""));
    let rocklet = RockletProcess::start_logging_requests();
    let params = json!({
        "images": [
            {"image": image.0, "registry_username": format!("$(touch {m9}) `touch {m9}`; touch {m9} '\""),
             "registry_password_file": pw_file.to_str().unwrap()},
            {"image": image.0, "registry_username": reg.user, "registry_password": base64(&wrong)},
        ],
        "docker_config": docker_config.to_str().unwrap(),
    });
    validate(&rt, &set, &params).await.unwrap();
    let watch = CmdlineWatch::start(secrets.clone());
    let ran = tick(
        &rt,
        &set,
        params,
        &rocklet_worker(&rocklet.addr),
        tmp.path(),
    )
    .await;
    watch.finish();

    assert_eq!(ran.report.outcome, TickOutcome::Failed);
    let d = ran.detail();
    for i in 0..2 {
        let img = &d["images"][i];
        assert_eq!(img["login"], "failed", "{d:#}");
        let e = img["login_error"].as_str().unwrap();
        assert!(
            e.starts_with("docker login exited with 1: ") && e.contains("401 Unauthorized"),
            "{e}"
        );
        assert_eq!(img["pulled"], false, "{d:#}");
        let e = img["error"].as_str().unwrap();
        assert!(
            e.starts_with("docker pull exited with 1: ")
                && (e.contains("no basic auth credentials") || e.contains("unauthorized")),
            "{e}"
        );
    }
    assert_eq!(d["login_failed_count"], 2);
    let error = ran.report.worker_results[0].error.as_deref().unwrap();
    assert!(
        error.starts_with("2 of 2 images failed to pull, 2 logins failed; first error: "),
        "{error}"
    );
    assert!(!image_present(&image.0));
    ran.assert_no_secret(&secrets);
    ran.assert_no_secret(&secret_forms(&wrong));
    for marker in &markers {
        assert!(
            !marker.exists(),
            "{} exists: a value executed",
            marker.display()
        );
    }
    assert!(
        !Path::new("x").exists() && !pw_dir.join("x").exists(),
        "a value executed"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_rock_config_with_image_pull_task_loads_with_a_warning_for_literal_passwords() {
    use quarry_host::config::Config;
    use quarry_host::server::resolve_tasks;

    // ROCK's form: class path, base64 password; `c2VjcmV0LXB3` is "secret-pw".
    let yaml = r#"
scheduler:
  enabled: true
  tasks:
    - task_class: rock.admin.scheduler.tasks.image_pull_task.ImagePullTask
      interval_seconds: 3600
      params:
        images:
          - "busybox:1.36"
          - image: registry.example.com/team/app:1
            registry_username: bot
            registry_password: c2VjcmV0LXB3
          - image: registry.example.com/team/other:2
            registry_username: bot
            registry_password_file: /etc/quarry/registry-password
"#;
    let plugins = plugins_dir(&["image_pull"]);
    let rt = runtime(64, Duration::from_secs(5));
    let set = load(&rt, plugins.path()).await;
    let (log, _guard) = Captured::start();
    let mut cfg = Config::from_yaml(yaml, plugins.path()).unwrap();
    cfg.paths.plugins_dir = plugins.path().to_path_buf();
    let tasks = resolve_tasks(&rt, &cfg, &set)
        .await
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(tasks.len(), 1);
    let text = log.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("configured literally"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, for images[1]: {text}");
    assert!(warnings[0].contains("image_pull: images[1]: registry_password"));
    assert_no_secret(
        "Quarry's log",
        &text,
        &["c2VjcmV0LXB3".to_string(), "secret-pw".to_string()],
    );

    // Credentials on an image without a registry host: refused, the entry and reason named,
    // the password not quoted.
    let bad = yaml.replace("registry.example.com/team/app:1", "team/app:1");
    let cfg = Config::from_yaml(&bad, plugins.path()).unwrap();
    let Err(problems) = resolve_tasks(&rt, &cfg, &set).await else {
        panic!("credentials on an image without a registry were accepted");
    };
    let problems = problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        problems.starts_with(
            "scheduler.tasks[0].params: images[1]: credentials are set but image \"team/app:1\" names no registry host"
        ),
        "{problems}"
    );
    assert!(!problems.contains("c2VjcmV0LXB3"), "{problems}");
}
