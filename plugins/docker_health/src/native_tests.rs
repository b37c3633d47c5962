//! The whole [`crate::check`] against the SDK's [`FakeWorker`], which plays `docker info`, the
//! start command and `date`, with a fake clock that advances with every call and pause.

use std::time::Duration;

use quarry_sdk::Status;
use quarry_sdk::host::{Error, LogLevel};
use quarry_sdk::worker::Worker as _;
use quarry_sdk::worker::fake::{self, Answer, FakeWorker, output};
use serde_json::{Value, json};

use crate::params::Config;
use crate::{check, info_error, is_utc_timestamp, reports_server_error, server_version};

const NOW: &str = "2026-11-23T02:44:47Z";

/// The commands the task runs besides the start command: any other `docker` or `date` fails
/// the test.
const INFO: [&str; 2] = ["docker", "info"];
const DATE: [&str; 3] = ["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"];
/// The default start command.
const START: [&str; 5] = ["sudo", "-n", "service", "docker", "start"];

/// What `docker info` prints on a healthy daemon (cut down).
const INFO_UP: &str =
    "Client:\n Context:    default\n\nServer:\n Containers: 0\n Server Version: 20.10.24+dfsg1\n";

/// Debian 20.10's `docker info` against a dead socket.
fn info_down() -> Answer {
    Ok(output(
        1,
        "Client:\n Context:    default\n\nServer:\nERROR: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
        "errors pretty printing info\n",
    ))
}

fn info_up() -> Answer {
    Ok(output(0, INFO_UP, ""))
}

/// A worker whose successive `docker info` calls answer `info` (the last one repeats), whose
/// start command (any program but `docker` and `date`) succeeds and whose `date` says NOW; each
/// call takes 100 ms and must carry a time limit of at most 30 s.
fn worker(info: Vec<Answer>) -> FakeWorker {
    let (docker, date) = (fake::program("docker"), fake::program("date"));
    let mut w = FakeWorker::new();
    w.require_timeout(Duration::from_secs(30))
        .call_cost(Duration::from_millis(100))
        .on(
            move |c| !docker(c) && !date(c),
            Ok(output(0, " * Starting Docker: docker   [ OK ]", "")),
        )
        .on(fake::argv(DATE), Ok(output(0, format!("{NOW}\n"), "")))
        .on_each(fake::argv(INFO), info);
    w
}

fn default_config() -> Config {
    Config {
        start_command: ["sudo", "-n", "service", "docker", "start"]
            .map(String::from)
            .to_vec(),
    }
}

fn detail(o: &quarry_sdk::Outcome) -> Value {
    Value::Object(o.detail.clone())
}

#[test]
fn a_healthy_daemon_is_reported_without_starting_anything() {
    let mut w = worker(vec![info_up()]);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Success);
    assert_eq!(
        detail(&o),
        json!({"status": "success", "checked_at": NOW, "restarted": false,
               "server_version": "20.10.24+dfsg1"})
    );
    assert_eq!(
        o.detail.keys().next().map(String::as_str),
        Some("status"),
        "status first"
    );
    assert_eq!(w.count(fake::program("sudo")), 0);
}

#[test]
fn a_started_daemon_is_reported_as_restarted() {
    let mut w = worker(vec![info_down(), info_down(), info_down(), info_up()]);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Success, "{:?}", o.detail);
    let d = detail(&o);
    assert_eq!(d["restarted"], true);
    assert_eq!(d["restart_exit_code"], 0);
    assert_eq!(
        d["restart_output_head"],
        " * Starting Docker: docker   [ OK ]".trim()
    );
    assert_eq!(d["recheck_attempts"], 3);
    assert_eq!(d["checked_at"], NOW);
    assert_eq!(
        d["start_command"],
        json!(["sudo", "-n", "service", "docker", "start"])
    );
    assert!(
        d["daemon_error"]
            .as_str()
            .unwrap()
            .contains("Cannot connect to the Docker daemon"),
        "{d}"
    );
    assert_eq!(w.count(fake::program("sudo")), 1);
    assert_eq!(w.pauses().len(), 2);
    assert!(
        w.logs()
            .iter()
            .any(|(l, m)| *l == LogLevel::Warn && m.contains("down"))
    );
}

