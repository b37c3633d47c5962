//! Config fixtures: every file in tests/fixtures/invalid/ is rejected with exactly the message
//! in the `.expected` file beside it; every file in valid/ is accepted. Run with
//! `QUARRY_BLESS=1` to (re)write the `.expected` files, then review the diff.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quarry_host::config::Config;
use quarry_host::server::resolve_tasks;
use quarry_host::workers::WorkerAddr;

use crate::harness::*;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

/// All problems with a fixture, one per line, or `None` when valid. Plugins come from the
/// test build (file_cleanup and probe).
async fn problems(file: &Path, plugins: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut cfg = match Config::from_yaml(&text, file.parent().unwrap()) {
        Ok(cfg) => cfg,
        Err(p) => {
            return Some(
                p.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
    };
    cfg.paths.plugins_dir = plugins.to_path_buf();
    let rt = runtime(64, Duration::from_secs(5));
    let set = load(&rt, plugins).await;
    match resolve_tasks(&rt, &cfg, &set).await {
        Ok(_) => None,
        Err(p) => Some(
            p.iter()
                .map(|p| {
                    p.to_string()
                        .replace(plugins.to_str().unwrap(), "<plugins>")
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configs_give_their_expected_messages() {
    let plugins = plugins_dir(&["file_cleanup", "probe"]);
    let bless = std::env::var_os("QUARRY_BLESS").is_some();
    let mut failures = Vec::new();
    for file in fixtures("invalid") {
        let got = problems(&file, plugins.path())
            .await
            .unwrap_or_else(|| panic!("{} was accepted", file.display()));
        let expected_file = file.with_extension("expected");
        if bless {
            std::fs::write(&expected_file, format!("{got}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_else(|_| {
            panic!(
                "{} missing (run with QUARRY_BLESS=1)",
                expected_file.display()
            )
        });
        if got != expected.trim_end() {
            failures.push(format!(
                "{}:\n  expected: {}\n  got:      {got}",
                file.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_configs_are_accepted() {
    let plugins = plugins_dir(&["file_cleanup", "probe"]);
    for file in fixtures("valid") {
        assert_eq!(
            problems(&file, plugins.path()).await,
            None,
            "{}",
            file.display()
        );
    }
}

#[test]
fn quarry_settings_and_rock_defaults() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/valid");
    let cfg = Config::load(&dir.join("quarry_settings.yml")).unwrap();
    assert_eq!(cfg.discovery.fixed.len(), 4);
    assert_eq!(
        cfg.discovery.fixed[2],
        WorkerAddr::Remote {
            host: "10.0.0.13".into(),
            port: 8000
        }
    );
    assert_eq!(
        cfg.discovery.fixed[1],
        WorkerAddr::Remote {
            host: "10.0.0.12".into(),
            port: 22556
        }
    );
    assert_eq!(
        cfg.discovery.fixed[3],
        WorkerAddr::Remote {
            host: "fd00::7".into(),
            port: 22556
        }
    );
    assert_eq!(cfg.run.report_dir, Some(dir.join("reports")));
    assert_eq!(cfg.run.status_dir, "/var/lib/quarry/status");
    assert_eq!(
        (
            cfg.run.concurrency,
            cfg.run.run_timeout.as_secs(),
            cfg.runtime.call_timeout.as_secs()
        ),
        (8, 30, 20)
    );
    assert_eq!(cfg.runtime.memory_bytes, 64 << 20);
    assert_eq!(
        cfg.runtime.compile,
        quarry_host::runtime::CompileMode::Optimized
    );
    assert_eq!(
        cfg.tasks[0].interval, None,
        "no interval: the plugin's default applies"
    );

    let sample = Config::load(&dir.join("rock_sample_file_cleanup.yml")).unwrap();
    assert_eq!(sample.tasks.len(), 1, "the disabled entry is ignored");
    assert_eq!(sample.tasks[0].plugin.as_str(), "file_cleanup");
    assert_eq!(sample.tasks[0].interval, Some(Duration::from_secs(360)));
    assert_eq!(sample.discovery.fixed, vec![WorkerAddr::Local]);
    assert_eq!(sample.discovery.ttl.as_secs(), 43200);
    assert_eq!(
        sample.runtime.compile,
        quarry_host::runtime::CompileMode::Fast
    );
}

#[test]
fn status_dir_defaults_to_rocks_variable() {
    let raw = quarry_host::config::parse_yaml("scheduler: {enabled: true}").unwrap();
    let env = |k: &str| (k == "ROCK_SCHEDULER_STATUS_DIR").then(|| "/srv/status".to_string());
    let cfg = Config::from_raw(raw, Path::new("/"), env).unwrap();
    assert_eq!(cfg.run.status_dir, "/srv/status");
    assert_eq!(
        cfg.run.report_dir.as_deref(),
        Some(Path::new("/srv/status"))
    );
    let raw = quarry_host::config::parse_yaml("scheduler: {enabled: true}").unwrap();
    let cfg = Config::from_raw(raw, Path::new("/"), |_| None).unwrap();
    assert_eq!(cfg.run.status_dir, "/data/scheduler_status");
}

#[test]
fn api_settings_default_to_loopback_and_resolve_the_token_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/valid");
    let cfg = Config::load(&dir.join("api_public.yml")).unwrap();
    assert!(cfg.api.enabled);
    assert_eq!(cfg.api.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(cfg.api.token_file, Some(dir.join("api.token")));
    let sample = Config::load(&dir.join("rock_sample_file_cleanup.yml")).unwrap();
    assert_eq!(sample.api.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(sample.api.token_file, None);
    assert_eq!(sample.api.trigger_cooldown, Duration::from_secs(60));
    assert_eq!(
        cfg.restart_only_changes(&sample),
        vec!["quarry.api.listen", "quarry.api.token_file"]
    );
}
