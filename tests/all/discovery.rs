//! Worker discovery: a workers file re-read on change (real rocklets), merged with the
//! static list.

use quarry_host::report::TickOutcome;
use quarry_host::scheduler::Server;

use crate::harness::*;
use crate::support::rocklet::RockletProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_file_is_followed_while_serving() {
    let tmp = TempDir::new("discovery");
    let (a, b) = (RockletProcess::start(), RockletProcess::start());
    let plugins = plugins_dir(&["probe"]);
    let workers_file = tmp.path().join("workers.txt");
    std::fs::write(&workers_file, format!("# fleet\n{}\n", a.addr)).unwrap();
    let file = tmp.path().join("quarry.yml");
    std::fs::write(
        &file,
        format!(
            "scheduler:\n  enabled: true\n  tasks:\n    - task_class: probe\n      interval_seconds: 1\n      params: {{mode: ok}}\nquarry:\n  plugins_dir: {}\n  workers_file: workers.txt\n  status_dir: {}/status\n  run_timeout_seconds: 10\n  cache_dir: none\n",
            plugins.str(),
            tmp.str()
        ),
    )
    .unwrap();
    let server = within("server start", 60, Server::start(&file))
        .await
        .unwrap();
    let mut reports = server.scheduler().subscribe();
    let r = within("a tick", 20, reports.recv()).await.unwrap();
    assert_eq!(
        (r.outcome, r.total),
        (TickOutcome::Success, 1),
        "{}",
        r.to_json()
    );

    // A second worker appears in the file (with a bad line, which is skipped with a warning).
    std::fs::write(
        &workers_file,
        format!("{}\n{}  # new\nnot a host:0\n", a.addr, b.addr),
    )
    .unwrap();
    within("both workers", 30, async {
        loop {
            let r = reports.recv().await.unwrap();
            if r.total == 2 {
                assert_eq!(r.outcome, TickOutcome::Success, "{}", r.to_json());
                break;
            }
        }
    })
    .await;

    // Emptied: no workers.
    std::fs::write(&workers_file, "# nobody\n").unwrap();
    within("no workers", 30, async {
        loop {
            if reports.recv().await.unwrap().outcome == TickOutcome::NoWorkers {
                break;
            }
        }
    })
    .await;
    within("shutdown", 30, server.shutdown()).await;
}