#[test]
fn a_failed_start_is_a_failed_run_with_its_exit_code_and_output() {
    let mut w = worker(vec![info_down()]);
    w.on(
        fake::argv(START),
        Ok(output(1, "", "sudo: a password is required\n")),
    );
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Failed);
    let d = detail(&o);
    assert_eq!(d["status"], "failed");
    assert_eq!(d["restarted"], false);
    assert_eq!(d["restart_exit_code"], 1);
    assert_eq!(d["restart_output_head"], "sudo: a password is required");
    let error = d["error"].as_str().unwrap();
    assert!(
        error
            .contains("`sudo -n service docker start` exited with 1: sudo: a password is required"),
        "{error}"
    );
    assert!(
        error.contains("Cannot connect to the Docker daemon"),
        "{error}"
    );
    assert_eq!(
        w.count(fake::program("docker")),
        1,
        "no polling after a failed start"
    );
}

#[test]
fn a_start_command_that_cannot_run_is_a_failed_run() {
    let mut w = worker(vec![info_down()]);
    w.on(
        fake::argv(START),
        Err(Error::NotFound("program \"sudo\" not found".into())),
    );
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Failed);
    let d = detail(&o);
    assert_eq!(d["restart_exit_code"], Value::Null);
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("did not run: not found: program \"sudo\" not found"),
        "{d}"
    );
}

#[test]
fn a_daemon_still_down_after_a_successful_start_is_a_failed_run() {
    let mut w = worker(vec![info_down()]);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Failed);
    let d = detail(&o);
    assert_eq!(d["restarted"], false);
    assert_eq!(d["restart_exit_code"], 0);
    let error = d["error"].as_str().unwrap();
    assert!(
        error.contains("exited with 0 but the docker daemon still does not answer after 20s"),
        "{error}"
    );
    // Bounded: about RECHECK_WINDOW / RECHECK_PAUSE polls, each followed by a pause but the last.
    let attempts = d["recheck_attempts"].as_u64().unwrap();
    assert!((10..=12).contains(&attempts), "{attempts}");
    assert!(w.elapsed() < Duration::from_secs(25), "{:?}", w.elapsed());
}

#[test]
fn a_hung_daemon_counts_as_down() {
    let mut w = worker(vec![
        Err(Error::Timeout("execute did not answer within 15.0s".into())),
        info_up(),
    ]);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Success);
    let d = detail(&o);
    assert_eq!(d["restarted"], true);
    assert!(
        d["daemon_error"]
            .as_str()
            .unwrap()
            .starts_with("docker info did not finish (timeout: "),
        "{d}"
    );
}

#[test]
fn no_docker_cli_fails_without_starting_anything() {
    let mut w = worker(vec![Err(Error::NotFound(
        "program \"docker\" not found on the worker".into(),
    ))]);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Failed);
    assert!(
        detail(&o)["error"]
            .as_str()
            .unwrap()
            .starts_with("docker is not installed on the worker"),
    );
    assert_eq!(w.count(fake::program("sudo")), 0);
}

#[test]
fn an_unreachable_worker_fails_at_once() {
    let mut w = worker(vec![Err(Error::Unreachable("connection refused".into()))]);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Failed);
    assert_eq!(
        detail(&o)["error"],
        "worker unreachable: connection refused"
    );
    assert_eq!(w.calls().len(), 1, "nothing else is tried");
}

