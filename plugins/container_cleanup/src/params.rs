//! The params of `container_cleanup`: [`Params`] mirrors the JSON exactly, [`Config`] holds
//! the checked values. [`Config::from_params`] is the one place where params are checked; it
//! runs at config load (`Task::check`) and again at the start of every run.

use serde::Deserialize;
use serde_json::Value;

/// Default `max_age_hours`, as in ROCK.
pub const DEFAULT_MAX_AGE_HOURS: u64 = 24;

/// Default `created_max_age_hours`: a container created an hour ago and never started is
/// abandoned; one created seconds ago is probably about to start (ROCK removed it, bug 24).
pub const DEFAULT_CREATED_MAX_AGE_HOURS: u64 = 1;

/// Largest accepted age in hours: 100 years. Anything larger is a typo.
pub const MAX_HOURS_LIMIT: f64 = 100.0 * 366.0 * 24.0;

/// Nanoseconds per hour.
const NANOS_PER_HOUR: f64 = 3600.0 * 1e9;

/// The params as they appear in the config (`{}` when none are given). A `null` value means
/// "not given" and takes the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Exited containers that finished more than this many hours ago are removed.
    #[serde(default)]
    pub max_age_hours: Value,
    /// Created (never started) containers created more than this many hours ago are removed.
    #[serde(default)]
    pub created_max_age_hours: Value,
    /// Only containers with this label (`key` or `key=value`) are considered.
    #[serde(default)]
    pub label: Value,
}

/// Checked params.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `max_age_hours` as configured (a JSON number), echoed in the outcome.
    pub max_age_hours: Value,
    /// `max_age_hours` in nanoseconds.
    pub max_age_nanos: i128,
    /// `created_max_age_hours` as configured (a JSON number), echoed in the outcome.
    pub created_max_age_hours: Value,
    /// `created_max_age_hours` in nanoseconds.
    pub created_max_age_nanos: i128,
    /// The label filter, if any.
    pub label: Option<String>,
}

impl Config {
    /// Checks `params` and builds the config. The error names the param and the bad value.
    pub fn from_params(params: &Params) -> Result<Config, String> {
        let (max_age_hours, max_age_nanos) = parse_hours(
            "max_age_hours",
            &params.max_age_hours,
            DEFAULT_MAX_AGE_HOURS,
        )?;
        let (created_max_age_hours, created_max_age_nanos) = parse_hours(
            "created_max_age_hours",
            &params.created_max_age_hours,
            DEFAULT_CREATED_MAX_AGE_HOURS,
        )?;
        Ok(Config {
            max_age_hours,
            max_age_nanos,
            created_max_age_hours,
            created_max_age_nanos,
            label: parse_label(&params.label)?,
        })
    }
}

/// A number of hours ≥ 0 (fractions allowed): the value to echo and its nanoseconds.
fn parse_hours(name: &str, value: &Value, default: u64) -> Result<(Value, i128), String> {
    let hours = match value {
        Value::Null => return Ok((default.into(), i128::from(default) * 3600 * 1_000_000_000)),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    let bad = |why: &str| Err(format!("{name} {value}: {why}"));
    match hours {
        None => bad("expected a number of hours (fractions allowed, e.g. 0.5)"),
        Some(h) if !h.is_finite() => bad("expected a finite number of hours"),
        Some(h) if h < 0.0 => bad("must not be negative"),
        Some(h) if h > MAX_HOURS_LIMIT => bad(&format!(
            "must be at most {MAX_HOURS_LIMIT} hours (100 years)"
        )),
        // At most ~3.2e18 ns: far inside i128, and exact enough (f64 keeps 15 digits).
        Some(h) => Ok((value.clone(), (h * NANOS_PER_HOUR).round() as i128)),
    }
}

fn parse_label(value: &Value) -> Result<Option<String>, String> {
    let bad = |why: &str| Err(format!("label {value}: {why}"));
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => bad("must not be empty"),
        Value::String(s) if s.starts_with('=') => {
            bad("must start with a label key (`key` or `key=value`)")
        }
        Value::String(s) if s.chars().any(char::is_control) => {
            bad("must not contain control characters")
        }
        Value::String(s) => Ok(Some(s.clone())),
        _ => bad("expected a string, `key` or `key=value`"),
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

    const HOUR_NS: i128 = 3_600_000_000_000;

    #[test]
    fn defaults() {
        let c = config(json!({})).unwrap();
        assert_eq!(c.max_age_hours, json!(24));
        assert_eq!(c.max_age_nanos, 24 * HOUR_NS);
        assert_eq!(c.created_max_age_hours, json!(1));
        assert_eq!(c.created_max_age_nanos, HOUR_NS);
        assert_eq!(c.label, None);
        let nulls = json!({"max_age_hours": null, "created_max_age_hours": null, "label": null});
        assert_eq!(config(nulls).unwrap(), c);
    }

    #[test]
    fn fractions_and_zero_are_accepted() {
        let c = config(json!({"max_age_hours": 0.001, "created_max_age_hours": 0})).unwrap();
        assert_eq!(c.max_age_hours, json!(0.001));
        assert_eq!(c.max_age_nanos, 3_600_000_000);
        assert_eq!(c.created_max_age_nanos, 0);
        let c = config(json!({"max_age_hours": 48})).unwrap();
        assert_eq!(c.max_age_nanos, 48 * HOUR_NS);
        let c = config(json!({"max_age_hours": MAX_HOURS_LIMIT})).unwrap();
        assert!(c.max_age_nanos > 0);
    }

    #[test]
    fn bad_hours_are_named() {
        let err = |name: &str, v: Value| config(json!({ name: v })).unwrap_err();
        assert_eq!(
            err("max_age_hours", json!(-1)),
            "max_age_hours -1: must not be negative"
        );
        assert_eq!(
            err("created_max_age_hours", json!(-0.5)),
            "created_max_age_hours -0.5: must not be negative"
        );
        assert_eq!(
            err("max_age_hours", json!("24")),
            "max_age_hours \"24\": expected a number of hours (fractions allowed, e.g. 0.5)"
        );
        assert_eq!(
            err("max_age_hours", json!(true)),
            "max_age_hours true: expected a number of hours (fractions allowed, e.g. 0.5)"
        );
        assert_eq!(
            err("max_age_hours", json!(1e12)),
            "max_age_hours 1000000000000.0: must be at most 878400 hours (100 years)"
        );
        assert!(
            config(json!({"max_age_hour": 1}))
                .unwrap_err()
                .contains("unknown field `max_age_hour`")
        );
    }

    #[test]
    fn labels() {
        let label = |v: Value| config(json!({ "label": v })).map(|c| c.label);
        assert_eq!(label(json!("quarry.test")), Ok(Some("quarry.test".into())));
        assert_eq!(
            label(json!("team=ml; rm -rf /")),
            Ok(Some("team=ml; rm -rf /".into()))
        );
        assert_eq!(
            label(json!("")).unwrap_err(),
            "label \"\": must not be empty"
        );
        assert_eq!(
            label(json!("=x")).unwrap_err(),
            "label \"=x\": must start with a label key (`key` or `key=value`)"
        );
        assert_eq!(
            label(json!("a\nb")).unwrap_err(),
            "label \"a\\nb\": must not contain control characters"
        );
        assert_eq!(
            label(json!(["a"])).unwrap_err(),
            "label [\"a\"]: expected a string, `key` or `key=value`"
        );
    }
}
