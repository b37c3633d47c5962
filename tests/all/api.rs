//! The admin API over real TCP (127.0.0.1:0) against a scripted fake [`ControlPlane`]: every
//! endpoint, auth, the refusals of bad input (each names its field and mutates nothing), the
//! audit of every mutating call, and the CLI verbs run in-process against it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures::future::BoxFuture;
use quarry_host::api::auth::ApiAuth;
use quarry_host::api::http::{self, Metrics, PROMETHEUS_TEXT};
use quarry_host::api::model::*;
use quarry_host::api::{Actor, ControlError, ControlPlane};
use quarry_host::cli::Cli;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::quarry;
use crate::harness::*;

const TOKEN: &str = "5f0c1e2d3b4a69788796a5b4c3d2e1f0";
const WORKERS: [&str; 2] = ["local", "10.0.0.7:22555"];

/// One audit call the fake received.
#[derive(Clone, Debug, PartialEq)]
struct Audited {
    actor: Actor,
    action: String,
    target: String,
    body: Option<Value>,
    status: u16,
}

/// A control plane with two tasks (`file_cleanup`, idempotent; `image_pull`, not), two
/// workers, one run (id 7) and one quarantine. A trigger starts a cooldown; `script` makes
/// the next call of an operation fail with an error or panic.
#[derive(Default)]
struct Fake {
    mutations: Mutex<Vec<String>>,
    audit: Mutex<Vec<Audited>>,
    cooled: Mutex<HashSet<String>>,
    script: Mutex<HashMap<&'static str, Result<ControlError, &'static str>>>,
    last_runs_query: Mutex<Option<RunsQuery>>,
}

fn task_view(name: &str) -> TaskView {
    TaskView {
        name: name.into(),
        task_class: name.into(),
        plugin: Some(PluginRef {
            name: name.into(),
            version: "0.1.0".into(),
            sha256: "ab".repeat(32),
        }),
        interval_seconds: 3600,
        next_tick: Some("2026-12-04T16:40:46.000000Z".into()),
        paused: name == "image_pull",
        paused_reason: (name == "image_pull").then(|| "paused through the API: disk work".into()),
        on_failure: "ignore".into(),
        retries: 0,
        in_flight: None,
        last_tick: Some(TickRef {
            id: 41,
            trigger: "schedule".into(),
            started_at: "2026-12-04T15:40:46.000000Z".into(),
            ended_at: Some("2026-12-04T15:40:47.000000Z".into()),
            outcome: "success".into(),
        }),
        quarantined_workers: u32::from(name == "file_cleanup"),
        cooldown_until: None,
    }
}

fn run_view(id: i64) -> RunView {
    RunView {
        id,
        tick_id: 41,
        task: "file_cleanup".into(),
        worker: "10.0.0.7:22555".into(),
        plugin_version: "0.1.0".into(),
        plugin_sha256: "ab".repeat(32),
        attempt: 1,
        started_at: "2026-12-04T15:40:46.000000Z".into(),
        ended_at: Some("2026-12-04T15:40:47.000000Z".into()),
        outcome: "failed".into(),
        error_type: Some("TaskResultFailed".into()),
        error: Some("rm: Permission denied".into()),
        pid: Some(4242),
        detail: None,
    }
}

impl Fake {
    /// Makes the next call of `op` fail with `e`.
    fn fail_next(&self, op: &'static str, e: ControlError) {
        self.script.lock().unwrap().insert(op, Ok(e));
    }

    /// Makes the next call of `op` panic.
    fn panic_next(&self, op: &'static str) {
        self.script
            .lock()
            .unwrap()
            .insert(op, Err("scripted panic"));
    }

    fn scripted(&self, op: &'static str) -> Result<(), ControlError> {
        let next = self.script.lock().unwrap().remove(op);
        match next {
            Some(Ok(e)) => Err(e),
            Some(Err(why)) => panic!("{why} in {op}"),
            None => Ok(()),
        }
    }

    fn known(&self, task: &str) -> Result<(), ControlError> {
        if ["file_cleanup", "image_pull"].contains(&task) {
            return Ok(());
        }
        Err(ControlError::UnknownTask {
            task: task.into(),
            known: "file_cleanup, image_pull".into(),
        })
    }

    fn mutated(&self, what: String) {
        self.mutations.lock().unwrap().push(what);
    }

    fn mutations(&self) -> Vec<String> {
        self.mutations.lock().unwrap().clone()
    }

    fn audit(&self) -> Vec<Audited> {
        self.audit.lock().unwrap().clone()
    }

    fn last_audit(&self) -> Audited {
        self.audit().last().cloned().expect("an audit entry")
    }

