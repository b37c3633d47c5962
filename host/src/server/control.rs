//! [`ControlPlane`] for `quarry serve`: the admin API's view of the scheduler (task loops'
//! handles and status), the plugin set, discovery's workers and the state database.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::api::model::{
    AuditEntry, GridCell, GridView, LastRun, PluginRef, PluginView, PluginsView, QuarantineView,
    RefusedPlugin, RunView, RunsPage, RunsQuery, TaskView, TickRef, Triggered, WorkerView,
};
use crate::api::{Actor, ControlError, ControlPlane};
use crate::config::TaskConfig;
use crate::plugins::{PluginSet, plugin_name_for_class};
use crate::report::rfc3339;
use crate::scheduler::{TaskHandle, TickEnv, TickInfo, Trigger};
use crate::state::{self, Page, RunFilter, RunId, RunRow, StateHandle};
use crate::task::TaskName;
use crate::workers::WorkerAddr;

/// Default and largest page of `GET /api/v1/runs`.
const RUNS_PAGE_DEFAULT: u32 = 100;
const RUNS_PAGE_MAX: u32 = 1000;

/// What the admin API sees of a running server.
pub struct ServerControl {
    pub(super) handles: watch::Receiver<Arc<BTreeMap<TaskName, TaskHandle>>>,
    pub(super) env: watch::Receiver<Arc<TickEnv>>,
    pub(super) plugins: watch::Receiver<Arc<PluginSet>>,
    pub(super) tasks: watch::Receiver<Arc<Vec<TaskConfig>>>,
    pub(super) state: Option<StateHandle>,
    /// Least time between two API triggers of one task (config reloads update it).
    pub(super) cooldown: watch::Receiver<Duration>,
    pub(super) last_trigger: Mutex<HashMap<TaskName, Instant>>,
}

fn time(t: DateTime<Utc>) -> String {
    rfc3339(t.into())
}

fn tick_ref(t: &TickInfo) -> TickRef {
    TickRef {
        id: t.id,
        trigger: t.trigger.as_str().into(),
        started_at: rfc3339(t.started_at),
        ended_at: t.ended_at.map(rfc3339),
        outcome: t.outcome.clone(),
    }
}

fn run_view(r: RunRow, with_detail: bool) -> RunView {
    RunView {
        id: r.id.0,
        tick_id: r.tick_id.0,
        task: r.task.to_string(),
        worker: r.worker,
        plugin_version: r.plugin_version,
        plugin_sha256: r.plugin_sha256,
        attempt: r.attempt,
        started_at: time(r.started_at),
        ended_at: r.ended_at.map(time),
        outcome: r.outcome.as_str().into(),
        error_type: r.error_type,
        error: r.error,
        pid: r.pid,
        detail: if with_detail { r.detail } else { None },
    }
}

fn state_err(e: state::StateError) -> ControlError {
    ControlError::Unavailable(format!("state database: {e}"))
}

impl ServerControl {
    fn state(&self) -> Result<&StateHandle, ControlError> {
        self.state.as_ref().ok_or_else(|| {
            ControlError::Unavailable("the state database is off (quarry.state_db: none)".into())
        })
    }

