//! Loading the plugins directory: bad files affect only themselves.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_foreign_files_are_refused_and_the_rest_load() {
    let dir = plugins_dir(&["file_cleanup", "probe"]);
    std::fs::write(dir.path().join("garbage.wasm"), b"this is not wasm").unwrap();
    let bytes = std::fs::read(component("probe")).unwrap();
    std::fs::write(dir.path().join("truncated.wasm"), &bytes[..bytes.len() / 2]).unwrap();
    // A core module, not a component.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored: not .wasm").unwrap();
    let rt = runtime(64, Duration::from_secs(5));
    let set = load(&rt, dir.path()).await;
    assert_eq!(set.names(), vec!["file_cleanup", "probe"]);
    let errors: Vec<String> = set.errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for (file, why) in [
        ("core.wasm", "not a valid WebAssembly component"),
        ("garbage.wasm", "not a valid WebAssembly component"),
        ("truncated.wasm", "not a valid WebAssembly component"),
    ] {
        let e = errors
            .iter()
            .find(|e| e.contains(file))
            .unwrap_or_else(|| panic!("{file}: {errors:#?}"));
        assert!(e.starts_with("plugin ") && e.contains(why), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_for_another_wit_version_is_refused_naming_both_versions() {
    let dir = plugins_dir(&["file_cleanup"]);
    let mut bytes = std::fs::read(component("probe")).unwrap();
    // Same-length rewrite of every "quarry:task/…@0.1.1" name to 0.2.0.
    let (from, to) = (b"@0.1.1".as_slice(), b"@0.2.0".as_slice());
    let mut replaced = 0;
    for i in 0..bytes.len().saturating_sub(from.len()) {
        let ours = [
            b"quarry:task".as_slice(),
            b"quarry:task/host",
            b"quarry:task/task",
            b"quarry:task/capabilities",
        ];
        if &bytes[i..i + from.len()] == from && ours.iter().any(|p| bytes[..i].ends_with(p)) {
            bytes[i..i + to.len()].copy_from_slice(to);
            replaced += 1;
        }
    }
    assert!(
        replaced >= 2,
        "expected import and export names, replaced {replaced}"
    );
    std::fs::write(dir.path().join("future.wasm"), &bytes).unwrap();
    let rt = runtime(64, Duration::from_secs(5));
    let set = load(&rt, dir.path()).await;
    assert_eq!(set.names(), vec!["file_cleanup"]);
    let e = set.errors()[0].to_string();
    assert!(e.contains("future.wasm"), "{e}");
    assert!(
        e.contains("quarry:task@0.2.0") && e.contains("quarry:task@0.1.1"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_claiming_one_name_are_both_refused() {
    let dir = plugins_dir(&["probe", "file_cleanup"]);
    std::fs::copy(component("probe"), dir.path().join("probe-copy.wasm")).unwrap();
    let rt = runtime(64, Duration::from_secs(5));
    let set = load(&rt, dir.path()).await;
    assert_eq!(set.names(), vec!["file_cleanup"]);
    assert_eq!(set.errors().len(), 2);
    for e in set.errors() {
        let e = e.to_string();
        assert!(e.contains("claim the task name \"probe\""), "{e}");
    }
}