#[test]
fn a_custom_start_command_is_run_as_its_argv() {
    let mut w = worker(vec![info_down(), info_up()]);
    let config = Config {
        start_command: ["systemctl", "start", "docker; touch /pwned"]
            .map(String::from)
            .to_vec(),
    };
    let o = check(&mut w, &config);
    assert_eq!(o.status, Status::Success);
    assert!(
        w.argvs().contains(
            &["systemctl", "start", "docker; touch /pwned"]
                .map(String::from)
                .to_vec()
        )
    );
}

#[test]
fn a_failing_date_leaves_checked_at_null() {
    let mut w = worker(vec![info_up()]);
    w.on(fake::argv(DATE), Ok(output(1, "", "date: invalid")));
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Success);
    assert_eq!(detail(&o)["checked_at"], Value::Null);
}

#[test]
fn info_output_parsing() {
    assert_eq!(server_version(INFO_UP).as_deref(), Some("20.10.24+dfsg1"));
    assert_eq!(server_version("Client:\n"), None);
    assert!(!reports_server_error(INFO_UP));
    assert!(reports_server_error(
        "Client:\n Plugins:\n\nServer:\nERROR: Cannot connect to the Docker daemon\n"
    ));
    // An error in the client section (a broken CLI plugin) is not a dead daemon.
    assert!(!reports_server_error(
        "Client:\n Plugins:\n  buildx:\n   ERROR: broken\n\nServer:\n Containers: 0\n"
    ));
    let down = info_down().unwrap();
    assert_eq!(
        info_error(&down),
        "errors pretty printing info; ERROR: Cannot connect to the Docker daemon at \
         unix:///var/run/docker.sock. Is the docker daemon running?"
    );
    assert_eq!(info_error(&output(1, "", "")), "docker info exited with 1");
    // docker 28: the message on stderr only.
    let d28 = output(
        1,
        "Client:\n Version: 28.2.2\n\nServer:\n",
        "Cannot connect to the Docker daemon at unix:///x. Is the docker daemon running?\n",
    );
    assert_eq!(
        info_error(&d28),
        "Cannot connect to the Docker daemon at unix:///x. Is the docker daemon running?"
    );
}

#[test]
fn timestamp_shape() {
    assert!(is_utc_timestamp("2026-11-23T02:44:47Z"));
    for bad in [
        "",
        "2026-11-23 02:44:47Z",
        "2026-11-23T02:44:47",
        "2026-11-23T02:44:47+00:00",
        "Mon Nov 23 02:44:47 UTC 2026",
    ] {
        assert!(!is_utc_timestamp(bad), "{bad:?}");
    }
}

#[test]
fn a_dry_run_checks_and_names_the_start_command_without_running_it() {
    let mut w = worker(vec![info_down()]);
    w.set_dry_run(true);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Failed);
    let d = detail(&o);
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["would_run"], json!(START));
    assert_eq!(d["restarted"], false);
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .starts_with("dry run: the docker daemon is down (")
            && d["error"]
                .as_str()
                .unwrap()
                .ends_with("a real run would run `sudo -n service docker start`"),
        "{d:#}"
    );
    assert_eq!(w.argvs(), [&INFO[..], &DATE[..]], "no start command");

    let mut w = worker(vec![info_up()]);
    w.set_dry_run(true);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Success);
    assert_eq!(detail(&o)["dry_run"], true);
    assert_eq!(w.argvs(), [&INFO[..], &DATE[..]]);
}

#[test]
fn grants_name_the_start_program_and_honour_dry_runs() {
    use quarry_sdk::Task as _;
    let g = crate::DockerHealth::grants(&default_config()).unwrap();
    assert_eq!(g.programs(), ["docker", "date", "sleep", "sudo"]);
    assert!(!g.allows_shell() && g.allows_dry_run());
    let custom = Config {
        start_command: vec!["/usr/sbin/service".into(), "docker".into(), "start".into()],
    };
    let g = crate::DockerHealth::grants(&custom).unwrap();
    assert_eq!(g.programs()[3], "/usr/sbin/service");
}
