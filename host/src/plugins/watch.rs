//! Hot reload of the plugins directory.
//!
//! A pipeline with one owner: the `notify` watcher only forwards "something changed" and
//! whether the event says the file is complete (closed after writing, renamed into place,
//! removed); the owner task debounces (15 ms after such an event, 100 ms otherwise), waits
//! when the last event was not a completion until the files are stable (size and mtime
//! unchanged across 50 ms, so a file still being written is not loaded), rescans with
//! [`PluginSet::scan`] (which reuses unchanged plugins by content hash and refuses bad files
//! without touching the good versions), and publishes the new set through a `watch` channel.
//! Readers take an `Arc` snapshot per tick: runs in flight keep the version they started
//! with, the next tick sees the new one. A periodic stat-only check is a safety net for
//! file systems where change events are lost.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use notify::Watcher as _;
use tokio::sync::{mpsc, watch};

use super::{ParamsCheck, PluginSet};
use crate::runtime::Runtime;

/// Quiet time after the last change event before a rescan: copies and editors write in
/// bursts.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(100);

/// Quiet time when the last event says a file is complete (closed after writing, renamed into
/// place, removed): only to gather a burst of such events into one rescan.
pub const COMPLETE_DEBOUNCE: Duration = Duration::from_millis(15);

/// A file must keep its size and mtime across this interval to be loaded.
pub const SETTLE_CHECK: Duration = Duration::from_millis(50);

/// How often the directory is stat-checked even without events.
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// What a change event says about the file it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Closed after writing, renamed into place, or removed: its content is final.
    Complete,
    /// Created or written to: more may follow.
    Partial,
}

impl Change {
    fn of(kind: &notify::EventKind) -> Change {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
        match kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            | EventKind::Remove(_) => Change::Complete,
            _ => Change::Partial,
        }
    }
}

/// The running watcher: the latest plugin set, and how many times it was swapped.
pub struct PluginWatcher {
    rx: watch::Receiver<Arc<PluginSet>>,
    checks: Arc<std::sync::Mutex<Vec<ParamsCheck>>>,
    swaps: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PluginWatcher {
    /// Starts watching `dir`, beginning from `initial`. Every new plugin version must accept
    /// the params in `checks` of the tasks configured for it.
    pub fn spawn(
        rt: Arc<Runtime>,
        dir: PathBuf,
        initial: Arc<PluginSet>,
        checks: Vec<ParamsCheck>,
    ) -> anyhow::Result<PluginWatcher> {
        let (events_tx, events) = mpsc::unbounded_channel::<Change>();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(event) = res
                    && event
                        .paths
                        .iter()
                        .any(|p| p.extension().is_some_and(|e| e == "wasm"))
                {
                    let _ = events_tx.send(Change::of(&event.kind));
                }
            })?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        let (tx, rx) = watch::channel(initial);
        let swaps = Arc::new(AtomicU64::new(0));
        let checks = Arc::new(std::sync::Mutex::new(checks));
        let owner = Owner {
            rt,
            dir,
            checks: checks.clone(),
            tx,
            swaps: swaps.clone(),
            reported: HashSet::new(),
        };
        let task = tokio::spawn(owner.run(events, watcher));
        Ok(PluginWatcher {
            rx,
            checks,
            swaps,
            task,
        })
    }

    /// Replaces the params checks (after a config reload): later versions of each plugin must
    /// accept the params now configured for it.
    pub fn set_checks(&self, checks: Vec<ParamsCheck>) {
        if let Ok(mut c) = self.checks.lock() {
            *c = checks;
        }
    }

    /// A receiver of plugin-set snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PluginSet>> {
        self.rx.clone()
    }

    /// The current set.
    pub fn current(&self) -> Arc<PluginSet> {
        self.rx.borrow().clone()
    }

    /// How many times a new set was published.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// Stops watching.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The owner task's state.
