//! Answers: JSON bodies, [`ApiError`] (every non-2xx answer is an [`ErrorBody`]), the mapping
//! of [`ControlError`] to statuses, and reading a request's JSON body with the refusals that
//! name the field (400), the content type (415) or the size (413).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ControlError;
use super::auth::Refusal;
use super::model::ErrorBody;

/// Largest request body accepted. The biggest legitimate body is a trigger naming workers:
/// 64 KiB holds about 3000 addresses.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("cannot encode the answer: {e}")).into_response(),
    }
}

/// A refusal: status, body, and the headers some statuses need.
#[derive(Debug)]
pub struct ApiError {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: ErrorBody,
    /// `WWW-Authenticate` for 401.
    pub www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// `status` with a message and no field.
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
                retry_after_seconds: None,
            },
            www_authenticate: None,
        }
    }

    /// 400 naming `field`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, format!("{field}: {reason}"));
        e.body.field = Some(field.to_string());
        e
    }

    /// 500: a bug on our side, never bad input.
    pub fn internal(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error)
    }

    /// 404 for a path no route has.
    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path} (see docs/api.md)"),
        )
    }

    /// Replaces the field prefix `from` by `to` (`workers[1]` → `spec.targetWorkers[1]`).
    pub fn refield(mut self, from: &str, to: &str) -> ApiError {
        if let Some(f) = &self.body.field
            && let Some(rest) = f.strip_prefix(from)
        {
            let new = format!("{to}{rest}");
            self.body.error = self.body.error.replacen(f.as_str(), &new, 1);
            self.body.field = Some(new);
        }
        self
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let mut e = ApiError::new(status, r.to_string());
        if status == StatusCode::UNAUTHORIZED {
            e.www_authenticate = Some(match r {
                Refusal::WrongToken | Refusal::Malformed => {
                    "Bearer realm=\"quarry\", error=\"invalid_token\""
                }
                _ => "Bearer realm=\"quarry\"",
            });
        }
        e
    }
}

impl From<ControlError> for ApiError {
    fn from(c: ControlError) -> ApiError {
        let status = match &c {
            ControlError::UnknownTask { .. }
            | ControlError::UnknownRun(_)
            | ControlError::NotQuarantined { .. } => StatusCode::NOT_FOUND,
            ControlError::UnknownWorker { .. } | ControlError::Invalid { .. } => {
                StatusCode::BAD_REQUEST
            }
            ControlError::Cooldown { .. } => StatusCode::TOO_MANY_REQUESTS,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut e = ApiError::new(status, c.to_string());
        match c {
            ControlError::UnknownWorker { field, .. } | ControlError::Invalid { field, .. } => {
                e.body.field = Some(field);
            }
            ControlError::Cooldown {
                retry_after_seconds,
                ..
            } => e.body.retry_after_seconds = Some(retry_after_seconds),
            _ => {}
        }
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json(self.status, &self.body);
        if let Some(v) = self.www_authenticate {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        if let Some(s) = self.body.retry_after_seconds {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// A request body read and checked: its JSON value (kept for the audit log) or nothing.
pub struct JsonBody {
    /// `None` when the body was empty.
    pub value: Option<serde_json::Value>,
}

impl JsonBody {
    /// Reads at most [`MAX_BODY_BYTES`]; a non-empty body must be JSON (`Content-Type:
    /// application/json`, else 415) and well-formed (else 400 with line and column).
    pub async fn read(headers: &HeaderMap, body: Body) -> Result<JsonBody, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {MAX_BODY_BYTES} bytes"),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| {
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                {
                    too_large()
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {e}"),
                    )
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody { value: None });
        }
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)"));
        let is_json = ctype.is_some_and(|c| {
            c.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the request body must be JSON with `Content-Type: application/json` (got {})",
                    ctype.map_or("no Content-Type".to_string(), |c| format!("{c:?}"))
                ),
            ));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        Ok(JsonBody { value: Some(value) })
    }

