//! The admin API of `quarry serve`: a REST API, Prometheus metrics and the dashboard, on
//! `quarry.api.listen` (default `127.0.0.1:8080`).
//!
//! Layering: the HTTP layer (routing, auth, body limits, audit, error mapping) knows only the
//! [`ControlPlane`] trait; `quarry serve` implements it over its scheduler, plugin set and
//! state database, and tests implement it with a scripted fake. The JSON shapes are in
//! [`model`]; docs/api.md documents every endpoint with an example.
//!
//! - [`http`]: the router ([`http::router`]) and [`http::serve`].
//! - [`auth`]: the bearer-token policy ([`auth::ApiAuth`]).
//! - [`client`]: the HTTP client the `quarry` CLI verbs use.

pub mod auth;
pub mod client;
pub mod dashboard;
pub mod http;
pub mod model;
mod query;
mod reply;

use futures::future::BoxFuture;

use model::{
    AuditEntry, GridView, PluginsView, QuarantineView, RunView, RunsPage, RunsQuery, TaskView,
    Triggered, WorkerView,
};

/// Why a control-plane call was refused. The HTTP layer maps each to a status code and an
/// [`model::ErrorBody`]; every message names the thing and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such task is configured (404).
    #[error("no task named {task:?} is configured (configured: {known})")]
    UnknownTask {
        /// The name asked for.
        task: String,
        /// The configured ones, comma-separated.
        known: String,
    },
    /// A worker address is not one discovery knows (400, `field` names the entry).
    #[error("{field}: no worker {worker:?} is known (see GET /api/v1/workers)")]
    UnknownWorker {
        /// The request field (`workers[1]`).
        field: String,
        /// The address asked for.
        worker: String,
    },
    /// No such run (404).
    #[error("no run with id {0}")]
    UnknownRun(i64),
    /// No such quarantine (404).
    #[error("task {task:?} is not quarantined on worker {worker:?}")]
    NotQuarantined {
        /// Task.
        task: String,
        /// Worker.
        worker: String,
    },
    /// The task was triggered less than its cooldown ago (429, `Retry-After`).
    #[error(
        "task {task:?} was triggered {ago_seconds} s ago; try again in {retry_after_seconds} s"
    )]
    Cooldown {
        /// Task.
        task: String,
        /// Since the last trigger.
        ago_seconds: u64,
        /// Until the cooldown ends.
        retry_after_seconds: u64,
    },
    /// The request conflicts with the task's state (409): a tick already in flight for a
    /// trigger, none in flight for a cancel, no plugin loaded.
    #[error("{0}")]
    Conflict(String),
    /// A request value is invalid (400).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The server is shutting down or its state database failed (503).
    #[error("{0}")]
    Unavailable(String),
}

/// Who made a call, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A caller that presented the bearer token.
    Token,
    /// A caller that presented no valid token. Mutating calls always need the token, so
    /// audit entries with this actor are refusals (401, 403).
    Anonymous,
}

impl Actor {
    /// The audit log's name for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Actor::Token => "token",
            Actor::Anonymous => "anonymous",
        }
    }
}

/// What the admin API can see and do. Implemented by `quarry serve` over its scheduler,
/// plugins and state database; reads must be cheap (snapshots, indexed queries) because the
/// dashboard polls them during large ticks. Every call must return promptly (a trigger starts
/// a tick, it does not wait for it): the HTTP layer gives up on a request after
/// [`http::REQUEST_TIMEOUT`] and answers 503.
pub trait ControlPlane: Send + Sync + 'static {
    /// Every configured task.
    fn tasks(&self) -> BoxFuture<'_, Result<Vec<TaskView>, ControlError>>;
    /// Every worker discovery knows, with the last run of each task on it.
    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerView>, ControlError>>;
    /// The task × worker matrix of last outcomes.
    fn grid(&self) -> BoxFuture<'_, Result<GridView, ControlError>>;
    /// Runs matching `query`, newest first, one page.
    fn runs(&self, query: RunsQuery) -> BoxFuture<'_, Result<RunsPage, ControlError>>;
    /// One run with its detail.
    fn run(&self, id: i64) -> BoxFuture<'_, Result<RunView, ControlError>>;
    /// Loaded and refused plugins.
    fn plugins(&self) -> BoxFuture<'_, Result<PluginsView, ControlError>>;
    /// Quarantines in force.
    fn quarantines(&self) -> BoxFuture<'_, Result<Vec<QuarantineView>, ControlError>>;
    /// The audit log, newest first, `limit` entries below id `before`.
    fn audit(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> BoxFuture<'_, Result<Vec<AuditEntry>, ControlError>>;
    /// Runs `task` now on `workers` (all when empty), outside its schedule; never overlaps a
    /// tick in flight of the same task; subject to the per-task cooldown.
    fn trigger(
        &self,
        task: String,
        workers: Vec<String>,
    ) -> BoxFuture<'_, Result<Triggered, ControlError>>;
    /// Cancels `task`'s tick in flight: runs not started are not started, runs in flight are
    /// stopped at their next host call (outcome `cancelled`).
    fn cancel(&self, task: String) -> BoxFuture<'_, Result<(), ControlError>>;
    /// Pauses `task`: no scheduled tick runs until resumed (a tick in flight finishes).
    fn pause(
        &self,
        task: String,
        reason: Option<String>,
    ) -> BoxFuture<'_, Result<(), ControlError>>;
    /// Resumes a paused or halted task.
    fn resume(&self, task: String) -> BoxFuture<'_, Result<(), ControlError>>;
    /// Lifts `task`'s quarantine on `worker`.
    fn lift_quarantine(
        &self,
        task: String,
        worker: String,
    ) -> BoxFuture<'_, Result<(), ControlError>>;
    /// Records a mutating call, refused or not: `action` is `trigger`, `taskset`, `cancel`,
    /// `pause`, `resume` or `lift_quarantine`; `target` a task, `task@worker` or (tasksets)
    /// the tasks comma-separated; `body` the request's JSON if it parsed; `status` the HTTP
    /// status answered. The HTTP layer awaits it before sending the answer, so it must be
    /// quick (an insert); it never fails the call.
    fn record_audit(
        &self,
        actor: Actor,
        action: String,
        target: String,
        body: Option<serde_json::Value>,
        status: u16,
    ) -> BoxFuture<'_, ()>;
}