    fn ok<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, ControlError>> {
        Box::pin(async move {
            self.scripted(op)?;
            f()
        })
    }
}

impl ControlPlane for Fake {
    fn tasks(&self) -> BoxFuture<'_, Result<Vec<TaskView>, ControlError>> {
        self.ok("tasks", || {
            Ok(vec![task_view("file_cleanup"), task_view("image_pull")])
        })
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerView>, ControlError>> {
        self.ok("workers", || {
            Ok(WORKERS
                .iter()
                .map(|w| WorkerView {
                    address: w.to_string(),
                    ip: w.split(':').next().unwrap().into(),
                    last_seen: None,
                    last_runs: vec![],
                })
                .collect())
        })
    }

    fn grid(&self) -> BoxFuture<'_, Result<GridView, ControlError>> {
        self.ok("grid", || {
            Ok(GridView {
                tasks: vec!["file_cleanup".into()],
                workers: WORKERS.iter().map(|w| w.to_string()).collect(),
                cells: vec![
                    vec![None],
                    vec![Some(GridCell {
                        run_id: 7,
                        outcome: "failed".into(),
                        at: "2026-12-04T15:40:47.000000Z".into(),
                    })],
                ],
            })
        })
    }

    fn runs(&self, query: RunsQuery) -> BoxFuture<'_, Result<RunsPage, ControlError>> {
        *self.last_runs_query.lock().unwrap() = Some(query);
        self.ok("runs", || {
            Ok(RunsPage {
                runs: vec![run_view(7)],
                next: Some(7),
            })
        })
    }

    fn run(&self, id: i64) -> BoxFuture<'_, Result<RunView, ControlError>> {
        self.ok("run", move || {
            if id != 7 {
                return Err(ControlError::UnknownRun(id));
            }
            Ok(RunView {
                detail: Some(json!({"deleted": 3})),
                ..run_view(7)
            })
        })
    }

    fn plugins(&self) -> BoxFuture<'_, Result<PluginsView, ControlError>> {
        self.ok("plugins", || {
            let plugin = |name: &str, idempotent| PluginView {
                name: name.into(),
                version: "0.1.0".into(),
                sha256: "ab".repeat(32),
                wit_version: "0.1.0".into(),
                path: format!("/plugins/{name}.wasm"),
                idempotent,
                default_interval_seconds: 3600,
                params_doc: String::new(),
                declares_grants: false,
                grants: None,
            };
            Ok(PluginsView {
                loaded: vec![plugin("file_cleanup", true), plugin("image_pull", false)],
                refused: vec![RefusedPlugin {
                    path: "/plugins/bad.wasm".into(),
                    reason: "not a component".into(),
                }],
            })
        })
    }

    fn quarantines(&self) -> BoxFuture<'_, Result<Vec<QuarantineView>, ControlError>> {
        self.ok("quarantines", || {
            Ok(vec![QuarantineView {
                task: "file_cleanup".into(),
                worker: "10.0.0.7:22555".into(),
                since: "2026-12-04T15:40:47.000000Z".into(),
                until: "2026-12-04T15:45:47.000000Z".into(),
                consecutive_failures: 3,
                reason: "trap: unreachable".into(),
            }])
        })
    }

    fn audit(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> BoxFuture<'_, Result<Vec<AuditEntry>, ControlError>> {
        self.ok("audit", move || {
            Ok(vec![AuditEntry {
                id: before.unwrap_or(100) - 1,
                at: "2026-12-04T15:40:47.000000Z".into(),
                actor: "token".into(),
                action: "trigger".into(),
                target: format!("limit={limit}"),
                body: None,
                status: 202,
            }])
        })
    }

    fn trigger(
        &self,
        task: String,
        workers: Vec<String>,
    ) -> BoxFuture<'_, Result<Triggered, ControlError>> {
        Box::pin(async move {
            self.scripted("trigger")?;
            self.known(&task)?;
            for (i, w) in workers.iter().enumerate() {
                if !WORKERS.contains(&w.as_str()) {
                    return Err(ControlError::UnknownWorker {
                        field: format!("workers[{i}]"),
                        worker: w.clone(),
                    });
                }
            }
            if !self.cooled.lock().unwrap().insert(task.clone()) {
                return Err(ControlError::Cooldown {
                    task,
                    ago_seconds: 0,
                    retry_after_seconds: 60,
                });
            }
            self.mutated(format!("trigger {task} {workers:?}"));
            let workers = if workers.is_empty() {
                WORKERS.iter().map(|w| w.to_string()).collect()
            } else {
                workers
            };
            Ok(Triggered {
                task,
                tick_id: 42,
                workers,
            })
        })
    }

    fn cancel(&self, task: String) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            self.scripted("cancel")?;
            self.known(&task)?;
            self.mutated(format!("cancel {task}"));
            Ok(())
        })
    }

    fn pause(
        &self,
        task: String,
        reason: Option<String>,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            self.scripted("pause")?;
            self.known(&task)?;
            self.mutated(format!("pause {task} {reason:?}"));
            Ok(())
        })
    }

    fn resume(&self, task: String) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            self.scripted("resume")?;
            self.known(&task)?;
            self.mutated(format!("resume {task}"));
            Ok(())
        })
    }

    fn lift_quarantine(
        &self,
        task: String,
        worker: String,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(async move {
            self.scripted("lift_quarantine")?;
            if task != "file_cleanup" || worker != "10.0.0.7:22555" {
                return Err(ControlError::NotQuarantined { task, worker });
            }
            self.mutated(format!("lift {task}@{worker}"));
            Ok(())
        })
    }

    fn record_audit(
        &self,
        actor: Actor,
        action: String,
        target: String,
        body: Option<Value>,
        status: u16,
    ) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.audit.lock().unwrap().push(Audited {
                actor,
                action,
                target,
                body,
                status,
            });
        })
    }
}

