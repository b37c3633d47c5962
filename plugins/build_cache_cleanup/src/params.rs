//! The params of `build_cache_cleanup`: [`Params`] mirrors the JSON exactly, [`Config`] holds
//! the checked values. [`Config::from_params`] is the one place where params are checked; it
//! runs at config load (`Task::check`) and again at the start of every run.

use serde::Deserialize;
use serde_json::Value;

/// A build tool whose cache this task prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Astral's uv: `uv cache prune` removes unused cache entries.
    Uv,
    /// pip: `pip cache purge` empties the wheel and HTTP caches.
    Pip,
}

impl Tool {
    /// Every supported tool, in ROCK's default order.
    pub const ALL: [Tool; 2] = [Tool::Uv, Tool::Pip];

    /// The tool's name, which is also its program name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Uv => "uv",
            Tool::Pip => "pip",
        }
    }

    /// The prune command, an argument vector.
    pub fn prune_argv(self) -> [&'static str; 3] {
        match self {
            Tool::Uv => ["uv", "cache", "prune"],
            Tool::Pip => ["pip", "cache", "purge"],
        }
    }

    /// The read-only command a dry run makes instead of the prune: where the cache is (`uv
    /// cache dir`), what it holds (`pip cache info`).
    pub fn dry_run_argv(self) -> [&'static str; 3] {
        match self {
            Tool::Uv => ["uv", "cache", "dir"],
            Tool::Pip => ["pip", "cache", "info"],
        }
    }

    fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The params as they appear in the config (`{}` when none are given). A `null` value means
/// "not given" and takes the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The tools whose caches are pruned: a subset of `["uv", "pip"]`.
    #[serde(default)]
    pub tools: Value,
}

/// Checked params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The tools, in the configured order, without duplicates.
    pub tools: Vec<Tool>,
}

impl Config {
    /// Checks `params` and builds the config. The error names the param and the bad value.
    pub fn from_params(params: &Params) -> Result<Config, String> {
        Ok(Config {
            tools: parse_tools(&params.tools)?,
        })
    }
}

fn parse_tools(value: &Value) -> Result<Vec<Tool>, String> {
    const SUPPORTED: &str = "supported: \"uv\", \"pip\"";
    let items = match value {
        Value::Null => return Ok(Tool::ALL.to_vec()),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "tools {other}: expected a list of tool names ({SUPPORTED})"
            ));
        }
    };
    let mut tools: Vec<Tool> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let tool = match item {
            Value::String(name) => Tool::from_name(name)
                .ok_or_else(|| format!("tools[{i}] {item}: unknown tool ({SUPPORTED})"))?,
            other => return Err(format!("tools[{i}] {other}: expected a string")),
        };
        if tools.contains(&tool) {
            return Err(format!("tools[{i}] {item}: listed twice"));
        }
        tools.push(tool);
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(params: Value) -> Result<Config, String> {
        let params: Params = serde_json::from_value(params).map_err(|e| e.to_string())?;
        Config::from_params(&params)
    }

    #[test]
    fn default_is_both_tools() {
        assert_eq!(config(json!({})).unwrap().tools, [Tool::Uv, Tool::Pip]);
        assert_eq!(
            config(json!({"tools": null})).unwrap().tools,
            [Tool::Uv, Tool::Pip]
        );
    }

    #[test]
    fn subsets_keep_their_order() {
        assert_eq!(
            config(json!({"tools": ["pip", "uv"]})).unwrap().tools,
            [Tool::Pip, Tool::Uv]
        );
        assert_eq!(
            config(json!({"tools": ["pip"]})).unwrap().tools,
            [Tool::Pip]
        );
        assert!(config(json!({"tools": []})).unwrap().tools.is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let err = |v: Value| config(json!({ "tools": v })).unwrap_err();
        assert_eq!(
            err(json!(["uv", "uv; rm -rf /"])),
            "tools[1] \"uv; rm -rf /\": unknown tool (supported: \"uv\", \"pip\")"
        );
        assert_eq!(
            err(json!(["conda"])),
            "tools[0] \"conda\": unknown tool (supported: \"uv\", \"pip\")"
        );
        assert_eq!(
            err(json!(["UV"])),
            "tools[0] \"UV\": unknown tool (supported: \"uv\", \"pip\")"
        );
        assert_eq!(err(json!(["pip", "pip"])), "tools[1] \"pip\": listed twice");
        assert_eq!(err(json!([1])), "tools[0] 1: expected a string");
        assert_eq!(
            err(json!("uv")),
            "tools \"uv\": expected a list of tool names (supported: \"uv\", \"pip\")"
        );
        assert!(
            config(json!({"tool": ["uv"]}))
                .unwrap_err()
                .contains("unknown field `tool`")
        );
    }
}
