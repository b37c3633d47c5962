//! The plugin set: every `.wasm` file of the plugins directory, loaded and keyed by the name
//! each plugin reports (not by file name).
//!
//! [`PluginSet::scan`] is the one reconciliation step, used both at start and on every hot
//! reload (see [`watch`]): it diffs the directory against the previous set by content hash,
//! loads only new or changed files, checks them (WIT version, `describe`, and
//! `validate-config` for every configured task that uses them), and builds the next set. A
//! bad file affects only itself: it never replaces a good version, which keeps running. Two
//! files claiming one name is an error, never a silent winner: the incumbent stays and the
//! newcomer is refused (at start, when there is no incumbent, both are refused).

pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{LoadError, LoadErrorKind};
use crate::runtime::{Plugin, Runtime};
use crate::task::TaskName;

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

/// Checks a ROCK class path (`rock.…`): its class must be one of ROCK's task classes and sit
/// in its own module, as ROCK itself requires; a misspelled path is refused naming the known
/// ones (it must not silently run another task). Anything else (a plugin name, a bare class
/// name) is not a class path and passes.
pub fn check_rock_class(task_class: &str) -> Result<(), String> {
    let Some(rest) = task_class.strip_prefix("rock.") else {
        return Ok(());
    };
    let class = rest.rsplit('.').next().unwrap_or(rest);
    let known = || {
        ROCK_CLASSES
            .iter()
            .map(|(c, n)| format!("rock.admin.scheduler.tasks.{n}_task.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match ROCK_CLASSES.iter().find(|(c, _)| *c == class) {
        Some((c, name)) if task_class == format!("rock.admin.scheduler.tasks.{name}_task.{c}") => {
            Ok(())
        }
        _ => Err(format!(
            "{task_class:?} is not one of ROCK's task classes ({}); for a plugin of your own, give its name",
            known()
        )),
    }
}

/// A configured task's params, which every new version of its plugin must accept.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamsCheck {
    /// Where the task is configured (`scheduler.tasks[2]`), for messages.
    pub field: String,
    /// The plugin name.
    pub plugin: TaskName,
    /// Params, a JSON object.
    pub params: String,
    /// The task's grants policy: protected paths, narrowing and the growth rule.
    pub policy: crate::grants::TaskPolicy,
}

/// The loaded plugins, immutable; the next version of the set is built by [`PluginSet::scan`]
/// and swapped in whole.
#[derive(Debug, Default)]
pub struct PluginSet {
    plugins: BTreeMap<TaskName, Arc<Plugin>>,
    errors: Vec<LoadError>,
}

impl PluginSet {
    /// Loads every `*.wasm` file directly inside `dir` (a first scan, nothing to keep).
    pub async fn load_dir(rt: &Arc<Runtime>, dir: &Path) -> Result<PluginSet, LoadError> {
        let set = Self::scan(rt, dir, &PluginSet::default(), &[]).await?;
        set.log_errors();
        Ok(set)
    }

    /// Builds the next set from the files in `dir`, reusing `previous`'s plugins for files
    /// whose content did not change.
    ///
    /// Strategy: hash every file; unchanged (path, hash) pairs keep their plugin; other files
    /// load in parallel (compile + version check + describe) and must pass `checks` for
    /// their name; a file that fails keeps the previous plugin it replaced, if any; then one
    /// owner per name is chosen (incumbent first).
    pub async fn scan(
        rt: &Arc<Runtime>,
        dir: &Path,
        previous: &PluginSet,
        checks: &[ParamsCheck],
    ) -> Result<PluginSet, LoadError> {
        let files = wasm_files(dir)
            .map_err(|e| LoadError::new(dir, LoadErrorKind::ListDir(e.to_string())))?;
        let by_path_map: HashMap<&Path, &Arc<Plugin>> =
            previous.plugins.values().map(|p| (p.path(), p)).collect();
        let by_path = &by_path_map;
        let loads = files.iter().map(|path| async move {
            let bytes = match tokio::fs::read(path).await {
                Ok(b) => b,
                Err(e) => {
                    return (
                        path,
                        Err(LoadError::new(path, LoadErrorKind::Read(e.to_string()))),
                    );
                }
            };
            if let Some(old) = by_path.get(path.as_path())
                && old.sha256() == crate::runtime::sha256_hex(&bytes)
            {
                return (path, Ok((*old).clone()));
            }
            let loaded = match Plugin::load_bytes(rt, path, bytes).await {
                Ok(p) => check_params(rt, p, checks, previous).await,
                Err(e) => Err(e),
            };
            (path, loaded)
        });
        let results = futures::future::join_all(loads).await;

        let mut set = PluginSet::default();
        let mut claims: BTreeMap<TaskName, Vec<Arc<Plugin>>> = BTreeMap::new();
        for (path, result) in results {
            match result {
                Ok(p) => claims.entry(p.meta().name.clone()).or_default().push(p),
                Err(e) => {
                    if let Some(old) = by_path.get(path.as_path()) {
                        claims
                            .entry(old.meta().name.clone())
                            .or_default()
                            .push((*old).clone());
                        set.errors.push(LoadError::new(
                            e.path,
                            LoadErrorKind::KeptPrevious {
                                cause: Box::new(e.kind),
                                previous_version: old.meta().version.clone(),
                            },
                        ));
                    } else {
                        set.errors.push(e);
                    }
                }
            }
        }
        for (name, claimants) in claims {
            if claimants.len() == 1 {
                set.plugins.insert(
                    name,
                    claimants
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| unreachable!()),
                );
                continue;
            }
            let files: Vec<String> = claimants
                .iter()
                .map(|p| p.path().display().to_string())
                .collect();
            let incumbent = previous
                .plugins
                .get(&name)
                .and_then(|old| claimants.iter().find(|p| p.path() == old.path()))
                .cloned();
            for p in &claimants {
                if incumbent
                    .as_ref()
                    .is_some_and(|i| Arc::ptr_eq(i, p) || i.path() == p.path())
                {
                    continue;
                }
                set.errors.push(LoadError::new(
                    p.path(),
                    LoadErrorKind::DuplicateName {
                        name: name.to_string(),
                        files: files.clone(),
                        keeping: incumbent.as_ref().map(|i| i.path().to_path_buf()),
                    },
                ));
            }
            if let Some(i) = incumbent {
                set.plugins.insert(name, i);
            }
        }
        Ok(set)
    }

    /// Logs every load error (once per scan).
    pub fn log_errors(&self) {
        for e in &self.errors {
            tracing::error!("{e}");
        }
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
        self.plugins.keys().map(TaskName::as_str).collect()
    }

    /// Why `name` cannot be run from `dir`: what is loaded, and every file that was refused
    /// with its reason (a refused file is often the plugin asked for).
    pub fn missing(&self, name: &str, dir: &Path) -> String {
        let loaded = self.names();
        let loaded = if loaded.is_empty() {
            "none".to_string()
        } else {
            loaded.join(", ")
        };
        let mut msg = format!(
            "no plugin named {name:?} in {} (loaded: {loaded})",
            dir.display()
        );
        if !self.errors.is_empty() {
            let refused: Vec<String> = self
                .errors
                .iter()
                .map(|e| {
                    let file = e.path.file_name().unwrap_or(e.path.as_os_str());
                    format!("{}: {}", file.to_string_lossy(), e.kind)
                })
                .collect();
            msg.push_str(&format!("; refused: {}", refused.join("; ")));
        }
        msg
    }

    /// Files that failed to load, and why.
    pub fn errors(&self) -> &[LoadError] {
        &self.errors
    }
}