    /// The body as `T` (an empty body as `{}`); a value of the wrong type, a missing or an
    /// unknown field is a 400 naming the field (`workers[1]`, `spec.taskTypes`).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let empty = serde_json::Value::Object(Default::default());
        let value = self.value.as_ref().unwrap_or(&empty);
        // serde would take an array for a struct, field by field in order: only objects.
        if !value.is_object() {
            let kind = match value {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the request body must be a JSON object, not {kind}"),
            ));
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde names an unknown or missing field in its message, at the parent's path.
            let named = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|p| inner.strip_prefix(p))
                .and_then(|rest| rest.split('`').next());
            // An unknown field is already the last segment of the path; a missing one is not.
            let field = match (named, path.as_str()) {
                (Some(name), ".") => name.to_string(),
                (Some(name), p) if p == name || p.ends_with(&format!(".{name}")) => p.to_string(),
                (Some(name), parent) => format!("{parent}.{name}"),
                (None, ".") => {
                    return ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("the request body: {inner}"),
                    );
                }
                (None, p) => p.to_string(),
            };
            ApiError::invalid(&field, inner)
        })
    }
}

/// 204 with no body.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A status with no body (202 for a cancel).
pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

#[cfg(test)]
mod tests {
    use super::super::model::{PauseRequest, TasksetRequest, TriggerRequest};
    use super::*;

    fn body(text: &str) -> JsonBody {
        JsonBody {
            value: Some(serde_json::from_str(text).unwrap()),
        }
    }

    fn field_of<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> (Option<String>, String) {
        let e = body(text).parse::<T>().unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        (e.body.field, e.body.error)
    }

    #[test]
    fn parse_errors_name_the_field() {
        let (f, msg) = field_of::<TriggerRequest>(r#"{"workers": ["a", 7]}"#);
        assert_eq!(f.as_deref(), Some("workers[1]"), "{msg}");
        assert!(msg.contains("invalid type: integer `7`"), "{msg}");
        let (f, msg) = field_of::<TriggerRequest>(r#"{"workerz": []}"#);
        assert_eq!(f.as_deref(), Some("workerz"), "{msg}");
        assert!(msg.starts_with("workerz: unknown field `workerz`"), "{msg}");
        let (f, _) = field_of::<TasksetRequest>(r#"{"spec": {"taskTypes": ["a"], "x": 1}}"#);
        assert_eq!(f.as_deref(), Some("spec.x"));
        let (f, _) = field_of::<TasksetRequest>(r#"{"spec": {"taskTypes": "a"}}"#);
        assert_eq!(f.as_deref(), Some("spec.taskTypes"));
        let (f, msg) = field_of::<TasksetRequest>(r#"{"spec": {"targetWorkers": []}, "x": {}}"#);
        assert_eq!(f.as_deref(), Some("x"), "{msg}");
        let (f, _) = field_of::<PauseRequest>(r#"{"reason": 1}"#);
        assert_eq!(f.as_deref(), Some("reason"));
        let (f, msg) = field_of::<PauseRequest>(r#"[1]"#);
        assert_eq!(f, None);
        assert!(msg.contains("must be a JSON object, not an array"), "{msg}");
    }

    #[tokio::test]
    async fn oversized_bodies_are_413_with_or_without_a_length() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // No Content-Length (as a chunked body): the limit stops the read.
        let e = JsonBody::read(&headers, Body::from(big.clone()))
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{e:?}");
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(big.len()));
        let e = JsonBody::read(&headers, Body::empty()).await.err().unwrap();
        assert_eq!(
            e.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "declared: not even read"
        );
        let ok = JsonBody::read(&HeaderMap::new(), Body::from(vec![b' '; MAX_BODY_BYTES])).await;
        assert!(
            ok.unwrap().value.is_none(),
            "blank, at the cap, no content type needed"
        );
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        let b = JsonBody { value: None };
        assert_eq!(
            b.parse::<TriggerRequest>().unwrap(),
            TriggerRequest::default()
        );
        assert_eq!(
            b.parse::<TasksetRequest>().unwrap(),
            TasksetRequest::default()
        );
    }

    #[test]
    fn control_errors_map_to_statuses() {
        let e = ApiError::from(ControlError::Cooldown {
            task: "t".into(),
            ago_seconds: 10,
            retry_after_seconds: 50,
        });
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body.retry_after_seconds, Some(50));
        let r = e.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "50");
        let e = ApiError::from(ControlError::UnknownWorker {
            field: "workers[1]".into(),
            worker: "w".into(),
        })
        .refield("workers", "spec.targetWorkers");
        assert_eq!(e.body.field.as_deref(), Some("spec.targetWorkers[1]"));
        assert!(
            e.body.error.starts_with("spec.targetWorkers[1]: no worker"),
            "{}",
            e.body.error
        );
    }
}
