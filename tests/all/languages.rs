//! The example tasks in Python, JavaScript and C (examples/*/disk_usage), built from source by
//! scripts/build-examples.sh (called by scripts/test.sh), loaded into the host and run against
//! a real rocklet.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quarry_host::plugins::PluginSet;
use quarry_host::report::TickOutcome;
use quarry_host::run::run_tick;
use quarry_host::runtime::{Runtime, RuntimeLimits};
use quarry_host::workers::{self, Limits, WorkerAddr};
use serde_json::json;

use crate::harness::*;
use crate::support::real_parts::needs_real_parts;
use crate::support::rocklet::RockletProcess;

/// Sorted, as `PluginSet::names` lists them.
const EXAMPLES: [&str; 3] = ["disk_usage_c", "disk_usage_js", "disk_usage_py"];

fn examples_dir() -> PathBuf {
    std::env::var_os("QUARRY_TEST_EXAMPLES_DIR").map(PathBuf::from).unwrap_or_else(|| {
        panic!("QUARRY_TEST_EXAMPLES_DIR is not set: run scripts/test.sh, which builds the Python, JS and C examples")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_javascript_and_c_tasks_run_against_a_real_rocklet() {
    needs_real_parts!("the built examples and a real rocklet");
    let dir = examples_dir();
    let plugins = TempDir::new("lang");
    for name in EXAMPLES {
        std::fs::copy(
            dir.join(format!("{name}.wasm")),
            plugins.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    // Python and JavaScript components take seconds to compile: keep them in a compile cache
    // that survives test runs (its entries are checksummed, see reload.rs).
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-compile-cache");
    let rt = Arc::new(
        Runtime::new(RuntimeLimits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(30),
            ..Default::default()
        })
        .unwrap()
        .with_compile_cache(cache),
    );
    let set = within(
        "loading the examples",
        600,
        PluginSet::load_dir(&rt, plugins.path()),
    )
    .await
    .unwrap();
    assert_eq!(set.names(), EXAMPLES, "{:?}", set.errors());

    let rocklet = RockletProcess::start();
    let worker = workers::connect(
        &[WorkerAddr::parse(&rocklet.addr, 22555).unwrap()],
        Limits::default(),
    );
    let out = TempDir::new("lang-out");
    for name in EXAMPLES {
        let plugin = set.get(name).unwrap();
        assert_eq!(plugin.meta().version, "0.1.0");
        // validate-config, as the config loader calls it.
        let verdict = rt
            .validate_config(plugin, &json!({"paths": ["/", "tmp"]}).to_string())
            .await
            .unwrap();
        assert_eq!(
            verdict,
            Err("paths[1] \"tmp\": must be absolute".to_string()),
            "{name}"
        );
        let verdict = rt
            .validate_config(plugin, &json!({"path": ["/"]}).to_string())
            .await
            .unwrap();
        assert!(
            verdict.unwrap_err().contains("unknown param \"path\""),
            "{name}"
        );

        let report_path = out.path().join(format!("{name}.json"));
        let params = json!({"paths": ["/"], "report_path": report_path});
        let t = task(&set, name, params);
        let (report, runs) = within(
            name,
            60,
            run_tick(&rt, &t, &worker, &settings(out.str(), None, 60)),
        )
        .await;
        assert_eq!(
            report.outcome,
            TickOutcome::Success,
            "{name}: {}",
            report.to_json()
        );
        let detail = runs[0].detail.as_ref().unwrap();
        assert_eq!(detail["worker"], "127.0.0.1", "{name}");
        let fs = detail["filesystems"].as_array().unwrap();
        assert_eq!(fs.len(), 1, "{name}: {detail:?}");
        assert_eq!(fs[0]["mount"], "/", "{name}");
        assert!(fs[0]["size_kb"].as_u64().unwrap() > 0, "{name}");
        // The summary written through write-file on the worker is the same JSON.
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
        assert_eq!(written["filesystems"], detail["filesystems"], "{name}");
    }
}
