//! # quarry-host
//!
//! Quarry runs fleet-maintenance tasks, written as WebAssembly components against
//! `quarry:task@0.1.1` (see `wit/`), on every worker of a fleet. Module map:
//!
//! - [`config`]: ROCK's `scheduler:` YAML plus Quarry's own settings → a validated [`config::Config`].
//! - [`plugins`]: loading the plugins directory into a [`plugins::PluginSet`] (name → plugin).
//! - [`runtime`]: the wasmtime engine, one sandboxed store per (task, worker) run, and the host
//!   side of the WIT interface.
//! - [`workers`]: worker addresses and clients — ROCK's rocklet over HTTP, or `local`.
//! - [`run`]: one task on one worker (status file pending → run → final) and on a whole tick.
//! - [`report`]: ROCK-compatible status files and run reports.
//! - [`scheduler`]: interval ticks per task, fan-out, graceful shutdown.
//! - [`state`]: the state store (SQLite): ticks, runs, process tracking, pause, halt,
//!   quarantine and audit, kept across restarts.
//! - [`server`]: `quarry serve`: the scheduler, plugin watcher and discovery of one config,
//!   and config reload; [`debounce`]: the quiet-period helper both file watchers use.
//! - [`api`]: the admin API (REST, metrics, dashboard) over the [`api::ControlPlane`] trait.
//! - [`metrics`]: the Prometheus metrics behind `/metrics` (a cheap [`metrics::Metrics`] handle).
//! - [`cli`]: the `quarry` command line; [`scaffold`]: `quarry plugin new/build`.
//! - [`grants`]: capability grants, protected paths and dry run: what a run's host calls are
//!   checked against.
//! - [`task`], [`error`]: domain types and error types.

pub mod api;
pub mod cli;
pub mod config;
pub mod debounce;
pub mod error;
pub mod grants;
pub mod metrics;
pub mod plugins;
pub mod report;
pub mod run;
pub mod runtime;
pub mod scaffold;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod task;
pub mod workers;
