//! The HTTP layer's one error type and its JSON shape:
//! `{"error": {"code": "…", "message": "…"}}` with a matching status code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use waybill_core::ReplicaError;
use waybill_core::model::ModelError;

/// Why a request failed. Each variant has one HTTP status and one stable `code`.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No `Authorization: Bearer …` header, or a token that is not an admin token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A body that is not JSON at all.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON that does not describe what the endpoint expects (unknown or missing
    /// fields, wrong types).
    #[error("the body does not describe a valid {expected}: {detail}")]
    InvalidBody {
        /// What was expected (`order`, `assignment`…).
        expected: &'static str,
        /// Where and why parsing stopped.
        detail: String,
    },
    /// A query parameter, header or path segment that is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// No such document, or no such route.
    #[error("{0}")]
    NotFound(String),
    /// The dispatcher's own rules refused the change (nothing was written).
    #[error("{0}")]
    Forbidden(String),
    /// The relay refused the change (it is kept in the relay's quarantine).
    #[error("the relay refused the change ({code}): {reason}")]
    RefusedByRelay {
        /// The relay's error code (`Forbidden`, …).
        code: String,
        /// The relay's reason.
        reason: String,
    },
    /// The change does not fit the document's current state (an invalid status
    /// transition, a currency mismatch, a document not complete yet).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed input the model refused (an empty number, a negative quantity).
    #[error("{0}")]
    Unprocessable(String),
    /// An `Idempotency-Key` used before with a different request body.
    #[error(
        "the Idempotency-Key {0:?} was used with a different request body; use a new key for a new order"
    )]
    IdempotencyKeyReused(String),
    /// Something failed on the relay's side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl HttpError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::InvalidJson(_) | HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::InvalidBody { .. } | HttpError::Unprocessable(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Forbidden(_) | HttpError::RefusedByRelay { .. } => StatusCode::FORBIDDEN,
            HttpError::Conflict(_) | HttpError::IdempotencyKeyReused(_) => StatusCode::CONFLICT,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Unauthorized(_) => "unauthorized",
            HttpError::InvalidJson(_) => "invalid_json",
            HttpError::InvalidBody { .. } => "invalid_body",
            HttpError::BadRequest(_) => "bad_request",
            HttpError::NotFound(_) => "not_found",
            HttpError::Forbidden(_) => "forbidden",
            HttpError::RefusedByRelay { .. } => "refused_by_relay",
            HttpError::Conflict(_) => "conflict",
            HttpError::Unprocessable(_) => "unprocessable",
            HttpError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            HttpError::Internal(_) => "internal",
        }
    }

    /// Parse a JSON body into `T`, telling a body that is not JSON (400) from
    /// JSON of the wrong shape (422).
    pub fn parse_json<T: serde::de::DeserializeOwned>(
        body: &[u8],
        expected: &'static str,
    ) -> Result<T, HttpError> {
        serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => HttpError::InvalidBody {
                expected,
                detail: e.to_string(),
            },
            _ => HttpError::InvalidJson(e.to_string()),
        })
    }
}

impl From<ReplicaError> for HttpError {
    fn from(err: ReplicaError) -> Self {
        match &err {
            ReplicaError::NotFound { .. } | ReplicaError::WrongKind { .. } => {
                HttpError::NotFound(err.to_string())
            }
            ReplicaError::InvalidDocId(_) => HttpError::NotFound(err.to_string()),
            ReplicaError::Incomplete { .. } => HttpError::Conflict(err.to_string()),
            ReplicaError::Model(model) => match model {
                ModelError::Forbidden { .. } => HttpError::Forbidden(err.to_string()),
                ModelError::InvalidTransition { .. } | ModelError::CurrencyMismatch { .. } => {
                    HttpError::Conflict(err.to_string())
                }
                ModelError::InvalidInput { .. } | ModelError::UnknownEventKind { .. } => {
                    HttpError::Unprocessable(err.to_string())
                }
                _ => HttpError::Internal(err.to_string()),
            },
            ReplicaError::Store(_) | ReplicaError::CorruptChange { .. } => {
                HttpError::Internal(err.to_string())
            }
        }
    }
}

impl From<rusqlite::Error> for HttpError {
    fn from(err: rusqlite::Error) -> Self {
        HttpError::Internal(format!("database: {err}"))
    }
}

impl From<tokio::task::JoinError> for HttpError {
    fn from(err: tokio::task::JoinError) -> Self {
        HttpError::Internal(format!("a blocking task failed: {err}"))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(code = self.code(), "request refused");
        }
        let mut body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let HttpError::RefusedByRelay { code, reason } = &self {
            body["error"]["relay_code"] = json!(code);
            body["error"]["reason"] = json!(reason);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_and_wrong_shape_are_told_apart() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[allow(dead_code)]
            courier: String,
        }
        let syntax = HttpError::parse_json::<Body>(b"{\"courier\": ", "assignment");
        assert!(matches!(syntax, Err(HttpError::InvalidJson(_))));
        let unknown =
            HttpError::parse_json::<Body>(b"{\"courier\": \"c\", \"x\": 1}", "assignment");
        match unknown {
            Err(e @ HttpError::InvalidBody { .. }) => {
                assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
                assert!(e.to_string().contains("unknown field `x`"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
