//! Worker behaviour: the same checks against a real rocklet ([`Rocklet`]) and against
//! [`LocalWorker`], so that a task behaves the same on either. Each check is one test per
//! worker kind (`workers::local::<check>`, `workers::rocklet::<check>`); rocklet tests start a
//! rocklet of their own. Rocklet-only and local-only cases follow at the end.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quarry_host::workers::local::LocalWorker;
use quarry_host::workers::rocklet::Rocklet;
use quarry_host::workers::{
    Command, DEFAULT_ROCKLET_PORT, Limits, Output, Program, Worker, WorkerAddr, WorkerError,
};

use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Limit for each awaited step; far above what any step needs, so only a hang trips it.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Command limit for commands that are expected to finish.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// File operation limit.
const FILE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a killed grandchild may take to disappear (or become a zombie).
const DEATH_WAIT: Duration = Duration::from_secs(3);

/// Awaits `fut`, failing the test with `name` if it takes longer than [`STEP_TIMEOUT`].
async fn step<T>(name: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("step {name:?} did not finish within {STEP_TIMEOUT:?}"),
    }
}

/// The worker under test, its rocklet (if any) and a scratch directory.
struct Subject {
    worker: Worker,
    rocklet: Option<RockletProcess>,
    dir: PathBuf,
}

impl Subject {
    fn local() -> Subject {
        Subject {
            worker: Worker::new(LocalWorker::new(Limits::default())),
            rocklet: None,
            dir: scratch_dir(),
        }
    }

    async fn rocklet() -> Subject {
        Self::rocklet_from(RockletProcess::start).await
    }

    async fn rocklet_from(start: impl FnOnce() -> RockletProcess + Send + 'static) -> Subject {
        let process = step("start rocklet", tokio::task::spawn_blocking(start))
            .await
            .unwrap_or_else(|e| panic!("starting the rocklet failed: {e}"));
        let worker = rocklet_worker(process.port(), Limits::default());
        Subject {
            worker,
            rocklet: Some(process),
            dir: scratch_dir(),
        }
    }

    /// Another handle to the same worker with different limits.
    fn with_limits(&self, limits: Limits) -> Worker {
        match &self.rocklet {
            None => Worker::new(LocalWorker::new(limits)),
            Some(p) => rocklet_worker(p.port(), limits),
        }
    }

