//! The whole [`crate::cleanup`] against the SDK's [`FakeWorker`] in front of a model of a Docker
//! daemon ([`Daemon`]): containers with a state and times, `docker ps` filters, `docker
//! container inspect` and `docker rm -v` answering as the real CLI does (stdout per success,
//! one stderr line per failure, exit 1 if any failed), plus a clock that advances with every
//! call.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use quarry_sdk::Status;
use quarry_sdk::host::{Command, Error, LogLevel, Output};
use quarry_sdk::worker::fake::{self, FakeWorker, output};
use serde_json::{Value, json};

use crate::cleanup;
use crate::docker::{INSPECT_FORMAT, ZERO_TIME};
use crate::params::{Config, Params};

/// The commands the cleanup runs, as argv prefixes: any other command fails the test.
const PS: [&str; 4] = ["docker", "ps", "-aq", "--no-trunc"];
const INSPECT: [&str; 5] = ["docker", "container", "inspect", "--format", INSPECT_FORMAT];
const RM: [&str; 3] = ["docker", "rm", "-v"];
const DATE: [&str; 3] = ["date", "-u", "+%s"];

/// The worker's clock: 2026-11-23T12:00:00Z.
const NOW_SECS: i64 = 1_795_435_200;

fn id(n: usize) -> String {
    format!("{n:064x}")
}

