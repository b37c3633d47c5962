//! `quarry plugin new` and `quarry plugin build`: task projects that build as they are.
//!
//! Templates live in `host/templates/` and are compiled into the binary; `{{name}}` and
//! `{{sdk}}` are replaced. Each language's template is one short source file (a task with one
//! checked `path` param whose run makes one `execute`, under [`MAX_SOURCE_LINES`]) and the
//! build glue it needs; every project also gets a README (how to build, run and deploy it,
//! and where the full example is), a `.gitignore` for the build outputs, and a copy of the
//! WIT package in `wit/`, so that non-Rust toolchains (and readers) have the interface at hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The WIT package, as compiled into this binary.
pub const WIT: &str = include_str!("../../wit/quarry.wit");

/// A template's source file stays under this many lines: a starting point to read in a
/// minute, not the full example (which `README.md` points to).
pub const MAX_SOURCE_LINES: usize = 50;

/// Languages a task project can be created in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the quarry-sdk crate.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
    /// C, built with wit-bindgen c, clang (wasi-libc) and wasm-tools.
    C,
}

/// One file of a template: where it goes in the project, and its text.
struct Template {
    path: &'static str,
    text: &'static str,
}

/// What `quarry plugin new` writes for one language: a minimal task (one `path` param, one
/// `execute`) whose single source file the author edits, plus build glue.
struct LangTemplate {
    /// The language's name, for the README.
    language: &'static str,
    /// The file the author edits (kept short: it is a starting point, not the example).
    source: Template,
    /// Build glue beside it (Cargo.toml, package.json).
    glue: &'static [Template],
    /// The README's build section: `quarry plugin build`'s tools, and the same by hand.
    build: &'static str,
    /// Where the full example of this language is.
    example: &'static str,
}

/// The README every project gets; `{{build}}` is the language's build section.
const README: &str = include_str!("../templates/README.md.tmpl");

/// The `.gitignore` every project gets: the build outputs of all four languages.
const GITIGNORE: &str = include_str!("../templates/gitignore.tmpl");

fn template(lang: Lang) -> LangTemplate {
    match lang {
        Lang::Rust => LangTemplate {
            language: "Rust",
            source: Template {
                path: "src/lib.rs",
                text: include_str!("../templates/rust/src/lib.rs.tmpl"),
            },
            glue: &[Template {
                path: "Cargo.toml",
                text: include_str!("../templates/rust/Cargo.toml.tmpl"),
            }],
            build: include_str!("../templates/rust/build.md"),
            example: "the quarry-sdk crate documentation, and the built-in tasks in `plugins/` \
                      of the Quarry repository (with native tests against `FakeWorker`)",
        },
        Lang::Python => LangTemplate {
            language: "Python",
            source: Template {
                path: "app.py",
                text: include_str!("../templates/python/app.py.tmpl"),
            },
            glue: &[],
            build: include_str!("../templates/python/build.md"),
            example: "`examples/python/disk_usage/app.py` in the Quarry repository",
        },
        Lang::Js => LangTemplate {
            language: "JavaScript",
            source: Template {
                path: "app.js",
                text: include_str!("../templates/js/app.js.tmpl"),
            },
            glue: &[Template {
                path: "package.json",
                text: include_str!("../templates/js/package.json.tmpl"),
            }],
            build: include_str!("../templates/js/build.md"),
            example: "`examples/js/disk_usage/app.js` in the Quarry repository",
        },
        Lang::C => LangTemplate {
            language: "C",
            source: Template {
                path: "app.c",
                text: include_str!("../templates/c/app.c.tmpl"),
            },
            glue: &[],
            build: include_str!("../templates/c/build.md"),
            example: "`examples/c/disk_usage/app.c` in the Quarry repository",
        },
    }
}

/// Where the non-Rust toolchains are installed (scripts/build-examples.sh installs them):
/// `$QUARRY_TOOLCHAINS_DIR`, else `~/.cache/quarry/toolchains`.
fn toolchains_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("QUARRY_TOOLCHAINS_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."));
    cache.join("quarry/toolchains")
}

/// A tool from the toolchains directory if installed there, else from PATH.
fn tool(rel: &str, name: &str) -> PathBuf {
    let p = toolchains_dir().join(rel);
    if p.exists() { p } else { PathBuf::from(name) }
}

