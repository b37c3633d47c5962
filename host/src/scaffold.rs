//! `quarry plugin new` and `quarry plugin build`: task projects that build as they are.
//!
//! Templates live in `host/templates/<lang>/` and are compiled into the binary; `{{name}}`
//! and `{{sdk}}` are replaced. Every project gets a copy of the WIT package in `wit/`, so
//! that non-Rust toolchains (and readers) have the interface at hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The WIT package, as compiled into this binary.
pub const WIT: &str = include_str!("../../wit/quarry.wit");

/// Languages a task project can be created in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the quarry-sdk crate.
    Rust,
}

struct Template {
    path: &'static str,
    text: &'static str,
}

fn templates(lang: Lang) -> &'static [Template] {
    match lang {
        Lang::Rust => &[
            Template {
                path: "Cargo.toml",
                text: include_str!("../templates/rust/Cargo.toml.tmpl"),
            },
            Template {
                path: "src/lib.rs",
                text: include_str!("../templates/rust/src/lib.rs.tmpl"),
            },
        ],
    }
}

/// Where the SDK sources are: `QUARRY_SDK_DIR`, else the `sdk/` directory of the source tree
/// this binary was built from.
pub fn sdk_dir() -> PathBuf {
    std::env::var_os("QUARRY_SDK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"))
}

/// Creates a task project `name` in `dir` (which must not exist or be empty).
pub fn new_project(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    crate::task::TaskName::new(name).map_err(anyhow::Error::msg)?;
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} already exists and is not empty", dir.display());
    }
    let sdk = sdk_dir();
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    let mut written = Vec::new();
    let files = templates(lang)
        .iter()
        .map(|t| {
            (
                t.path,
                t.text
                    .replace("{{name}}", name)
                    .replace("{{sdk}}", &sdk.display().to_string()),
            )
        })
        .chain(std::iter::once(("wit/quarry.wit", WIT.to_string())));
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Builds the task project in `dir` and copies the component to `out`; returns its path.
pub fn build_project(dir: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("Cargo.toml").exists() {
        return build_rust(dir, out);
    }
    bail!(
        "{} is not a task project: no Cargo.toml (other languages: see docs/writing-tasks.md for their one-line builds)",
        dir.display()
    )
}

fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    let name = manifest
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("name = ")
                .map(|v| v.trim_matches('"').to_string())
        })
        .context("Cargo.toml has no package name")?;
    let status = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed (is the target installed? `rustup target add wasm32-wasip2`)");
    }
    let file = format!("{}.wasm", name.replace('-', "_"));
    let built = dir.join("target/wasm32-wasip2/release").join(&file);
    std::fs::create_dir_all(out)?;
    let dest = out.join(&file);
    std::fs::copy(&built, &dest).with_context(|| format!("copying {}", built.display()))?;
    Ok(dest)
}