struct Owner {
    rt: Arc<Runtime>,
    dir: PathBuf,
    checks: Arc<std::sync::Mutex<Vec<ParamsCheck>>>,
    tx: watch::Sender<Arc<PluginSet>>,
    swaps: Arc<AtomicU64>,
    /// Errors already logged, so that a bad file is reported once, not on every rescan.
    reported: HashSet<String>,
}

impl Owner {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Change>,
        _watcher: notify::RecommendedWatcher,
    ) {
        let mut seen = fingerprint(&self.dir);
        loop {
            let first = tokio::select! {
                ev = events.recv() => match ev { Some(c) => c, None => return },
                _ = tokio::time::sleep(POLL_INTERVAL) => {
                    if fingerprint(&self.dir) == seen {
                        continue;
                    }
                    Change::Partial
                }
            };
            // Debounce: wait for a quiet period, short when the last event says a file is
            // complete, longer while files may still be being written.
            let Some(last) = crate::debounce::quiet_after(&mut events, first, |c| match c {
                Change::Complete => COMPLETE_DEBOUNCE,
                Change::Partial => RELOAD_DEBOUNCE,
            })
            .await
            else {
                return;
            };
            // Settle (only when the last event did not say the file is complete): sizes and
            // mtimes unchanged across SETTLE_CHECK.
            seen = fingerprint(&self.dir);
            if last == Change::Partial {
                loop {
                    tokio::time::sleep(SETTLE_CHECK).await;
                    let after = fingerprint(&self.dir);
                    if after == seen {
                        break;
                    }
                    seen = after;
                }
            }
            while events.try_recv().is_ok() {}
            self.rescan().await;
        }
    }

    /// One reconciliation; publishes the new set when its plugins changed.
    async fn rescan(&mut self) {
        let current = self.tx.borrow().clone();
        let started = std::time::Instant::now();
        let checks = self.checks.lock().map(|c| c.clone()).unwrap_or_default();
        let next = match PluginSet::scan(&self.rt, &self.dir, &current, &checks).await {
            Ok(next) => next,
            Err(e) => {
                if self.reported.insert(e.to_string()) {
                    tracing::error!("{e}; keeping the loaded plugins");
                }
                return;
            }
        };
        let now: HashSet<String> = next.errors().iter().map(|e| e.to_string()).collect();
        for e in &now {
            if !self.reported.contains(e) {
                tracing::error!("{e}");
            }
        }
        self.reported = now;
        let identity = |s: &PluginSet| -> Vec<(String, PathBuf, String)> {
            s.iter()
                .map(|p| {
                    (
                        p.meta().name.to_string(),
                        p.path().to_path_buf(),
                        p.sha256().to_string(),
                    )
                })
                .collect()
        };
        let errors =
            |s: &PluginSet| -> Vec<String> { s.errors().iter().map(|e| e.to_string()).collect() };
        if identity(&current) == identity(&next) {
            if errors(&current) != errors(&next) {
                // Same plugins, new refusals: publish so that status readers see them.
                let _ = self.tx.send(Arc::new(next));
            }
            return;
        }
        for p in next.iter() {
            match current.get(p.meta().name.as_str()) {
                Some(old) if old.sha256() == p.sha256() => {}
                Some(old) => tracing::info!(
                    plugin = %p.meta().name, from = %old.meta().version, to = %p.meta().version,
                    file = %p.path().display(), "plugin replaced"
                ),
                None => tracing::info!(
                    plugin = %p.meta().name, version = %p.meta().version,
                    file = %p.path().display(), "plugin added"
                ),
            }
        }
        for old in current.iter() {
            if next.get(old.meta().name.as_str()).is_none() {
                tracing::info!(plugin = %old.meta().name, "plugin removed; its task is unscheduled after runs in flight");
            }
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "plugins rescanned"
        );
        self.swaps.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Arc::new(next));
    }
}

/// (path, size, mtime) of every `.wasm` file: cheap, no reads.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "wasm") {
                let m = e.metadata().ok()?;
                Some((path, m.len(), m.modified().ok()))
            } else {
                None
            }
        })
        .collect();
    v.sort();
    v
}