/// Runs a build step, naming it when it fails.
fn run_step(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {:?} (run scripts/build-examples.sh once to install the toolchains)", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
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
    let t = template(lang);
    let readme = README
        .replace("{{build}}", t.build.trim_end())
        .replace("{{language}}", t.language)
        .replace("{{source}}", t.source.path)
        .replace("{{example}}", t.example);
    let substitute = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    let mut written = Vec::new();
    let files = std::iter::once((t.source.path, substitute(t.source.text)))
        .chain(t.glue.iter().map(|g| (g.path, substitute(g.text))))
        .chain([
            ("README.md", substitute(&readme)),
            (".gitignore", GITIGNORE.to_string()),
            ("wit/quarry.wit", WIT.to_string()),
        ]);
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
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("{} does not exist", dir.display()))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the project directory has no name")?
        .to_string();
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    let dest = out.join(format!("{name}.wasm"));
    let wit = dir.join("wit");
    if !wit.join("quarry.wit").exists() {
        bail!(
            "{} has no wit/quarry.wit (quarry plugin new writes it)",
            dir.display()
        );
    }
    if dir.join("app.py").exists() {
        run_step(
            "componentize-py",
            Command::new(tool("py/bin/componentize-py", "componentize-py"))
                .args(["-d"])
                .arg(&wit)
                .args(["-w", "task-plugin", "componentize", "-p"])
                .arg(dir)
                .args(["app", "-o"])
                .arg(&dest)
                .current_dir(dir),
        )?;
    } else if dir.join("app.js").exists() {
        run_step(
            "componentize-js",
            Command::new(tool(
                "js/node_modules/.bin/componentize-js",
                "componentize-js",
            ))
            .arg(dir.join("app.js"))
            .arg("--wit")
            .arg(&wit)
            .args([
                "--world-name",
                "task-plugin",
                "-d",
                "http",
                "fetch-event",
                "-o",
            ])
            .arg(&dest)
            .current_dir(dir),
        )?;
    } else if dir.join("app.c").exists() {
        let gen_dir = dir.join("gen");
        run_step(
            "wit-bindgen c",
            Command::new(tool("bin/wit-bindgen", "wit-bindgen"))
                .arg("c")
                .arg(&wit)
                .args(["--world", "task-plugin", "--out-dir"])
                .arg(&gen_dir),
        )?;
        let core = gen_dir.join("core.wasm");
        run_step(
            "clang",
            Command::new("clang")
                .args([
                    "--target=wasm32-wasi",
                    "-Oz",
                    "-mexec-model=reactor",
                    "-Wl,--strip-debug",
                    "-I",
                ])
                .arg(&gen_dir)
                .arg("-o")
                .arg(&core)
                .arg(dir.join("app.c"))
                .arg(gen_dir.join("task_plugin.c"))
                .arg(gen_dir.join("task_plugin_component_type.o")),
        )?;
        let adapter = toolchains_dir().join("adapter/wasi_snapshot_preview1.reactor.wasm");
        run_step(
            "wasm-tools component new",
            Command::new(tool("bin/wasm-tools", "wasm-tools"))
                .args(["component", "new"])
                .arg(&core)
                .arg("--adapt")
                .arg(format!("wasi_snapshot_preview1={}", adapter.display()))
                .arg("-o")
                .arg(&dest),
        )?;
    } else {
        bail!(
            "{} is not a task project: no Cargo.toml, app.py, app.js or app.c",
            dir.display()
        );
    }
    Ok(dest)
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
    // Cargo knows where the output goes (CARGO_TARGET_DIR, .cargo/config.toml, …).
    let meta = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .context("running cargo metadata")?;
    let target_dir = serde_json::from_slice::<serde_json::Value>(&meta.stdout)
        .ok()
        .and_then(|m| m["target_directory"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| dir.join("target"));
    let built = target_dir.join("wasm32-wasip2/release").join(&file);
    std::fs::create_dir_all(out)?;
    let dest = out.join(&file);
    std::fs::copy(&built, &dest).with_context(|| format!("copying {}", built.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LANGS: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

    #[test]
    fn each_template_source_is_short() {
        for lang in LANGS {
            let t = template(lang);
            let lines = t.source.text.lines().count();
            assert!(
                lines < MAX_SOURCE_LINES,
                "{lang:?}: {} has {lines} lines, the limit is {MAX_SOURCE_LINES}",
                t.source.path
            );
        }
    }

    #[test]
    fn each_template_names_the_task_and_points_to_the_readme_and_example() {
        for lang in LANGS {
            let t = template(lang);
            let src = t.source.text;
            assert!(
                src.contains("\"{{name}}\"") || src.contains("'{{name}}'"),
                "{lang:?}"
            );
            assert!(src.contains("README.md"), "{lang:?}");
            assert!(t.build.contains("quarry plugin build"), "{lang:?}");
            if lang != Lang::Rust {
                assert!(
                    src.contains("examples/"),
                    "{lang:?}: no pointer to the full example"
                );
            }
        }
    }
}
