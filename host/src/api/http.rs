//! The admin API over HTTP: [`router`] maps every endpoint onto the [`ControlPlane`] trait
//! (the only thing it knows of the server), and [`serve`] runs it on a listener until a
//! shutdown future resolves. docs/api.md documents each endpoint.
//!
//! Every answer carries `X-Content-Type-Options: nosniff`, a self-only Content-Security-Policy
//! and `Cache-Control: no-store` (static files: `no-cache` and an `ETag`). Every non-2xx answer
//! is a JSON [`ErrorBody`](super::model::ErrorBody); a panic in a handler is a 500, a handler
//! slower than [`REQUEST_TIMEOUT`] a 503, never a dropped connection.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::FutureExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::auth::{Access, ApiAuth};
use super::model::{
    Health, PauseRequest, TasksetAnswer, TasksetRequest, TasksetResult, TriggerRequest,
};
use super::reply::{ApiError, JsonBody, empty, json, no_content};
use super::{Actor, ControlError, ControlPlane, query};

/// A request is answered within this, or gets 503: control-plane calls are snapshots and
/// inserts, so anything slower is a stuck server, and the client should not hang with it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client must send its request head within this (slow-loris connections are closed).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog. The dashboard and the CLI
/// need a handful; the cap keeps a flood from exhausting file descriptors the runs need.
pub const MAX_CONNECTIONS: usize = 256;
/// After shutdown, requests in flight get this long to finish before their connections are
/// dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Prometheus' text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics' text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Scripts, styles, images and fetches from the server itself only; no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's files: path below `/ui/` (`index.html` for `/`) → content type and bytes.
pub type Assets = fn(&str) -> Option<(&'static str, &'static [u8])>;

/// No dashboard: every path is unknown.
pub fn no_assets(_path: &str) -> Option<(&'static str, &'static [u8])> {
    None
}

/// Records one answered request: its route label (see [`route_label`]), HTTP status and
/// time to answer (`quarry_api_requests_total`, `quarry_api_request_duration_seconds`).
pub type RecordRequest = Arc<dyn Fn(&'static str, u16, Duration) + Send + Sync>;

/// `GET /metrics`: renders the registry as text of `content_type`; and, with `record`, every
/// request counted.
#[derive(Clone)]
pub struct Metrics {
    /// [`PROMETHEUS_TEXT`], [`OPENMETRICS_TEXT`], or what the renderer documents.
    pub content_type: &'static str,
    /// Renders the whole exposition; called once per scrape.
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    /// Called once per answered request, `/metrics` included.
    pub record: Option<RecordRequest>,
}

/// The `route` label of requests that matched no route (unknown paths, whatever they are).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// What the handlers share: cheap to clone.
#[derive(Clone)]
struct Ctx {
    control: Arc<dyn ControlPlane>,
    auth: Arc<ApiAuth>,
    metrics: Option<Metrics>,
    assets: Assets,
}

/// The admin API's router: the REST API under `/api/v1`, ROCK's tasksets path, `/healthz`,
/// `/metrics` (404 when `metrics` is `None`) and the dashboard (`/`, `/ui/…`) from `assets`.
pub fn router(
    control: Arc<dyn ControlPlane>,
    auth: ApiAuth,
    metrics: Option<Metrics>,
    assets: Assets,
) -> Router {
    let ctx = Ctx {
        control,
        auth: Arc::new(auth),
        metrics,
        assets,
    };
    let reads = Router::new()
        .route("/api/v1/tasks", get(tasks))
        .route("/api/v1/tasks/{task}", get(task))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/grid", get(grid))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/quarantines", get(quarantines))
        .route("/api/v1/audit", get(audit))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), read_auth));
    // Mutations check the token themselves, so that refusals reach the audit log too.
    let mutations = Router::new()
        .route("/api/v1/tasks/{task}/{action}", post(task_action))
        .route("/api/v1/tasksets", post(taskset))
        .route("/apis/envs/sandbox/v1/ops/tasksets", post(taskset))
        .route(
            "/api/v1/quarantines/{task}/{worker}",
            delete(lift_quarantine),
        );
    let public = Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset));
    reads
        .merge(mutations)
        .merge(public)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

