//! A fast simulated rocklet: one listener answering for one or many worker addresses, with
//! the real rocklet's routes, JSON shapes and status codes (docs/rocklet.md), a configurable
//! latency and failure rate, and hooks for tests (files kept in memory, scripted replies, a
//! record of every request).
//!
//! Addressing: a listener on `0.0.0.0:<port>` accepts connections to every loopback address,
//! and the worker a connection is for is its *local* address: worker `i` is
//! [`worker_ip`]`(i)` = `127.1.<i / 250>.<1 + i % 250>` (how the benchmarks simulate fleets of
//! 10k workers with one socket). Connections from anything but a loopback peer are dropped at
//! once. A test binds `127.0.0.1:0` instead ([`SimRocklet::loopback`]) and talks to one worker.
//!
//! Protocol: HTTP/1.1 with keep-alive. `POST /execute` → `{"stdout":"","stderr":"",
//! "exit_code":0}`, `POST /read_file` → `{"content":""}` (or the file, with
//! [`SimConfig::keep_files`]), `POST /write_file` → `{"success":true,"message":""}`,
//! `GET /is_alive` → `{"is_alive":true,"message":""}`; other paths 404, other methods 405. A
//! POST body must be JSON with a non-blank `sandbox_id` and the route's required fields (else
//! 422, as the rocklet). Every answer waits [`SimConfig::latency`] first. A failure
//! (probability [`SimConfig::fail_rate`], deterministic sequence) is the rocklet's 511
//! `rockletexception`; after any 511 the connection is closed, as uvicorn does.
//!
//! `GET /__stats` (not counted) returns the counters since the last `GET /__stats?reset`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use quarry_host::workers::{Worker, rocklet::Rocklet};
//! use quarry_testkit::sim::{Scripted, SimConfig, SimRocklet};
//!
//! let cfg = SimConfig { keep_files: true, record: true, ..SimConfig::default() };
//! let sim = SimRocklet::loopback(cfg).await.unwrap();
//! let worker = Worker::new(Rocklet::new(sim.worker_addr()));
//! let t = Duration::from_secs(5);
//! worker.write_file("/status/x.json", "{}", t).await.unwrap();
//! assert_eq!(worker.read_file("/status/x.json", t).await.unwrap(), "{}");
//! // The next request fails as a rocklet whose handler raised.
//! sim.script(Scripted::exception("builtins.IsADirectoryError", "[Errno 21] Is a directory"));
//! assert!(worker.read_file("/status", t).await.is_err());
//! assert_eq!(sim.requests().len(), 3);
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quarry_host::workers::WorkerAddr;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Addresses per third octet: `127.1.x.1` … `127.1.x.250`.
const PER_OCTET: usize = 250;

/// Largest request head or body accepted (the scheduler's requests are small).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Pause after a failed `accept` (EMFILE and friends) instead of spinning.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Worker `i`'s address.
pub fn worker_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (i / PER_OCTET) as u8, (1 + i % PER_OCTET) as u8)
}

/// The worker index of a local address, if it is one of ours.
fn worker_index(ip: IpAddr, workers: usize) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            if a != 127 || b != 1 || d == 0 || d as usize > PER_OCTET {
                return None;
            }
            let i = c as usize * PER_OCTET + d as usize - 1;
            (i < workers).then_some(i)
        }
        IpAddr::V6(_) => None,
    }
}

/// How the simulator behaves.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// Number of worker addresses served (`127.1.x.y`); requests to other loopback addresses
    /// are answered too, but not counted per worker.
    pub workers: usize,
    /// Delay before every answer.
    pub latency: Duration,
    /// Fraction of valid POSTs answered with a 511 failure, 0..=1.
    pub fail_rate: f64,
    /// Keep written files in memory (one file system for all addresses) and serve them back;
    /// reading a file never written is the rocklet's 511 `FileNotFoundError`. Off: reads
    /// answer `""` and writes are dropped.
    pub keep_files: bool,
    /// Record every request for [`SimRocklet::requests`].
    pub record: bool,
    /// Extra fields appended to `GET /__stats` (e.g. the process's CPU time).
    pub extra_stats: Option<fn() -> serde_json::Map<String, Value>>,
}

