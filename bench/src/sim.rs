//! A fast simulated rocklet: one process answering for many worker addresses, with a
//! configurable latency and failure rate.
//!
//! Addressing: one listener on `0.0.0.0:<port>` accepts connections to every loopback address,
//! and the worker a connection is for is its *local* address: worker `i` is
//! [`worker_ip`]`(i)` = `127.1.<i / 250>.<1 + i % 250>`. Connections from anything but a
//! loopback peer are dropped at once (the listener has to be on the wildcard address, the
//! only way to answer for 10k addresses with one socket, but it serves only this machine).
//!
//! Protocol: HTTP/1.1 with keep-alive, the real rocklet's routes and JSON shapes
//! (docs/rocklet.md, "Routes"): `POST /execute` → `{"stdout":"","stderr":"",
//! "exit_code":0}`, `POST /read_file` → `{"content":""}`, `POST /write_file` →
//! `{"success":true,"message":""}`, `GET /is_alive`. A POST body must be JSON with a
//! non-blank `sandbox_id` (else 422, as the rocklet). Every answer waits `latency` first.
//! A failure (probability `fail_rate`, deterministic sequence) is the rocklet's 511
//! `rockletexception`, after which the connection is closed, as uvicorn does.
//!
//! `GET /__stats` (from 127.0.0.1) returns the counters since the last `GET /__stats?reset`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Addresses per third octet: `127.1.x.1` … `127.1.x.250`.
const PER_OCTET: usize = 250;

/// Largest request head or body accepted (the scheduler's requests are small).
const MAX_REQUEST_BYTES: usize = 1 << 20;

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
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of worker addresses served.
    pub workers: usize,
    /// Delay before every answer.
    pub latency: Duration,
    /// Fraction of POSTs answered with a 511 failure, 0..=1.
    pub fail_rate: f64,
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
    fn snapshot(&self, reset: bool) -> serde_json::Value {
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
            "cpu_ms": crate::measure::ms(crate::measure::cpu_time()),
            "peak_rss_kib": crate::measure::peak_rss_kib(),
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

/// Serves until the process is killed. Prints `{"event":"ready","port":P}` once listening.
pub async fn run(port: u16, cfg: SimConfig) -> anyhow::Result<()> {
    crate::measure::raise_nofile_limit();
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    let port = listener.local_addr()?.port();
    let stats = Arc::new(Stats {
        execute: AtomicU64::new(0),
        read_file: AtomicU64::new(0),
        write_file: AtomicU64::new(0),
        other: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        per_worker: (0..cfg.workers).map(|_| AtomicU32::new(0)).collect(),
        draws: AtomicU64::new(0),
    });
    let cfg = Arc::new(cfg);
    crate::measure::emit(json!({"event": "ready", "port": port}));
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("sim: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if !peer.ip().is_loopback() {
            continue;
        }
        let worker = sock
            .local_addr()
            .ok()
            .and_then(|a| worker_index(a.ip(), cfg.workers));
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let (stats, cfg) = (stats.clone(), cfg.clone());
        tokio::spawn(async move {
            let _ = serve_connection(sock, worker, &cfg, &stats).await;
        });
    }
}

/// One connection: requests until the peer closes, a failure closes, or a request is bad.
async fn serve_connection(
    sock: TcpStream,
    worker: Option<usize>,
    cfg: &SimConfig,
    stats: &Stats,
) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let (read, mut write) = sock.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
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
            let reset = target.contains("reset");
            let reply = stats.snapshot(reset).to_string();
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
        if !cfg.latency.is_zero() {
            tokio::time::sleep(cfg.latency).await;
        }
        let (status, reply) = answer(&method, path, &body, cfg, stats);
        respond(&mut write, status, &reply).await?;
        if status == 511 || close {
            return Ok(());
        }
    }
}

/// The rocklet's answer to one request.
fn answer(method: &str, path: &str, body: &[u8], cfg: &SimConfig, stats: &Stats) -> (u16, String) {
    let route_ok = matches!(
        (method, path),
        ("POST", "/execute") | ("POST", "/read_file") | ("POST", "/write_file")
    );
    if method == "GET" && path == "/is_alive" {
        return (200, r#"{"is_alive":true,"message":""}"#.into());
    }
    if !route_ok {
        let code = if matches!(path, "/execute" | "/read_file" | "/write_file") {
            405
        } else {
            404
        };
        let detail = if code == 405 {
            "Method Not Allowed"
        } else {
            "Not Found"
        };
        return (code, json!({ "detail": detail }).to_string());
    }
    // Validate like the rocklet: JSON body with a non-blank sandbox_id.
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(body);
    let sandbox_ok = parsed
        .as_ref()
        .ok()
        .and_then(|v| v.get("sandbox_id"))
        .and_then(|s| s.as_str())
        .is_some_and(|s| !s.trim().is_empty());
    if !sandbox_ok {
        return (
            422,
            json!({"detail": [{"type": "missing", "loc": ["body", "sandbox_id"], "msg": "Field required"}]})
                .to_string(),
        );
    }
    if stats.draw_failure(cfg.fail_rate) {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        return (
            511,
            json!({"rockletexception": {
                "message": "simulated failure",
                "class_path": "builtins.OSError",
                "traceback": "",
                "extra_info": {}
            }})
            .to_string(),
        );
    }
    let reply = match path {
        "/execute" => r#"{"stdout":"","stderr":"","exit_code":0}"#,
        "/read_file" => r#"{"content":""}"#,
        _ => r#"{"success":true,"message":""}"#,
    };
    (200, reply.into())
}

async fn respond(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    status: u16,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Entity",
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
