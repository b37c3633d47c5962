//! The `sim` subcommand: the simulated rocklet of quarry-testkit ([`quarry_testkit::sim`]) as a
//! process of its own, answering for every worker address `127.1.x.y` on `0.0.0.0:<port>`
//! (loopback peers only), with the process's CPU time and peak RSS added to `GET /__stats`.

use std::net::SocketAddr;
use std::time::Duration;

use quarry_testkit::sim::{SimConfig, SimRocklet};
use serde_json::{Value, json};

pub use quarry_testkit::sim::worker_ip;

/// Serves until the process is killed. Prints `{"event":"ready","port":P}` once listening.
pub async fn run(
    port: u16,
    workers: usize,
    latency: Duration,
    fail_rate: f64,
) -> anyhow::Result<()> {
    crate::measure::raise_nofile_limit();
    let cfg = SimConfig {
        workers,
        latency,
        fail_rate,
        extra_stats: Some(process_stats),
        ..SimConfig::default()
    };
    let sim = SimRocklet::start(SocketAddr::from(([0, 0, 0, 0], port)), cfg).await?;
    crate::measure::emit(json!({"event": "ready", "port": sim.port()}));
    sim.serve_forever().await;
    Ok(())
}

/// This process's CPU time and peak RSS, for the simulator's side of the scale table.
fn process_stats() -> serde_json::Map<String, Value> {
    serde_json::Map::from_iter([
        (
            "cpu_ms".to_string(),
            json!(crate::measure::ms(crate::measure::cpu_time())),
        ),
        (
            "peak_rss_kib".to_string(),
            json!(crate::measure::peak_rss_kib()),
        ),
    ])
}
