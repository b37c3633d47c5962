//! ROCK's own sample config (the `scheduler` section of rock-local.yml, verbatim) run by
//! `quarry serve`'s server against a real rocklet, a private dockerd and real docuum: every
//! class path maps to a built-in plugin and every task does its job on the first tick.

use std::collections::BTreeMap;
use std::sync::Arc;

use quarry_host::report::{RunReport, TickOutcome, WorkerOutcome};
use quarry_host::server::Server;

use crate::harness::*;
use crate::image_cleanup::{PrivateDockerd, docuum_bin};
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// The scheduler section of ROCK's sample `rock-local.yml`, byte for byte.
const ROCK_SAMPLE: &str = r#"scheduler:
  enabled: true
  worker_cache_ttl: 43200
  tasks:
    - task_class: rock.admin.scheduler.tasks.image_cleanup_task.ImageCleanupTask
      enabled: true
      interval_seconds: 43200
      params: {disk_threshold: "70%", image_whitelist: ["python:3.11"]}
    - task_class: rock.admin.scheduler.tasks.file_cleanup_task.FileCleanupTask
      interval_seconds: 360
      params:
        target_dirs:
          - path: "/data/logs"
            exclude_files: ["docuum.log", "./rocklet.log", "./rock_worker.log", "./access.log"]
          - "/data/service_status"
        max_age_mins: 180
        max_file_size: "1G"
    - task_class: "rock.admin.scheduler.tasks.container_cleanup_task.ContainerCleanupTask"
      interval_seconds: 86400
      params: {max_age_hours: 72}
    - task_class: rock.admin.scheduler.tasks.docker_health_task.DockerHealthTask
      interval_seconds: 1800
    - task_class: rock.admin.scheduler.tasks.image_pull_task.ImagePullTask
      interval_seconds: 21600
      params: {images: ["python:3.11"]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocks_sample_config_runs_every_task_against_real_parts() {
    needs_real_parts!("a dockerd, docuum and a real rocklet");
    // The sample cleans /data/logs and /data/service_status: never on a machine that has them.
    assert!(
        !std::path::Path::new("/data").exists(),
        "refusing to run ROCK's sample config: it would clean /data/logs on this machine"
    );
    let tmp = TempDir::new("rock-sample");
    // Pulls go to a proxy on a closed loopback port: the test never leaves 127.0.0.0/8, and
    // image_pull's failure to reach Docker Hub must be reported, not hidden.
    let ddir = std::path::PathBuf::from(format!("/tmp/quarry-rs-{}", std::process::id()));
    let dockerd = PrivateDockerd::start_with_env(
        &ddir,
        &[
            ("HTTP_PROXY", "http://127.0.0.1:9"),
            ("HTTPS_PROXY", "http://127.0.0.1:9"),
            ("NO_PROXY", ""),
        ],
    );
    // docuum on the rocklet's PATH, as on a prepared worker (the sample names no path).
    let docuum = std::path::PathBuf::from(docuum_bin());
    let rocklet = RockletProcess::start_with_path_prefix_and_env(
        docuum.parent().unwrap(),
        &[
            ("DOCKER_HOST", dockerd.host.as_str()),
            ("XDG_DATA_HOME", &format!("{}/docuum-state", tmp.str())),
        ],
    );
    let plugins = plugins_dir(&[
        "image_cleanup",
        "file_cleanup",
        "container_cleanup",
        "docker_health",
        "image_pull",
    ]);
    let file = tmp.path().join("rock-local.yml");
    std::fs::write(
        &file,
        format!(
            "{ROCK_SAMPLE}quarry:\n  plugins_dir: {}\n  workers: [\"{}\"]\n  status_dir: {}/status\n  report_dir: {}/reports\n  cache_dir: none\n",
            plugins.str(),
            rocklet.addr,
            tmp.str(),
            tmp.str()
        ),
    )
    .unwrap();

    let server = within("server start", 60, Server::start(&file))
        .await
        .unwrap();
    let mut reports = server.scheduler().subscribe();
    // Every task ticks once, one second after the start.
    let got: BTreeMap<String, Arc<RunReport>> =
        within("the first tick of every task", 150, async {
            let mut got = BTreeMap::new();
            while got.len() < 5 {
                let r = reports.recv().await.unwrap();
                got.entry(r.task_type.clone()).or_insert(r);
            }
            got
        })
        .await;
    let outcome = |task: &str| got[task].worker_results[0].outcome;
    let json = |task: &str| got[task].to_json();

    assert_eq!(
        outcome("image_cleanup"),
        WorkerOutcome::Started,
        "{}",
        json("image_cleanup")
    );
    assert_eq!(
        outcome("file_cleanup"),
        WorkerOutcome::Success,
        "{}",
        json("file_cleanup")
    );
    assert_eq!(
        outcome("container_cleanup"),
        WorkerOutcome::Success,
        "{}",
        json("container_cleanup")
    );
    assert_eq!(
        outcome("docker_health"),
        WorkerOutcome::Success,
        "{}",
        json("docker_health")
    );
    // No registry is reachable: the pull fails, says which image, and affects nothing else.
    assert_eq!(
        got["image_pull"].outcome,
        TickOutcome::Failed,
        "{}",
        json("image_pull")
    );
    let err = got["image_pull"].worker_results[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(err.contains("python:3.11"), "{err}");

    // Status files in ROCK's shape, one per task, with what each did.
    let status = |task: &str| -> serde_json::Value {
        let path = tmp.path().join(format!("status/{task}_status.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    for task in got.keys() {
        let text =
            std::fs::read_to_string(tmp.path().join(format!("status/{task}_status.json"))).unwrap();
        assert_eq!(
            key_order(&text),
            [
                "task_name",
                "worker_ip",
                "pid",
                "status",
                "last_run",
                "error",
                "extra"
            ],
            "{task}"
        );
    }
    let fc = status("file_cleanup");
    assert_eq!(
        fc["extra"]["details"]["/data/logs"]["result"], "dir_not_found",
        "{fc}"
    );
    // docuum runs with the sample's threshold and whitelist, as separate arguments.
    let ic = status("image_cleanup");
    let pid = ic["pid"].as_u64().unwrap();
    let _reap = KillOnDrop(pid);
    assert!(alive(pid));
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&str> = cmdline.split('\0').filter(|a| !a.is_empty()).collect();
    assert_eq!(
        args[1..],
        ["--threshold", "70%", "--keep", "python:3.11"],
        "{args:?}"
    );
    assert_eq!(status("docker_health")["extra"]["restarted"], false);

    within("shutdown", 60, server.shutdown()).await;
    // A daemon outlives the scheduler (as in ROCK); `_reap` stops it by its recorded pid.
    drop(rocklet);
    drop(dockerd);
}