    /// The handle of `task` (a name or a ROCK class path).
    fn handle(&self, task: &str) -> Result<(TaskName, TaskHandle), ControlError> {
        let handles = self.handles.borrow().clone();
        let name = plugin_name_for_class(task.trim());
        match handles.get(name) {
            Some(h) => Ok((h.spec().plugin.clone(), h.clone())),
            None => Err(ControlError::UnknownTask {
                task: task.to_string(),
                known: handles
                    .keys()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The workers named in a request, each known to discovery.
    fn workers(
        &self,
        field: &str,
        asked: &[String],
    ) -> Result<Option<Vec<WorkerAddr>>, ControlError> {
        if asked.is_empty() {
            return Ok(None);
        }
        let env = self.env.borrow().clone();
        let known = env.workers.borrow().clone();
        let port = crate::workers::DEFAULT_ROCKLET_PORT;
        let mut out = Vec::new();
        for (i, w) in asked.iter().enumerate() {
            let unknown = || ControlError::UnknownWorker {
                field: format!("{field}[{i}]"),
                worker: w.clone(),
            };
            let addr = WorkerAddr::parse(w, port).map_err(|_| unknown())?;
            // A host given without its port matches the worker of that host.
            let found = known
                .iter()
                .map(|k| k.addr())
                .find(|k| **k == addr || (!w.contains(':') && k.ip() == addr.ip()))
                .ok_or_else(unknown)?;
            if !out.contains(found) {
                out.push(found.clone());
            }
        }
        Ok(Some(out))
    }

    fn task_view(&self, cfg: &TaskConfig, h: Option<&TaskHandle>, plugins: &PluginSet) -> TaskView {
        let status = h.map(|h| h.status()).unwrap_or_default();
        let cooldown_until = self
            .last_trigger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cfg.plugin)
            .map(|t| *t + *self.cooldown.borrow())
            .filter(|t| *t > Instant::now())
            .map(|t| rfc3339(SystemTime::now() + (t - Instant::now())));
        TaskView {
            name: cfg.plugin.to_string(),
            task_class: cfg.task_class.clone(),
            plugin: plugins.get(cfg.plugin.as_str()).map(|p| PluginRef {
                name: p.meta().name.to_string(),
                version: p.meta().version.clone(),
                sha256: p.sha256().to_string(),
            }),
            interval_seconds: h.map(|h| h.spec().interval.as_secs()).unwrap_or_default(),
            next_tick: status.next_tick.map(rfc3339),
            paused: status.paused.is_some(),
            paused_reason: status.paused.clone(),
            on_failure: cfg.on_failure.as_str().into(),
            retries: match cfg.on_failure {
                crate::config::OnFailure::Retry { retries } => retries,
                _ => 0,
            },
            in_flight: status.in_flight.as_ref().map(tick_ref),
            last_tick: status.last_tick.as_ref().map(tick_ref),
            quarantined_workers: h.map(|h| h.quarantine().list().len() as u32).unwrap_or(0),
            cooldown_until,
        }
    }
}

impl ControlPlane for ServerControl {
    fn tasks(&self) -> BoxFuture<'_, Result<Vec<TaskView>, ControlError>> {
        let handles = self.handles.borrow().clone();
        let plugins = self.plugins.borrow().clone();
        let tasks = self.tasks.borrow().clone();
        let views = tasks
            .iter()
            .map(|t| self.task_view(t, handles.get(t.plugin.as_str()), &plugins))
            .collect();
        Box::pin(async move { Ok(views) })
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerView>, ControlError>> {
        Box::pin(async move {
            let env = self.env.borrow().clone();
            let workers = env.workers.borrow().clone();
            let last = match &self.state {
                Some(s) => s.last_outcomes(None).await.map_err(state_err)?,
                None => Vec::new(),
            };
            let mut by_worker: HashMap<String, Vec<LastRun>> = HashMap::new();
            for l in last {
                by_worker
                    .entry(l.worker.clone())
                    .or_default()
                    .push(LastRun {
                        task: l.task.to_string(),
                        run_id: l.run_id.0,
                        outcome: l.outcome.as_str().into(),
                        at: time(l.ended_at),
                    });
            }
            Ok(workers
                .iter()
                .map(|w| {
                    let address = w.addr().to_string();
                    let last_runs = by_worker.remove(&address).unwrap_or_default();
                    WorkerView {
                        ip: w.addr().ip().to_string(),
                        last_seen: last_runs.iter().map(|r| r.at.clone()).max(),
                        address,
                        last_runs,
                    }
                })
                .collect())
        })
    }

    fn grid(&self) -> BoxFuture<'_, Result<GridView, ControlError>> {
        Box::pin(async move {
            let tasks: Vec<String> = self
                .tasks
                .borrow()
                .iter()
                .map(|t| t.plugin.to_string())
                .collect();
            let env = self.env.borrow().clone();
            let workers: Vec<String> = env
                .workers
                .borrow()
                .iter()
                .map(|w| w.addr().to_string())
                .collect();
            let last = self.state()?.last_outcomes(None).await.map_err(state_err)?;
            let col: HashMap<&str, usize> = tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.as_str(), i))
                .collect();
            let row: HashMap<&str, usize> = workers
                .iter()
                .enumerate()
                .map(|(i, w)| (w.as_str(), i))
                .collect();
            let mut cells = vec![vec![None; tasks.len()]; workers.len()];
            for l in last {
                if let (Some(&r), Some(&c)) = (row.get(l.worker.as_str()), col.get(l.task.as_str()))
                {
                    cells[r][c] = Some(GridCell {
                        run_id: l.run_id.0,
                        outcome: l.outcome.as_str().into(),
                        at: time(l.ended_at),
                    });
                }
            }
            Ok(GridView {
                tasks,
                workers,
                cells,
            })
        })
    }