/// `secs` seconds before NOW, RFC 3339 with nanoseconds as docker prints it.
fn ago(secs: i64) -> String {
    let t = NOW_SECS - secs;
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{t}"),
            "+%Y-%m-%dT%H:%M:%S.123456789Z",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[derive(Clone, Debug)]
struct FakeContainer {
    id: String,
    status: &'static str,
    finished: String,
    created: String,
    labels: Vec<&'static str>,
    /// `docker rm` answers with this stderr line instead of removing it.
    rm_error: Option<&'static str>,
    /// Started between `docker ps` and `docker container inspect`.
    starts_before_inspect: bool,
    /// Started between inspect and `docker rm`.
    starts_before_rm: bool,
    /// Removed by someone else between `docker ps` and inspect.
    vanishes_before_inspect: bool,
}

fn container(n: usize, status: &'static str, finished: String, created: String) -> FakeContainer {
    FakeContainer {
        id: id(n),
        status,
        finished,
        created,
        labels: vec![],
        rm_error: None,
        starts_before_inspect: false,
        starts_before_rm: false,
        vanishes_before_inspect: false,
    }
}

fn exited(n: usize, finished_secs_ago: i64) -> FakeContainer {
    container(
        n,
        "exited",
        ago(finished_secs_ago),
        ago(finished_secs_ago + 60),
    )
}

fn created(n: usize, created_secs_ago: i64) -> FakeContainer {
    container(n, "created", ZERO_TIME.into(), ago(created_secs_ago))
}

fn running(n: usize) -> FakeContainer {
    container(n, "running", ZERO_TIME.into(), ago(100 * 86_400))
}

/// The containers of the fake Docker daemon, shared by the test and the worker's answers.
#[derive(Clone)]
struct Daemon(Rc<RefCell<Vec<FakeContainer>>>);

impl Daemon {
    fn ids(&self) -> Vec<String> {
        self.0.borrow().iter().map(|c| c.id.clone()).collect()
    }

    fn ps(&self, argv: &[String]) -> Output {
        let mut status = None;
        let mut label = None;
        for pair in argv[4..].chunks(2) {
            assert_eq!(pair[0], "--filter");
            match pair[1].split_once('=') {
                Some(("status", s)) => status = Some(s.to_string()),
                Some(("label", l)) => label = Some(l.to_string()),
                other => panic!("unexpected filter {other:?}"),
            }
        }
        let status = status.expect("a status filter");
        let containers = self.0.borrow();
        let ids: Vec<&str> = containers
            .iter()
            .filter(|c| c.status == status)
            .filter(|c| {
                label
                    .as_ref()
                    .is_none_or(|l| c.labels.contains(&l.as_str()))
            })
            .map(|c| c.id.as_str())
            .collect();
        output(0, lines(&ids), "")
    }

    fn inspect(&self, ids: &[String]) -> Output {
        let mut containers = self.0.borrow_mut();
        for c in containers.iter_mut() {
            if c.starts_before_inspect {
                c.status = "running";
            }
        }
        containers.retain(|c| !c.vanishes_before_inspect);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for id in ids {
            match containers.iter().find(|c| &c.id == id) {
                Some(c) => out.push(format!(
                    "{} {} {} {}",
                    c.id, c.status, c.finished, c.created
                )),
                None => err.push(format!("Error: No such container: {id}")),
            }
        }
        output(i32::from(!err.is_empty()), lines(&out), lines(&err))
    }

    fn rm(&self, ids: &[String]) -> Output {
        let mut containers = self.0.borrow_mut();
        for c in containers.iter_mut() {
            if c.starts_before_rm {
                c.status = "running";
            }
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for id in ids {
            let Some(pos) = containers.iter().position(|c| &c.id == id) else {
                err.push(format!(
                    "Error response from daemon: No such container: {id}"
                ));
                continue;
            };
            let c = &containers[pos];
            if let Some(e) = c.rm_error {
                err.push(format!("Error response from daemon: {e} {id}"));
            } else if c.status == "running" {
                err.push(format!(
                    "Error response from daemon: You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
                ));
            } else {
                containers.remove(pos);
                out.push(id.clone());
            }
        }
        output(i32::from(!err.is_empty()), lines(&out), lines(&err))
    }
}

fn lines<S: AsRef<str>>(items: &[S]) -> String {
    items.iter().map(|s| format!("{}\n", s.as_ref())).collect()
}

/// The argv of a command the cleanup ran (it runs no shell).
fn argv(c: &Command) -> &[String] {
    c.get_argv().expect("an argv")
}

/// A worker whose `docker` is a daemon holding `containers`, whose clock (`date -u +%s`) says
/// NOW_SECS and advances 50 ms with every call; every command must carry a time limit of at
/// most 30 s. Later rules (`w.on(fake::prefix(PS), …)`) override an answer.
fn worker(containers: Vec<FakeContainer>) -> (FakeWorker, Daemon) {
    let daemon = Daemon(Rc::new(RefCell::new(containers)));
    let mut w = FakeWorker::new();
    w.require_timeout(Duration::from_secs(30))
        .call_cost(Duration::from_millis(50))
        .on(fake::argv(DATE), Ok(output(0, format!("{NOW_SECS}\n"), "")));
    let d = daemon.clone();
    w.on_with(fake::prefix(PS), move |c| Ok(d.ps(argv(c))));
    let d = daemon.clone();
    w.on_with(fake::prefix(INSPECT), move |c| Ok(d.inspect(&argv(c)[5..])));
    let d = daemon.clone();
    w.on_with(fake::prefix(RM), move |c| Ok(d.rm(&argv(c)[3..])));
    (w, daemon)
}

fn config(params: Value) -> Config {
    let params: Params = serde_json::from_value(params).unwrap();
    Config::from_params(&params).unwrap()
}

fn run(w: &mut FakeWorker, params: Value) -> (Status, Value) {
    let o = cleanup(w, &config(params));
    (o.status, Value::Object(o.detail))
}

#[test]
fn removes_old_exited_and_stale_created_and_keeps_the_rest() {
    let (mut w, docker) = worker(vec![
        exited(1, 2 * 86_400),                                     // old: removed
        exited(2, 3600),                                           // young: kept
        created(3, 2 * 3600),                                      // stale created: removed
        created(4, 30), // just created, maybe about to start: kept
        running(5),     // never listed
        container(6, "exited", ZERO_TIME.into(), ago(5 * 86_400)), // no finish time: kept
        container(7, "exited", "garbage".into(), ago(5 * 86_400)), // unparsable: kept
        exited(8, 3 * 86_400), // oldest: removed first
    ]);
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Success, "{d:#}");
    assert_eq!(
        d,
        json!({
            "status": "success",
            "max_age_hours": 24,
            "created_max_age_hours": 1,
            "listed": {"exited": 5, "created": 2},
            "worker_time": NOW_SECS,
            "removed": [id(8), id(1), id(3)],
            "removed_count": 3,
            "removed_by_state": {"exited": 2, "created": 1},
            "kept_count": 4,
            "kept_by_reason": {"young": 2, "no_time": 2},
            "gone_count": 0,
            "deferred_count": 0,
            "incomplete": false,
            "errors": [],
            "error_count": 0,
        })
    );
    assert_eq!(docker.ids(), [id(2), id(4), id(5), id(6), id(7)]);
    assert_eq!(w.count(fake::prefix(RM)), 1, "one chunk");
    assert!(
        w.logs()
            .iter()
            .any(|(_, m)| m.contains("removed 3 containers, kept 4"))
    );
}

#[test]
fn a_dry_run_lists_what_it_would_remove_and_removes_nothing() {
    let all = vec![
        exited(1, 2 * 86_400),
        exited(2, 3600),
        created(3, 2 * 3600),
        created(4, 30),
        running(5),
        exited(8, 3 * 86_400),
    ];
    let (mut w, docker) = worker(all.clone());
    w.set_dry_run(true);
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Success, "{d:#}");
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["would_remove"], json!([id(8), id(1), id(3)]));
    assert_eq!(d["would_remove_count"], 3);
    assert_eq!(
        d["would_remove_by_state"],
        json!({"exited": 2, "created": 1})
    );
    assert_eq!(d["kept_count"], 2);
    assert!(d.get("removed").is_none(), "{d:#}");
    assert_eq!(w.count(fake::prefix(RM)), 0, "no docker rm in a dry run");
    assert!(
        w.argvs()
            .iter()
            .all(|a| a[..3] == PS[..3] || a[..3] == INSPECT[..3] || a[..] == DATE[..]),
        "only listing, inspecting and the clock: {:?}",
        w.argvs()
    );
    assert_eq!(
        docker.ids(),
        all.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
    );
    assert!(
        w.logs()
            .iter()
            .any(|(_, m)| m.contains("dry run: would remove 3 containers, kept 2"))
    );

    // A real run then removes exactly those.
    let (mut w, docker) = worker(all);
    let (_, real) = run(&mut w, json!({}));
    assert_eq!(real["removed"], d["would_remove"]);
    assert_eq!(docker.ids(), [id(2), id(4), id(5)]);
}