/// Refuses a plugin whose `validate-config` rejects the params of a task configured for it,
/// or whose grants for them are refused ([`check_grants`]).
async fn check_params(
    rt: &Runtime,
    plugin: Arc<Plugin>,
    checks: &[ParamsCheck],
    previous: &PluginSet,
) -> Result<Arc<Plugin>, LoadError> {
    for c in checks.iter().filter(|c| c.plugin == plugin.meta().name) {
        let (reason, crashed) = match rt.validate_config(&plugin, &c.params).await {
            Ok(Ok(())) => match check_grants(rt, &plugin, c, previous).await {
                Ok(()) => continue,
                Err(reason) => {
                    let version = plugin.meta().version.clone();
                    let field = c.field.clone();
                    let kind = LoadErrorKind::GrantsRefused {
                        version,
                        field,
                        reason,
                    };
                    return Err(LoadError::new(plugin.path(), kind));
                }
            },
            Ok(Err(msg)) => (msg, false),
            Err(e) => (e.to_string(), true),
        };
        return Err(LoadError::new(
            plugin.path(),
            LoadErrorKind::ParamsRefused {
                version: plugin.meta().version.clone(),
                field: c.field.clone(),
                reason,
                crashed,
            },
        ));
    }
    Ok(plugin)
}

/// The growth rule and the protected paths for one configured task: the new version's
/// declared targets must not touch a protected path, and it may ask for more than the running
/// version (a new program, shell, a wider path) only when the config allows it
/// (`allow_grant_growth`, or a `grants:` narrowing that covers the whole new request).
/// Allowed growth is logged with what grew.
async fn check_grants(
    rt: &Runtime,
    plugin: &Plugin,
    c: &ParamsCheck,
    previous: &PluginSet,
) -> Result<(), String> {
    let name = plugin.meta().name.as_str();
    let declared = match rt.requires(plugin, &c.params).await {
        Ok(Ok(d)) => d,
        Ok(Err(msg)) => return Err(format!("its requires refuses the params: {msg}")),
        Err(e) => return Err(format!("its requires failed: {e}")),
    };
    if let Some(why) = c.policy.protected_target(name, &declared) {
        return Err(why);
    }
    let Some(old) = previous
        .get(name)
        .filter(|old| old.sha256() != plugin.sha256())
    else {
        return Ok(());
    };
    let old_declared = match rt.requires(old, &c.params).await {
        Ok(Ok(d)) => d,
        // The running version no longer answers for these params: nothing to compare with.
        _ => return Ok(()),
    };
    let grew = crate::grants::growth(&old_declared, &declared);
    if grew.is_empty() {
        return Ok(());
    }
    let grew = grew.join(", ");
    let covered = declared
        .grants()
        .is_some_and(|g| c.policy.narrowing.covers(g));
    let (old_v, new_v) = (&old.meta().version, &plugin.meta().version);
    if c.policy.allow_growth || covered {
        let why = if covered {
            "the config's grants cover them"
        } else {
            "allow_grant_growth"
        };
        tracing::warn!(
            task = name,
            "plugin {name} {new_v} asks for more than {old_v}: {grew}; loaded ({why})"
        );
        return Ok(());
    }
    Err(format!(
        "it asks for more than the running version {old_v}: {grew}; allow it with \
         allow_grant_growth: true, or a grants: narrowing in the config that covers it"
    ))
}

/// The `.wasm` files directly inside `dir`, sorted. Hidden files (editors' and our own
/// temporary files start with `.`) are skipped.
fn wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::{check_rock_class, plugin_name_for_class};

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

    #[test]
    fn the_log_tasks_resolve_in_all_three_forms() {
        for (class, name) in [
            ("RayLogCleanupTask", "ray_log_cleanup"),
            ("SandboxLogArchiveTask", "sandbox_log_archive"),
        ] {
            let path = format!("rock.admin.scheduler.tasks.{name}_task.{class}");
            for form in [path.as_str(), class, name] {
                assert_eq!(plugin_name_for_class(form), name, "{form}");
                assert_eq!(check_rock_class(form), Ok(()), "{form}");
            }
        }
    }
}
