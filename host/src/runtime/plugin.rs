//! One loaded plugin: compiled once, version-checked, pre-instantiated, described.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};

use super::bindings::{CapabilitiesIndices, TaskIndices, WIT_PACKAGE, WIT_VERSION};
use super::{RunState, Runtime};
use crate::error::{LoadError, LoadErrorKind};
use crate::task::TaskMeta;

/// A plugin ready to run: immutable, shared by `Arc`; a run in flight keeps its own `Arc`, so
/// replacing a plugin never disturbs runs of the old version.
pub struct Plugin {
    meta: TaskMeta,
    wit_version: String,
    path: PathBuf,
    sha256: String,
    pre: InstancePre<RunState>,
    task: TaskIndices,
    /// The `capabilities` export, when the plugin declares its grants (0.1.1 and later).
    capabilities: Option<CapabilitiesIndices>,
    /// What `requires` answered, by params: asked once per (version, params).
    declared: std::sync::Mutex<std::collections::HashMap<String, crate::grants::Declared>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.meta.name)
            .field("version", &self.meta.version)
            .field("path", &self.path)
            .finish()
    }
}

impl Plugin {
    /// Reads, compiles, checks and describes the component at `path`.
    ///
    /// Strategy: compile on a blocking thread (cranelift is CPU-bound), check the
    /// `quarry:task` version from the component's type before linking (so the message names
    /// both versions instead of a linker error), pre-instantiate against the shared linker,
    /// then call `describe` in a sandboxed store.
    pub async fn load(rt: &Arc<Runtime>, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| LoadError::new(path, LoadErrorKind::Read(e.to_string())))?;
        Self::load_bytes(rt, path, bytes).await
    }

    /// Like [`Plugin::load`], with the file's bytes already read.
    pub async fn load_bytes(
        rt: &Arc<Runtime>,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let err = |kind: LoadErrorKind| LoadError::new(path, kind);
        let sha256 = super::sha256_hex(&bytes);
        let compiler = rt.clone();
        let key = sha256.clone();
        let component = tokio::task::spawn_blocking(move || compiler.compile(&bytes, &key))
            .await
            .map_err(|e| err(LoadErrorKind::CompilerThread(e.to_string())))?
            .map_err(|e| err(LoadErrorKind::Compile(first_line(&e))))?;
        let wit_version =
            check_version(rt, &component).map_err(|e| err(LoadErrorKind::Version(e)))?;
        let instance_pre = rt
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| err(LoadErrorKind::Link(format!("{e:#}"))))?;
        let task = TaskIndices::new(&instance_pre)
            .map_err(|e| err(LoadErrorKind::Exports(format!("{e:#}"))))?;
        let capabilities = CapabilitiesIndices::new(&instance_pre).ok();
        let meta = rt
            .describe(&instance_pre, &task)
            .await
            .map_err(|e| err(LoadErrorKind::Describe(e)))?;
        Ok(Arc::new(Plugin {
            meta,
            wit_version,
            path: path.to_path_buf(),
            sha256,
            pre: instance_pre,
            task,
            capabilities,
            declared: Default::default(),
        }))
    }

    /// What the plugin said about itself.
    pub fn meta(&self) -> &TaskMeta {
        &self.meta
    }

    /// The `quarry:task` version it was built against.
    pub fn wit_version(&self) -> &str {
        &self.wit_version
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the file, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether the plugin exports `capabilities` (declares its grants).
    pub fn declares_grants(&self) -> bool {
        self.capabilities.is_some()
    }

    /// What `requires` answered for `params`, if it was asked.
    pub(super) fn declared(&self, params: &str) -> Option<crate::grants::Declared> {
        let cache = self.declared.lock().ok()?;
        cache.get(params).cloned()
    }

    /// Remembers what `requires` answered for `params`.
    pub(super) fn remember(&self, params: &str, declared: &crate::grants::Declared) {
        if let Ok(mut cache) = self.declared.lock() {
            cache.insert(params.to_string(), declared.clone());
        }
    }

    pub(super) fn pre(&self) -> &InstancePre<RunState> {
        &self.pre
    }

    pub(super) fn task(&self) -> &TaskIndices {
        &self.task
    }

    pub(super) fn capabilities(&self) -> Option<&CapabilitiesIndices> {
        self.capabilities.as_ref()
    }
}

/// Finds the `quarry:task` version the component targets and checks it against ours.
fn check_version(rt: &Runtime, component: &Component) -> Result<String, String> {
    let ty = component.component_type();
    let engine = rt.engine();
    let prefix = format!("{WIT_PACKAGE}/");
    let mut seen = Vec::new();
    let mut versions = Vec::new();
    for (name, _) in ty.exports(engine) {
        seen.push(name.to_string());
        if let Some(rest) = name.strip_prefix(&prefix)
            && let Some(("task" | "capabilities", version)) = rest.split_once('@')
        {
            versions.push(version.to_string());
        }
    }
    for (name, _) in ty.imports(engine) {
        if let Some(rest) = name.strip_prefix(&prefix)
            && let Some((_, version)) = rest.split_once('@')
        {
            versions.push(version.to_string());
        }
    }
    let Some(version) = versions.first().cloned() else {
        return Err(format!(
            "not a Quarry task: it does not export {WIT_PACKAGE}/task@{WIT_VERSION} (its exports: {})",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ));
    };
    if let Some(other) = versions.iter().find(|v| **v != version) {
        return Err(format!(
            "mixes {WIT_PACKAGE} versions {version} and {other}; rebuild it against {WIT_PACKAGE}@{WIT_VERSION}"
        ));
    }
    if !compatible(&version, WIT_VERSION) {
        return Err(format!(
            "built for {WIT_PACKAGE}@{version}, but this host supports {WIT_PACKAGE}@{WIT_VERSION}; rebuild it with an SDK for {WIT_VERSION}"
        ));
    }
    Ok(version)
}

/// Semver compatibility of a plugin's WIT version with the host's: same major, and while
/// the major is 0 the same minor; the plugin's patch may not be newer than ours (it could use
/// additions we do not provide).
fn compatible(plugin: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let core = v.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next()??))
    };
    match (parse(plugin), parse(host)) {
        (Some((pm, pn, pp)), Some((hm, hn, hp))) => {
            pm == hm && (pm != 0 || pn == hn) && (pn, pp) <= (hn, hp)
        }
        _ => false,
    }
}

fn first_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn version_compatibility() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.1"));
        assert!(compatible("0.1.1", "0.1.1"));
        assert!(!compatible("0.1.2", "0.1.1"));
        assert!(!compatible("0.2.0", "0.1.1"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("0.1.1", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.0.0", "1.2.0"));
        assert!(!compatible("x", "0.1.0"));
    }
}