#[test]
fn created_containers_have_their_own_cutoff() {
    let (mut w, docker) = worker(vec![created(1, 600), created(2, 7200), exited(3, 600)]);
    // created_max_age_hours 0: every created container goes, exited ones keep their 24 h.
    let (status, d) = run(&mut w, json!({"created_max_age_hours": 0}));
    assert_eq!(status, Status::Success);
    assert_eq!(d["removed"], json!([id(2), id(1)]));
    assert_eq!(docker.ids(), [id(3)]);
    // Fractions: 0.1 h = 360 s.
    let (mut w, _) = worker(vec![exited(1, 300), exited(2, 400)]);
    let (_, d) = run(&mut w, json!({"max_age_hours": 0.1}));
    assert_eq!(d["removed"], json!([id(2)]));
}

#[test]
fn nothing_listed_means_no_further_calls() {
    let (mut w, _) = worker(vec![running(1)]);
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Success);
    assert_eq!(d["removed_count"], 0);
    assert_eq!(d["listed"], json!({"exited": 0, "created": 0}));
    assert_eq!(
        w.calls().len(),
        2,
        "two docker ps, nothing else: {:?}",
        w.argvs()
    );
}

#[test]
fn the_label_filter_reaches_docker_ps_as_one_argument() {
    let mut labelled = exited(1, 5 * 86_400);
    labelled.labels = vec!["team=a b; $(id)"];
    let (mut w, docker) = worker(vec![labelled, exited(2, 5 * 86_400)]);
    let (status, d) = run(&mut w, json!({"label": "team=a b; $(id)"}));
    assert_eq!(status, Status::Success);
    assert_eq!(d["label"], "team=a b; $(id)");
    assert_eq!(d["removed"], json!([id(1)]));
    assert_eq!(docker.ids(), [id(2)]);
    assert!(
        w.argvs()[0].ends_with(&["--filter".into(), "label=team=a b; $(id)".into()]),
        "{:?}",
        w.argvs()[0]
    );
}

#[test]
fn state_changes_between_calls_are_not_errors() {
    let mut starts_early = created(1, 5 * 3600);
    starts_early.starts_before_inspect = true;
    let mut starts_late = created(2, 5 * 3600);
    starts_late.starts_before_rm = true;
    let mut vanishes = exited(3, 5 * 86_400);
    vanishes.vanishes_before_inspect = true;
    let (mut w, docker) = worker(vec![
        starts_early,
        starts_late,
        vanishes,
        exited(4, 5 * 86_400),
    ]);
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Success, "{d:#}");
    assert_eq!(d["removed"], json!([id(4)]));
    assert_eq!(d["kept_by_reason"], json!({"state_changed": 2}));
    assert_eq!(d["gone_count"], 1);
    assert_eq!(
        docker.ids(),
        [id(1), id(2)],
        "the started containers are untouched"
    );
}

#[test]
fn a_failed_removal_fails_the_run_with_every_detail() {
    let mut busy = exited(1, 5 * 86_400);
    busy.rm_error =
        Some("driver \"overlay2\" failed to remove root filesystem: device or resource busy for");
    let (mut w, docker) = worker(vec![busy, exited(2, 4 * 86_400)]);
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Failed);
    assert_eq!(d["status"], "failed");
    let error = d["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "container cleanup removed 1 containers but hit 1 error: docker rm -v 000000000000: "
        ),
        "{error}"
    );
    assert!(error.contains("device or resource busy"), "{error}");
    assert_eq!(d["removed"], json!([id(2)]));
    assert_eq!(d["error_count"], 1);
    assert_eq!(docker.ids(), [id(1)]);
}

