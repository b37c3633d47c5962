//! Quarantine: a plugin that traps, runs out of memory or hits its deadline on the same worker
//! run after run is kept off that worker for a while, with a backoff that doubles while it
//! keeps failing.
//!
//! Ownership: one [`Quarantine`] per scheduled task, shared by its ticks (writer) and the
//! admin API (reader, lifter); every method takes the lock briefly and never across `.await`.
//!
//! Rules: a *quarantining failure* is a trap, a memory overrun or a timeout
//! ([`ErrorType::Trap`], [`ErrorType::MemoryLimitExceeded`], [`ErrorType::Timeout`]). After
//! `after` of them in a row the worker is quarantined until `now + backoff`; then one run is
//! let through as a probe: a quarantining failure doubles the backoff (up to `max_backoff`),
//! anything that shows the plugin working (success, started, or a `failed` answer from the
//! task itself) lifts it. Failures that are not the plugin's (an unreachable worker) and skips
//! change nothing. A new version of the plugin, or the admin API, lifts every quarantine.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::ErrorType;
use crate::report::{WorkerOutcome, WorkerResult};
use crate::workers::WorkerAddr;

/// When to quarantine and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantinePolicy {
    /// Consecutive quarantining failures before a quarantine; 0 turns quarantine off.
    pub after: u32,
    /// First quarantine's length.
    pub backoff: Duration,
    /// Longest quarantine.
    pub max_backoff: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy {
            after: 3,
            backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(86_400),
        }
    }
}

/// One worker's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Quarantining failures in a row.
    pub consecutive: u32,
    /// Quarantined since (None: not quarantined).
    pub since: Option<SystemTime>,
    /// Until when runs are skipped.
    pub until: Option<SystemTime>,
    /// Length of the current (or next) quarantine.
    pub backoff: Duration,
    /// The last quarantining failure's message.
    pub reason: String,
}

/// What recording a run changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing visible.
    None,
    /// The worker was quarantined (or its quarantine extended after a failed probe).
    Quarantined {
        /// Until when.
        until: SystemTime,
    },
    /// The quarantine was lifted (the plugin works again there).
    Lifted,
}

/// A quarantine in force, for views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// Worker.
    pub worker: WorkerAddr,
    /// Its record.
    pub entry: Entry,
}

/// The quarantine book of one task.
#[derive(Debug, Default)]
pub struct Quarantine {
    policy: Mutex<QuarantinePolicy>,
    by_worker: Mutex<HashMap<WorkerAddr, Entry>>,
}

/// Whether `r` is a failure that counts toward a quarantine.
pub fn is_quarantining(r: &WorkerResult) -> bool {
    matches!(r.outcome, WorkerOutcome::Failed | WorkerOutcome::Timeout)
        && matches!(
            r.error_type,
            Some(ErrorType::Trap | ErrorType::MemoryLimitExceeded | ErrorType::Timeout)
        )
}

impl Quarantine {
    /// An empty book applying `policy`.
    pub fn new(policy: QuarantinePolicy) -> Quarantine {
        Quarantine {
            policy: Mutex::new(policy),
            by_worker: Mutex::default(),
        }
    }

