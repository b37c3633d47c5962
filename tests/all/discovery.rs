//! Worker discovery: a workers file re-read on change (real rocklets), merged with the
//! static list.

use quarry_host::report::TickOutcome;
use quarry_host::server::Server;

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_file_is_followed_while_serving() {
    needs_real_parts!("real rocklets");
    let tmp = TempDir::new("discovery");
    let (a, b) = (RockletProcess::start(), RockletProcess::start());
    let plugins = plugins_dir(&["probe"]);
    let workers_file = tmp.path().join("workers.txt");
    std::fs::write(&workers_file, format!("# fleet\n{}\n", a.addr)).unwrap();
    let file = tmp.path().join("quarry.yml");
    std::fs::write(
        &file,
        format!(
            "scheduler:\n  enabled: true\n  tasks:\n    - task_class: probe\n      interval_seconds: 1\n      params: {{mode: ok}}\nquarry:\n  plugins_dir: {}\n  workers_file: workers.txt\n  status_dir: {}/status\n  run_timeout_seconds: 10\n  cache_dir: none\n",
            plugins.str(),
            tmp.str()
        ),
    )
    .unwrap();
    let server = within("server start", 60, Server::start(&file))
        .await
        .unwrap();
    let mut reports = server.scheduler().subscribe();
    let r = within("a tick", 20, reports.recv()).await.unwrap();
    assert_eq!(
        (r.outcome, r.total),
        (TickOutcome::Success, 1),
        "{}",
        r.to_json()
    );

    // A second worker appears in the file (with a bad line, which is skipped with a warning).
    std::fs::write(
        &workers_file,
        format!("{}\n{}  # new\nnot a host:0\n", a.addr, b.addr),
    )
    .unwrap();
    within("both workers", 30, async {
        loop {
            let r = reports.recv().await.unwrap();
            if r.total == 2 {
                assert_eq!(r.outcome, TickOutcome::Success, "{}", r.to_json());
                break;
            }
        }
    })
    .await;

    // Emptied: no workers.
    std::fs::write(&workers_file, "# nobody\n").unwrap();
    within("no workers", 30, async {
        loop {
            if reports.recv().await.unwrap().outcome == TickOutcome::NoWorkers {
                break;
            }
        }
    })
    .await;
    within("shutdown", 30, server.shutdown()).await;
}

/// A `ray start --block` process, stopped by SIGTERM to its pid when dropped.
struct RayNode {
    child: std::process::Child,
}

impl RayNode {
    fn start(args: &[String], temp: &std::path::Path) -> RayNode {
        let bin = std::env::var_os("QUARRY_TEST_RAY_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                panic!("QUARRY_TEST_RAY_BIN is not set: run scripts/test.sh, which installs Ray from PyPI")
            });
        let log = std::fs::File::create(temp.join(format!("ray-{}.log", args.len()))).unwrap();
        let child = std::process::Command::new(bin)
            .arg("start")
            .arg("--block")
            .args(args)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        RayNode { child }
    }
}

impl Drop for RayNode {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn ray_ips(url: &str) -> Vec<String> {
    match quarry_host::workers::discovery::ray_nodes(url, 22555).await {
        Ok(addrs) => addrs.iter().map(|a| a.ip().to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn until_ray(url: &str, what: &str, secs: u64, ok: impl Fn(&[String]) -> bool) {
    within(what, secs, async {
        loop {
            if ok(&ray_ips(url).await) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ray_nodes_become_workers_and_a_stale_list_survives_ray_going_away() {
    needs_real_parts!("a real Ray");
    use quarry_host::workers::discovery::{DiscoveryHandle, Sources};
    let tmp = TempDir::new("ray");
    let (gcs, dash, client) = (free_port(), free_port(), free_port());
    let url = format!("http://127.0.0.1:{dash}");
    let head = RayNode::start(
        &[
            "--head".into(),
            "--node-ip-address=127.0.0.10".into(),
            format!("--port={gcs}"),
            "--num-cpus=1".into(),
            format!("--temp-dir={}", tmp.str()),
            "--dashboard-host=127.0.0.1".into(),
            format!("--dashboard-port={dash}"),
            format!("--ray-client-server-port={client}"),
        ],
        tmp.path(),
    );
    until_ray(&url, "the Ray head", 120, |ips| {
        ips.iter().any(|i| i == "127.0.0.10")
    })
    .await;
    let worker = RayNode::start(
        &[
            format!("--address=127.0.0.10:{gcs}"),
            "--node-ip-address=127.0.0.11".into(),
            "--num-cpus=1".into(),
            format!("--dashboard-agent-listen-port={}", free_port()),
        ],
        tmp.path(),
    );
    until_ray(&url, "the Ray worker node", 120, |ips| {
        ips.iter().any(|i| i == "127.0.0.11")
    })
    .await;

    let sources = Sources {
        fixed: Vec::new(),
        file: None,
        ray_dashboard: Some(url.clone()),
        port: 22555,
        ttl: std::time::Duration::from_secs(1),
    };
    let d = DiscoveryHandle::start(sources, quarry_host::workers::Limits::default()).await;
    let mut rx = d.subscribe();
    let ips = |rx: &tokio::sync::watch::Receiver<
        std::sync::Arc<Vec<quarry_host::workers::Worker>>,
    >|
     -> Vec<String> { rx.borrow().iter().map(|w| w.addr().to_string()).collect() };
    assert_eq!(ips(&rx), vec!["127.0.0.10:22555", "127.0.0.11:22555"]);

    // A node leaves: dropped after the next refresh.
    drop(worker);
    within("the worker node to drop out", 60, async {
        while ips(&rx).len() != 1 {
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert_eq!(ips(&rx), vec!["127.0.0.10:22555"]);

    // Ray goes away: the last list stays.
    drop(head);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(
        ips(&rx),
        vec!["127.0.0.10:22555"],
        "a stale list is kept while Ray is unreachable"
    );
}
