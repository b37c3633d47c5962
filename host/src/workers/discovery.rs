//! Worker discovery: the static list, a workers file (re-read when it changes), and the alive
//! nodes of a Ray cluster (Ray's own dashboard API), merged into one list.
//!
//! One owner task keeps the list and publishes it through a `watch` channel; each tick reads
//! the current `Arc`. Ray's answer is cached for the TTL and refreshed early when a tick
//! found a worker unreachable ([`DiscoveryHandle::refresher`]); when Ray cannot be asked,
//! the last list stays, with a warning. Worker handles of addresses that stay are reused, so
//! their connection pools survive refreshes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use super::{Limits, Worker, WorkerAddr, connect_with};

/// How often the workers file's mtime is checked.
pub const FILE_POLL: Duration = Duration::from_secs(2);

/// Timeout of one query to Ray's dashboard.
pub const RAY_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where workers come from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sources {
    /// Addresses listed in the config.
    pub fixed: Vec<WorkerAddr>,
    /// A file with one address per line (`#` comments and blank lines ignored).
    pub file: Option<PathBuf>,
    /// Ray dashboard URL (`http://127.0.0.1:8265`): its alive nodes with CPUs are workers.
    pub ray_dashboard: Option<String>,
    /// Port for addresses given without one (Ray gives none).
    pub port: u16,
    /// How long Ray's answer is trusted.
    pub ttl: Duration,
}

/// The owner task's handle.
pub struct DiscoveryHandle {
    rx: watch::Receiver<Arc<Vec<Worker>>>,
    refresh: mpsc::UnboundedSender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl DiscoveryHandle {
    /// Resolves the sources once (so the first tick has workers), then keeps them current.
    pub async fn start(sources: Sources, limits: Limits) -> DiscoveryHandle {
        let mut owner = Owner {
            sources,
            limits,
            client: super::rocklet::Rocklet::http_client(),
            handles: HashMap::new(),
            file_seen: None,
            file_addrs: Vec::new(),
            ray_addrs: Vec::new(),
            ray_at: None,
            ray_failing: false,
        };
        owner.refresh_file();
        owner.refresh_ray().await;
        let (tx, rx) = watch::channel(Arc::new(owner.merged()));
        let (refresh, refresh_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(owner.run(tx, refresh_rx));
        DiscoveryHandle { rx, refresh, task }
    }

    /// The current workers.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<Worker>>> {
        self.rx.clone()
    }

    /// A sender of early-refresh requests (a tick found a worker unreachable), for the
    /// scheduler.
    pub fn refresher(&self) -> mpsc::UnboundedSender<()> {
        self.refresh.clone()
    }
}

impl Drop for DiscoveryHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Owner {
    sources: Sources,
    limits: Limits,
    /// One connection pool for every rocklet discovery ever adds.
    client: reqwest::Client,
    handles: HashMap<WorkerAddr, Worker>,
    file_seen: Option<(SystemTime, u64)>,
    file_addrs: Vec<WorkerAddr>,
    ray_addrs: Vec<WorkerAddr>,
    ray_at: Option<Instant>,
    ray_failing: bool,
}

impl Owner {
    async fn run(
        mut self,
        tx: watch::Sender<Arc<Vec<Worker>>>,
        mut refresh: mpsc::UnboundedReceiver<()>,
    ) {
        loop {
            let early = tokio::select! {
                r = refresh.recv() => { if r.is_none() { return; } true }
                _ = tokio::time::sleep(FILE_POLL) => false,
            };
            while refresh.try_recv().is_ok() {}
            self.refresh_file();
            let ray_due = self
                .ray_at
                .is_none_or(|at| at.elapsed() >= self.sources.ttl);
            if early || ray_due {
                self.refresh_ray().await;
            }
            let next = self.merged();
            let same = {
                let cur = tx.borrow();
                cur.len() == next.len() && cur.iter().zip(&next).all(|(a, b)| a.addr() == b.addr())
            };
            if !same {
                tracing::info!(
                    workers = next.len(),
                    list = %next.iter().map(|w| w.addr().to_string()).collect::<Vec<_>>().join(", "),
                    "worker list changed"
                );
                tx.send_replace(Arc::new(next));
            }
        }
    }