/// The `route` label of a request: the template of the route it matched
/// (`/api/v1/tasks/{task}`, never the raw path, so the label's values are bounded by the
/// router's routes), or [`UNMATCHED_ROUTE`].
///
/// Templates are interned once each (the metrics take `&'static str` labels): the set is the
/// router's, a few dozen strings at most.
pub fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let Some(template) = matched.map(MatchedPath::as_str) else {
        return UNMATCHED_ROUTE;
    };
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = seen.get(template) {
        return known;
    }
    let interned: &'static str = Box::leak(template.into());
    seen.insert(interned);
    interned
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// requests in flight finish within [`SHUTDOWN_GRACE`] and returns.
///
/// Strategy: one task per connection (HTTP/1.1, keep-alive) with a header read timeout; a
/// semaphore caps the connections; hyper's graceful shutdown closes idle connections at once
/// and busy ones after their answer.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("quarry.api: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("quarry.api: connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "quarry.api: requests still in flight {} s after shutdown; dropping them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// Around every request: a panic becomes a 500, a request slower than [`REQUEST_TIMEOUT`] a
/// 503; every answer gets the security headers and is counted in the metrics (when they
/// record requests) by route template and status.
async fn guard(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let route = route_label(req.extensions().get::<MatchedPath>());
    let answer = tokio::time::timeout(
        REQUEST_TIMEOUT,
        AssertUnwindSafe(next.run(req)).catch_unwind(),
    )
    .await;
    let mut response = match answer {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => {
            let why = panic_message(&*panic);
            tracing::error!("quarry.api: handler of {path} panicked: {why}");
            ApiError::internal(format!("internal error while answering {path}: {why}"))
                .into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server did not answer {path} within {} s; try again",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if let Some(record) = ctx.metrics.as_ref().and_then(|m| m.record.as_ref()) {
        record(route, response.status().as_u16(), started.elapsed());
    }
    response
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("(not text)"))
}

/// Reads need the token on a non-loopback listener (and a loopback `Host` without one).
async fn read_auth(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let h = req.headers();
    match ctx.auth.check(
        Access::Read,
        header_str(h, header::AUTHORIZATION),
        header_str(h, header::HOST),
    ) {
        Ok(_) => next.run(req).await,
        Err(refusal) => ApiError::from(refusal).into_response(),
    }
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    let mut e = ApiError::no_route(uri.path());
    if method != Method::GET && method != Method::HEAD {
        e.body.error = format!(
            "no such endpoint: {method} {} (see docs/api.md)",
            uri.path()
        );
    }
    e
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method} (see docs/api.md)", uri.path()),
    )
}

/// A path parameter that is not valid percent-encoded UTF-8 (400).
fn path_error(r: PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("the request path: {}", r.body_text()),
    )
}

/// A read: the control plane's answer as JSON, or its error.
fn answer<T: serde::Serialize>(r: Result<T, ControlError>) -> Response {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn healthz() -> Response {
    json(
        StatusCode::OK,
        &Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
    )
}

async fn tasks(State(ctx): State<Ctx>) -> Response {
    answer(ctx.control.tasks().await)
}

async fn task(
    State(ctx): State<Ctx>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(path_error)?;
    let all = ctx.control.tasks().await?;
    let known = all
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match all.iter().find(|t| t.name == name) {
        Some(t) => Ok(json(StatusCode::OK, t)),
        None => Err(ControlError::UnknownTask { task: name, known }.into()),
    }
}

async fn workers(State(ctx): State<Ctx>) -> Response {
    answer(ctx.control.workers().await)
}

async fn grid(State(ctx): State<Ctx>) -> Response {
    answer(ctx.control.grid().await)
}

async fn runs(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = query::runs(q.as_deref())?;
    Ok(answer(ctx.control.runs(q).await))
}

async fn run(
    State(ctx): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("{id:?} is not a run id (an integer)")))?;
    Ok(answer(ctx.control.run(id).await))
}

async fn plugins(State(ctx): State<Ctx>) -> Response {
    answer(ctx.control.plugins().await)
}

async fn quarantines(State(ctx): State<Ctx>) -> Response {
    answer(ctx.control.quarantines().await)
}

async fn audit(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = query::audit(q.as_deref())?;
    Ok(answer(ctx.control.audit(q.limit, q.before).await))
}

async fn metrics_text(State(ctx): State<Ctx>) -> Result<Response, ApiError> {
    let Some(m) = ctx.metrics else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics are not enabled on this server",
        ));
    };
    let text = (m.render)();
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(m.content_type),
        )],
        text,
    )
        .into_response())
}

async fn index(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    static_file(&ctx, "index.html", &headers)
}

async fn asset(
    State(ctx): State<Ctx>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(path) = path.map_err(path_error)?;
    Ok(static_file(&ctx, &path, &headers))
}

