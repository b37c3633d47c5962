//! Query strings of the list endpoints, parsed by hand so that every refusal names its key:
//! an unknown key, a key given twice, a value of the wrong type or out of bounds.

use std::ops::RangeInclusive;

use super::model::RunsQuery;
use super::reply::ApiError;

/// Bounds of `limit` on the list endpoints: one page is at most 1000 rows, so a page stays a
/// few hundred KiB whatever the fleet.
pub const LIMIT_RANGE: RangeInclusive<u32> = 1..=1000;
/// `limit` when not given.
pub const DEFAULT_LIMIT: u32 = 100;

/// `GET /api/v1/audit` query.
#[derive(Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Page size.
    pub limit: u32,
    /// Cursor.
    pub before: Option<i64>,
}

/// The pairs of a query string, each key at most once and among `known`.
fn pairs(raw: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !known.contains(&k.as_ref()) {
            return Err(ApiError::invalid(
                &k,
                format!("unknown query parameter (known: {})", known.join(", ")),
            ));
        }
        if seen.iter().any(|(s, _)| *s == k) {
            return Err(ApiError::invalid(&k, "given twice"));
        }
        seen.push((k.into_owned(), v.into_owned()));
    }
    Ok(seen)
}

fn limit(key: &str, v: &str) -> Result<u32, ApiError> {
    let n: u32 = v.parse().map_err(|_| {
        ApiError::invalid(
            key,
            format!(
                "{v:?} is not a whole number ({}-{})",
                LIMIT_RANGE.start(),
                LIMIT_RANGE.end()
            ),
        )
    })?;
    if !LIMIT_RANGE.contains(&n) {
        return Err(ApiError::invalid(
            key,
            format!(
                "{n} is out of range ({}-{})",
                LIMIT_RANGE.start(),
                LIMIT_RANGE.end()
            ),
        ));
    }
    Ok(n)
}

fn id(key: &str, v: &str) -> Result<i64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::invalid(key, format!("{v:?} is not a run id (an integer)")))
}

fn timestamp(key: &str, v: &str) -> Result<String, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|_| v.to_string())
        .map_err(|e| {
            ApiError::invalid(
                key,
                format!("{v:?} is not an RFC 3339 timestamp like 2026-12-04T15:40:46Z ({e})"),
            )
        })
}

fn non_empty(key: &str, v: String) -> Result<String, ApiError> {
    if v.is_empty() {
        return Err(ApiError::invalid(key, "is empty"));
    }
    Ok(v)
}

/// `GET /api/v1/runs`: every filter optional, `limit` defaults to [`DEFAULT_LIMIT`].
pub fn runs(raw: Option<&str>) -> Result<RunsQuery, ApiError> {
    const KNOWN: &[&str] = &[
        "task", "worker", "outcome", "since", "until", "limit", "before",
    ];
    let mut q = RunsQuery {
        limit: Some(DEFAULT_LIMIT),
        ..RunsQuery::default()
    };
    for (k, v) in pairs(raw, KNOWN)? {
        match k.as_str() {
            "task" => q.task = Some(non_empty(&k, v)?),
            "worker" => q.worker = Some(non_empty(&k, v)?),
            "outcome" => q.outcome = Some(non_empty(&k, v)?),
            "since" => q.since = Some(timestamp(&k, &v)?),
            "until" => q.until = Some(timestamp(&k, &v)?),
            "limit" => q.limit = Some(limit(&k, &v)?),
            _ => q.before = Some(id(&k, &v)?),
        }
    }
    Ok(q)
}

/// `GET /api/v1/audit`.
pub fn audit(raw: Option<&str>) -> Result<AuditQuery, ApiError> {
    let mut q = AuditQuery {
        limit: DEFAULT_LIMIT,
        before: None,
    };
    for (k, v) in pairs(raw, &["limit", "before"])? {
        match k.as_str() {
            "limit" => q.limit = limit(&k, &v)?,
            _ => q.before = Some(id(&k, &v)?),
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<impl std::fmt::Debug, ApiError>) -> (Option<String>, String) {
        let e = r.unwrap_err();
        (e.body.field.clone(), e.body.error.clone())
    }

    #[test]
    fn runs_query() {
        let q = runs(Some("task=file_cleanup&worker=10.0.0.7%3A22555&limit=5&before=42&since=2026-12-04T15:40:46Z")).unwrap();
        assert_eq!(q.task.as_deref(), Some("file_cleanup"));
        assert_eq!(q.worker.as_deref(), Some("10.0.0.7:22555"));
        assert_eq!((q.limit, q.before), (Some(5), Some(42)));
        assert_eq!(runs(None).unwrap().limit, Some(DEFAULT_LIMIT));
        assert_eq!(runs(Some("")).unwrap().limit, Some(DEFAULT_LIMIT));
    }

    #[test]
    fn runs_query_refusals_name_the_key() {
        for (raw, field, words) in [
            (
                "colour=red",
                "colour",
                "unknown query parameter (known: task, worker",
            ),
            ("limit=0", "limit", "0 is out of range (1-1000)"),
            ("limit=1001", "limit", "1001 is out of range (1-1000)"),
            ("limit=ten", "limit", "\"ten\" is not a whole number"),
            ("limit=-1", "limit", "is not a whole number"),
            ("before=x", "before", "is not a run id"),
            ("since=yesterday", "since", "not an RFC 3339 timestamp"),
            ("task=a&task=b", "task", "given twice"),
            ("task=", "task", "is empty"),
        ] {
            let (f, msg) = refused(runs(Some(raw)));
            assert_eq!(f.as_deref(), Some(field), "{raw}");
            assert!(msg.contains(words), "{raw}: {msg}");
        }
    }

    #[test]
    fn audit_query() {
        assert_eq!(
            audit(Some("limit=10&before=7")).unwrap(),
            AuditQuery {
                limit: 10,
                before: Some(7)
            }
        );
        assert_eq!(refused(audit(Some("task=x"))).0.as_deref(), Some("task"));
        assert_eq!(
            refused(audit(Some("limit=5000"))).0.as_deref(),
            Some("limit")
        );
    }
}
