//! # quarry-bench: Quarry's benchmark suite
//!
//! Run it with `bash scripts/bench.sh` (it installs ROCK's scheduler, builds everything in
//! release and calls `quarry-bench suite`); results land in docs/benchmarks.md. Benchmarks are
//! not tests: nothing here is enforced, targets are reported as met or missed.
//!
//! Module map:
//! - [`suite`]: the orchestrator: starts the rocklet fleet and the simulator, runs every side
//!   of every scenario in a child process of its own, collects the reports.
//! - [`quarry_side`]: the Quarry side of each scenario (`tick`, `overhead`, `reload`,
//!   `restart` subcommands), through quarry-host's public API only.
//! - `bench/rock_driver.py`: the ROCK side (ROCK's own task classes and `BaseTask.run`).
//! - [`serve_side`]: the state-database scenarios' children (`serve-tick`, `api-load`): a
//!   real `quarry serve` in process, with its database on or off, and the API's readers.
//! - [`sim`]: the simulated rocklet (`sim` subcommand) for fleets of 1k–10k workers; the
//!   simulator itself is quarry-testkit's, shared with the tests.
//! - [`measure`]: CPU time, peak RSS and the report-line protocol, the same for both sides.
//! - [`patch`]: distinct plugins from one build of the bench guest (`bench/guests/noop`).
//! - [`render`]: Markdown tables and the generated block of docs/benchmarks.md.
// A benchmark tool prints its progress and tables.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod measure;
mod patch;
mod quarry_side;
mod render;
mod serve_side;
mod sim;
mod suite;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Quarry's benchmarks. `suite` runs everything; the other subcommands are its children.
#[derive(Debug, Parser)]
#[command(name = "quarry-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every scenario and write docs/benchmarks.md.
    Suite(suite::SuiteArgs),
    /// (child) Quarry: ticks of one task on a set of workers.
    Tick(quarry_side::TickArgs),
    /// (child) Quarry: host overhead per run, no I/O.
    Overhead(quarry_side::OverheadArgs),
    /// (child) Quarry: hot reload latency.
    Reload(quarry_side::ReloadArgs),
    /// (child) Quarry: start-up with a plugins directory.
    Restart(quarry_side::RestartArgs),
    /// (child) Quarry: ticks of a real `quarry serve`, state database on or off.
    ServeTick(serve_side::ServeTickArgs),
    /// (child) Readers of the admin API until stdin closes.
    ApiLoad(serve_side::ApiLoadArgs),
    /// The simulated rocklet.
    Sim {
        /// Port on 0.0.0.0 (loopback peers only); 0 = any.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Worker addresses served (127.1.x.y).
        #[arg(long)]
        workers: usize,
        /// Delay before every answer, ms.
        #[arg(long, default_value_t = 10)]
        latency_ms: u64,
        /// Fraction of requests answered with a 511 failure.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Suite(args) => suite::run(args),
        Cmd::Sim {
            port,
            workers,
            latency_ms,
            fail_rate,
        } => {
            // One thread: the simulator stands for machines of its own and should take as
            // little of the shared cores from the scheduler as possible.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(sim::run(
                        port,
                        workers,
                        Duration::from_millis(latency_ms),
                        fail_rate,
                    ))
                })
        }
        // The Quarry side runs on tokio's default multi-thread runtime, as `quarry` does.
        other => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async move {
                    match other {
                        Cmd::Tick(a) => quarry_side::tick(a).await,
                        Cmd::Overhead(a) => quarry_side::overhead(a).await,
                        Cmd::Reload(a) => quarry_side::reload(a).await,
                        Cmd::Restart(a) => quarry_side::restart(a).await,
                        Cmd::ServeTick(a) => serve_side::serve_tick(a).await,
                        Cmd::ApiLoad(a) => serve_side::api_load(a).await,
                        Cmd::Suite(_) | Cmd::Sim { .. } => unreachable!(),
                    }
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quarry-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
