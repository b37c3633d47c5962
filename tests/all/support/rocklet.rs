//! A real rocklet (ROCK's HTTP agent, PyPI `rl-rock` 1.11.0) on a free loopback port, for the
//! lifetime of a test. Installed by scripts/test.sh into `<workspace>/target/rocklet-venv`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh rocklet may take to answer `/is_alive` (≈1.4 s when idle; the machine may
/// be busy compiling).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between readiness probes: short against a ~1.4 s start, long enough not to spin.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Connect/read limit of one readiness probe; a live rocklet answers in milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Time between SIGTERM and SIGKILL when stopping: uvicorn shuts down in well under a second.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running rocklet, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct RockletProcess {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The rocklet's stdout and stderr (removed on drop unless the thread is panicking).
    pub log: PathBuf,
    child: Child,
}

impl RockletProcess {
    /// Starts a rocklet with the test process's environment and waits until it answers.
    ///
    /// # Panics
    /// When the rocklet is not installed, exits early or is not ready within 30 s (the message
    /// names its log file).
    pub fn start() -> RockletProcess {
        Self::spawn(None, "WARNING", &[])
    }

    /// Like [`RockletProcess::start`], with extra environment variables (e.g. another
    /// `DOCKER_HOST`).
    pub fn start_with_env(env: &[(&str, &str)]) -> RockletProcess {
        Self::spawn(None, "WARNING", env)
    }

    /// Like [`RockletProcess::start_with_env`], with `dir` first on the rocklet's `PATH`.
    pub fn start_with_path_prefix_and_env(dir: &Path, env: &[(&str, &str)]) -> RockletProcess {
        Self::spawn(Some(dir), "WARNING", env)
    }

    /// Like [`RockletProcess::start`], logging as a production rocklet does (level INFO): every
    /// request with its whole body, every command and its complete output, in [`Self::log`].
    pub fn start_logging_requests() -> RockletProcess {
        Self::spawn(None, "INFO", &[])
    }

    /// Like [`RockletProcess::start`], with `dir` first on the rocklet's `PATH` (fake tools).
    pub fn start_with_path_prefix(dir: &Path) -> RockletProcess {
        Self::spawn(Some(dir), "WARNING", &[])
    }

    /// The rocklet's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The TCP port the rocklet listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .parse::<SocketAddr>()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("bad rocklet address {:?}: {e}", self.addr))
    }

    fn spawn(path_prefix: Option<&Path>, log_level: &str, env: &[(&str, &str)]) -> RockletProcess {
        let bin = rocklet_bin();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!(
            "quarry-test-rocklet-{}-{port}.log",
            std::process::id()
        ));
        let log_file = File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create rocklet log {}: {e}", log.display()));
        let log_file2 = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone rocklet log handle: {e}"));

        let mut command = Command::new(&bin);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("ROCK_LOGGING_LEVEL", log_level)
            // Logs on stdout (into our log file), not into a directory of their own.
            .env_remove("ROCK_LOGGING_PATH")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file2);
        command.envs(env.iter().copied());
        if let Some(dir) = path_prefix {
            let inherited = std::env::var_os("PATH").unwrap_or_default();
            let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&inherited));
            let path = std::env::join_paths(dirs)
                .unwrap_or_else(|e| panic!("cannot prepend {} to PATH: {e}", dir.display()));
            command.env("PATH", path);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // From here on, a panic drops (and so stops) the process.
        let mut rocklet = RockletProcess { addr, log, child };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = rocklet.child.try_wait() {
                panic!(
                    "rocklet on {} exited during start-up ({status}); see {}",
                    rocklet.addr,
                    rocklet.log.display()
                );
            }
            if probe_is_alive(&rocklet.addr) {
                // Guard against another process owning the port: ours must still be running.
                if let Ok(Some(status)) = rocklet.child.try_wait() {
                    panic!(
                        "rocklet on {} exited ({status}) while something else answered on its port; see {}",
                        rocklet.addr,
                        rocklet.log.display()
                    );
                }
                return rocklet;
            }
            if Instant::now() >= deadline {
                panic!(
                    "rocklet on {} not ready after {READY_TIMEOUT:?}; see {}",
                    rocklet.addr,
                    rocklet.log.display()
                );
            }
            std::thread::sleep(READY_POLL_INTERVAL);
        }
    }
}

impl Drop for RockletProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: plain kill(2) on our own child's PID, which is not yet reaped (so not
                // reused); no memory is involved.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(READY_POLL_INTERVAL);
            }
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill(); // SIGKILL
            }
        }
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// `$QUARRY_ROCKLET_BIN`, else `<workspace>/target/rocklet-venv/bin/rocklet`.
fn rocklet_bin() -> PathBuf {
    let bin = match std::env::var_os("QUARRY_ROCKLET_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rocklet-venv/bin/rocklet"),
    };
    if !bin.is_file() {
        panic!(
            "rocklet not installed: run scripts/test.sh (or set QUARRY_ROCKLET_BIN); looked for {}",
            bin.display()
        );
    }
    bin
}

/// A port that was free on 127.0.0.1 a moment ago (the kernel's choice for port 0).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the bound port: {e}"))
        .port()
}

/// One `GET /is_alive` over a fresh connection; true on HTTP 200.
fn probe_is_alive(addr: &str) -> bool {
    let Ok(sock) = addr.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&sock, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
    let request = format!("GET /is_alive HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply.starts_with(b"HTTP/1.1 200")
}
