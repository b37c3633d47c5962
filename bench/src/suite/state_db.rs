//! Step `statedb`: what the state database costs the scheduler, and the admin API's latency
//! while a big tick runs. Both through a real `quarry serve` (`quarry-bench serve-tick`).
//!
//! Strategy: per fleet (10 real rocklets, then 10,000 simulated workers), the database off
//! and on in alternating child processes (off, on, on, off), so that the busy machine's drift
//! hits both sides alike; each child's first tick is the warm-up and is left out. Then the
//! API: 100 readers during ticks on the 10,000 simulated workers, database on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use super::{
    Ctx, FleetInfo, ROCK_PORT, Results, Side, Sim, run_child, side_from, start_fleet, without_proxy,
};
use crate::measure::median;

/// Real rocklets of the database scenario.
const REAL_ROCKLETS: usize = 10;
/// Simulated workers of both scenarios.
const SIM_WORKERS: usize = 10_000;
/// Ticks per child: one warm-up, then the measured ones.
const TICKS: usize = 3;
/// Readers of the API scenario.
const READERS: usize = 100;

/// The database off and on, on one fleet.
#[derive(Debug, Serialize)]
pub struct DbRow {
    pub fleet: String,
    pub workers: usize,
    pub off: Side,
    pub on: Side,
}

/// The API under load during ticks.
#[derive(Debug, Serialize)]
pub struct ApiRow {
    pub workers: usize,
    pub readers: usize,
    pub think_ms: u64,
    pub side: Side,
}

/// Values of `key` in the measured ticks (each child's tick 0 is its warm-up).
pub fn measured(side: &Side, key: &str) -> Vec<f64> {
    side.ticks
        .iter()
        .filter(|t| t["tick"].as_u64() != Some(0))
        .filter_map(|t| t[key].as_f64())
        .collect()
}

/// Median of `key` over the measured ticks.
pub fn measured_median(side: &Side, key: &str) -> f64 {
    median(&measured(side, key))
}

/// Every measured tick's `api` summary.
pub fn api_loads(side: &Side) -> Vec<&Value> {
    side.ticks
        .iter()
        .filter_map(|t| t.get("api").filter(|a| !a.is_null()))
        .collect()
}

struct Target<'a> {
    /// `--workers a,b` or `--sim-workers N --sim-port P`.
    args: Vec<String>,
    label: &'a str,
}

fn serve_tick(
    ctx: &Ctx,
    plugins: &Path,
    fleet: &Target<'_>,
    label: &str,
    extra: &[String],
) -> anyhow::Result<Vec<Value>> {
    let dir = ctx.work.join("statedb").join(label);
    let mut cmd = Command::new(&ctx.exe);
    cmd.arg("serve-tick")
        .arg("--plugins-dir")
        .arg(plugins)
        .args(["--task", crate::patch::NAME_PLACEHOLDER])
        .args(&fleet.args)
        .args(["--ticks", &TICKS.to_string()])
        .args(["--concurrency", &ctx.args.concurrency.to_string()])
        .arg("--dir")
        .arg(&dir)
        .arg("--status-dir")
        .arg(ctx.work.join("statedb-status"))
        .arg("--cache-dir")
        .arg(ctx.work.join("cache-statedb"))
        .arg("--log-file")
        .arg(ctx.work.join("logs").join(format!("{label}.log")))
        .args(extra);
    run_child(ctx, label, without_proxy(&mut cmd))
}

