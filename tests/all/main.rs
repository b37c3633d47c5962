//! Quarry's integration tests: one binary, one module per area, in two tiers
//! (`support::real_parts`): hermetic tests always run; tests that need real parts (rocklets
//! from PyPI rl-rock, started on 127.0.0.1 random ports by `support::rocklet`, the test dockerd,
//! the registry, Ray, docuum) run only when scripts/test.sh sets `QUARRY_TEST_REAL_PARTS`.
// Tests may print what they measured or skipped.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod api;
mod cli;
mod config;
mod config_reload;
mod control;
mod crash;
mod daemons;
mod dashboard;
mod discovery;
mod docker_tasks;
mod dry_run;
mod e2e;
mod fake_workers;
mod grants;
mod harness;
mod hostile;
mod image_cleanup;
mod image_pull;
mod languages;
mod log_tasks;
mod metrics;
mod plugins;
mod reload;
mod rock_sample;
mod scheduler;
mod sim_rocklet;
mod state;
mod support;
mod workers;
