//! Builds the built-in plugins (plugins/) and the test guests (tests/guests/) from source for
//! wasm32-wasip2, once per test build, and tells the tests where the components are:
//! `QUARRY_TEST_PLUGINS_DIR` holds the built-ins, `QUARRY_TEST_GUESTS_DIR` the test guests.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // A target dir of its own: the outer cargo holds the lock on the workspace's.
    let target_dir = root.join("target").join("wasm");
    for watched in [
        "wit",
        "sdk/src",
        "sdk/Cargo.toml",
        "plugins",
        "tests/guests",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let plugins = build(
        &root.join("plugins/Cargo.toml"),
        &target_dir,
        &out.join("plugins"),
    );
    let guests = build(
        &root.join("tests/guests/Cargo.toml"),
        &target_dir,
        &out.join("guests"),
    );
    println!(
        "cargo:rustc-env=QUARRY_TEST_PLUGINS_DIR={}",
        plugins.display()
    );
    println!(
        "cargo:rustc-env=QUARRY_TEST_GUESTS_DIR={}",
        guests.display()
    );
}

/// Builds every member of a wasm workspace and copies its `.wasm` files into `dest`.
fn build(manifest: &Path, target_dir: &Path, dest: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    // Flags meant for the host build must not leak into the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the wasm guests");
    if !status.success() {
        panic!(
            "building {} for {TARGET} failed. If the target is missing, run `rustup target add {TARGET}` \
             (scripts/test.sh does this).",
            manifest.display()
        );
    }
    let release = target_dir.join(TARGET).join("release");
    let members = workspace_members(manifest);
    std::fs::create_dir_all(dest).unwrap();
    for old in std::fs::read_dir(dest).unwrap().flatten() {
        let _ = std::fs::remove_file(old.path());
    }
    for name in members {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let src = release.join(&file);
        std::fs::copy(&src, dest.join(&file))
            .unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
    }
    dest.to_path_buf()
}

/// Directory names listed in a workspace's `members = [...]` (simple parse: our manifests
/// list plain names).
fn workspace_members(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let start = text.find("members").expect("workspace members");
    let open = start + text[start..].find('[').unwrap();
    let close = open + text[open..].find(']').unwrap();
    text[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .map(|s| s.rsplit('/').next().unwrap().to_string())
        .collect()
}