    /// `<scratch dir>/<rel>` as a string.
    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    /// How error messages end: naming the worker, after the reason and what was being done.
    fn suffix(&self) -> String {
        format!(" on worker {}", self.worker.addr())
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rocklet_worker(port: u16, limits: Limits) -> Worker {
    Worker::from_arc(rocklet_client(port, limits))
}

/// A client for the rocklet on 127.0.0.1:`port`, kept for [`Rocklet::is_alive`].
fn rocklet_client(port: u16, limits: Limits) -> Arc<Rocklet> {
    let addr = WorkerAddr::Remote {
        host: "127.0.0.1".into(),
        port,
    };
    Arc::new(
        Rocklet::new(addr)
            .with_client(Rocklet::http_client())
            .with_limits(limits),
    )
}

/// A fresh, canonical directory under the system temp dir.
fn scratch_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("quarry-workers-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir.canonicalize()
        .unwrap_or_else(|e| panic!("cannot canonicalize {}: {e}", dir.display()))
}

fn argv(args: &[&str]) -> Command {
    Command {
        program: Program::Argv(args.iter().map(|a| a.to_string()).collect()),
        cwd: None,
        env: Vec::new(),
        timeout: COMMAND_TIMEOUT,
    }
}

fn shell(script: &str) -> Command {
    Command {
        program: Program::Shell(script.to_string()),
        cwd: None,
        env: Vec::new(),
        timeout: COMMAND_TIMEOUT,
    }
}

fn with_env(mut cmd: Command, env: &[(&str, &str)]) -> Command {
    cmd.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cmd
}

fn out(stdout: &str, stderr: &str, exit_code: i32) -> Output {
    Output {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit_code,
    }
}

async fn run(s: &Subject, name: &str, cmd: &Command) -> Result<Output, WorkerError> {
    step(name, s.worker.execute(cmd)).await
}

/// True once `pid` is gone or a zombie (killed, waiting for init to reap it).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_dead(pid: u32) -> bool {
    let deadline = Instant::now() + DEATH_WAIT;
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    is_dead(pid)
}

fn read_pid(path: &str) -> u32 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("pid file {path} holds {text:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Checks run on both workers.

async fn argv_echo(s: &Subject) {
    let got = run(s, "echo", &argv(&["echo", "hello", "world"])).await;
    assert_eq!(got, Ok(out("hello world\n", "", 0)));
}

async fn shell_streams_and_exit_code(s: &Subject) {
    let got = run(s, "script", &shell("echo out; echo err >&2; exit 3")).await;
    assert_eq!(got, Ok(out("out\n", "err\n", 3)));
    let got = run(s, "killed by signal", &shell("echo before; kill -9 $$")).await;
    assert_eq!(got, Ok(out("before\n", "", -9)));
    // A command exiting 124 by itself is not a timeout (the rocklet's wrapper also uses 124).
    let got = run(s, "exit 124", &shell("exit 124")).await;
    assert_eq!(got, Ok(out("", "", 124)));
}

async fn env_is_merged(s: &Subject) {
    let path = std::env::var("PATH").expect("test process has a PATH");
    let value = "a b $HOME `x` ✓";
    let cmd = with_env(
        argv(&["printenv", "QUARRY_TEST_VAR", "PATH"]),
        &[("QUARRY_TEST_VAR", value)],
    );
    let got = run(s, "printenv", &cmd).await;
    assert_eq!(got, Ok(out(&format!("{value}\n{path}\n"), "", 0)));

    let cmd = with_env(
        shell(r#"printf '%s\n%s\n' "$QUARRY_TEST_VAR" "$PATH""#),
        &[("QUARRY_TEST_VAR", value), ("QUARRY_OTHER", "2")],
    );
    let got = run(s, "shell printenv", &cmd).await;
    assert_eq!(got, Ok(out(&format!("{value}\n{path}\n"), "", 0)));
}

async fn cwd_is_used(s: &Subject) {
    let dir = s.dir.to_string_lossy().into_owned();
    let mut cmd = argv(&["pwd"]);
    cmd.cwd = Some(dir.clone());
    assert_eq!(
        run(s, "pwd", &cmd).await,
        Ok(out(&format!("{dir}\n"), "", 0))
    );
    let mut cmd = with_env(shell("pwd; echo \"$V\""), &[("V", "v")]);
    cmd.cwd = Some(dir.clone());
    assert_eq!(
        run(s, "shell pwd", &cmd).await,
        Ok(out(&format!("{dir}\nv\n"), "", 0))
    );
}

async fn missing_cwd_is_not_found(s: &Subject) {
    let missing = s.path("no/such/dir");
    let mut cmd = argv(&["true"]);
    cmd.cwd = Some(missing.clone());
    match run(s, "missing cwd", &cmd).await {
        Err(WorkerError::NotFound(m)) => {
            assert!(m.ends_with(&s.suffix()) && m.contains(&missing), "{m}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn missing_program_is_not_found(s: &Subject) {
    let program = "quarry-no-such-program";
    for cmd in [
        argv(&[program, "x"]),
        with_env(argv(&[program]), &[("A", "1")]),
    ] {
        match run(s, "missing program", &cmd).await {
            Err(WorkerError::NotFound(m)) => {
                assert!(m.ends_with(&s.suffix()) && m.contains(program), "{m}");
            }
            other => panic!("expected NotFound for {cmd:?}, got {other:?}"),
        }
    }
    // A missing command inside a script is the script's business: exit 127, not an error.
    let got = run(s, "missing in script", &shell("quarry-no-such-program")).await;
    assert!(matches!(&got, Ok(o) if o.exit_code == 127), "{got:?}");
}

async fn timeout_kills_process_group(s: &Subject) {
    let limit = Duration::from_secs(1);
    let mut cmd = argv(&["sleep", "30"]);
    cmd.timeout = limit;
    let started = Instant::now();
    let got = run(s, "sleep 30", &cmd).await;
    let elapsed = started.elapsed();
    match &got {
        Err(WorkerError::Timeout(m)) => {
            assert!(m.ends_with(&s.suffix()), "{m}");
            assert!(
                m.contains("timed out after 1s") && m.contains("sleep 30"),
                "{m}"
            );
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        elapsed >= limit && elapsed < Duration::from_secs(5),
        "took {elapsed:?}"
    );

    // A background grandchild in the same group dies too.
    let pid_file = s.path("grandchild.pid");
    let mut cmd = shell(&format!("sleep 30 & echo $! > '{pid_file}'; wait"));
    cmd.timeout = limit;
    let started = Instant::now();
    let got = run(s, "grandchild", &cmd).await;
    assert!(matches!(got, Err(WorkerError::Timeout(_))), "{got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let pid = read_pid(&pid_file);
    assert!(
        wait_dead(pid).await,
        "grandchild {pid} survived the timeout"
    );

    // A group that ignores SIGTERM is killed with SIGKILL (rocklet: after timeout's -k grace).
    let pid_file = s.path("stubborn.pid");
    let mut cmd = shell(&format!(
        "trap '' TERM; sleep 30 & echo $! > '{pid_file}'; wait"
    ));
    cmd.timeout = limit;
    let got = run(s, "TERM-ignoring group", &cmd).await;
    assert!(matches!(got, Err(WorkerError::Timeout(_))), "{got:?}");
    let pid = read_pid(&pid_file);
    assert!(
        wait_dead(pid).await,
        "TERM-ignoring grandchild {pid} survived"
    );
}

async fn file_roundtrip(s: &Subject) {
    let path = s.path("a/b/c/status.json");
    let content = "{\"état\": \"prêt ✓\", \"日本\": 1}\nzwei\n";
    step("write", s.worker.write_file(&path, content, FILE_TIMEOUT))
        .await
        .expect("write with parent creation");
    let got = step("read", s.worker.read_file(&path, FILE_TIMEOUT)).await;
    assert_eq!(got.as_deref(), Ok(content));
    assert_eq!(std::fs::read_to_string(&path).expect("on disk"), content);

    // Overwrite with something shorter, then with nothing.
    for content in ["short", ""] {
        step(
            "overwrite",
            s.worker.write_file(&path, content, FILE_TIMEOUT),
        )
        .await
        .expect("overwrite");
        let got = step("re-read", s.worker.read_file(&path, FILE_TIMEOUT)).await;
        assert_eq!(got.as_deref(), Ok(content));
    }
}

async fn file_errors(s: &Subject) {
    let missing = s.path("nope/missing.txt");
    match step("read missing", s.worker.read_file(&missing, FILE_TIMEOUT)).await {
        Err(WorkerError::NotFound(m)) => {
            assert!(m.ends_with(&s.suffix()) && m.contains(&missing), "{m}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    let dir = s.dir.to_string_lossy().into_owned();
    match step("read directory", s.worker.read_file(&dir, FILE_TIMEOUT)).await {
        Err(WorkerError::Other(m)) => assert!(m.ends_with(&s.suffix()), "{m}"),
        other => panic!("expected Other for a directory, got {other:?}"),
    }
    match step(
        "write directory",
        s.worker.write_file(&dir, "x", FILE_TIMEOUT),
    )
    .await
    {
        Err(WorkerError::Other(m)) => assert!(m.ends_with(&s.suffix()), "{m}"),
        other => panic!("expected Other for writing a directory, got {other:?}"),
    }

    let binary = s.path("binary.dat");
    std::fs::write(&binary, [b'o', b'k', 0xff, 0xfe, b'\n']).expect("write binary fixture");
    match step("read non-UTF-8", s.worker.read_file(&binary, FILE_TIMEOUT)).await {
        Err(WorkerError::Other(m)) => {
            assert!(m.ends_with(&s.suffix()) && m.contains("UTF-8"), "{m}");
        }
        other => panic!("expected Other for non-UTF-8, got {other:?}"),
    }

    // A parent component that is a regular file cannot be created as a directory.
    let under_file = s.path("binary.dat/child.txt");
    match step(
        "write under a file",
        s.worker.write_file(&under_file, "x", FILE_TIMEOUT),
    )
    .await
    {
        Err(WorkerError::Other(m)) => assert!(m.ends_with(&s.suffix()), "{m}"),
        other => panic!("expected Other for a file as parent, got {other:?}"),
    }
}

async fn file_size_caps(s: &Subject) {
    let limits = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };
    let worker = s.with_limits(limits);
    let path = s.path("big.txt");
    let big = "x".repeat(2000);
    match step(
        "write over cap",
        worker.write_file(&path, &big, FILE_TIMEOUT),
    )
    .await
    {
        Err(WorkerError::Rejected(m)) => assert!(m.ends_with(&s.suffix()), "{m}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(
        !Path::new(&path).exists(),
        "nothing may be written over the cap"
    );

    std::fs::write(&path, &big).expect("write big fixture");
    match step("read over cap", worker.read_file(&path, FILE_TIMEOUT)).await {
        Err(WorkerError::Rejected(m)) => assert!(m.ends_with(&s.suffix()), "{m}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let exact = "y".repeat(1024);
    step(
        "write at cap",
        worker.write_file(&path, &exact, FILE_TIMEOUT),
    )
    .await
    .expect("exactly the cap is allowed");
    let got = step("read at cap", worker.read_file(&path, FILE_TIMEOUT)).await;
    assert_eq!(got.as_deref(), Ok(exact.as_str()));
}

async fn output_is_truncated(s: &Subject) {
    let worker = s.with_limits(Limits {
        max_output_bytes: 1000,
        ..Limits::default()
    });
    let cmd =
        shell("head -c 2000000 /dev/zero | tr '\\0' a; head -c 5000 /dev/zero | tr '\\0' b >&2");
    let got = step("big output", worker.execute(&cmd))
        .await
        .expect("big output runs");
    let expected_out = format!(
        "{}\n...[quarry: 1999000 more bytes truncated]",
        "a".repeat(1000)
    );
    let expected_err = format!(
        "{}\n...[quarry: 4000 more bytes truncated]",
        "b".repeat(1000)
    );
    assert_eq!(got.exit_code, 0);
    assert!(
        got.stdout == expected_out,
        "stdout: {:?}…",
        &got.stdout[got.stdout.len().saturating_sub(60)..]
    );
    assert!(
        got.stderr == expected_err,
        "stderr: {:?}…",
        &got.stderr[got.stderr.len().saturating_sub(60)..]
    );
}

async fn hostile_argv_is_verbatim(s: &Subject) {
    let d = s.dir.to_string_lossy().into_owned();
    let hostile = [
        format!("$(touch {d}/X)"),
        format!("`touch {d}/Y`"),
        format!("a; touch {d}/Z"),
        format!("b && touch {d}/W | cat"),
        "line1\nline2".to_string(),
        "'single' \"double\" \\back".to_string(),
        "*".to_string(),
        "--help".to_string(),
        "A=B".to_string(),
        String::new(),
    ];
    let expected: String = hostile.iter().map(|a| format!("[{a}]\n")).collect();
    let mut args = vec!["printf".to_string(), "[%s]\\n".to_string()];
    args.extend(hostile.iter().cloned());
    let plain = Command {
        program: Program::Argv(args),
        cwd: Some(d.clone()),
        env: Vec::new(),
        timeout: COMMAND_TIMEOUT,
    };
    let with_vars = with_env(plain.clone(), &[("HOSTILE", &hostile[0])]);
    for cmd in [plain, with_vars] {
        let got = run(s, "hostile argv", &cmd).await;
        assert_eq!(got, Ok(out(&expected, "", 0)), "env: {:?}", cmd.env);
    }
    // Values in the environment are data too.
    let cmd = with_env(
        shell(r#"printf '[%s]' "$HOSTILE""#),
        &[("HOSTILE", &format!("$(touch {d}/V); `touch {d}/U`"))],
    );
    let got = run(s, "hostile env", &cmd).await;
    assert_eq!(
        got,
        Ok(out(&format!("[$(touch {d}/V); `touch {d}/U`]"), "", 0))
    );
    for f in ["X", "Y", "Z", "W", "V", "U"] {
        assert!(
            !s.dir.join(f).exists(),
            "{f} was created: something was executed"
        );
    }
}

/// Declares one test per check and worker kind.
macro_rules! on_both_workers {
    ($($check:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let s = super::Subject::local();
                    super::$check(&s).await;
                }
            )*
        }
        mod rocklet {
            use crate::support::real_parts::needs_real_parts;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    needs_real_parts!("a real rocklet");
                    let s = super::Subject::rocklet().await;
                    super::$check(&s).await;
                }
            )*
        }
    };
}

on_both_workers!(
    argv_echo,
    shell_streams_and_exit_code,
    env_is_merged,
    cwd_is_used,
    missing_cwd_is_not_found,
    missing_program_is_not_found,
    timeout_kills_process_group,
    file_roundtrip,
    file_errors,
    file_size_caps,
    output_is_truncated,
    hostile_argv_is_verbatim,
);

// ---------------------------------------------------------------------------------------------
// Rocklet only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocklet_is_alive_and_fake_tools_on_path() {
    needs_real_parts!("a real rocklet");
    let tools = scratch_dir();
    let tool = tools.join("quarry-fake-tool");
    std::fs::write(&tool, "#!/bin/sh\necho \"fake tool: $*\"\n").expect("write fake tool");
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod fake tool");
    let t = tools.clone();
    let s = Subject::rocklet_from(move || RockletProcess::start_with_path_prefix(&t)).await;
    let port = s.rocklet.as_ref().map(RockletProcess::port).unwrap();
    let rocklet = rocklet_client(port, Limits::default());
    step("is_alive", rocklet.is_alive(Duration::from_secs(5)))
        .await
        .expect("a fresh rocklet is alive");
    // Looked up on the rocklet's PATH, with and without the `env` wrapper.
    for cmd in [
        argv(&["quarry-fake-tool", "a b"]),
        with_env(argv(&["quarry-fake-tool", "a b"]), &[("X", "1")]),
    ] {
        let got = run(&s, "fake tool", &cmd).await;
        assert_eq!(got, Ok(out("fake tool: a b\n", "", 0)));
    }
    let _ = std::fs::remove_dir_all(&tools);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocklet_reply_over_body_cap_is_rejected() {
    needs_real_parts!("a real rocklet");
    let s = Subject::rocklet().await;
    let small = s.with_limits(Limits {
        max_output_bytes: 1000,
        max_file_bytes: 1000,
    });
    // Reply cap = 2 × 1000 + 64 KiB; 200 KB of output cannot be truncated locally any more.
    let got = step(
        "huge reply",
        small.execute(&shell("head -c 200000 /dev/zero | tr '\\0' a")),
    )
    .await;
    match got {
        Err(WorkerError::Rejected(m)) => {
            assert!(m.ends_with(&s.suffix()) && m.contains("larger than"), "{m}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // The worker is still usable afterwards.
    assert_eq!(run(&s, "after", &argv(&["true"])).await, Ok(out("", "", 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocklet_unreachable() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind :0")
        .port();
    let rocklet = rocklet_client(port, Limits::default());
    let worker = Worker::from_arc(rocklet.clone());
    let worker_named = format!(" on worker 127.0.0.1:{port}");
    let results = [
        step("execute", worker.execute(&argv(&["true"])))
            .await
            .map(|_| ()),
        step("read", worker.read_file("/etc/hostname", FILE_TIMEOUT))
            .await
            .map(|_| ()),
        step(
            "write",
            worker.write_file("/tmp/quarry-x", "x", FILE_TIMEOUT),
        )
        .await,
        step("is_alive", rocklet.is_alive(FILE_TIMEOUT)).await,
    ];
    for r in results {
        match r {
            Err(WorkerError::Unreachable(m)) => assert!(
                m.starts_with("unreachable: ") && m.ends_with(&worker_named),
                "{m}"
            ),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
    // The default port constant is what ROCK hard-codes.
    assert_eq!(DEFAULT_ROCKLET_PORT, 22555);
}

/// Serves `replies` (raw HTTP responses; empty = close without answering) to successive
/// connections on a loopback port, reading each request first. Returns the port and the
/// number of requests received so far.
fn fake_rocklet(replies: Vec<Vec<u8>>) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake rocklet");
    let port = listener.local_addr().expect("fake rocklet addr").port();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            read_request(&mut conn);
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = conn.write_all(&reply);
            let _ = conn.flush();
        }
    });
    (port, received)
}

/// Reads one HTTP request (headers and a Content-Length body) and discards it.
fn read_request(conn: &mut TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut byte) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    };
    let headers = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        match conn.read(&mut byte) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
}

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Whether an error is the expected one.
type ErrorCheck = fn(&WorkerError) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocklet_bad_and_error_replies_are_classified() {
    let traceback = "Traceback (most recent call last):\\n".repeat(500);
    let exception = |class: &str, msg: &str| {
        format!(
            r#"{{"rockletexception":{{"message":"{msg}","class_path":"{class}","traceback":"{traceback}","extra_info":{{}}}}}}"#
        )
    };
    let cases: Vec<(Vec<u8>, &str, ErrorCheck)> = vec![
        (
            http(
                "504 Gateway Timeout",
                r#"{"detail":"Request processing timed out after 85 seconds."}"#,
            ),
            "504",
            |e| matches!(e, WorkerError::Timeout(m) if m.contains("may still be running")),
        ),
        (
            http("404 Not Found", r#"{"detail":"Not Found"}"#),
            "404",
            |e| matches!(e, WorkerError::Rejected(m) if m.contains("Not Found")),
        ),
        (
            http(
                "405 Method Not Allowed",
                r#"{"detail":"Method Not Allowed"}"#,
            ),
            "405",
            |e| matches!(e, WorkerError::Rejected(_)),
        ),
        (
            http(
                "422 Unprocessable Entity",
                r#"{"detail":[{"type":"missing","loc":["body","sandbox_id"],"msg":"Field required","input":{"env":"TOPSECRET"}}]}"#,
            ),
            "422",
            |e| matches!(e, WorkerError::Rejected(m) if m.contains("sandbox_id") && !m.contains("TOPSECRET")),
        ),
        (
            http(
                "511 Network Authentication Required",
                &exception("rock.Boom", "it broke"),
            ),
            "511 unknown class",
            |e| matches!(e, WorkerError::Other(m) if m.contains("rock.Boom: it broke") && !m.contains("Traceback")),
        ),
        (
            http(
                "511 Network Authentication Required",
                &exception(
                    "rock.rocklet.exceptions.CommandTimeoutError",
                    "Timeout (15.0s) exceeded",
                ),
            ),
            "511 command timeout",
            |e| matches!(e, WorkerError::Timeout(_)),
        ),
        (
            http("511 Network Authentication Required", "{not json"),
            "511 garbage",
            |e| matches!(e, WorkerError::Other(_)),
        ),
        (
            http("200 OK", r#"{"stdout":"x","stderr":"","exit_code":"zero"}"#),
            "200 wrong types",
            |e| matches!(e, WorkerError::Other(m) if m.contains("unreadable reply")),
        ),
        (
            http("200 OK", r#"{"stdout":"x","stderr":"","exit_code":null}"#),
            "200 null exit code",
            |e| matches!(e, WorkerError::Other(m) if m.contains("exit_code")),
        ),
        (
            http("500 Internal Server Error", "oops"),
            "500",
            |e| matches!(e, WorkerError::Other(m) if m.contains("500")),
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n{".to_vec(),
            "huge content-length",
            |e| matches!(e, WorkerError::Rejected(_)),
        ),
        (b"this is not HTTP\r\n\r\n".to_vec(), "not HTTP", |e| {
            matches!(e, WorkerError::Unreachable(_) | WorkerError::Other(_))
        }),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"stdout\"".to_vec(),
            "truncated body",
            |e| matches!(e, WorkerError::Other(_) | WorkerError::Unreachable(_)),
        ),
    ];
    let (replies, checks): (Vec<_>, Vec<_>) =
        cases.into_iter().map(|(r, n, c)| (r, (n, c))).unzip();
    let (port, _) = fake_rocklet(replies);
    let worker = rocklet_worker(port, Limits::default());
    let secret = "SECRET-IN-REQUEST";
    let mut cmd = with_env(argv(&["echo", "x"]), &[("TOKEN", secret)]);
    cmd.timeout = Duration::from_secs(3);
    for (name, check) in checks {
        let got = step(name, worker.execute(&cmd)).await;
        match &got {
            Err(e) => {
                assert!(check(e), "{name}: unexpected {e:?}");
                let m = e.to_string();
                assert!(
                    m.ends_with(&format!(" on worker 127.0.0.1:{port}")),
                    "{name}: {m}"
                );
                assert!(
                    !m.contains(secret),
                    "{name}: message leaks the request: {m}"
                );
                assert!(
                    m.len() < 1200,
                    "{name}: message too long ({} bytes)",
                    m.len()
                );
            }
            Ok(o) => panic!("{name}: expected an error, got {o:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocklet_lost_connection_resends_reads_but_never_execute() {
    let ok = http("200 OK", r#"{"content":"hello"}"#);
    // read: first connection dropped without a reply, second answers.
    let (port, received) = fake_rocklet(vec![Vec::new(), ok]);
    let worker = rocklet_worker(port, Limits::default());
    let got = step(
        "read after lost connection",
        worker.read_file("/x", FILE_TIMEOUT),
    )
    .await;
    assert_eq!(got.as_deref(), Ok("hello"));
    assert_eq!(received.load(Ordering::SeqCst), 2);

    // execute: the same loss is reported, never re-sent.
    let (port, received) = fake_rocklet(vec![
        Vec::new(),
        http("200 OK", r#"{"stdout":"","stderr":"","exit_code":0}"#),
    ]);
    let worker = rocklet_worker(port, Limits::default());
    match step(
        "execute after lost connection",
        worker.execute(&argv(&["true"])),
    )
    .await
    {
        Err(WorkerError::Unreachable(m)) => assert!(m.contains("may or may not have run"), "{m}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(received.load(Ordering::SeqCst), 1, "execute was sent twice");
}

/// The rocklet closes its connection right after every 511 (without saying so); the next call,
/// sent at once, must not travel on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocklet_calls_right_after_an_error_reply_succeed() {
    needs_real_parts!("a real rocklet");
    let s = Subject::rocklet().await;
    let missing = s.path("missing.json");
    let mut bad_cwd = argv(&["true"]);
    bad_cwd.cwd = Some(s.path("no-such-dir"));
    for round in 0..10 {
        let got = step("read missing", s.worker.read_file(&missing, FILE_TIMEOUT)).await;
        assert!(
            matches!(got, Err(WorkerError::NotFound(_))),
            "round {round}: {got:?}"
        );
        let got = run(&s, "execute after 511", &argv(&["echo", "ok"])).await;
        assert_eq!(got, Ok(out("ok\n", "", 0)), "round {round}");
        let got = run(&s, "missing cwd", &bad_cwd).await;
        assert!(
            matches!(got, Err(WorkerError::NotFound(_))),
            "round {round}: {got:?}"
        );
        let path = s.path("after.txt");
        step(
            "write after 511",
            s.worker.write_file(&path, "x", FILE_TIMEOUT),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Local only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cancellation_kills_process_group() {
    let s = Subject::local();
    let pid_file = s.path("cancelled.pid");
    let mut cmd = shell(&format!("sleep 30 & echo $! > '{pid_file}'; wait"));
    cmd.timeout = Duration::from_secs(30);
    // Dropping the execute future (here by an outer timeout) must kill the group.
    let outer = tokio::time::timeout(Duration::from_secs(1), s.worker.execute(&cmd)).await;
    assert!(
        outer.is_err(),
        "the command should still have been running: {outer:?}"
    );
    let pid = read_pid(&pid_file);
    assert!(
        wait_dead(pid).await,
        "grandchild {pid} survived cancellation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_worker_addr_and_rejections() {
    let s = Subject::local();
    assert_eq!(s.worker.addr(), &WorkerAddr::Local);
    let got = run(
        &s,
        "empty argv",
        &Command {
            program: Program::Argv(vec![]),
            ..argv(&["x"])
        },
    )
    .await;
    assert!(matches!(got, Err(WorkerError::Rejected(_))), "{got:?}");
    let mut cmd = argv(&["true"]);
    cmd.cwd = Some("/etc/hostname".into());
    let got = run(&s, "cwd is a file", &cmd).await;
    assert!(
        matches!(&got, Err(WorkerError::Other(m)) if m.contains("not a directory")),
        "{got:?}"
    );
}
