//! The params of `ray_log_cleanup`: [`Params`] mirrors the JSON exactly, [`Config`] holds the
//! checked values. [`Config::from_params`] is the one place where params are checked; it runs
//! at config load (`Task::check`) and again at the start of every run.

use quarry_sdk::paths;
use serde::Deserialize;
use serde_json::Value;

/// ROCK's default Ray temp dir (`ray start --temp-dir`).
pub const DEFAULT_RAY_TEMP_DIR: &str = "/data/tmp/ray";

/// The largest value any threshold may take: far beyond any useful retention, small enough
/// that its minutes fit every integer on the way.
pub const MAX_THRESHOLD: u64 = 1_000_000;

/// The params as they appear in the config (`{}` when none are given). A `null` value means
/// "not given" and takes the default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Ray's `--temp-dir` on the worker.
    #[serde(default)]
    pub ray_temp_dir: Value,
    /// Age in hours after which a `session_*` dir (not the live one) is removed.
    #[serde(default)]
    pub min_age_hours: Value,
    /// Age in days after which other files in the live session's `logs/` are removed.
    #[serde(default)]
    pub live_log_keep_days: Value,
    /// Age in hours after which files under `logs/old/` are removed.
    #[serde(default)]
    pub old_logs_keep_hours: Value,
    /// Age in minutes after which `runtime_env_setup-*` files are removed.
    #[serde(default)]
    pub setup_log_keep_minutes: Value,
    /// Age in hours after which rotated daemon logs (`raylet.1.out`) are removed.
    #[serde(default)]
    pub rotated_daemon_keep_hours: Value,
}

/// Checked params; every threshold is at least 1 (ROCK's rule) and at most [`MAX_THRESHOLD`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The Ray temp dir: absolute, without a trailing `/`, not `/`.
    pub ray_temp_dir: String,
    /// Hours.
    pub min_age_hours: u64,
    /// Days.
    pub live_log_keep_days: u64,
    /// Hours.
    pub old_logs_keep_hours: u64,
    /// Minutes.
    pub setup_log_keep_minutes: u64,
    /// Hours.
    pub rotated_daemon_keep_hours: u64,
}

impl Config {
    /// Checks `params` and builds the config. The error names the param and the bad value.
    pub fn from_params(params: &Params) -> Result<Config, String> {
        Ok(Config {
            ray_temp_dir: parse_dir(&params.ray_temp_dir)?,
            min_age_hours: threshold("min_age_hours", &params.min_age_hours, 24)?,
            live_log_keep_days: threshold("live_log_keep_days", &params.live_log_keep_days, 7)?,
            old_logs_keep_hours: threshold("old_logs_keep_hours", &params.old_logs_keep_hours, 24)?,
            setup_log_keep_minutes: threshold(
                "setup_log_keep_minutes",
                &params.setup_log_keep_minutes,
                60,
            )?,
            rotated_daemon_keep_hours: threshold(
                "rotated_daemon_keep_hours",
                &params.rotated_daemon_keep_hours,
                24,
            )?,
        })
    }
}

fn threshold(name: &str, value: &Value, default: u64) -> Result<u64, String> {
    match value {
        Value::Null => Ok(default),
        Value::Number(n) => match n.as_u64() {
            Some(v) if (1..=MAX_THRESHOLD).contains(&v) => Ok(v),
            Some(0) => Err(format!("{name} 0: must be at least 1")),
            Some(_) => Err(format!("{name} {n}: must be at most {MAX_THRESHOLD}")),
            None if n.as_i64().is_some() => Err(format!("{name} {n}: must be at least 1")),
            None => Err(format!("{name} {n}: expected a whole number")),
        },
        other => Err(format!("{name} {other}: expected a whole number")),
    }
}

fn parse_dir(value: &Value) -> Result<String, String> {
    match value {
        Value::Null => Ok(DEFAULT_RAY_TEMP_DIR.to_string()),
        Value::String(s) => paths::absolute_below_root("ray_temp_dir", s),
        other => Err(format!("ray_temp_dir {other}: expected a string")),
    }
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
    fn defaults_are_rocks() {
        let c = config(json!({})).unwrap();
        assert_eq!(
            c,
            Config {
                ray_temp_dir: "/data/tmp/ray".into(),
                min_age_hours: 24,
                live_log_keep_days: 7,
                old_logs_keep_hours: 24,
                setup_log_keep_minutes: 60,
                rotated_daemon_keep_hours: 24,
            }
        );
        assert_eq!(config(json!({"min_age_hours": null})).unwrap(), c);
    }

    #[test]
    fn values_are_taken_and_the_dir_trimmed() {
        let c = config(json!({
            "ray_temp_dir": "/tmp/ray/", "min_age_hours": 1, "live_log_keep_days": 2,
            "old_logs_keep_hours": 3, "setup_log_keep_minutes": 4, "rotated_daemon_keep_hours": 5,
        }))
        .unwrap();
        assert_eq!(c.ray_temp_dir, "/tmp/ray");
        assert_eq!(
            (
                c.min_age_hours,
                c.live_log_keep_days,
                c.old_logs_keep_hours,
                c.setup_log_keep_minutes,
                c.rotated_daemon_keep_hours
            ),
            (1, 2, 3, 4, 5)
        );
    }

    #[test]
    fn bad_values_are_named_with_the_reason() {
        let cases = [
            (
                json!({"min_age_hours": 0}),
                "min_age_hours 0: must be at least 1",
            ),
            (
                json!({"live_log_keep_days": -3}),
                "live_log_keep_days -3: must be at least 1",
            ),
            (
                json!({"old_logs_keep_hours": 1.5}),
                "old_logs_keep_hours 1.5: expected a whole number",
            ),
            (
                json!({"setup_log_keep_minutes": "60"}),
                "setup_log_keep_minutes \"60\": expected a whole number",
            ),
            (
                json!({"rotated_daemon_keep_hours": 1_000_001}),
                "rotated_daemon_keep_hours 1000001: must be at most 1000000",
            ),
            (
                json!({"ray_temp_dir": "tmp/ray"}),
                "ray_temp_dir \"tmp/ray\": must be an absolute path on the worker",
            ),
            (
                json!({"ray_temp_dir": "/"}),
                "ray_temp_dir \"/\": must not be the root directory",
            ),
            (
                json!({"ray_temp_dir": "/data/../etc"}),
                "ray_temp_dir \"/data/../etc\": must not contain a `..` component",
            ),
            (
                json!({"ray_temp_dir": "/a\nb"}),
                "ray_temp_dir \"/a\\nb\": must not contain control characters",
            ),
            (
                json!({"ray_temp_dir": 7}),
                "ray_temp_dir 7: expected a string",
            ),
        ];
        for (params, want) in cases {
            assert_eq!(config(params.clone()).unwrap_err(), want, "{params}");
        }
        assert!(
            config(json!({"min_age_hour": 1}))
                .unwrap_err()
                .contains("unknown field `min_age_hour`")
        );
    }
}