/// A dashboard file, revalidated by `ETag` (the files are not fingerprinted).
fn static_file(ctx: &Ctx, path: &str, headers: &HeaderMap) -> Response {
    let Some((content_type, bytes)) = (ctx.assets)(path) else {
        return ApiError::new(StatusCode::NOT_FOUND, format!("no dashboard file {path:?}"))
            .into_response();
    };
    let etag = format!("\"{:016x}\"", fnv1a(bytes));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let cache = [
        (header::ETAG, HeaderValue::from_str(&etag).ok()),
        (
            header::CACHE_CONTROL,
            Some(HeaderValue::from_static("no-cache")),
        ),
    ];
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_str(content_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            )],
            bytes,
        )
            .into_response()
    };
    for (name, value) in cache {
        if let Some(v) = value {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

/// FNV-1a, 64 bits: an `ETag` that costs a pass over the file and stays the same across
/// restarts of the same build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Who a mutation's audit entry names as its target.
enum Target {
    /// A task or `task@worker`.
    Fixed(String),
    /// The tasks of a taskset body (`*` for the default set).
    Taskset,
}

/// Runs a mutating call: checks the token (before reading the body), reads and checks the
/// body, runs `act` (a panic in it is a 500), and records the answer's status in the audit
/// log before sending it.
async fn mutate<F, Fut>(
    ctx: &Ctx,
    action: &str,
    target: Target,
    headers: &HeaderMap,
    body: Body,
    act: F,
) -> Response
where
    F: FnOnce(JsonBody) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let checked = ctx.auth.check(
        Access::Mutate,
        header_str(headers, header::AUTHORIZATION),
        header_str(headers, header::HOST),
    );
    let (actor, outcome, logged) = match checked {
        Err(refusal) => (Actor::Anonymous, Err(ApiError::from(refusal)), None),
        Ok(actor) => match JsonBody::read(headers, body).await {
            Err(e) => (actor, Err(e), None),
            Ok(body) => {
                let logged = body.value.clone();
                let outcome = match AssertUnwindSafe(act(body)).catch_unwind().await {
                    Ok(r) => r,
                    Err(panic) => Err(ApiError::internal(format!(
                        "internal error during {action}: {}",
                        panic_message(&*panic)
                    ))),
                };
                (actor, outcome, logged)
            }
        },
    };
    let response = outcome.unwrap_or_else(IntoResponse::into_response);
    let target = match target {
        Target::Fixed(t) => t,
        Target::Taskset => taskset_target(logged.as_ref()),
    };
    ctx.control
        .record_audit(
            actor,
            action.to_string(),
            target,
            logged,
            response.status().as_u16(),
        )
        .await;
    response
}

/// `a,b` from a taskset body's `spec.taskTypes`, `*` when absent.
fn taskset_target(body: Option<&serde_json::Value>) -> String {
    let spec = body.and_then(|b| b.get("spec"));
    let types = spec.and_then(|s| s.get("taskTypes").or_else(|| s.get("task_types")));
    match types.and_then(|t| t.as_array()) {
        Some(list) => list
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        None => "*".into(),
    }
}

/// Worker addresses of a request: each non-empty, none twice.
fn check_workers(field: &str, workers: &[String]) -> Result<(), ApiError> {
    for (i, w) in workers.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if w.trim().is_empty() {
            return Err(ApiError::invalid(&at, "is empty: give a worker address"));
        }
        if let Some(first) = workers[..i].iter().position(|x| x == w) {
            return Err(ApiError::invalid(
                &at,
                format!("{w:?} is already {field}[{first}]"),
            ));
        }
    }
    Ok(())
}

/// What `POST /api/v1/tasks/{task}/{action}` does.
#[derive(Clone, Copy)]
enum TaskAction {
    Trigger,
    Cancel,
    Pause,
    Resume,
}

