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
