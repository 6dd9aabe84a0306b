//! `POST /api/notifications` and `POST /api/notifications/lifecycle`: Graph's validation
//! handshake (the `validationToken` echoed as text/plain), then bounded batches checked and
//! queued by `NotificationIntake`, answered 202 before anything is decrypted. 404 when change
//! notifications are not configured.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::ApiError;
use crate::botframework::inbound::{read_body, refuse_declared_oversize};
use crate::metrics::Metrics;
use crate::notifications::NotificationIntake;

/// Longest validation token echoed (Graph's are opaque and short).
const MAX_VALIDATION_TOKEN: usize = 4_096;

/// The notification endpoints' state.
pub(crate) struct NotificationEndpoint {
    /// The intake; `None` when change notifications are off.
    pub intake: Option<Arc<NotificationIntake>>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

fn validation_token(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, _)| name == "validationToken")
        .map(|(_, value)| value.into_owned())
}

async fn handle(
    req: HttpRequest,
    mut payload: web::Payload,
    endpoint: web::Data<NotificationEndpoint>,
    lifecycle: bool,
) -> Result<HttpResponse, ApiError> {
    let Some(intake) = &endpoint.intake else { return Err(ApiError::NotFound) };
    if let Some(token) = validation_token(&req) {
        if token.len() > MAX_VALIDATION_TOKEN || token.chars().any(char::is_control) {
            endpoint.metrics.inc("chatwarden_notifications_total", &[("result", "bad_validation_request")]);
            return Err(ApiError::Unprocessable("the validationToken is not one Graph sends".into()));
        }
        endpoint.metrics.inc("chatwarden_notifications_total", &[("result", "validation_handshake")]);
        return Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
            .body(token));
    }
    refuse_declared_oversize(&req, endpoint.max_body_bytes)?;
    let body = read_body(&mut payload, endpoint.max_body_bytes).await?;
    let queued = intake.accept(&body, lifecycle).await.map_err(ApiError::Notification)?;
    Ok(HttpResponse::Accepted().json(json!({ "queued": queued })))
}

/// `POST /api/notifications`.
pub(super) async fn notifications(
    req: HttpRequest,
    payload: web::Payload,
    endpoint: web::Data<NotificationEndpoint>,
) -> Result<HttpResponse, ApiError> {
    handle(req, payload, endpoint, false).await
}

/// `POST /api/notifications/lifecycle`.
pub(super) async fn lifecycle(
    req: HttpRequest,
    payload: web::Payload,
    endpoint: web::Data<NotificationEndpoint>,
) -> Result<HttpResponse, ApiError> {
    handle(req, payload, endpoint, true).await
}
