//! The admin API and the dashboard of a real `quarry serve` (in process, on a loopback port):
//! over HTTP with the token rules, `/metrics`, then the dashboard in a real headless Chromium
//! (tests/dashboard/dashboard.test.mjs, playwright-core from npm, installed by
//! scripts/setup-browser.sh): load the page, trigger a run and see it appear, pause the task
//! and see it skip its ticks, resume it.

use std::path::Path;
use std::time::Duration;

use quarry_host::server::Server;

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;

/// The admin token of these tests (at least 32 characters, as the API requires).
const TOKEN: &str = "quarry-test-token-0123456789abcdefghij";

fn config(dir: &Path, plugins: &Path) -> String {
    format!(
        "scheduler:\n  enabled: true\n  tasks:\n    - task_class: probe\n      interval_seconds: 4\n      params: {{mode: ok}}\nquarry:\n  plugins_dir: {}\n  workers: [local]\n  status_dir: {}/status\n  report_dir: {}/reports\n  run_timeout_seconds: 10\n  cache_dir: none\n  api: {{listen: \"127.0.0.1:0\", token_file: token}}\n",
        plugins.display(),
        dir.display(),
        dir.display()
    )
}

async fn start(tmp: &TempDir) -> (Server, String) {
    let plugins = plugins_dir(&["probe"]);
    let file = tmp.path().join("quarry.yml");
    std::fs::write(&file, config(tmp.path(), plugins.path())).unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::process::Command::new("chmod")
        .args(["600", token.to_str().unwrap()])
        .status()
        .unwrap();
    let server = within("server start", 60, Server::start(&file))
        .await
        .unwrap();
    let (addr, _task) = within("api start", 10, server.start_api())
        .await
        .unwrap()
        .expect("the API is enabled");
    std::mem::forget(plugins); // lives as long as the server
    (server, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_of_a_real_server_enforces_its_token_and_serves_metrics() {
    let tmp = TempDir::new("api-real");
    let (server, base) = start(&tmp).await;
    let http = reqwest::Client::new();
    let tasks: serde_json::Value = http
        .get(format!("{base}/api/v1/tasks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tasks[0]["name"], "probe", "{tasks}");
    let refused = http
        .post(format!("{base}/api/v1/tasks/probe/trigger"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let ok = http
        .post(format!("{base}/api/v1/tasks/probe/trigger"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202, "{:?}", ok.text().await);
    let again = http
        .post(format!("{base}/api/v1/tasks/probe/trigger"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(
        [409, 429].contains(&again.status().as_u16()),
        "{}",
        again.status()
    );
    // A run appears in the history, and in the metrics.
    let mut seen = false;
    for _ in 0..100 {
        let runs: serde_json::Value = http
            .get(format!("{base}/api/v1/runs?task=probe"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let finished = |r: &serde_json::Value| r["outcome"] != "running";
        if runs["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(finished))
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "no run recorded");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("quarry_runs_total{task=\"probe\",outcome=\"success\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("quarry_ticks_total{task=\"probe\""),
        "{metrics}"
    );
    let audit: serde_json::Value = http
        .get(format!("{base}/api/v1/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<u64> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert!(
        statuses.contains(&202) && statuses.contains(&401),
        "{audit}"
    );
    within("shutdown", 30, server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_chromium() {
    needs_real_parts!("headless Chromium and playwright-core (scripts/setup-browser.sh)");
    let tmp = TempDir::new("dashboard");
    let (server, base) = start(&tmp).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    let shot = tmp.path().join("dashboard.png");
    let out = within(
        "the browser test",
        240,
        tokio::process::Command::new("node")
            .args(["--test", "--test-concurrency=1", "dashboard.test.mjs"])
            .current_dir(&dir)
            .env("QUARRY_URL", &base)
            .env("QUARRY_TOKEN", TOKEN)
            .env("QUARRY_TASK", "probe")
            .env("QUARRY_SCREENSHOT", &shot)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run node (scripts/setup-browser.sh installs what it needs)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser test failed:\n{text}");
    assert!(shot.exists(), "no screenshot: {text}");
    within("shutdown", 30, server.shutdown()).await;
}
