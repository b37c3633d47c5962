//! The plugin set: every `.wasm` file of the plugins directory, loaded and keyed by the name
//! each plugin reports (not by file name).
//!
//! A bad file affects only itself: it is reported as a [`LoadError`] and the other plugins
//! load. Two files claiming one name is an error for both, never a silent winner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::LoadError;
use crate::runtime::{Plugin, Runtime};

/// ROCK's built-in task classes and the Quarry plugins that replace them.
const ROCK_CLASSES: &[(&str, &str)] = &[
    ("ImageCleanupTask", "image_cleanup"),
    ("FileCleanupTask", "file_cleanup"),
    ("ContainerCleanupTask", "container_cleanup"),
    ("ImagePullTask", "image_pull"),
    ("DockerHealthTask", "docker_health"),
    ("BuildCacheCleanupTask", "build_cache_cleanup"),
    ("RayLogCleanupTask", "ray_log_cleanup"),
    ("SandboxLogArchiveTask", "sandbox_log_archive"),
];

/// Maps a config's `task_class` to a plugin name. ROCK's class paths
/// (`rock.admin.scheduler.tasks.file_cleanup_task.FileCleanupTask`) and bare class names
/// (`FileCleanupTask`) map to the built-in plugin; anything else is taken as a plugin name.
pub fn plugin_name_for_class(task_class: &str) -> &str {
    let class = task_class.rsplit('.').next().unwrap_or(task_class);
    if let Some((_, name)) = ROCK_CLASSES.iter().find(|(c, _)| *c == class) {
        return name;
    }
    // rock.admin.scheduler.tasks.<type>_task.<Class> for classes we do not know by name.
    if let Some(rest) = task_class.strip_prefix("rock.admin.scheduler.tasks.")
        && let Some((module, _class)) = rest.split_once('.')
        && let Some(ty) = module.strip_suffix("_task")
    {
        return ty;
    }
    task_class
}

/// The loaded plugins, immutable; replaced whole when the directory changes.
#[derive(Debug, Default)]
pub struct PluginSet {
    plugins: BTreeMap<String, Arc<Plugin>>,
    errors: Vec<LoadError>,
}

impl PluginSet {
    /// Loads every `*.wasm` file directly inside `dir` (not recursive), in parallel, each
    /// failure recorded and logged once. A missing directory is an error for the whole set.
    pub async fn load_dir(rt: &Arc<Runtime>, dir: &Path) -> Result<PluginSet, LoadError> {
        let files = wasm_files(dir).map_err(|e| LoadError {
            path: dir.to_path_buf(),
            reason: format!("cannot list the plugins directory: {e}"),
        })?;
        let loads = files.iter().map(|path| Plugin::load(rt, path));
        let results = futures::future::join_all(loads).await;
        let mut set = PluginSet::default();
        let mut claims: BTreeMap<String, Vec<Arc<Plugin>>> = BTreeMap::new();
        for result in results {
            match result {
                Ok(p) => claims
                    .entry(p.meta().name.to_string())
                    .or_default()
                    .push(p),
                Err(e) => set.errors.push(e),
            }
        }
        for (name, mut claimants) in claims {
            if claimants.len() == 1 {
                set.plugins.insert(name, claimants.remove(0));
                continue;
            }
            let files: Vec<String> = claimants
                .iter()
                .map(|p| p.path().display().to_string())
                .collect();
            for p in &claimants {
                set.errors.push(LoadError {
                    path: p.path().to_path_buf(),
                    reason: format!(
                        "{} files claim the task name {name:?} ({}); none of them is loaded until only one does",
                        claimants.len(),
                        files.join(", ")
                    ),
                });
            }
        }
        for e in &set.errors {
            tracing::error!("{e}");
        }
        for p in set.plugins.values() {
            tracing::info!(
                plugin = %p.meta().name,
                version = %p.meta().version,
                file = %p.path().display(),
                "plugin loaded"
            );
        }
        Ok(set)
    }

    /// The plugin named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// All loaded plugins, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// Names of the loaded plugins, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.plugins.keys().map(String::as_str).collect()
    }

    /// Files that failed to load, and why.
    pub fn errors(&self) -> &[LoadError] {
        &self.errors
    }
}

/// The `.wasm` files directly inside `dir`, sorted.
fn wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::plugin_name_for_class;

    #[test]
    fn maps_rock_classes() {
        assert_eq!(
            plugin_name_for_class("rock.admin.scheduler.tasks.file_cleanup_task.FileCleanupTask"),
            "file_cleanup"
        );
        assert_eq!(plugin_name_for_class("DockerHealthTask"), "docker_health");
        assert_eq!(
            plugin_name_for_class("rock.admin.scheduler.tasks.my_thing_task.MyThing"),
            "my_thing"
        );
        assert_eq!(plugin_name_for_class("disk_usage"), "disk_usage");
    }
}