    /// Applies `policy` from now on (a config reload).
    pub fn set_policy(&self, policy: QuarantinePolicy) {
        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerAddr, Entry>> {
        self.by_worker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The quarantine `worker` is under at `now`, if runs must skip it. Past its end, `None`:
    /// the next run is the probe.
    pub fn blocks(&self, worker: &WorkerAddr, now: SystemTime) -> Option<Entry> {
        let map = self.map();
        let e = map.get(worker)?;
        match e.until {
            Some(until) if now < until => Some(e.clone()),
            _ => None,
        }
    }

    /// Records a finished run on `worker`.
    pub fn record(&self, worker: &WorkerAddr, r: &WorkerResult, now: SystemTime) -> Change {
        let policy = *self.policy.lock().unwrap_or_else(|e| e.into_inner());
        if policy.after == 0 {
            return Change::None;
        }
        let mut map = self.map();
        let quarantining = is_quarantining(r);
        let works = matches!(r.outcome, WorkerOutcome::Success | WorkerOutcome::Started)
            || r.error_type == Some(ErrorType::TaskResultFailed);
        if works {
            let was = map.remove(worker);
            return match was {
                Some(e) if e.since.is_some() => Change::Lifted,
                _ => Change::None,
            };
        }
        if !quarantining {
            return Change::None;
        }
        let e = map.entry(worker.clone()).or_default();
        e.consecutive += 1;
        e.reason = r.error.clone().unwrap_or_default();
        let probing = e.since.is_some();
        if probing {
            e.backoff = (e.backoff * 2).min(policy.max_backoff);
        } else if e.consecutive >= policy.after {
            e.backoff = policy.backoff.min(policy.max_backoff);
            e.since = Some(now);
        } else {
            return Change::None;
        }
        let until = now + e.backoff;
        e.until = Some(until);
        Change::Quarantined { until }
    }

    /// Lifts `worker`'s quarantine; false when it had none.
    pub fn lift(&self, worker: &WorkerAddr) -> bool {
        let mut map = self.map();
        matches!(map.remove(worker), Some(e) if e.since.is_some())
    }

    /// Lifts every quarantine (a new plugin version is loaded); how many there were.
    pub fn lift_all(&self) -> usize {
        let mut map = self.map();
        let n = map.values().filter(|e| e.since.is_some()).count();
        map.clear();
        n
    }

    /// Every worker under quarantine (in force or awaiting its probe), sorted by worker.
    pub fn list(&self) -> Vec<Quarantined> {
        let map = self.map();
        let mut v: Vec<Quarantined> = map
            .iter()
            .filter(|(_, e)| e.since.is_some())
            .map(|(w, e)| Quarantined {
                worker: w.clone(),
                entry: e.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.worker.cmp(&b.worker));
        v
    }

    /// Restores a record (from the state database at start).
    pub fn restore(&self, worker: WorkerAddr, entry: Entry) {
        self.map().insert(worker, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: WorkerOutcome, error_type: Option<ErrorType>) -> WorkerResult {
        WorkerResult {
            worker_ip: "h".into(),
            outcome,
            error_type,
            error: error_type.map(|t| format!("boom: {t}")),
        }
    }

    fn w() -> WorkerAddr {
        WorkerAddr::parse("10.0.0.1", 1).unwrap()
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn quarantines_after_n_traps_then_probes_with_doubling_backoff() {
        let q = Quarantine::new(QuarantinePolicy {
            after: 2,
            backoff: 10 * SEC,
            max_backoff: 25 * SEC,
        });
        let t0 = SystemTime::UNIX_EPOCH + 1000 * SEC;
        let trap = result(WorkerOutcome::Failed, Some(ErrorType::Trap));
        assert_eq!(q.record(&w(), &trap, t0), Change::None);
        assert!(q.blocks(&w(), t0).is_none());
        assert_eq!(
            q.record(&w(), &trap, t0),
            Change::Quarantined {
                until: t0 + 10 * SEC
            }
        );
        assert!(q.blocks(&w(), t0 + 9 * SEC).is_some());
        // The probe after the quarantine fails again: twice as long.
        let t1 = t0 + 10 * SEC;
        assert!(q.blocks(&w(), t1).is_none(), "the probe is let through");
        let mem = result(WorkerOutcome::Failed, Some(ErrorType::MemoryLimitExceeded));
        assert_eq!(
            q.record(&w(), &mem, t1),
            Change::Quarantined {
                until: t1 + 20 * SEC
            }
        );
        // Capped.
        let t2 = t1 + 20 * SEC;
        let timeout = result(WorkerOutcome::Timeout, Some(ErrorType::Timeout));
        assert_eq!(
            q.record(&w(), &timeout, t2),
            Change::Quarantined {
                until: t2 + 25 * SEC
            }
        );
        assert_eq!(q.list().len(), 1);
        assert_eq!(q.list()[0].entry.reason, "boom: TimeoutError");
        // A working probe lifts it.
        let ok = result(WorkerOutcome::Success, None);
        assert_eq!(q.record(&w(), &ok, t2 + 25 * SEC), Change::Lifted);
        assert!(q.list().is_empty());
    }

    #[test]
    fn only_the_plugins_own_failures_count() {
        let q = Quarantine::new(QuarantinePolicy {
            after: 2,
            ..Default::default()
        });
        let now = SystemTime::UNIX_EPOCH;
        let trap = result(WorkerOutcome::Failed, Some(ErrorType::Trap));
        let unreachable = result(WorkerOutcome::Failed, Some(ErrorType::Unreachable));
        let answered_failed = result(WorkerOutcome::Failed, Some(ErrorType::TaskResultFailed));
        q.record(&w(), &trap, now);
        // Not the plugin's fault: the count stands.
        assert_eq!(q.record(&w(), &unreachable, now), Change::None);
        assert!(matches!(
            q.record(&w(), &trap, now),
            Change::Quarantined { .. }
        ));
        // A fresh book: a task answering `failed` resets the count.
        let q = Quarantine::new(QuarantinePolicy {
            after: 2,
            ..Default::default()
        });
        q.record(&w(), &trap, now);
        q.record(&w(), &answered_failed, now);
        assert_eq!(q.record(&w(), &trap, now), Change::None);
    }

    #[test]
    fn lifting_and_turning_it_off() {
        let q = Quarantine::new(QuarantinePolicy {
            after: 1,
            ..Default::default()
        });
        let now = SystemTime::UNIX_EPOCH;
        let trap = result(WorkerOutcome::Failed, Some(ErrorType::Trap));
        q.record(&w(), &trap, now);
        assert!(q.lift(&w()));
        assert!(!q.lift(&w()));
        q.record(&w(), &trap, now);
        assert_eq!(q.lift_all(), 1);
        let off = Quarantine::new(QuarantinePolicy {
            after: 0,
            ..Default::default()
        });
        for _ in 0..5 {
            assert_eq!(off.record(&w(), &trap, now), Change::None);
        }
    }
}
