//! Quarry's integration tests: one binary, one module per area. Real rocklets (PyPI rl-rock,
//! installed by scripts/setup.sh) are started on 127.0.0.1 random ports by `support::rocklet`.
// Tests may print what they measured or skipped.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod api;
mod cli;
mod config;
mod config_reload;
mod daemons;
mod discovery;
mod docker_tasks;
mod e2e;
mod harness;
mod hostile;
mod image_cleanup;
mod image_pull;
mod languages;
mod plugins;
mod reload;
mod rock_sample;
mod scheduler;
mod support;
mod workers;
