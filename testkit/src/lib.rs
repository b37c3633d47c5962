//! # quarry-testkit: test doubles for Quarry's workers
//!
//! For tests that exercise the code above the workers (status files, the gate, the scheduler,
//! reload) or the rocklet client, without starting real parts:
//!
//! - [`fake`]: [`FakeWorker`], a scripted in-memory [`WorkerApi`](quarry_host::workers::WorkerApi)
//!   implementation: commands answered by rules, closures or a queue, files kept in memory,
//!   any [`WorkerError`](quarry_host::workers::WorkerError), delay or timeout injected, every
//!   call recorded.
//! - [`sim`]: [`SimRocklet`], a simulated rocklet speaking the real one's HTTP API
//!   (docs/rocklet.md) on a loopback port, for the [`Rocklet`](quarry_host::workers::rocklet::Rocklet)
//!   client; the benchmarks use it to simulate fleets of 10k workers.

#![deny(missing_docs)]

pub mod fake;
pub mod sim;

pub use fake::{Answer, Call, FakeWorker};
pub use sim::{Scripted, SimConfig, SimRocklet};
