//! The admin API's JSON shapes: what `GET` endpoints answer and `POST` endpoints accept.
//! Field names are the wire format (snake_case); timestamps are UTC RFC 3339 strings with
//! microseconds and a `Z` (`2026-12-04T15:40:46.123456Z`); durations are seconds.
//!
//! These are the contract between the server ([`super::ControlPlane`]), the HTTP layer, the
//! `quarry` CLI verbs and the dashboard; docs/api.md shows each with an example.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/tasks` (a list) and `GET /api/v1/tasks/{task}` (one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Task name (= plugin name).
    pub name: String,
    /// `task_class` as configured (a ROCK class path or the plugin name).
    pub task_class: String,
    /// The plugin version this task runs now, if a plugin of its name is loaded.
    pub plugin: Option<PluginRef>,
    /// Interval between scheduled ticks.
    pub interval_seconds: u64,
    /// When the next scheduled tick is due (`None` while paused or when no plugin is loaded).
    pub next_tick: Option<String>,
    /// Paused through the API, or halted by `on_failure: halt`.
    pub paused: bool,
    /// Why (`"paused through the API by …"`, `"halted: tick 42 failed on 3 workers"`).
    pub paused_reason: Option<String>,
    /// `ignore`, `retry` or `halt`.
    pub on_failure: String,
    /// Retries per worker for `on_failure: retry`.
    pub retries: u32,
    /// The tick in flight, if any.
    pub in_flight: Option<TickRef>,
    /// The last finished tick, if any.
    pub last_tick: Option<TickRef>,
    /// Workers on which this task is quarantined now.
    pub quarantined_workers: u32,
    /// A trigger through the API is refused until then (`quarry.api.trigger_cooldown_seconds`
    /// after the last one; ROCK's 60 s by default).
    pub cooldown_until: Option<String>,
}

/// A plugin version, as a task refers to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginRef {
    /// Its name.
    pub name: String,
    /// Its own version.
    pub version: String,
    /// SHA-256 of its file, hex.
    pub sha256: String,
}

/// A tick, as a task refers to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TickRef {
    /// Tick id (in the state database).
    pub id: i64,
    /// `schedule`, `api` or `cli`.
    pub trigger: String,
    /// Start.
    pub started_at: String,
    /// End; `None` while in flight.
    pub ended_at: Option<String>,
    /// ROCK's aggregate (`success`, `partial`, `failed`, `skipped`, `no_workers`), or
    /// `running`, `cancelled`, `interrupted`.
    pub outcome: String,
}

/// `GET /api/v1/workers`: every worker discovery knows now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Address as configured (`local`, `10.0.0.7:22555`).
    pub address: String,
    /// Host part, as reports name it (`worker_ip`).
    pub ip: String,
    /// When a run last reached it (any task), if ever.
    pub last_seen: Option<String>,
    /// The last run of each task on it.
    pub last_runs: Vec<LastRun>,
}

/// The last run of one task on one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// Task name.
    pub task: String,
    /// Run id.
    pub run_id: i64,
    /// Outcome (`success`, `started`, `skipped`, `failed`, `timeout`, `interrupted`,
    /// `cancelled`, `quarantined`, `rejected`).
    pub outcome: String,
    /// When it ended.
    pub at: String,
}

/// `GET /api/v1/grid`: the dashboard's task × worker matrix in one answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridView {
    /// Column order: task names.
    pub tasks: Vec<String>,
    /// Row order: worker addresses.
    pub workers: Vec<String>,
    /// `cells[w][t]`: the last run of `tasks[t]` on `workers[w]`, if any.
    pub cells: Vec<Vec<Option<GridCell>>>,
}

/// One cell of [`GridView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridCell {
    /// Run id (for `GET /api/v1/runs/{id}`).
    pub run_id: i64,
    /// Outcome.
    pub outcome: String,
    /// When it ended.
    pub at: String,
}

/// `GET /api/v1/runs/{id}`, and each item of `GET /api/v1/runs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    /// Run id.
    pub id: i64,
    /// Tick it belongs to.
    pub tick_id: i64,
    /// Task name.
    pub task: String,
    /// Worker address.
    pub worker: String,
    /// Plugin version.
    pub plugin_version: String,
    /// Plugin file hash.
    pub plugin_sha256: String,
    /// Attempt number (1 = first try; more with `on_failure: retry`).
    pub attempt: u32,
    /// Start.
    pub started_at: String,
    /// End; `None` while in flight.
    pub ended_at: Option<String>,
    /// Outcome, `running` while in flight.
    pub outcome: String,
    /// ROCK's `error_type` (`TimeoutError`, `ConnectionError`, `TaskResultFailed`, …).
    pub error_type: Option<String>,
    /// Error text (clipped).
    pub error: Option<String>,
    /// Pid the run reported.
    pub pid: Option<u32>,
    /// The status file's `extra` (the task's detail). Only in the single-run answer; lists
    /// leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// `GET /api/v1/runs` query: all filters optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only this task.
    pub task: Option<String>,
    /// Only this worker (address).
    pub worker: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Runs started at or after (RFC 3339).
    pub since: Option<String>,
    /// Runs started before (RFC 3339).
    pub until: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// Cursor: runs with an id below this one (newest first). From [`RunsPage::next`].
    pub before: Option<i64>,
}

