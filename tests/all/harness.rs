//! Shared test plumbing: temp dirs, plugin dirs built from the components that build.rs
//! made, a runtime, and named timeouts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quarry_host::plugins::PluginSet;
use quarry_host::run::{RunSettings, TaskRun};
use quarry_host::runtime::{Runtime, RuntimeLimits};

/// The built-in plugins, built from plugins/ by build.rs.
pub const PLUGINS: &str = env!("QUARRY_TEST_PLUGINS_DIR");
/// The test guests, built from tests/guests/ by build.rs.
pub const GUESTS: &str = env!("QUARRY_TEST_GUESTS_DIR");

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh empty directory named after `label`.
    pub fn new(label: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("quarry-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Its path as text (for params and configs).
    pub fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Path of a built component: `file_cleanup` → the built-in, `probe` → the test guest.
pub fn component(name: &str) -> PathBuf {
    let file = format!("{name}.wasm");
    let p = Path::new(PLUGINS).join(&file);
    if p.exists() {
        return p;
    }
    Path::new(GUESTS).join(file)
}

/// A plugins directory holding copies of the named components.
pub fn plugins_dir(names: &[&str]) -> TempDir {
    let dir = TempDir::new("plugins");
    for n in names {
        std::fs::copy(component(n), dir.path().join(format!("{n}.wasm"))).unwrap();
    }
    dir
}

/// A runtime with the given memory limit (MiB) and call timeout.
pub fn runtime(memory_mib: u64, call_timeout: Duration) -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeLimits {
            memory_bytes: memory_mib << 20,
            call_timeout,
            ..Default::default()
        })
        .unwrap(),
    )
}

/// Loads `dir` and returns the set.
pub async fn load(rt: &Arc<Runtime>, dir: &Path) -> PluginSet {
    within("loading plugins", 120, PluginSet::load_dir(rt, dir))
        .await
        .unwrap()
}

/// A task of a loaded set with params.
pub fn task(set: &PluginSet, name: &str, params: serde_json::Value) -> TaskRun {
    TaskRun::new(
        set.get(name)
            .unwrap_or_else(|| panic!("plugin {name} not loaded: {:?}", set.errors()))
            .clone(),
        params.to_string(),
    )
}

/// Settings for a tick: status files in `status_dir`, reports in `report_dir`.
pub fn settings(status_dir: &str, report_dir: Option<&Path>, run_timeout_secs: u64) -> RunSettings {
    RunSettings {
        status_dir: status_dir.to_string(),
        run_timeout: Duration::from_secs(run_timeout_secs),
        concurrency: 50,
        report_dir: report_dir.map(Path::to_path_buf),
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `secs`.
pub async fn within<T>(what: &str, secs: u64, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs}s"),
    }
}

/// Sets a file's modification time to `days` days ago.
pub fn age(path: &Path, days: u64) {
    let when = std::time::SystemTime::now() - Duration::from_secs(days * 86400);
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| std::fs::File::open(path))
        .unwrap();
    f.set_modified(when).unwrap();
}

/// Writes `content` to `path` (parents created), optionally aged by `days`.
pub fn file(path: &Path, content: &[u8], days: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    if days > 0 {
        age(path, days);
    }
}

/// The top-level keys of a JSON object text, in order.
pub fn key_order(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

/// The busybox image scripts/test-dockerd.sh imported into the private daemon it started.
pub fn docker_image() -> String {
    std::env::var("QUARRY_TEST_DOCKER_IMAGE").unwrap_or_else(|_| {
        panic!("no test Docker daemon: run scripts/test.sh, which starts one and sets DOCKER_HOST")
    })
}

/// Runs the docker CLI (against the test daemon's `DOCKER_HOST`); panics unless it succeeds.
pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes a container when dropped.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

/// Whether `pid` runs: gone, or a zombie waiting to be reaped, counts as dead.
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILL to a process a test's task launched.
pub fn kill(pid: u64) {
    // SAFETY: plain kill(2) on a pid; the tests only pass pids their tasks launched.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Kills a process when dropped, so a failing test leaves no daemon behind.
pub struct KillOnDrop(pub u64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill(self.0);
    }
}

/// The `quarry` binary, built from host/src/main.rs for the tests that need a real process.
pub const QUARRY_BIN: &str = env!("CARGO_BIN_EXE_quarry-under-test");

/// `quarry serve --config file` as a command, its logs (level info) into `log`.
pub fn quarry_serve_command(file: &Path, log: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(QUARRY_BIN);
    command
        .args(["serve", "--config"])
        .arg(file)
        .env("QUARRY_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command
}

/// Starts `quarry serve --config file` as a process, its logs (level info) into `log`.
pub fn quarry_serve(file: &Path, log: &Path) -> std::process::Child {
    quarry_serve_command(file, log)
        .spawn()
        .expect("start quarry serve")
}

/// Caps the data segment (heap and private writable mappings, RLIMIT_DATA) of the process
/// `command` starts: a memory watchdog under which a runaway allocation fails instead of
/// exhausting the machine. Reserved but untouched address space does not count.
pub fn limit_data(command: &mut std::process::Command, bytes: u64) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit(2) is async-signal-safe and touches only the child being started.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`…).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Sends SIGTERM to `child` and waits (at most 30 s) for it to exit; its exit status.
pub fn stop_child(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    // SAFETY: plain kill(2) on a process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            return code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `cond` holds, polling every 50 ms; panics with `what` after `secs`.
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {secs}s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A probe task (for a config's `scheduler.tasks`) whose params repeat one anchored list of
/// 150 000 items 95 times: under 1 MB of YAML, over 14 million nodes once the aliases are
/// expanded (an alias bomb).
pub fn alias_bomb_task() -> String {
    format!(
        "    - task_class: probe\n      interval_seconds: 1\n      params:\n        mode: ok\n        big: &big [{}]\n        copies: [{}]\n",
        vec!["1"; 150_000].join(", "),
        vec!["*big"; 95].join(", ")
    )
}

/// The message of a config refused for expanding past the node budget.
pub const ALIAS_BOMB_REFUSED: &str =
    "(file): expands to more than 1000000 YAML nodes once aliases are expanded";
