//! Hermetic: the rocklet client ([`Rocklet`]) against quarry-testkit's simulated rocklet, which
//! speaks the real one's HTTP API (docs/rocklet.md) on a loopback port: what goes on the wire,
//! what comes back, and how failures are classified.

use std::time::Duration;

use quarry_host::workers::rocklet::Rocklet;
use quarry_host::workers::{Command, Limits, Program, Worker, WorkerError};
use quarry_testkit::{Scripted, SimConfig, SimRocklet};
use serde_json::json;

use crate::harness::within;

/// Limit of each file call and command below; far above what a loopback answer needs.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn sim() -> (SimRocklet, Worker) {
    let sim = SimRocklet::loopback(SimConfig {
        keep_files: true,
        record: true,
        ..SimConfig::default()
    })
    .await
    .expect("bind the simulated rocklet");
    let worker = Worker::new(Rocklet::new(sim.worker_addr()).with_limits(Limits::default()));
    (sim, worker)
}

fn argv(args: &[&str]) -> Command {
    Command {
        program: Program::Argv(args.iter().map(|a| a.to_string()).collect()),
        cwd: None,
        env: vec![("K".into(), "v w".into())],
        timeout: CALL_TIMEOUT,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_read_and_write_round_trip_in_the_rocklets_shapes() {
    let (sim, worker) = sim().await;
    let path = "/data/scheduler_status/probe_status.json";
    let content = "{\"état\": \"prêt ✓\"}\n";
    within("write", 10, worker.write_file(path, content, CALL_TIMEOUT))
        .await
        .expect("write");
    assert_eq!(sim.file(path).as_deref(), Some(content));
    let got = within("read", 10, worker.read_file(path, CALL_TIMEOUT)).await;
    assert_eq!(got.as_deref(), Ok(content));

    sim.script(Scripted::output("out\n", "err\n", 3));
    let got = within("execute", 10, worker.execute(&argv(&["ls", "-l"])))
        .await
        .expect("execute");
    assert_eq!(
        (got.stdout.as_str(), got.stderr.as_str(), got.exit_code),
        ("out\n", "err\n", 3)
    );

    // Every field explicit, as ROCK sends them; the command wrapped in `timeout` and `env`.
    let requests = sim.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/write_file", "/read_file", "/execute"]);
    assert!(requests.iter().all(|r| r.method == "POST"));
    assert_eq!(
        requests[0].body,
        json!({"content": content, "path": path, "sandbox_id": "quarry"})
    );
    assert_eq!(
        requests[1].body,
        json!({"path": path, "encoding": null, "errors": null, "sandbox_id": "quarry"})
    );
    let exec = &requests[2].body;
    assert_eq!(
        exec["command"],
        json!(["timeout", "-k", "2", "10", "env", "--", "K=v w", "ls", "-l"])
    );
    assert_eq!(
        (
            &exec["shell"],
            &exec["env"],
            &exec["check"],
            &exec["timeout"]
        ),
        (&json!(false), &json!(null), &json!(false), &json!(15.0))
    );
    assert_eq!(exec["sandbox_id"], "quarry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_511_is_classified_by_class_path_and_the_next_call_succeeds() {
    let (sim, worker) = sim().await;
    let worker_named = format!(" on worker 127.0.0.1:{}", sim.port());
    // A read of a file never written: the rocklet's FileNotFoundError.
    let got = within("read missing", 10, worker.read_file("/nope", CALL_TIMEOUT)).await;
    match got {
        Err(WorkerError::NotFound(m)) => {
            assert!(m.ends_with(&worker_named) && m.contains("/nope"), "{m}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    sim.script(Scripted::exception(
        "rock.rocklet.exceptions.CommandTimeoutError",
        "Timeout (15.0s) exceeded while running command",
    ));
    let got = within("timed out", 10, worker.execute(&argv(&["sleep", "1"]))).await;
    assert!(
        matches!(&got, Err(WorkerError::Timeout(m)) if m.ends_with(&worker_named)),
        "{got:?}"
    );
    sim.script(Scripted::exception(
        "builtins.OSError",
        "[Errno 28] No space left",
    ));
    let got = within("other", 10, worker.write_file("/x", "x", CALL_TIMEOUT)).await;
    assert!(
        matches!(&got, Err(WorkerError::Other(m)) if m.contains("builtins.OSError: [Errno 28]")),
        "{got:?}"
    );
    // The simulator, like uvicorn, closed each connection after its 511: the calls right after
    // must not be sent on it.
    for round in 0..5 {
        within(
            "write after 511",
            10,
            worker.write_file("/x", "y", CALL_TIMEOUT),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let got = within(
            "read after 511",
            10,
            worker.read_file("/missing", CALL_TIMEOUT),
        )
        .await;
        assert!(
            matches!(got, Err(WorkerError::NotFound(_))),
            "round {round}: {got:?}"
        );
    }
    sim.script(Scripted::gateway_timeout());
    let got = within("504", 10, worker.execute(&argv(&["true"]))).await;
    assert!(
        matches!(&got, Err(WorkerError::Timeout(m)) if m.contains("may still be running")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_resends_file_calls_but_never_execute() {
    let (sim, worker) = sim().await;
    sim.put_file("/status.json", "{}");
    sim.script(Scripted::Close);
    let got = within(
        "read after a lost connection",
        10,
        worker.read_file("/status.json", CALL_TIMEOUT),
    )
    .await;
    assert_eq!(got.as_deref(), Ok("{}"));
    assert_eq!(sim.requests().len(), 2, "the read was sent again");

    sim.script(Scripted::Close);
    let got = within(
        "execute after a lost connection",
        10,
        worker.execute(&argv(&["true"])),
    )
    .await;
    match got {
        Err(WorkerError::Unreachable(m)) => {
            assert!(m.contains("may or may not have run"), "{m}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let executes = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/execute")
        .count();
    assert_eq!(executes, 1, "execute was sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_rocklet_is_unreachable_and_is_alive_answers_while_it_runs() {
    let (sim, _) = sim().await;
    let rocklet = Rocklet::new(sim.worker_addr());
    within("is_alive", 10, rocklet.is_alive(CALL_TIMEOUT))
        .await
        .expect("the simulator is alive");
    within("stopping the simulator", 10, sim.stop()).await;
    let got = within(
        "read from a stopped rocklet",
        10,
        rocklet.read_file("/x", CALL_TIMEOUT),
    )
    .await;
    assert!(matches!(got, Err(WorkerError::Unreachable(_))), "{got:?}");
}