/// `GET /api/v1/runs` answer: newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunsPage {
    /// The runs (without `detail`).
    pub runs: Vec<RunView>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next: Option<i64>,
}

/// `GET /api/v1/plugins`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginsView {
    /// Loaded plugins.
    pub loaded: Vec<PluginView>,
    /// Files refused, with the reason.
    pub refused: Vec<RefusedPlugin>,
}

/// A loaded plugin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginView {
    /// Name.
    pub name: String,
    /// Its own version.
    pub version: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// `quarry:task` version it targets.
    pub wit_version: String,
    /// File.
    pub path: String,
    /// False for tasks that start daemons.
    pub idempotent: bool,
    /// Interval used when the config gives none.
    pub default_interval_seconds: u64,
    /// Its params documentation.
    pub params_doc: String,
    /// Whether it declares grants (exports `capabilities`, WIT 0.1.1); false: "undeclared",
    /// unrestricted unless the config narrows it, never run in a dry run.
    pub declares_grants: bool,
    /// What it declared for the params of the task configured for it (before the config's
    /// narrowing); `null` when undeclared or no task uses it.
    pub grants: Option<crate::grants::Grants>,
}

/// A refused plugin file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedPlugin {
    /// The file.
    pub path: String,
    /// Why (the load error's message).
    pub reason: String,
}

/// `GET /api/v1/quarantines`: each (task, worker) quarantined now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuarantineView {
    /// Task.
    pub task: String,
    /// Worker address.
    pub worker: String,
    /// Since when.
    pub since: String,
    /// Until when (then one probe run is let through; backoff doubles on failure).
    pub until: String,
    /// Consecutive traps, memory overruns or deadlines that led here.
    pub consecutive_failures: u32,
    /// The last failure's message.
    pub reason: String,
}

/// `GET /api/v1/audit`: mutating calls, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Entry id.
    pub id: i64,
    /// When.
    pub at: String,
    /// Who: `token` (the bearer token's holder), `anonymous` (no valid token: a refused call)
    /// or `cli`.
    pub actor: String,
    /// What: `trigger`, `taskset`, `cancel`, `pause`, `resume`, `lift_quarantine`.
    pub action: String,
    /// On what: a task name, `task@worker`, or (tasksets) task names comma-separated.
    pub target: String,
    /// The request body, if any.
    pub body: Option<serde_json::Value>,
    /// HTTP status answered.
    pub status: u16,
}

/// `POST /api/v1/tasks/{task}/trigger` body (may be empty: all workers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Worker addresses to run on; empty or absent = every worker.
    #[serde(default)]
    pub workers: Vec<String>,
}

/// `POST /api/v1/tasksets` (and ROCK's `POST /apis/envs/sandbox/v1/ops/tasksets`) body:
/// ROCK's ops API shape, `{"spec": {"taskTypes": [...], "targetWorkers": [...]}}`; the
/// snake_case names are accepted too. An empty body is `{"spec": {}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksetRequest {
    /// What to trigger where.
    #[serde(default)]
    pub spec: TasksetSpec,
}

/// [`TasksetRequest::spec`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksetSpec {
    /// Tasks to trigger (names or ROCK class paths). Absent: as ROCK, every configured task
    /// that is safe to repeat (its plugin is idempotent).
    #[serde(default, rename = "taskTypes", alias = "task_types")]
    pub task_types: Option<Vec<String>>,
    /// Workers; absent or empty = every worker.
    #[serde(default, rename = "targetWorkers", alias = "target_workers")]
    pub target_workers: Option<Vec<String>>,
}

/// `POST /api/v1/tasksets` answer: one result per task, in request order. The status is 202
/// when every task was triggered, 207 when some (or all) were refused; each result then has
/// its own status and error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TasksetAnswer {
    /// ROCK's phase of the whole set: `Running` (all triggered), `Partial` (some),
    /// `RateLimited` (none: every refusal was a cooldown) or `Rejected` (none).
    pub phase: String,
    /// Per task.
    pub results: Vec<TasksetResult>,
}

/// One task of a [`TasksetAnswer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TasksetResult {
    /// The task, as named in the request.
    pub task: String,
    /// The status a single trigger of it would have answered (202, 404, 409, 429, …).
    pub status: u16,
    /// What it started, when triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered: Option<Triggered>,
    /// Why not, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// What a trigger started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Triggered {
    /// Task.
    pub task: String,
    /// The tick started (its runs appear in `GET /api/v1/runs?task=…`).
    pub tick_id: i64,
    /// Workers it runs on.
    pub workers: Vec<String>,
}

/// `POST /api/v1/tasks/{task}/pause` body (optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Why, shown in the task view.
    pub reason: Option<String>,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`: the API answers.
    pub status: String,
    /// Quarry's version.
    pub version: String,
}

/// Every error answer: `{"error": "...", "field": "workers[1]"}` with a 4xx/5xx status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong, naming the thing.
    pub error: String,
    /// The request field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For 429: seconds until the cooldown ends (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}