/// Off, on, on, off: the ticks of each setting merged into one side.
fn off_and_on(ctx: &Ctx, plugins: &Path, fleet: &Target<'_>, workers: usize) -> DbRow {
    let (mut off, mut on) = (Side::default(), Side::default());
    for (round, db) in [false, true, true, false].into_iter().enumerate() {
        let which = if db { "on" } else { "off" };
        let label = format!("statedb-{}-{which}-{round}", fleet.label);
        ctx.log(&format!(
            "{}: state database {which} (round {round})",
            fleet.label
        ));
        let extra: Vec<String> = if db {
            vec!["--state-db".into()]
        } else {
            vec![]
        };
        let side = if db { &mut on } else { &mut off };
        match serve_tick(ctx, plugins, fleet, &label, &extra) {
            Ok(lines) => {
                let s = side_from(&lines);
                side.ticks.extend(s.ticks);
                side.peak_rss_kib = side.peak_rss_kib.max(s.peak_rss_kib);
                side.setup_ms = s.setup_ms;
            }
            Err(e) => side.error = Some(format!("{e:#}")),
        }
    }
    DbRow {
        fleet: fleet.label.to_string(),
        workers,
        off,
        on,
    }
}

pub(super) fn run(ctx: &Ctx, results: &mut Results) -> anyhow::Result<()> {
    let noop = std::fs::read(ctx.abs(&ctx.args.noop))
        .with_context(|| format!("reading {}", ctx.args.noop.display()))?;
    let plugins = super::plugin_dir_with(ctx, "statedb", &[("bench_noop.wasm", noop)])?;

    // 1. Real rocklets.
    if ctx.fits(
        results,
        "state database on 10 real rocklets",
        Duration::from_secs(60),
    ) {
        ctx.log(&format!("starting {REAL_ROCKLETS} rocklets"));
        match start_fleet(ctx, REAL_ROCKLETS) {
            Ok((fleet, ready_secs)) => {
                results.statedb_fleet = Some(FleetInfo {
                    size: REAL_ROCKLETS,
                    ready_secs,
                    rss_mib: fleet.rss_mib(),
                });
                let addrs: Vec<String> = fleet
                    .0
                    .iter()
                    .map(|r| format!("{}:{ROCK_PORT}", r.ip))
                    .collect();
                let f = Target {
                    args: vec!["--workers".into(), addrs.join(",")],
                    label: "real-10",
                };
                results
                    .statedb
                    .push(off_and_on(ctx, &plugins, &f, REAL_ROCKLETS));
                drop(fleet);
            }
            Err(e) => results
                .errors
                .push(format!("state database on real rocklets: {e:#}")),
        }
    }

    // 2. Simulated workers, then the API under load on them.
    let lat = ctx.args.sim_latency_ms;
    let sim = Sim::start(ctx, 0, SIM_WORKERS, lat, 0.0)?;
    let f = Target {
        args: vec![
            "--sim-workers".into(),
            SIM_WORKERS.to_string(),
            "--sim-port".into(),
            sim.port.to_string(),
        ],
        label: "sim-10000",
    };
    // ~10-20 s per tick of 10,000 workers on a busy 2-core box, 4 children of 3 ticks.
    if ctx.fits(
        results,
        "state database on 10,000 simulated workers",
        Duration::from_secs(240),
    ) {
        results
            .statedb
            .push(off_and_on(ctx, &plugins, &f, SIM_WORKERS));
    }
    // Back to back (the strict reading of "100 concurrent readers"), then as 100 dashboards
    // polling every 2 s (the dashboard's POLL_MS).
    for think_ms in [0u64, 2000] {
        if !ctx.fits(
            results,
            &format!("API latency under {READERS} readers (think {think_ms} ms)"),
            Duration::from_secs(90),
        ) {
            continue;
        }
        ctx.log(&format!(
            "API: {READERS} readers (think {think_ms} ms) during ticks on {SIM_WORKERS} workers"
        ));
        let label = format!("statedb-api-{think_ms}");
        let extra = vec![
            "--state-db".to_string(),
            "--readers".into(),
            READERS.to_string(),
            "--think-ms".into(),
            think_ms.to_string(),
        ];
        let side = match serve_tick(ctx, &plugins, &f, &label, &extra) {
            Ok(lines) => side_from(&lines),
            Err(e) => Side {
                error: Some(format!("{e:#}")),
                ..Default::default()
            },
        };
        results.api_load.push(ApiRow {
            workers: SIM_WORKERS,
            readers: READERS,
            think_ms,
            side,
        });
    }
    drop(sim);
    Ok(())
}
