//! The whole [`crate::check`] against a fake [`crate::Worker`] that plays `docker info`, the
//! start command and `date`, with a fake clock that advances with every pause.

use std::collections::VecDeque;
use std::time::Duration;

use quarry_sdk::Status;
use quarry_sdk::host::{Error, LogLevel, Output};
use serde_json::{Value, json};

use crate::params::Config;
use crate::{Worker, check, info_error, is_utc_timestamp, reports_server_error, server_version};

const NOW: &str = "2026-11-23T02:44:47Z";

/// What `docker info` prints on a healthy daemon (cut down).
const INFO_UP: &str =
    "Client:\n Context:    default\n\nServer:\n Containers: 0\n Server Version: 20.10.24+dfsg1\n";

/// Debian 20.10's `docker info` against a dead socket.
fn info_down() -> Result<Output, Error> {
    Ok(output(
        1,
        "Client:\n Context:    default\n\nServer:\nERROR: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
        "errors pretty printing info\n",
    ))
}

fn info_up() -> Result<Output, Error> {
    Ok(output(0, INFO_UP, ""))
}

fn output(exit_code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit_code,
    }
}

struct FakeWorker {
    /// Answers of successive `docker info` calls; the last one repeats.
    info: VecDeque<Result<Output, Error>>,
    /// Answer of the start command.
    start: Result<Output, Error>,
    /// Answer of `date`.
    date: Result<Output, Error>,
    calls: Vec<Vec<String>>,
    clock: Duration,
    pauses: u32,
    logs: Vec<(LogLevel, String)>,
}

impl FakeWorker {
    fn new(info: Vec<Result<Output, Error>>) -> Self {
        FakeWorker {
            info: info.into(),
            start: Ok(output(0, " * Starting Docker: docker   [ OK ]", "")),
            date: Ok(output(0, &format!("{NOW}\n"), "")),
            calls: Vec::new(),
            clock: Duration::ZERO,
            pauses: 0,
            logs: Vec::new(),
        }
    }

    fn ran(&self, program: &str) -> usize {
        self.calls.iter().filter(|c| c[0] == program).count()
    }
}

impl Worker for FakeWorker {
    fn execute(&mut self, argv: &[String], timeout: Duration) -> Result<Output, Error> {
        assert!(timeout > Duration::ZERO && timeout <= Duration::from_secs(30));
        self.calls.push(argv.to_vec());
        self.clock += Duration::from_millis(100);
        match argv[0].as_str() {
            "docker" => {
                assert_eq!(argv, ["docker", "info"]);
                if self.info.len() > 1 {
                    self.info.pop_front().unwrap()
                } else {
                    self.info.front().cloned().unwrap()
                }
            }
            "date" => {
                assert_eq!(argv, ["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]);
                self.date.clone()
            }
            _ => self.start.clone(),
        }
    }

    fn pause(&mut self, pause: Duration) {
        self.pauses += 1;
        self.clock += pause;
    }

    fn elapsed(&mut self) -> Duration {
        self.clock
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_string()));
    }
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
    let mut w = FakeWorker::new(vec![info_up()]);
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
    assert_eq!(w.ran("sudo"), 0);
}

#[test]
fn a_started_daemon_is_reported_as_restarted() {
    let mut w = FakeWorker::new(vec![info_down(), info_down(), info_down(), info_up()]);
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
    assert_eq!(w.ran("sudo"), 1);
    assert_eq!(w.pauses, 2);
    assert!(
        w.logs
            .iter()
            .any(|(l, m)| *l == LogLevel::Warn && m.contains("down"))
    );
}

#[test]
fn a_failed_start_is_a_failed_run_with_its_exit_code_and_output() {
    let mut w = FakeWorker::new(vec![info_down()]);
    w.start = Ok(output(1, "", "sudo: a password is required\n"));
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
    assert_eq!(w.ran("docker"), 1, "no polling after a failed start");
}

#[test]
fn a_start_command_that_cannot_run_is_a_failed_run() {
    let mut w = FakeWorker::new(vec![info_down()]);
    w.start = Err(Error::NotFound("program \"sudo\" not found".into()));
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
    let mut w = FakeWorker::new(vec![info_down()]);
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
    assert!(w.clock < Duration::from_secs(25), "{:?}", w.clock);
}

#[test]
fn a_hung_daemon_counts_as_down() {
    let mut w = FakeWorker::new(vec![
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
    let mut w = FakeWorker::new(vec![Err(Error::NotFound(
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
    assert_eq!(w.ran("sudo"), 0);
}

#[test]
fn an_unreachable_worker_fails_at_once() {
    let mut w = FakeWorker::new(vec![Err(Error::Unreachable("connection refused".into()))]);
    let o = check(&mut w, &default_config());
    assert_eq!(o.status, Status::Failed);
    assert_eq!(
        detail(&o)["error"],
        "worker unreachable: connection refused"
    );
    assert_eq!(w.calls.len(), 1, "nothing else is tried");
}

#[test]
fn a_custom_start_command_is_run_as_its_argv() {
    let mut w = FakeWorker::new(vec![info_down(), info_up()]);
    let config = Config {
        start_command: ["systemctl", "start", "docker; touch /pwned"]
            .map(String::from)
            .to_vec(),
    };
    let o = check(&mut w, &config);
    assert_eq!(o.status, Status::Success);
    assert!(
        w.calls.contains(
            &["systemctl", "start", "docker; touch /pwned"]
                .map(String::from)
                .to_vec()
        )
    );
}

#[test]
fn a_failing_date_leaves_checked_at_null() {
    let mut w = FakeWorker::new(vec![info_up()]);
    w.date = Ok(output(1, "", "date: invalid"));
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