impl TaskAction {
    fn parse(action: &str) -> Option<TaskAction> {
        Some(match action {
            "trigger" => TaskAction::Trigger,
            "cancel" => TaskAction::Cancel,
            "pause" => TaskAction::Pause,
            "resume" => TaskAction::Resume,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            TaskAction::Trigger => "trigger",
            TaskAction::Cancel => "cancel",
            TaskAction::Pause => "pause",
            TaskAction::Resume => "resume",
        }
    }

    /// The call itself, once the body is read: trigger → 202 [`Triggered`], cancel → 202
    /// (the runs stop at their next host call), pause and resume → 204.
    async fn run(
        self,
        control: &dyn ControlPlane,
        task: String,
        body: JsonBody,
    ) -> Result<Response, ApiError> {
        match self {
            TaskAction::Trigger => {
                let req: TriggerRequest = body.parse()?;
                check_workers("workers", &req.workers)?;
                let t = control.trigger(task, req.workers).await?;
                Ok(json(StatusCode::ACCEPTED, &t))
            }
            TaskAction::Cancel => {
                body.parse::<Empty>()?;
                control.cancel(task).await?;
                Ok(empty(StatusCode::ACCEPTED))
            }
            TaskAction::Pause => {
                let req: PauseRequest = body.parse()?;
                control.pause(task, req.reason).await?;
                Ok(no_content())
            }
            TaskAction::Resume => {
                body.parse::<Empty>()?;
                control.resume(task).await?;
                Ok(no_content())
            }
        }
    }
}

async fn task_action(
    State(ctx): State<Ctx>,
    method: Method,
    uri: axum::http::Uri,
    names: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((task, action)) = names.map_err(path_error)?;
    let Some(action) = TaskAction::parse(&action) else {
        return Err(no_route(method, uri).await);
    };
    let control = ctx.control.clone();
    let target = Target::Fixed(task.clone());
    Ok(mutate(
        &ctx,
        action.name(),
        target,
        &headers,
        body,
        |body| async move { action.run(&*control, task, body).await },
    )
    .await)
}

async fn lift_quarantine(
    State(ctx): State<Ctx>,
    names: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((task, worker)) = names.map_err(path_error)?;
    let control = ctx.control.clone();
    let target = Target::Fixed(format!("{task}@{worker}"));
    Ok(mutate(
        &ctx,
        "lift_quarantine",
        target,
        &headers,
        body,
        |body| async move {
            body.parse::<Empty>()?;
            control.lift_quarantine(task, worker).await?;
            Ok(no_content())
        },
    )
    .await)
}

/// The body of calls that take none: empty or `{}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

async fn taskset(State(ctx): State<Ctx>, headers: HeaderMap, body: Body) -> Response {
    let control = ctx.control.clone();
    mutate(
        &ctx,
        "taskset",
        Target::Taskset,
        &headers,
        body,
        |body| async move {
            let req: TasksetRequest = body.parse()?;
            run_taskset(&*control, req).await
        },
    )
    .await
}

/// Triggers each task of a taskset in turn; see [`TasksetAnswer`] for the answer.
async fn run_taskset(
    control: &dyn ControlPlane,
    req: TasksetRequest,
) -> Result<Response, ApiError> {
    let workers = req.spec.target_workers.unwrap_or_default();
    check_workers("spec.targetWorkers", &workers)?;
    let names = match req.spec.task_types {
        Some(names) => {
            if names.is_empty() {
                return Err(ApiError::invalid(
                    "spec.taskTypes",
                    "is empty: name the tasks to trigger, or leave it out for every idempotent task",
                ));
            }
            for (i, n) in names.iter().enumerate() {
                if let Some(first) = names[..i].iter().position(|x| x == n) {
                    return Err(ApiError::invalid(
                        &format!("spec.taskTypes[{i}]"),
                        format!("{n:?} is already spec.taskTypes[{first}]"),
                    ));
                }
            }
            names
        }
        None => idempotent_tasks(control).await?,
    };
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let task = crate::plugins::plugin_name_for_class(name.trim()).to_string();
        match control.trigger(task, workers.clone()).await {
            Ok(t) => results.push(TasksetResult {
                task: name,
                status: StatusCode::ACCEPTED.as_u16(),
                triggered: Some(t),
                error: None,
            }),
            Err(e) => {
                let request_error = matches!(
                    e,
                    ControlError::UnknownWorker { .. } | ControlError::Invalid { .. }
                );
                let e = ApiError::from(e).refield("workers", "spec.targetWorkers");
                // A bad worker list fails every task alike: refuse the whole request while
                // nothing has started.
                if request_error && results.is_empty() {
                    return Err(e);
                }
                results.push(TasksetResult {
                    task: name,
                    status: e.status.as_u16(),
                    triggered: None,
                    error: Some(e.body),
                });
            }
        }
    }
    let started = results.iter().filter(|r| r.triggered.is_some()).count();
    let (status, phase) = if started == results.len() {
        (StatusCode::ACCEPTED, "Running")
    } else if started > 0 {
        (StatusCode::MULTI_STATUS, "Partial")
    } else if results.iter().all(|r| r.status == 429) {
        (StatusCode::MULTI_STATUS, "RateLimited")
    } else {
        (StatusCode::MULTI_STATUS, "Rejected")
    };
    Ok(json(
        status,
        &TasksetAnswer {
            phase: phase.into(),
            results,
        },
    ))
}

/// ROCK's default taskset (its `*_cleanup`/`*_prune`/`*_archive` whitelist): every
/// configured task whose loaded plugin is idempotent.
async fn idempotent_tasks(control: &dyn ControlPlane) -> Result<Vec<String>, ApiError> {
    let tasks = control.tasks().await?;
    let plugins = control.plugins().await?;
    let names: Vec<String> = tasks
        .into_iter()
        .filter(|t| {
            t.plugin.as_ref().is_some_and(|p| {
                plugins
                    .loaded
                    .iter()
                    .any(|l| l.name == p.name && l.version == p.version && l.idempotent)
            })
        })
        .map(|t| t.name)
        .collect();
    if names.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no configured task runs an idempotent plugin: name the tasks in spec.taskTypes",
        ));
    }
    Ok(names)
}
