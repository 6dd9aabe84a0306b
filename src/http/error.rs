//! The one table that maps every HTTP-facing error to a status code and a JSON body.
//!
//! Bodies have the shape `{"error": {"code": "...", "message": "..."}}`. Messages are written
//! for the caller and never contain tokens, secrets or internal causes; 5xx bodies are opaque
//! and the cause chain is logged where the error is handled.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::botframework::auth::AuthRejection;
use crate::notifications::{IntakeError, TokenRejection};

/// What a refused notification batch is told: the JSON problem, or nothing of which check failed.
fn notification_message(error: &IntakeError) -> String {
    match error {
        IntakeError::BadJson(message) => message.clone(),
        IntakeError::Busy | IntakeError::Token(TokenRejection::KeysUnavailable) => "not ready to take notifications; retry later".into(),
        IntakeError::ClientState | IntakeError::Token(_) => "unauthorized".into(),
    }
}

/// An error answered to an HTTP caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Body is not valid JSON or not a valid activity.
    #[error("the request body is not a valid activity: {0}")]
    BadJson(String),
    /// Body larger than the configured limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Body could not be read.
    #[error("the request body could not be read")]
    BadBody,
    /// Content-Type is not JSON.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// Inbound authentication failed.
    #[error("request rejected: {}", .0.code())]
    Auth(AuthRejection),
    /// The alert signature is missing or wrong.
    #[error("request rejected: {0}")]
    Signature(crate::audit::signature::SignatureError),
    /// A change-notification batch was refused (which check failed is in metrics only).
    #[error("{}", notification_message(.0))]
    Notification(crate::notifications::IntakeError),
    /// An audit record in the body is not valid.
    #[error("{0}")]
    InvalidRecord(String),
    /// Well-formed, but not acceptable (e.g. records of another tenant).
    #[error("{0}")]
    Unprocessable(String),
    /// Over a rate limit; holds the seconds to wait.
    #[error("too many requests; retry in {0} s")]
    TooManyRequests(u64),
    /// Method not allowed on this path; holds the allowed method.
    #[error("method not allowed (use {0})")]
    MethodNotAllowed(&'static str),
    /// No such path.
    #[error("not found")]
    NotFound,
    /// An unexpected failure; details are logged, not returned.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) => "bad_json",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::BadBody => "bad_body",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            // Which check failed stays in metrics and a debug line: telling a forger helps them.
            ApiError::Auth(reason) => match reason.status() {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "forbidden",
                _ => "unavailable",
            },
            ApiError::Signature(_) => "unauthorized",
            ApiError::Notification(error) => match error {
                IntakeError::BadJson(_) => "bad_json",
                IntakeError::Busy | IntakeError::Token(TokenRejection::KeysUnavailable) => "unavailable",
                IntakeError::ClientState | IntakeError::Token(_) => "unauthorized",
            },
            ApiError::InvalidRecord(_) => "invalid_record",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::NotFound => "not_found",
            ApiError::Internal => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_) | ApiError::BadBody => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Auth(reason) => reason.status(),
            ApiError::Signature(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidRecord(_) => StatusCode::BAD_REQUEST,
            ApiError::Notification(error) => match error {
                IntakeError::BadJson(_) => StatusCode::BAD_REQUEST,
                IntakeError::Busy | IntakeError::Token(TokenRejection::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
                IntakeError::ClientState | IntakeError::Token(_) => StatusCode::UNAUTHORIZED,
            },
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = match self {
            ApiError::Auth(AuthRejection::KeysUnavailable) => "authentication keys are not available yet; retry later".to_owned(),
            ApiError::Auth(reason) if reason.status() == StatusCode::FORBIDDEN => "forbidden".to_owned(),
            ApiError::Auth(_) | ApiError::Signature(_) => "unauthorized".to_owned(),
            ApiError::Notification(error) => notification_message(error),
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("10")));
        }
        if let ApiError::TooManyRequests(seconds) = self {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.insert_header((header::RETRY_AFTER, value));
            }
        }
        if let ApiError::MethodNotAllowed(allowed) = self {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allowed)));
        }
        response.json(json!({"error": {"code": self.code(), "message": message}}))
    }
}