/// A reply the simulator gives instead of its own, to the next valid request (see
/// [`SimRocklet::script`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scripted {
    /// Answer with this status and JSON body. After a 511 the connection is closed.
    Reply {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// Read the request, then close the connection without answering (a lost connection).
    Close,
}

impl Scripted {
    /// The rocklet's 511 for a handler that raised `class_path` with `message`.
    pub fn exception(class_path: &str, message: &str) -> Scripted {
        Scripted::Reply {
            status: 511,
            body: rocklet_exception(class_path, message),
        }
    }

    /// A 200 reply to `POST /execute`.
    pub fn output(stdout: &str, stderr: &str, exit_code: i32) -> Scripted {
        Scripted::Reply {
            status: 200,
            body: json!({"stdout": stdout, "stderr": stderr, "exit_code": exit_code}).to_string(),
        }
    }

    /// The rocklet's 504 after its 85 s cap (or a command timeout on CPython ≥ 3.11).
    pub fn gateway_timeout() -> Scripted {
        Scripted::Reply {
            status: 504,
            body: json!({"detail": "Request processing timed out after 85 seconds."}).to_string(),
        }
    }
}

/// One request the simulator received (with [`SimConfig::record`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SimRequest {
    /// The worker index of the address it was sent to, if one of `127.1.x.y`.
    pub worker: Option<usize>,
    /// `GET` or `POST`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

/// Counters, reset by `GET /__stats?reset`.
struct Stats {
    execute: AtomicU64,
    read_file: AtomicU64,
    write_file: AtomicU64,
    other: AtomicU64,
    failures: AtomicU64,
    connections: AtomicU64,
    per_worker: Vec<AtomicU32>,
    /// Sequence for the failure draw.
    draws: AtomicU64,
}

impl Stats {
    fn new(workers: usize) -> Stats {
        Stats {
            execute: AtomicU64::new(0),
            read_file: AtomicU64::new(0),
            write_file: AtomicU64::new(0),
            other: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            per_worker: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            draws: AtomicU64::new(0),
        }
    }

    fn snapshot(&self, reset: bool) -> Value {
        let take = |a: &AtomicU64| {
            if reset {
                a.swap(0, Ordering::Relaxed)
            } else {
                a.load(Ordering::Relaxed)
            }
        };
        let per: Vec<u32> = self
            .per_worker
            .iter()
            .map(|a| {
                if reset {
                    a.swap(0, Ordering::Relaxed)
                } else {
                    a.load(Ordering::Relaxed)
                }
            })
            .collect();
        let hit = per.iter().filter(|&&n| n > 0).count();
        let total: u64 = per.iter().map(|&n| n as u64).sum();
        json!({
            "execute": take(&self.execute),
            "read_file": take(&self.read_file),
            "write_file": take(&self.write_file),
            "other": take(&self.other),
            "failures": take(&self.failures),
            "connections": take(&self.connections),
            "workers_hit": hit,
            "per_worker_min": per.iter().copied().min().unwrap_or(0),
            "per_worker_max": per.iter().copied().max().unwrap_or(0),
            "per_worker_total": total,
        })
    }

    /// Whether this request fails: a splitmix64 sequence, so runs are repeatable.
    fn draw_failure(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let mut z = self
            .draws
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z as f64 / u64::MAX as f64) < rate
    }
}

/// What the serving tasks share with the [`SimRocklet`] handle.
struct Shared {
    cfg: SimConfig,
    stats: Stats,
    files: Mutex<HashMap<String, String>>,
    script: Mutex<VecDeque<Scripted>>,
    requests: Mutex<Vec<SimRequest>>,
}

/// Locks `m`, also after a panic elsewhere (the data stays usable for assertions).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running simulator. It serves on a task of the runtime it was started on until
/// [`SimRocklet::stop`] or until this handle is dropped (which aborts that task and, soon
/// after, its connections).
pub struct SimRocklet {
    local: SocketAddr,
    shared: Arc<Shared>,
    /// Tells the accept loop to close everything ([`SimRocklet::stop`]).
    stop: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
}

