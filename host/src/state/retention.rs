//! Retention: deleting old ticks with their runs, in bounded batches, in the background.
//!
//! Strategy: a reader works out what is doomed (an age cutoff; per task, the tick below
//! which the newest `max_runs_per_task` runs are not reached), then the writer deletes it
//! one [`PRUNE_BATCH`]-row transaction per message. Between two batches the writer handles
//! whatever else was queued, so a large backlog never holds the write lock for long.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use super::types::{Retention, TickId, to_ms};
use super::{StateError, StateHandle};
use crate::task::TaskName;

/// Rows deleted per transaction: a few milliseconds of write lock on a loaded machine.
pub const PRUNE_BATCH: u32 = 2_000;

/// Delay before the first pass after start: lets the first ticks go first.
pub const PRUNE_FIRST_DELAY: Duration = Duration::from_secs(60);

/// Ticks doomed by one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Doomed {
    /// Finished ticks that started before `cutoff` (unix ms).
    Older { cutoff: i64 },
    /// Finished ticks of `task` with an id below `tick`.
    TaskBelow { task: TaskName, tick: TickId },
}

/// One pruning transaction's worth of work, sent to the writer.
#[derive(Clone, Debug)]
pub(super) struct PruneStep {
    pub(super) doomed: Doomed,
    pub(super) batch: u32,
}

/// What one pruning pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Rows deleted (runs, ticks and stale grid cells together).
    pub rows: u64,
    /// Transactions it took.
    pub batches: u64,
}

impl StateHandle {
    /// Prunes history by `retention` as of now; see [`StateHandle::prune_at`].
    pub async fn prune(&self, retention: Retention) -> Result<Pruned, StateError> {
        self.prune_at(retention, Utc::now()).await
    }

    /// Prunes history by `retention` as of `now`: one pass, in batches of [`PRUNE_BATCH`]
    /// rows, until nothing doomed is left. Ticks in flight are never touched.
    pub async fn prune_at(
        &self,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> Result<Pruned, StateError> {
        let plan = self
            .read("plan pruning", move |c| {
                super::read::prune_plan(c, &retention, to_ms(now))
            })
            .await?;
        let mut pruned = Pruned::default();
        for doomed in plan {
            loop {
                let step = PruneStep {
                    doomed: doomed.clone(),
                    batch: PRUNE_BATCH,
                };
                let rows = self.prune_step(step).await?;
                pruned.batches += 1;
                pruned.rows += rows;
                if rows == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(pruned)
    }
}

/// Prunes by the retention `retention` holds now (a config reload changes it) every `every` (first after [`PRUNE_FIRST_DELAY`]) until `shutdown`
/// completes; a pass in progress stops between two batches. Failures are logged and the next
/// pass tries again.
pub async fn run_retention(
    state: StateHandle,
    retention: tokio::sync::watch::Receiver<Retention>,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next = Instant::now() + PRUNE_FIRST_DELAY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut shutdown => return,
        }
        tokio::select! {
            result = state.prune(*retention.borrow()) => match result {
                Ok(p) if p.rows > 0 => {
                    tracing::info!(rows = p.rows, batches = p.batches, "pruned state history");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}; pruning tries again in {}s", every.as_secs()),
            },
            _ = &mut shutdown => return,
        }
        next += every;
        let now = Instant::now();
        if next <= now {
            next = now + every;
        }
    }
}
