//! Metrics of real runs: the probe guest's host calls against the `local` worker are counted
//! by kind and error kind.

use std::time::Duration;

use quarry_host::metrics::Metrics;
use quarry_host::runtime::{Runtime, RuntimeLimits};
use quarry_host::workers::{self, Limits, WorkerAddr};
use serde_json::json;

use crate::harness::*;

/// The sample lines of `quarry_host_calls_total`, sorted.
fn host_calls(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("quarry_host_calls_total{"))
        .collect();
    lines.sort_unstable();
    lines
}

#[tokio::test]
async fn host_calls_of_probe_runs_are_counted_by_kind_and_error() {
    let metrics = Metrics::new();
    let limits = RuntimeLimits::default();
    let rt = std::sync::Arc::new(Runtime::new(limits).unwrap().with_metrics(metrics.clone()));
    let set = load(&rt, plugins_dir(&["probe"]).path()).await;
    let probe = set.get("probe").unwrap();
    // Loading calls describe and validate-config, which make no host calls.
    assert_eq!(host_calls(&metrics.encode()), Vec::<&str>::new());

    let local = workers::connect(&[WorkerAddr::Local], Limits::default()).remove(0);
    let tmp = TempDir::new("metrics");
    let written = tmp.path().join("written");
    // Each run and the host-call error kind the probe reports it saw.
    let runs = [
        (json!({"mode": "exec", "argv": ["true"]}), None),
        (
            json!({"mode": "exec", "argv": ["quarry-no-such-program"]}),
            Some("not-found"),
        ),
        (
            json!({"mode": "read", "path": tmp.path().join("missing")}),
            Some("not-found"),
        ),
        (
            json!({"mode": "write", "path": written, "content": "x"}),
            None,
        ),
        (json!({"mode": "read", "path": written}), None),
    ];
    for (params, error_kind) in runs {
        let text = params.to_string();
        let run = rt.run(
            probe,
            "probe",
            local.clone(),
            &text,
            Duration::from_secs(30),
            None,
        );
        let outcome = within("a probe run", 60, run).await.unwrap();
        let seen = outcome.detail.get("error_kind").and_then(|k| k.as_str());
        assert_eq!(seen, error_kind, "{params}: {outcome:?}");
    }

    let text = metrics.encode();
    assert_eq!(
        host_calls(&text),
        [
            r#"quarry_host_calls_total{kind="execute",error="NotFound"} 1"#,
            r#"quarry_host_calls_total{kind="execute",error="none"} 1"#,
            r#"quarry_host_calls_total{kind="read_file",error="NotFound"} 1"#,
            r#"quarry_host_calls_total{kind="read_file",error="none"} 1"#,
            r#"quarry_host_calls_total{kind="write_file",error="none"} 1"#,
        ]
    );
    for kind in ["execute", "read_file"] {
        let count = format!(r#"quarry_host_call_duration_seconds_count{{kind="{kind}"}} 2"#);
        assert!(text.contains(&count), "{count} missing in:\n{text}");
    }
}

/// The admin API of a real server counts its requests by route template (never the raw
/// path) and status, with a duration histogram per route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_are_counted_by_route_template_and_status() {
    let tmp = TempDir::new("api-metrics");
    let plugins = plugins_dir(&["probe"]);
    let file = tmp.path().join("quarry.yml");
    let config = format!(
        "scheduler:\n  enabled: true\n  tasks:\n    - task_class: probe\n      interval_seconds: 3600\n      params: {{mode: ok}}\nquarry:\n  plugins_dir: {}\n  workers: [local]\n  status_dir: {}/status\n  report_dir: {}/reports\n  cache_dir: none\n  state_db: none\n  api: {{listen: \"127.0.0.1:0\"}}\n",
        plugins.path().display(),
        tmp.path().display(),
        tmp.path().display()
    );
    std::fs::write(&file, config).unwrap();
    let server = within(
        "server start",
        60,
        quarry_host::server::Server::start(&file),
    )
    .await
    .unwrap();
    let (addr, _task) = within("api start", 10, server.start_api())
        .await
        .unwrap()
        .expect("the API is enabled");
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let req = http.get(format!("http://{addr}{path}"));
        async move {
            let answer = within("an API request", 10, req.send()).await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.text().await.unwrap())
        }
    };
    for (path, status) in [
        ("/api/v1/tasks", 200),
        ("/api/v1/tasks", 200),
        ("/api/v1/tasks/probe", 200),
        ("/api/v1/tasks/no-such-task", 404),
        ("/api/v1/no-such-endpoint", 404),
    ] {
        assert_eq!(get(path).await.0, status, "{path}");
    }
    let api_lines = |text: &str| {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                l.starts_with("quarry_api_requests_total{")
                    || l.starts_with("quarry_api_request_duration_seconds_count{")
            })
            .map(String::from)
            .collect();
        lines.sort_unstable();
        lines
    };
    let (_, text) = get("/metrics").await;
    assert_eq!(
        api_lines(&text),
        [
            r#"quarry_api_request_duration_seconds_count{route="/api/v1/tasks"} 2"#,
            r#"quarry_api_request_duration_seconds_count{route="/api/v1/tasks/{task}"} 2"#,
            r#"quarry_api_request_duration_seconds_count{route="unmatched"} 1"#,
            r#"quarry_api_requests_total{route="/api/v1/tasks",status="200"} 2"#,
            r#"quarry_api_requests_total{route="/api/v1/tasks/{task}",status="200"} 1"#,
            r#"quarry_api_requests_total{route="/api/v1/tasks/{task}",status="404"} 1"#,
            r#"quarry_api_requests_total{route="unmatched",status="404"} 1"#,
        ],
        "{text}"
    );
    // The scrape itself is counted once answered.
    let (_, text) = get("/metrics").await;
    assert!(
        text.contains("quarry_api_requests_total{route=\"/metrics\",status=\"200\"} 1\n"),
        "{text}"
    );
    within("shutdown", 30, server.shutdown()).await;
}