    fn runs(&self, q: RunsQuery) -> BoxFuture<'_, Result<RunsPage, ControlError>> {
        Box::pin(async move {
            let invalid = |field: &str, reason: String| ControlError::Invalid {
                field: field.into(),
                reason,
            };
            let limit = q.limit.unwrap_or(RUNS_PAGE_DEFAULT);
            if !(1..=RUNS_PAGE_MAX).contains(&limit) {
                return Err(invalid(
                    "limit",
                    format!("{limit} is out of range (1-{RUNS_PAGE_MAX})"),
                ));
            }
            let parse_time =
                |field: &str, v: &Option<String>| -> Result<Option<DateTime<Utc>>, ControlError> {
                    v.as_deref()
                        .map(|s| {
                            DateTime::parse_from_rfc3339(s)
                                .map(|t| t.with_timezone(&Utc))
                                .map_err(|e| {
                                    invalid(field, format!("{s:?} is not an RFC 3339 time: {e}"))
                                })
                        })
                        .transpose()
                };
            let task = match &q.task {
                Some(t) => Some(self.handle(t)?.0),
                None => None,
            };
            let outcome = match &q.outcome {
                Some(o) => Some(state::RunOutcome::parse(o).ok_or_else(|| {
                    invalid("outcome", format!("{o:?} is not an outcome (success, started, skipped, failed, timeout, interrupted, cancelled, quarantined, running)"))
                })?),
                None => None,
            };
            let filter = RunFilter {
                task,
                worker: q.worker.clone(),
                outcome,
                tick: None,
                since: parse_time("since", &q.since)?,
                until: parse_time("until", &q.until)?,
            };
            let page = match q.before {
                Some(b) => Page::before(b, limit),
                None => Page::first(limit),
            };
            let rows = self.state()?.runs(filter, page).await.map_err(state_err)?;
            let next = (rows.len() as u32 == limit)
                .then(|| rows.last().map(|r| r.id.0))
                .flatten();
            Ok(RunsPage {
                runs: rows.into_iter().map(|r| run_view(r, false)).collect(),
                next,
            })
        })
    }

    fn run(&self, id: i64) -> BoxFuture<'_, Result<RunView, ControlError>> {
        Box::pin(async move {
            match self.state()?.run(RunId(id)).await.map_err(state_err)? {
                Some(r) => Ok(run_view(r, true)),
                None => Err(ControlError::UnknownRun(id)),
            }
        })
    }

    fn plugins(&self) -> BoxFuture<'_, Result<PluginsView, ControlError>> {
        let set = self.plugins.borrow().clone();
        let tasks = self.tasks.borrow().clone();
        let grants = |p: &crate::runtime::Plugin| {
            let t = tasks.iter().find(|t| t.plugin == p.meta().name)?;
            p.grants_for(&t.params)?.grants().cloned()
        };
        let view = PluginsView {
            loaded: set
                .iter()
                .map(|p| PluginView {
                    declares_grants: p.declares_grants(),
                    grants: grants(p),
                    name: p.meta().name.to_string(),
                    version: p.meta().version.clone(),
                    sha256: p.sha256().to_string(),
                    wit_version: p.wit_version().to_string(),
                    path: p.path().display().to_string(),
                    idempotent: p.meta().idempotent,
                    default_interval_seconds: p.meta().default_interval.as_secs(),
                    params_doc: p.meta().params_doc.clone(),
                })
                .collect(),
            refused: set
                .errors()
                .iter()
                .map(|e| RefusedPlugin {
                    path: e.path.display().to_string(),
                    reason: e.kind.to_string(),
                })
                .collect(),
        };
        Box::pin(async move { Ok(view) })
    }

    fn quarantines(&self) -> BoxFuture<'_, Result<Vec<QuarantineView>, ControlError>> {
        let handles = self.handles.borrow().clone();
        let views = handles
            .iter()
            .flat_map(|(name, h)| {
                h.quarantine()
                    .list()
                    .into_iter()
                    .map(move |q| QuarantineView {
                        task: name.to_string(),
                        worker: q.worker.to_string(),
                        since: q.entry.since.map(rfc3339).unwrap_or_default(),
                        until: q.entry.until.map(rfc3339).unwrap_or_default(),
                        consecutive_failures: q.entry.consecutive,
                        reason: q.entry.reason,
                    })
            })
            .collect();
        Box::pin(async move { Ok(views) })
    }

    fn audit(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> BoxFuture<'_, Result<Vec<AuditEntry>, ControlError>> {
        Box::pin(async move {
            let page = match before {
                Some(b) => Page::before(b, limit),
                None => Page::first(limit),
            };
            let rows = self.state()?.audit(page).await.map_err(state_err)?;
            Ok(rows
                .into_iter()
                .map(|r| AuditEntry {
                    id: r.id,
                    at: time(r.at),
                    actor: r.actor,
                    action: r.action,
                    target: r.target,
                    body: r.body,
                    status: r.result.parse().unwrap_or(0),
                })
                .collect())
        })
    }

    fn trigger(
        &self,
        task: String,
        workers: Vec<String>,
    ) -> BoxFuture<'_, Result<Triggered, ControlError>> {
        Box::pin(async move {
            let (name, h) = self.handle(&task)?;
            let chosen = self.workers("workers", &workers)?;
            {
                let cooldown = *self.cooldown.borrow();
                let last = self.last_trigger.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = last.get(&name)
                    && at.elapsed() < cooldown
                {
                    let ago = at.elapsed();
                    return Err(ControlError::Cooldown {
                        task: name.to_string(),
                        ago_seconds: ago.as_secs(),
                        retry_after_seconds: (cooldown - ago).as_secs().max(1),
                    });
                }
            }
            let tick = h.trigger(chosen, Trigger::Api).await?;
            self.last_trigger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), Instant::now());
            Ok(Triggered {
                task: name.to_string(),
                tick_id: tick.id,
                workers: tick.workers.iter().map(|w| w.to_string()).collect(),
            })
        })
    }

    fn cancel(&self, task: String) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move { self.handle(&task)?.1.cancel().await })
    }

    fn pause(
        &self,
        task: String,
        reason: Option<String>,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let reason = reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "paused through the admin API".into());
            self.handle(&task)?.1.pause(reason).await
        })
    }

    fn resume(&self, task: String) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move { self.handle(&task)?.1.resume().await })
    }

    fn lift_quarantine(
        &self,
        task: String,
        worker: String,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            let (name, h) = self.handle(&task)?;
            let not = || ControlError::NotQuarantined {
                task: name.to_string(),
                worker: worker.clone(),
            };
            let addr = h
                .quarantine()
                .list()
                .into_iter()
                .map(|q| q.worker)
                .find(|a| a.to_string() == worker || a.ip() == worker)
                .ok_or_else(not)?;
            if !h.quarantine().lift(&addr) {
                return Err(not());
            }
            if let Some(s) = &self.state {
                s.clear_quarantine(&name, &addr.to_string());
            }
            tracing::info!(task = %name, worker = %addr, "quarantine lifted through the admin API");
            Ok(())
        })
    }

    fn record_audit(
        &self,
        actor: Actor,
        action: String,
        target: String,
        body: Option<serde_json::Value>,
        status: u16,
    ) -> BoxFuture<'_, ()> {
        if let Some(s) = &self.state {
            s.append_audit(state::AuditEntry {
                actor: actor.as_str().into(),
                action,
                target,
                body,
                result: status.to_string(),
            });
        }
        Box::pin(async {})
    }
}