fn assets(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "index.html" => Some((
            "text/html; charset=utf-8",
            b"<!doctype html><title>Quarry</title>",
        )),
        "app.js" => Some(("text/javascript", b"console.log('quarry')")),
        _ => None,
    }
}

/// A server on 127.0.0.1:0 over a fresh fake; stopped when dropped.
struct Api {
    base: String,
    fake: Arc<Fake>,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// `listen` is the address the policy believes it serves (non-loopback to test that mode).
async fn start(token: Option<&str>, listen: &str) -> Api {
    let auth = ApiAuth::new(token, listen.parse::<SocketAddr>().unwrap()).unwrap();
    let fake = Arc::new(Fake::default());
    let metrics = Metrics {
        content_type: PROMETHEUS_TEXT,
        render: Arc::new(|| "quarry_up 1\n".to_string()),
        record: None,
    };
    let router = http::router(fake.clone(), auth, Some(metrics), assets);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(http::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    Api {
        base,
        fake,
        http,
        stop: Some(stop),
        served: Some(served),
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.served.take() {
            s.abort();
        }
    }
}

/// An answer: status, headers, JSON body (`Null` when empty or not JSON), raw text.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    json: Value,
    text: String,
}

impl Answer {
    fn field(&self) -> Option<&str> {
        self.json["field"].as_str()
    }

    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = within("an API call", 20, req.send()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer {
            status,
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.req(Method::GET, path)).await
    }

    async fn get_with_token(&self, path: &str) -> Answer {
        self.send(self.req(Method::GET, path).bearer_auth(TOKEN))
            .await
    }

    /// A mutating call with the token and `body` as JSON (none when `Null`).
    async fn call(&self, method: Method, path: &str, body: Value) -> Answer {
        let mut req = self.req(method, path).bearer_auth(TOKEN);
        if !body.is_null() {
            req = req.json(&body);
        }
        self.send(req).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, body).await
    }

    /// A POST with the token and a raw body of `content_type`.
    async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut req = self.req(Method::POST, path).bearer_auth(TOKEN).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req).await
    }
}