impl SimRocklet {
    /// Binds `addr` and starts serving (loopback peers only).
    pub async fn start(addr: SocketAddr, cfg: SimConfig) -> io::Result<SimRocklet> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stats: Stats::new(cfg.workers),
            cfg,
            files: Mutex::new(HashMap::new()),
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        Ok(SimRocklet {
            local,
            shared,
            stop: Some(stop),
            accept,
        })
    }

    /// Starts one on `127.0.0.1` and a free port: a single worker for a test.
    pub async fn loopback(cfg: SimConfig) -> io::Result<SimRocklet> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// `127.0.0.1:<port>` as a worker address.
    pub fn worker_addr(&self) -> WorkerAddr {
        WorkerAddr::Remote {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: self.port(),
        }
    }

    /// Queues `reply` for the next valid request (any route; queued replies are used in
    /// order, before the failure draw).
    pub fn script(&self, reply: Scripted) {
        lock(&self.shared.script).push_back(reply);
    }

    /// The requests received so far (empty unless [`SimConfig::record`]).
    pub fn requests(&self) -> Vec<SimRequest> {
        lock(&self.shared.requests).clone()
    }

    /// A file written through `POST /write_file` (with [`SimConfig::keep_files`]).
    pub fn file(&self, path: &str) -> Option<String> {
        lock(&self.shared.files).get(path).cloned()
    }

    /// Puts a file there, as if written before the test (with [`SimConfig::keep_files`]).
    pub fn put_file(&self, path: &str, content: &str) {
        lock(&self.shared.files).insert(path.to_string(), content.to_string());
    }

    /// The counters `GET /__stats` returns; `reset` zeroes them.
    pub fn stats(&self, reset: bool) -> Value {
        stats_json(&self.shared, reset)
    }

    /// Stops serving and returns once the listener and every connection are closed, so that
    /// the next connection attempt is refused.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.accept).await;
    }

    /// Serves until the process ends (for a simulator process of its own).
    pub async fn serve_forever(mut self) {
        let _ = (&mut self.accept).await;
    }
}

impl Drop for SimRocklet {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn stats_json(shared: &Shared, reset: bool) -> Value {
    let mut v = shared.stats.snapshot(reset);
    if let (Some(extra), Some(obj)) = (shared.cfg.extra_stats, v.as_object_mut()) {
        obj.extend(extra());
    }
    v
}

/// Accepts connections and serves each on a task of its own (all aborted with this one), until
/// `stop` fires: then closes the listener and every connection before returning.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (sock, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // The simulator is a test and bench tool: its one complaint goes to stderr.
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("sim: accept failed: {e}");
                }
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        if !peer.ip().is_loopback() {
            continue;
        }
        let worker = sock
            .local_addr()
            .ok()
            .and_then(|a| worker_index(a.ip(), shared.cfg.workers));
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        connections.spawn(async move {
            let _ = serve_connection(sock, worker, &shared).await;
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// One connection: requests until the peer closes, a 511 or a scripted close ends it, or a
/// request is bad.
async fn serve_connection(
    sock: TcpStream,
    worker: Option<usize>,
    shared: &Shared,
) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let (read, mut write) = sock.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    let stats = &shared.stats;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = match (parts.next(), parts.next()) {
            (Some(m), Some(t)) => (m.to_string(), t.to_string()),
            _ => return Ok(()),
        };
        let mut content_length = 0usize;
        let mut close = false;
        let mut head_bytes = line.len();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).await?;
            head_bytes += n;
            if n == 0 || head_bytes > MAX_REQUEST_BYTES {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        if content_length > MAX_REQUEST_BYTES {
            return Ok(());
        }
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body).await?;

        let path = target.split('?').next().unwrap_or("");
        if path == "/__stats" {
            let reply = stats_json(shared, target.contains("reset")).to_string();
            respond(&mut write, 200, &reply).await?;
            if close {
                return Ok(());
            }
            continue;
        }
        if let Some(i) = worker {
            stats.per_worker[i].fetch_add(1, Ordering::Relaxed);
        }
        let counter = match path {
            "/execute" => &stats.execute,
            "/read_file" => &stats.read_file,
            "/write_file" => &stats.write_file,
            _ => &stats.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if shared.cfg.record {
            lock(&shared.requests).push(SimRequest {
                worker,
                method: method.clone(),
                path: path.to_string(),
                body: parsed.clone().unwrap_or(Value::Null),
            });
        }
        if !shared.cfg.latency.is_zero() {
            tokio::time::sleep(shared.cfg.latency).await;
        }
        let Some((status, reply)) = answer(&method, path, parsed.as_ref(), shared) else {
            return Ok(()); // scripted: close without answering
        };
        respond(&mut write, status, &reply).await?;
        if status == 511 || close {
            return Ok(());
        }
    }
}

