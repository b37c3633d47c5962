//! The params of `docker_health`: [`Params`] mirrors the JSON exactly, [`Config`] holds the
//! checked values. [`Config::from_params`] is the one place where params are checked; it runs
//! at config load (`Task::check`) and again at the start of every run.

use serde::Deserialize;
use serde_json::Value;

/// The default start command: ROCK's `sudo service docker start`, with `-n` so that a sudo that
/// wants a password fails at once instead of waiting for input that never comes.
pub const DEFAULT_START_COMMAND: [&str; 5] = ["sudo", "-n", "service", "docker", "start"];

/// The params as they appear in the config (`{}` when none are given). A `null` value means
/// "not given" and takes the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The argument vector that starts the Docker daemon when it is down.
    #[serde(default)]
    pub start_command: Value,
}

/// Checked params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The start command's argument vector: at least one element, none empty.
    pub start_command: Vec<String>,
}

impl Config {
    /// Checks `params` and builds the config. The error names the param and the bad value.
    pub fn from_params(params: &Params) -> Result<Config, String> {
        Ok(Config {
            start_command: parse_start_command(&params.start_command)?,
        })
    }
}

fn parse_start_command(value: &Value) -> Result<Vec<String>, String> {
    let items = match value {
        Value::Null => return Ok(DEFAULT_START_COMMAND.map(String::from).to_vec()),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "start_command {other}: expected a list of strings, an argument vector such as \
                 [\"sudo\", \"-n\", \"service\", \"docker\", \"start\"] (no shell is involved)"
            ));
        }
    };
    if items.is_empty() {
        return Err("start_command []: must not be empty".into());
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if s.is_empty() => {
                Err(format!("start_command[{i}] \"\": must not be empty"))
            }
            Value::String(s) if s.contains('\0') => Err(format!(
                "start_command[{i}] {item}: must not contain a NUL byte"
            )),
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("start_command[{i}] {other}: expected a string")),
        })
        .collect()
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
    fn default_is_a_non_interactive_sudo_service_start() {
        let expected = ["sudo", "-n", "service", "docker", "start"];
        assert_eq!(config(json!({})).unwrap().start_command, expected);
        assert_eq!(
            config(json!({"start_command": null}))
                .unwrap()
                .start_command,
            expected
        );
    }

    #[test]
    fn a_custom_argv_is_kept_verbatim() {
        let argv = json!(["systemctl", "start", "docker; rm -rf /", "$(id)"]);
        assert_eq!(
            config(json!({ "start_command": argv }))
                .unwrap()
                .start_command,
            ["systemctl", "start", "docker; rm -rf /", "$(id)"]
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = |v: Value| config(json!({ "start_command": v })).unwrap_err();
        assert!(err(json!("sudo service docker start")).starts_with(
            "start_command \"sudo service docker start\": expected a list of strings"
        ),);
        assert_eq!(err(json!([])), "start_command []: must not be empty");
        assert_eq!(
            err(json!(["sudo", ""])),
            "start_command[1] \"\": must not be empty"
        );
        assert_eq!(
            err(json!(["sudo", 3])),
            "start_command[1] 3: expected a string"
        );
        assert_eq!(
            err(json!(["a\u{0}b"])),
            "start_command[0] \"a\\u0000b\": must not contain a NUL byte"
        );
        assert!(
            config(json!({"start_cmd": ["x"]}))
                .unwrap_err()
                .contains("unknown field `start_cmd`")
        );
    }
}