#[tokio::test]
async fn reads_answer_every_endpoint() {
    let api = start(Some(TOKEN), "127.0.0.1:8080").await;
    let a = api.get("/api/v1/tasks").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json[0]["name"], "file_cleanup");
    assert_eq!(a.header("cache-control"), "no-store");
    assert_eq!(a.header("x-content-type-options"), "nosniff");
    assert!(
        a.header("content-security-policy")
            .contains("default-src 'self'")
    );
    assert_eq!(
        api.get("/api/v1/tasks/image_pull").await.json["paused"],
        true
    );
    let a = api.get("/api/v1/tasks/nope").await;
    assert_eq!(a.status, 404);
    assert!(
        a.error().contains("\"nope\"") && a.error().contains("file_cleanup"),
        "{}",
        a.text
    );
    assert_eq!(api.get("/api/v1/workers").await.json[1]["ip"], "10.0.0.7");
    assert_eq!(
        api.get("/api/v1/grid").await.json["cells"][1][0]["run_id"],
        7
    );
    assert_eq!(
        api.get("/api/v1/plugins").await.json["refused"][0]["reason"],
        "not a component"
    );
    assert_eq!(
        api.get("/api/v1/quarantines").await.json[0]["consecutive_failures"],
        3
    );

    let a = api
        .get("/api/v1/runs?task=file_cleanup&worker=10.0.0.7%3A22555&outcome=failed&limit=5&before=9")
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (a.json["next"].clone(), a.json["runs"][0]["id"].clone()),
        (json!(7), json!(7))
    );
    assert!(
        a.json["runs"][0].get("detail").is_none(),
        "lists leave detail out"
    );
    let q = api.fake.last_runs_query.lock().unwrap().clone().unwrap();
    assert_eq!(q.worker.as_deref(), Some("10.0.0.7:22555"));
    assert_eq!((q.limit, q.before), (Some(5), Some(9)));
    assert_eq!(api.get("/api/v1/runs").await.status, 200);
    assert_eq!(
        api.fake
            .last_runs_query
            .lock()
            .unwrap()
            .clone()
            .unwrap()
            .limit,
        Some(100)
    );
    for (query, field) in [
        ("colour=red", "colour"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("before=x", "before"),
        ("since=today", "since"),
    ] {
        let a = api.get(&format!("/api/v1/runs?{query}")).await;
        assert_eq!(
            (a.status, a.field()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{query}: {}",
            a.text
        );
    }
    let a = api.get("/api/v1/runs/7").await;
    assert_eq!(a.json["detail"]["deleted"], 3);
    let a = api.get("/api/v1/runs/8").await;
    assert_eq!(
        (a.status, a.error()),
        (StatusCode::NOT_FOUND, "no run with id 8")
    );
    let a = api.get("/api/v1/runs/abc").await;
    assert_eq!((a.status, a.field()), (StatusCode::BAD_REQUEST, Some("id")));

    let a = api.get("/api/v1/audit?limit=10&before=50").await;
    assert_eq!(
        (a.json[0]["id"].clone(), a.json[0]["target"].clone()),
        (json!(49), json!("limit=10"))
    );
    assert_eq!(
        api.get("/api/v1/audit?limit=0").await.field(),
        Some("limit")
    );

    let a = api.get("/healthz").await;
    assert_eq!(
        (a.status, a.json["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    let a = api.get("/metrics").await;
    assert_eq!(
        (a.text.as_str(), a.header("content-type")),
        ("quarry_up 1\n", PROMETHEUS_TEXT)
    );

    let a = api.get("/nope").await;
    assert_eq!(a.status, 404);
    assert!(a.error().contains("no such endpoint: /nope"), "{}", a.text);
    let a = api.send(api.req(Method::DELETE, "/api/v1/tasks")).await;
    assert_eq!(a.status, 405, "{}", a.text);
    assert!(a.error().contains("does not accept DELETE"), "{}", a.text);
    let a = api
        .post("/api/v1/tasks/file_cleanup/explode", Value::Null)
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
}

#[tokio::test]
async fn dashboard_files_are_cached_by_etag_and_locked_down() {
    let api = start(Some(TOKEN), "0.0.0.0:8080").await;
    let a = api.get("/").await;
    assert_eq!(a.status, 200, "the dashboard needs no token: {}", a.text);
    assert!(a.text.contains("<title>Quarry"));
    assert_eq!(a.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(a.header("cache-control"), "no-cache");
    assert_eq!(a.header("x-content-type-options"), "nosniff");
    assert_eq!(a.header("x-frame-options"), "DENY");
    assert_eq!(
        a.header("content-security-policy"),
        http::CONTENT_SECURITY_POLICY
    );
    let etag = a.header("etag").to_string();
    assert!(etag.starts_with('"'), "{etag}");
    let a = api
        .send(
            api.req(Method::GET, "/ui/app.js")
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(a.status, 200, "another file, another tag");
    let a = api
        .send(api.req(Method::GET, "/ui/").header("if-none-match", &etag))
        .await;
    assert_eq!(a.status, 304);
    let a = api.get("/ui/missing.css").await;
    assert_eq!(a.status, 404);
    assert!(a.error().contains("missing.css"), "{}", a.text);
}

#[tokio::test]
async fn mutations_need_the_right_token_and_are_all_audited() {
    let api = start(Some(TOKEN), "127.0.0.1:8080").await;
    let a = api
        .send(api.req(Method::POST, "/api/v1/tasks/file_cleanup/trigger"))
        .await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.header("www-authenticate").starts_with("Bearer"));
    assert!(a.error().contains("Authorization: Bearer"), "{}", a.text);
    let a = api
        .send(
            api.req(Method::POST, "/api/v1/tasks/file_cleanup/pause")
                .bearer_auth("0".repeat(32)),
        )
        .await;
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").contains("invalid_token"));
    assert_eq!(api.fake.mutations(), Vec::<String>::new());
    assert_eq!(
        api.fake.audit(),
        vec![
            Audited {
                actor: Actor::Anonymous,
                action: "trigger".into(),
                target: "file_cleanup".into(),
                body: None,
                status: 401
            },
            Audited {
                actor: Actor::Anonymous,
                action: "pause".into(),
                target: "file_cleanup".into(),
                body: None,
                status: 401
            },
        ]
    );

    let a = api
        .post(
            "/api/v1/tasks/file_cleanup/trigger",
            json!({"workers": ["local"]}),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(
        (a.json["tick_id"].clone(), a.json["workers"].clone()),
        (json!(42), json!(["local"]))
    );
    assert_eq!(
        api.fake.last_audit(),
        Audited {
            actor: Actor::Token,
            action: "trigger".into(),
            target: "file_cleanup".into(),
            body: Some(json!({"workers": ["local"]})),
            status: 202
        }
    );
    let a = api
        .post("/api/v1/tasks/image_pull/trigger", Value::Null)
        .await;
    assert_eq!(
        (a.status, a.json["workers"].clone()),
        (StatusCode::ACCEPTED, json!(WORKERS))
    );
    let a = api
        .post("/api/v1/tasks/file_cleanup/cancel", Value::Null)
        .await;
    assert_eq!((a.status, a.text.as_str()), (StatusCode::ACCEPTED, ""));
    let a = api
        .post(
            "/api/v1/tasks/file_cleanup/pause",
            json!({"reason": "disk swap"}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = api
        .post("/api/v1/tasks/file_cleanup/pause", Value::Null)
        .await;
    assert_eq!(a.status, 204, "the reason is optional");
    assert_eq!(
        api.post("/api/v1/tasks/file_cleanup/resume", Value::Null)
            .await
            .status,
        204
    );
    let a = api
        .call(
            Method::DELETE,
            "/api/v1/quarantines/file_cleanup/10.0.0.7%3A22555",
            Value::Null,
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(api.fake.last_audit().target, "file_cleanup@10.0.0.7:22555");
    let a = api
        .call(
            Method::DELETE,
            "/api/v1/quarantines/file_cleanup/local",
            Value::Null,
        )
        .await;
    assert_eq!(a.status, 404);
    assert!(
        a.error().contains("not quarantined on worker \"local\""),
        "{}",
        a.text
    );
    assert_eq!(
        api.fake.mutations(),
        vec![
            "trigger file_cleanup [\"local\"]",
            "trigger image_pull []",
            "cancel file_cleanup",
            "pause file_cleanup Some(\"disk swap\")",
            "pause file_cleanup None",
            "resume file_cleanup",
            "lift file_cleanup@10.0.0.7:22555",
        ]
    );
    let statuses: Vec<(String, u16)> = api
        .fake
        .audit()
        .into_iter()
        .map(|a| (a.action, a.status))
        .collect();
    let want = [
        ("trigger", 401),
        ("pause", 401),
        ("trigger", 202),
        ("trigger", 202),
        ("cancel", 202),
        ("pause", 204),
        ("pause", 204),
        ("resume", 204),
        ("lift_quarantine", 204),
        ("lift_quarantine", 404),
    ];
    assert_eq!(statuses, want.map(|(a, s)| (a.to_string(), s)));
}

#[tokio::test]
async fn without_a_token_file_mutations_are_refused_and_reads_stay_local() {
    let api = start(None, "127.0.0.1:8080").await;
    let a = api
        .send(api.req(Method::POST, "/api/v1/tasks/file_cleanup/trigger"))
        .await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.error().contains("quarry.api.token_file"), "{}", a.text);
    let a = api
        .post("/api/v1/tasks/file_cleanup/resume", Value::Null)
        .await;
    assert_eq!(a.status, 403, "a token is no use when none is configured");
    assert!(api.fake.mutations().is_empty());
    assert_eq!(
        api.fake
            .audit()
            .iter()
            .map(|a| a.status)
            .collect::<Vec<_>>(),
        [403, 403]
    );

    assert_eq!(api.get("/api/v1/tasks").await.status, 200);
    let a = api
        .send(
            api.req(Method::GET, "/api/v1/tasks")
                .header("host", "evil.example:8080"),
        )
        .await;
    assert_eq!(a.status, 403, "a rebinding page: {}", a.text);
    assert!(a.error().contains("evil.example"), "{}", a.text);
}

#[tokio::test]
async fn a_public_listener_needs_the_token_for_reads() {
    let api = start(Some(TOKEN), "0.0.0.0:8080").await;
    for path in [
        "/api/v1/tasks",
        "/api/v1/runs?limit=1",
        "/metrics",
        "/api/v1/audit",
    ] {
        let a = api.get(path).await;
        assert_eq!(a.status, 401, "{path}: {}", a.text);
        assert!(a.header("www-authenticate").starts_with("Bearer"), "{path}");
        assert_eq!(api.get_with_token(path).await.status, 200, "{path}");
    }
    assert_eq!(api.get("/healthz").await.status, 200);
    let a = api
        .send(api.req(Method::GET, "/api/v1/tasks").bearer_auth("nope"))
        .await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn bad_input_names_its_field_and_mutates_nothing() {
    let api = start(Some(TOKEN), "127.0.0.1:8080").await;
    let trigger = "/api/v1/tasks/file_cleanup/trigger";
    let json_ct = Some("application/json");
    let a = api
        .post_raw(trigger, json_ct, b"{\"workers\": [\"local\",".to_vec())
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.error().contains("not valid JSON") && a.error().contains("line 1 column"),
        "{}",
        a.text
    );
    let a = api.post(trigger, json!({"workers": ["local", 7]})).await;
    assert_eq!(
        (a.status, a.field()),
        (StatusCode::BAD_REQUEST, Some("workers[1]")),
        "{}",
        a.text
    );
    let a = api.post(trigger, json!({"workers": "local"})).await;
    assert_eq!(a.field(), Some("workers"), "{}", a.text);
    let a = api.post(trigger, json!({"worker": ["local"]})).await;
    assert_eq!(a.field(), Some("worker"), "{}", a.text);
    assert!(a.error().contains("unknown field"), "{}", a.text);
    let a = api
        .post(trigger, json!({"workers": ["local", "local"]}))
        .await;
    assert_eq!(a.field(), Some("workers[1]"), "{}", a.text);
    let a = api.post(trigger, json!(["local"])).await;
    assert_eq!(a.status, 400, "{}", a.text);
    let a = api
        .post("/api/v1/tasks/file_cleanup/pause", json!({"reason": 5}))
        .await;
    assert_eq!(a.field(), Some("reason"), "{}", a.text);
    let a = api
        .post("/api/v1/tasks/file_cleanup/resume", json!({"now": true}))
        .await;
    assert_eq!(a.field(), Some("now"), "{}", a.text);

    let big = format!("{{\"workers\": [\"{}\"]}}", "x".repeat(70 * 1024));
    let a = api.post_raw(trigger, json_ct, big.into_bytes()).await;
    assert_eq!(a.status, 413, "{}", a.text);
    assert!(a.error().contains("65536 bytes"), "{}", a.text);
    let a = api
        .post_raw(trigger, Some("text/plain"), b"{}".to_vec())
        .await;
    assert_eq!(a.status, 415, "{}", a.text);
    assert!(
        a.error().contains("application/json") && a.error().contains("text/plain"),
        "{}",
        a.text
    );
    let a = api.post_raw(trigger, None, b"{}".to_vec()).await;
    assert_eq!(a.status, 415, "{}", a.text);
    let a = api
        .post_raw(
            trigger,
            Some("application/json; charset=utf-8"),
            b"  ".to_vec(),
        )
        .await;
    assert_eq!(a.status, 202, "a blank body is no body: {}", a.text);
    api.fake.cooled.lock().unwrap().clear();
    api.fake.mutations.lock().unwrap().clear();

    let a = api.post("/api/v1/tasks/nope/trigger", Value::Null).await;
    assert_eq!(a.status, 404);
    assert!(a.error().contains("no task named \"nope\""), "{}", a.text);
    let a = api
        .post(trigger, json!({"workers": ["local", "10.9.9.9"]}))
        .await;
    assert_eq!(
        (a.status, a.field()),
        (StatusCode::BAD_REQUEST, Some("workers[1]")),
        "{}",
        a.text
    );
    assert!(a.error().contains("10.9.9.9"), "{}", a.text);

    assert_eq!(api.fake.mutations(), Vec::<String>::new());
    let statuses: Vec<u16> = api.fake.audit().iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            400, 400, 400, 400, 400, 400, 400, 400, 413, 415, 415, 202, 404, 400
        ]
    );
    assert!(api.fake.audit().iter().all(|a| a.actor == Actor::Token));
    assert_eq!(
        api.fake.audit()[1].body,
        Some(json!({"workers": ["local", 7]}))
    );
}

#[tokio::test]
async fn control_errors_map_to_statuses() {
    let api = start(Some(TOKEN), "127.0.0.1:8080").await;
    let trigger = "/api/v1/tasks/file_cleanup/trigger";
    assert_eq!(api.post(trigger, Value::Null).await.status, 202);
    let a = api.post(trigger, Value::Null).await;
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.header("retry-after"), "60");
    assert_eq!(a.json["retry_after_seconds"], 60);
    assert!(a.error().contains("try again in 60 s"), "{}", a.text);
    assert_eq!(api.fake.last_audit().status, 429);

    api.fake.fail_next(
        "cancel",
        ControlError::Conflict("file_cleanup has no tick in flight".into()),
    );
    let a = api
        .post("/api/v1/tasks/file_cleanup/cancel", Value::Null)
        .await;
    assert_eq!(
        (a.status, a.error()),
        (StatusCode::CONFLICT, "file_cleanup has no tick in flight")
    );
    api.fake.fail_next(
        "pause",
        ControlError::Invalid {
            field: "reason".into(),
            reason: "is too long".into(),
        },
    );
    let a = api
        .post("/api/v1/tasks/file_cleanup/pause", json!({"reason": "x"}))
        .await;
    assert_eq!(
        (a.status, a.field()),
        (StatusCode::BAD_REQUEST, Some("reason"))
    );
    api.fake
        .fail_next("tasks", ControlError::Unavailable("shutting down".into()));
    let a = api.get("/api/v1/tasks").await;
    assert_eq!(
        (a.status, a.error()),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    );
}

#[tokio::test]
async fn a_panic_is_a_500_and_the_server_goes_on() {
    let api = start(Some(TOKEN), "127.0.0.1:8080").await;
    api.fake.panic_next("grid");
    let a = api.get("/api/v1/grid").await;
    assert_eq!(a.status, 500, "{}", a.text);
    assert!(a.error().contains("scripted panic"), "{}", a.text);
    api.fake.panic_next("resume");
    let a = api
        .post("/api/v1/tasks/file_cleanup/resume", Value::Null)
        .await;
    assert_eq!(a.status, 500, "{}", a.text);
    assert_eq!(
        api.fake.last_audit().status,
        500,
        "a panicking mutation is audited too"
    );
    assert_eq!(api.get("/api/v1/grid").await.status, 200);
}

#[tokio::test]
async fn tasksets_take_rocks_body_and_answer_per_task() {
    let api = start(Some(TOKEN), "127.0.0.1:8080").await;
    let rock = "/apis/envs/sandbox/v1/ops/tasksets";
    let body = json!({"spec": {"taskTypes": ["rock.admin.scheduler.tasks.file_cleanup_task.FileCleanupTask", "nope"], "targetWorkers": ["local"]}});
    let a = api.post(rock, body.clone()).await;
    assert_eq!(a.status, 207, "{}", a.text);
    assert_eq!(a.json["phase"], "Partial");
    assert_eq!(a.json["results"][0]["status"], 202);
    assert_eq!(a.json["results"][0]["triggered"]["task"], "file_cleanup");
    assert_eq!(a.json["results"][1]["status"], 404);
    assert!(
        a.json["results"][1]["error"]["error"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    assert_eq!(
        api.fake.last_audit(),
        Audited {
            actor: Actor::Token,
            action: "taskset".into(),
            target: "rock.admin.scheduler.tasks.file_cleanup_task.FileCleanupTask,nope".into(),
            body: Some(body),
            status: 207
        }
    );
    let a = api
        .post(
            "/api/v1/tasksets",
            json!({"spec": {"task_types": ["file_cleanup"]}}),
        )
        .await;
    assert_eq!(
        (a.status, a.json["phase"].clone()),
        (StatusCode::MULTI_STATUS, json!("RateLimited")),
        "{}",
        a.text
    );
    assert_eq!(a.json["results"][0]["error"]["retry_after_seconds"], 60);

    api.fake.cooled.lock().unwrap().clear();
    let a = api.post("/api/v1/tasksets", Value::Null).await;
    assert_eq!(
        a.status, 202,
        "absent taskTypes: the idempotent tasks: {}",
        a.text
    );
    assert_eq!(a.json["phase"], "Running");
    let tasks: Vec<&Value> = a.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["task"])
        .collect();
    assert_eq!(tasks, [&json!("file_cleanup")]);
    assert_eq!(api.fake.last_audit().target, "*");

    let before = api.fake.mutations();
    for (body, field) in [
        (json!({"spec": {"taskTypes": []}}), "spec.taskTypes"),
        (
            json!({"spec": {"taskTypes": ["image_pull", "image_pull"]}}),
            "spec.taskTypes[1]",
        ),
        (
            json!({"spec": {"taskTypes": "image_pull"}}),
            "spec.taskTypes",
        ),
        (
            json!({"spec": {"taskTypes": ["image_pull"], "targetWorkers": ["10.9.9.9"]}}),
            "spec.targetWorkers[0]",
        ),
        (json!({"taskTypes": ["image_pull"]}), "taskTypes"),
    ] {
        let a = api.post("/api/v1/tasksets", body.clone()).await;
        assert_eq!(
            (a.status, a.field()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{body}: {}",
            a.text
        );
    }
    assert_eq!(api.fake.mutations(), before);
}

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let mut api = start(Some(TOKEN), "127.0.0.1:8080").await;
    assert_eq!(api.get("/healthz").await.status, 200);
    api.stop.take().unwrap().send(()).unwrap();
    let served = api.served.take().unwrap();
    within("serve after shutdown", 15, served)
        .await
        .unwrap()
        .unwrap();
    let refused = api.http.get(format!("{}/healthz", api.base)).send().await;
    assert!(refused.is_err(), "the listener is closed");
}

#[tokio::test]
async fn cli_verbs_drive_the_api() {
    let api = start(Some(TOKEN), "127.0.0.1:8080").await;
    let dir = TempDir::new("api-cli");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (base, tf) = (api.base.as_str(), token_file.to_str().unwrap());
    let with = |verb: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = verb.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--api".into(),
            base.to_string(),
            "--token-file".into(),
            tf.to_string(),
        ]);
        v
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        quarry(&refs).await
    };

    let (code, out, err) = run(with(&["status"])).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let line = out.lines().find(|l| l.starts_with("file_cleanup")).unwrap();
    for word in [
        "0.1.0",
        "3600s",
        "2026-12-04T16:40:46",
        "no",
        "success",
        " 1",
    ] {
        assert!(line.contains(word), "{word} in {line}");
    }
    assert!(
        out.contains("image_pull: paused through the API: disk work"),
        "{out}"
    );
    let (_, out, _) = run(with(&["status", "--json"])).await;
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()[1]["name"],
        "image_pull"
    );

    let (code, out, err) = run(with(&[
        "runs",
        "--task",
        "file_cleanup",
        "--worker",
        "10.0.0.7:22555",
        "--limit",
        "5",
    ]))
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(
        out.contains("TaskResultFailed: rm: Permission denied") && out.contains("--before 7"),
        "{out}"
    );
    let q = api.fake.last_runs_query.lock().unwrap().clone().unwrap();
    assert_eq!(
        (q.task.as_deref(), q.worker.as_deref(), q.limit),
        (Some("file_cleanup"), Some("10.0.0.7:22555"), Some(5))
    );

    let (code, out, err) = run(with(&["trigger", "file_cleanup", "--worker", "local"])).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(
        out.contains("triggered file_cleanup: tick 42 on 1 worker(s)"),
        "{out}"
    );
    let (code, _, err) = run(with(&["trigger", "file_cleanup"])).await;
    assert_eq!(code, ExitCode::from(1), "cooldown: {err}");
    assert!(
        err.contains("429") && err.contains("try again in 60 s"),
        "{err}"
    );
    let (code, out, _) = run(with(&["pause", "file_cleanup", "--reason", "disk swap"])).await;
    assert_eq!(
        (code, out.trim()),
        (ExitCode::SUCCESS, "paused file_cleanup")
    );
    let (code, out, _) = run(with(&["resume", "file_cleanup"])).await;
    assert_eq!(
        (code, out.trim()),
        (ExitCode::SUCCESS, "resumed file_cleanup")
    );
    let (code, _, _) = run(with(&["cancel", "file_cleanup"])).await;
    assert_eq!(code, ExitCode::SUCCESS);
    let (code, out, err) = run(with(&["unquarantine", "file_cleanup", "10.0.0.7:22555"])).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(
        out.contains("lifted file_cleanup's quarantine on 10.0.0.7:22555"),
        "{out}"
    );
    assert_eq!(
        api.fake.mutations(),
        vec![
            "trigger file_cleanup [\"local\"]",
            "pause file_cleanup Some(\"disk swap\")",
            "resume file_cleanup",
            "cancel file_cleanup",
            "lift file_cleanup@10.0.0.7:22555",
        ]
    );

    let (code, _, err) = run(with(&["pause", "nope"])).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(
        err.contains("quarry pause: 404: no task named \"nope\""),
        "{err}"
    );
    let (code, _, err) = quarry(&["resume", "file_cleanup", "--api", base]).await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(err.contains("401") && err.contains("--token-file"), "{err}");
    let (code, _, err) = quarry(&["status", "--api", "http://127.0.0.1:9"]).await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(
        err.contains("cannot reach the Quarry API at http://127.0.0.1:9/"),
        "{err}"
    );
    let (code, _, err) = quarry(&["status", "--api", "127.0.0.1:8080"]).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    let missing = dir.path().join("missing");
    let (code, _, err) = quarry(&[
        "status",
        "--api",
        base,
        "--token-file",
        missing.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(err.contains("missing: cannot read it"), "{err}");
    assert!(Cli::try_parse_from(["quarry", "runs", "--limit", "0"]).is_err());
}