/// The rocklet's answer to one request; `None` = close the connection without one.
fn answer(
    method: &str,
    path: &str,
    body: Option<&Value>,
    shared: &Shared,
) -> Option<(u16, String)> {
    let route_ok = matches!(
        (method, path),
        ("POST", "/execute") | ("POST", "/read_file") | ("POST", "/write_file")
    );
    let is_alive = method == "GET" && path == "/is_alive";
    if !route_ok && !is_alive {
        let code = if matches!(
            path,
            "/execute" | "/read_file" | "/write_file" | "/is_alive"
        ) {
            405
        } else {
            404
        };
        let detail = if code == 405 {
            "Method Not Allowed"
        } else {
            "Not Found"
        };
        return Some((code, json!({ "detail": detail }).to_string()));
    }
    if route_ok && let Some(field) = invalid_field(path, body) {
        return Some((
            422,
            json!({"detail": [{"type": "missing", "loc": ["body", field], "msg": "Field required"}]})
                .to_string(),
        ));
    }
    if let Some(scripted) = lock(&shared.script).pop_front() {
        return match scripted {
            Scripted::Reply { status, body } => Some((status, body)),
            Scripted::Close => None,
        };
    }
    if is_alive {
        return Some((200, r#"{"is_alive":true,"message":""}"#.into()));
    }
    if shared.stats.draw_failure(shared.cfg.fail_rate) {
        shared.stats.failures.fetch_add(1, Ordering::Relaxed);
        return Some((
            511,
            rocklet_exception("builtins.OSError", "simulated failure"),
        ));
    }
    let str_field = |k: &str| body.and_then(|b| b.get(k)).and_then(Value::as_str);
    let reply = match path {
        "/execute" => r#"{"stdout":"","stderr":"","exit_code":0}"#.to_string(),
        "/read_file" if shared.cfg.keep_files => {
            let p = str_field("path").unwrap_or_default();
            match lock(&shared.files).get(p) {
                Some(content) => json!({ "content": content }).to_string(),
                None => {
                    let msg = format!("[Errno 2] No such file or directory: '{p}'");
                    return Some((511, rocklet_exception("builtins.FileNotFoundError", &msg)));
                }
            }
        }
        "/read_file" => r#"{"content":""}"#.to_string(),
        _ => {
            if shared.cfg.keep_files
                && let (Some(p), Some(c)) = (str_field("path"), str_field("content"))
            {
                lock(&shared.files).insert(p.to_string(), c.to_string());
            }
            r#"{"success":true,"message":""}"#.to_string()
        }
    };
    Some((200, reply))
}

/// The first required body field that is missing (or, for `sandbox_id`, blank), as the
/// rocklet's validation reports it.
fn invalid_field(path: &str, body: Option<&Value>) -> Option<&'static str> {
    let sandbox_ok = body
        .and_then(|v| v.get("sandbox_id"))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty());
    if !sandbox_ok {
        return Some("sandbox_id");
    }
    let required: &[&'static str] = match path {
        "/execute" => &["command"],
        "/read_file" => &["path"],
        _ => &["path", "content"],
    };
    required
        .iter()
        .copied()
        .find(|f| body.and_then(|v| v.get(*f)).is_none())
}

/// A 511 body: `{"rockletexception": {message, class_path, traceback, extra_info}}`.
fn rocklet_exception(class_path: &str, message: &str) -> String {
    json!({"rockletexception": {
        "message": message,
        "class_path": class_path,
        "traceback": "",
        "extra_info": {}
    }})
    .to_string()
}

async fn respond(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    status: u16,
    body: &str,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Entity",
        504 => "Gateway Timeout",
        511 => "Network Authentication Required",
        _ => "Unknown",
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{body}",
        body.len()
    );
    w.write_all(msg.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_addresses_round_trip() {
        for i in [0, 1, 249, 250, 9_999, 12_345] {
            assert_eq!(worker_index(IpAddr::V4(worker_ip(i)), 20_000), Some(i));
        }
        assert_eq!(worker_index("127.0.0.1".parse().unwrap(), 10), None);
        assert_eq!(worker_index(IpAddr::V4(worker_ip(10)), 10), None);
    }
}