#[test]
fn docker_missing_or_broken_fails_before_anything_is_removed() {
    let (mut w, _) = worker(vec![exited(1, 5 * 86_400)]);
    w.on(
        fake::prefix(PS),
        Err(Error::NotFound(
            "program \"docker\" not found on the worker".into(),
        )),
    );
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Failed);
    assert_eq!(
        d["error"],
        "docker is not installed on the worker (program \"docker\" not found on the worker)"
    );

    let (mut w, _) = worker(vec![exited(1, 5 * 86_400)]);
    w.on(fake::prefix(PS), Ok(output(
        1,
        "",
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
    )));
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Failed);
    assert_eq!(
        d["error"],
        "listing exited containers failed (docker ps exited with 1): Cannot connect to the \
         Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    );
    assert_eq!(w.calls().len(), 1);

    let (mut w, docker) = worker(vec![exited(1, 5 * 86_400)]);
    w.on(fake::prefix(PS), Ok(output(0, "CONTAINER ID\n", "")));
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Failed);
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("unexpected line in docker ps output")
    );
    assert_eq!(docker.ids(), [id(1)]);
}

#[test]
fn an_unreadable_worker_clock_fails_before_anything_is_removed() {
    let (mut w, _) = worker(vec![exited(1, 5 * 86_400)]);
    w.on(fake::argv(DATE), Ok(output(0, "%s\n", "")));
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Failed);
    assert_eq!(
        d["error"],
        "could not read the worker's clock (date -u +%s printed \"%s\")"
    );
    assert_eq!(w.count(fake::prefix(RM)), 0);
}

#[test]
fn many_containers_go_in_chunks() {
    let containers: Vec<_> = (1..=120)
        .map(|n| exited(n, 5 * 86_400 + n as i64))
        .collect();
    let (mut w, docker) = worker(containers);
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Success);
    assert_eq!(d["removed_count"], 120);
    assert_eq!(
        d["removed"].as_array().unwrap().len(),
        100,
        "the list is capped"
    );
    assert_eq!(d["removed"][0], id(120), "oldest first");
    assert_eq!(w.count(fake::prefix(INSPECT)), 2, "inspect: 100 + 20");
    assert_eq!(w.count(fake::prefix(RM)), 3, "rm: 50 + 50 + 20");
    assert!(w.argvs().iter().all(|c| c.len() <= 5 + 100));
    assert!(docker.ids().is_empty());
}

#[test]
fn no_chunk_starts_after_the_budget() {
    let containers: Vec<_> = (1..=120)
        .map(|n| exited(n, 5 * 86_400 + n as i64))
        .collect();
    let (mut w, docker) = worker(containers);
    // Each call takes 8 s: ps, ps, date (24 s), inspect, inspect (40 s), one rm chunk
    // (48 s): past the 45 s budget, no further chunk starts.
    w.call_cost(Duration::from_secs(8));
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Success, "{d:#}");
    assert_eq!(d["removed_count"], 50);
    assert_eq!(d["deferred_count"], 70);
    assert_eq!(d["incomplete"], true);
    assert_eq!(docker.ids().len(), 70);
    assert!(
        w.logs()
            .iter()
            .any(|(l, m)| *l == LogLevel::Warn && m.contains("70 containers left"))
    );
}

#[test]
fn a_timed_out_rm_is_an_error_and_unreachable_stops_the_run() {
    let containers: Vec<_> = (1..=60).map(|n| exited(n, 5 * 86_400)).collect();
    let (mut w, _) = worker(containers.clone());
    w.on(
        fake::prefix(RM),
        Err(Error::Timeout("execute did not answer within 25.0s".into())),
    );
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Failed);
    assert_eq!(d["error_count"], 2, "both chunks tried: {d:#}");
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("docker rm -v of 50 containers did not finish (timeout: ")
    );

    let (mut w, _) = worker(containers);
    w.on(
        fake::prefix(RM),
        Err(Error::Unreachable("connection refused".into())),
    );
    let (status, d) = run(&mut w, json!({}));
    assert_eq!(status, Status::Failed);
    assert_eq!(d["error_count"], 1, "no call after unreachable: {d:#}");
    assert_eq!(w.count(fake::prefix(RM)), 1);
}

#[test]
fn grants_name_docker_and_date_and_honour_dry_runs() {
    use quarry_sdk::Task as _;
    let g = crate::ContainerCleanup::grants(&config(json!({}))).expect("declared");
    assert_eq!(g.programs(), ["docker", "date"]);
    assert!(!g.allows_shell() && g.allows_dry_run());
    assert!(g.write_paths().is_empty() && g.read_paths().is_empty());
}