    /// Re-reads the workers file when its mtime or size changed.
    fn refresh_file(&mut self) {
        let Some(path) = &self.sources.file else {
            return;
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && stamp == self.file_seen {
            return;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut addrs = Vec::new();
                for (n, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    match WorkerAddr::parse(line, self.sources.port) {
                        Ok(a) if !addrs.contains(&a) => addrs.push(a),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(
                            "workers file {} line {}: {e}; line ignored",
                            path.display(),
                            n + 1
                        ),
                    }
                }
                self.file_addrs = addrs;
                self.file_seen = stamp;
            }
            Err(e) => {
                if self.file_seen.is_some() || self.file_addrs.is_empty() {
                    tracing::warn!(
                        "cannot read the workers file {}: {e}; keeping its last list",
                        path.display()
                    );
                }
                self.file_seen = stamp;
            }
        }
    }

    /// Asks Ray for its alive nodes with CPUs; on failure keeps the last list.
    async fn refresh_ray(&mut self) {
        let Some(url) = self.sources.ray_dashboard.clone() else {
            return;
        };
        self.ray_at = Some(Instant::now());
        match ray_nodes(&url, self.sources.port).await {
            Ok(addrs) => {
                if self.ray_failing {
                    tracing::info!("Ray at {url} answers again");
                }
                self.ray_failing = false;
                self.ray_addrs = addrs;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot list Ray nodes at {url}: {e}; keeping the last {} Ray worker(s)",
                    self.ray_addrs.len()
                );
                self.ray_failing = true;
            }
        }
    }

    /// Static ∪ file ∪ Ray, first occurrence wins, handles reused.
    fn merged(&mut self) -> Vec<Worker> {
        let mut addrs: Vec<WorkerAddr> = Vec::new();
        for a in self
            .sources
            .fixed
            .iter()
            .chain(&self.file_addrs)
            .chain(&self.ray_addrs)
        {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        let new: Vec<WorkerAddr> = addrs
            .iter()
            .filter(|a| !self.handles.contains_key(*a))
            .cloned()
            .collect();
        for w in connect_with(&new, self.limits, &self.client) {
            self.handles.insert(w.addr().clone(), w);
        }
        self.handles.retain(|a, _| addrs.contains(a));
        addrs
            .iter()
            .filter_map(|a| self.handles.get(a).cloned())
            .collect()
    }
}

/// `GET <dashboard>/api/v0/nodes` filtered to alive nodes: those with CPU > 0, as workers.
pub async fn ray_nodes(dashboard: &str, port: u16) -> Result<Vec<WorkerAddr>, String> {
    let url = format!(
        "{}/api/v0/nodes?filter_keys=state&filter_predicates=%3D&filter_values=ALIVE&limit=10000",
        dashboard.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(RAY_QUERY_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let body: serde_json::Value = resp.json().await.map_err(|e| format!("bad JSON: {e}"))?;
    parse_ray_nodes(&body, port)
}

/// Reads Ray's state API answer: `data.result.result[]` with `node_ip`, `state`,
/// `resources_total.CPU`.
pub fn parse_ray_nodes(body: &serde_json::Value, port: u16) -> Result<Vec<WorkerAddr>, String> {
    let nodes = body["data"]["result"]["result"]
        .as_array()
        .ok_or("no data.result.result list in Ray's answer")?;
    let mut addrs = Vec::new();
    for n in nodes {
        let alive = n["state"].as_str() == Some("ALIVE");
        let cpus = n["resources_total"]["CPU"].as_f64().unwrap_or(0.0);
        let Some(ip) = n["node_ip"].as_str().filter(|s| !s.is_empty()) else {
            continue;
        };
        if alive && cpus > 0.0 {
            let addr = WorkerAddr::Remote {
                host: ip.to_string(),
                port,
            };
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }
    // Ray lists nodes in no particular order; a stable order keeps reports comparable.
    addrs.sort();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ray_nodes() {
        let body = serde_json::json!({"result": true, "data": {"result": {"total": 4, "result": [
            {"node_id": "a", "node_ip": "10.0.0.1", "state": "ALIVE", "resources_total": {"CPU": 4.0}},
            {"node_id": "b", "node_ip": "10.0.0.2", "state": "DEAD", "resources_total": {"CPU": 4.0}},
            {"node_id": "c", "node_ip": "10.0.0.3", "state": "ALIVE", "resources_total": {"GPU": 1.0}},
            {"node_id": "d", "node_ip": "fd00::4", "state": "ALIVE", "resources_total": {"CPU": 1.0}}
        ]}}});
        let addrs = parse_ray_nodes(&body, 22556).unwrap();
        assert_eq!(
            addrs,
            vec![
                WorkerAddr::Remote {
                    host: "10.0.0.1".into(),
                    port: 22556
                },
                WorkerAddr::Remote {
                    host: "fd00::4".into(),
                    port: 22556
                },
            ]
        );
        assert!(parse_ray_nodes(&serde_json::json!({"data": {}}), 1).is_err());
    }
}
