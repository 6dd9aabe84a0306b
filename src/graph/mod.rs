//! Microsoft Graph client (the only module that talks to Graph): `removeAllAccessForUser`,
//! `revokeSignInSessions`, user lookup by UPN and JSON batching with the approving admin's
//! delegated token; change-notification subscriptions, chat members and Defender alerts with
//! chatwarden's own app token (client credentials).
//!
//! Removals and revocations only ever take the approving admin's token; the bot's own token is
//! never sent here. 429, 503 and 504 are retried honouring `Retry-After` (bounded attempts, jittered
//! backoff otherwise); inside a `$batch`, only the throttled items are sent again.

use std::sync::Arc;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::botframework::service_url::encode_component;
pub(crate) use crate::cases::GraphReceipt;
use crate::config::RetryPolicy;
use crate::metrics::Metrics;

mod batch;
mod chats;
mod directory;
mod security_alerts;
mod subscriptions;

pub use batch::{BatchItem, BatchOutcome};
pub use directory::{Directory, GraphUser};
pub use security_alerts::{AlertEvidence, SecurityAlert};
pub use subscriptions::{NewSubscription, Subscription};

/// Most requests Graph accepts in one `$batch`.
pub(crate) const MAX_BATCH: usize = 20;

/// Statuses worth retrying.
const RETRY_STATUSES: [StatusCode; 3] = [StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT];

/// A Graph call that did not succeed: an error status, or no usable answer at all (status 0).
/// The status is never a success: a 2xx whose body is not what the API documents is status 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Graph answered HTTP {status} ({code})")]
pub struct GraphFailure {
    /// HTTP status, or 0 when there was no usable answer (network failure, timeout, or a
    /// success whose body could not be read).
    pub status: u16,
    /// Graph error code (`Forbidden`, `itemNotFound`, ...), or a local description.
    pub code: String,
    /// The call's ids and Graph's `date`, when a call was made.
    pub receipt: Option<GraphReceipt>,
}

/// A Graph call that succeeded: its status and receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphAnswer {
    /// The 2xx status.
    pub status: u16,
    /// The call's ids and date.
    pub receipt: GraphReceipt,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
}

/// Path of `removeAllAccessForUser` for a chat, relative to a version root.
pub(crate) fn remove_access_path(chat_id: &str) -> String {
    format!("/chats/{}/removeAllAccessForUser", encode_component(chat_id))
}

/// Body of `removeAllAccessForUser`.
pub(crate) fn remove_access_body(user_oid: &str, tenant_id: &str) -> Value {
    json!({"user": {"@odata.type": "microsoft.graph.teamworkUserIdentity", "id": user_oid, "tenantId": tenant_id}})
}

/// Path of `revokeSignInSessions`, relative to a version root.
pub(crate) fn revoke_path(user: &str) -> String {
    format!("/users/{}/revokeSignInSessions", encode_component(user))
}

/// The Graph version `removeAllAccessForUser` (and its `$batch`) is called on: generally
/// available in v1.0; `beta` stays selectable for national clouds that lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemovalApiVersion {
    /// `/v1.0`.
    #[default]
    V1,
    /// `/beta`.
    Beta,
}

impl RemovalApiVersion {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1.0",
            Self::Beta => "beta",
        }
    }
}

/// The header that carries our own id of a Graph call; Graph echoes it and logs it with its own
/// `request-id`.
pub(crate) const CLIENT_REQUEST_ID: &str = "client-request-id";

/// Client for Microsoft Graph.
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    removal_version: RemovalApiVersion,
}

impl GraphFailure {
    /// Graph answered success, but with a body that is not what the API documents.
    fn unreadable(what: &str) -> Self {
        Self { status: 0, code: format!("unreadable answer: {what}"), receipt: None }
    }

    /// The same failure with the receipt of the call that gave it.
    fn with_receipt(mut self, receipt: &GraphReceipt) -> Self {
        self.receipt = Some(receipt.clone());
        self
    }
}

impl GraphClient {
    /// A client for the Graph at `base` (e.g. `https://graph.microsoft.com`).
    pub fn new(base: Url, retry: RetryPolicy, metrics: Arc<Metrics>) -> Result<Self, crate::outbound::ClientSetupError> {
        let http = crate::outbound::build_client(retry.request_timeout)?;
        Ok(Self { http, base, retry, metrics, removal_version: RemovalApiVersion::V1 })
    }

    /// The same client calling `removeAllAccessForUser` on `version`.
    pub fn with_removal_version(mut self, version: RemovalApiVersion) -> Self {
        self.removal_version = version;
        self
    }

    /// The Graph version removals are sent to.
    pub(crate) fn removal_version(&self) -> RemovalApiVersion {
        self.removal_version
    }

    /// The URL of `path` under `version`; a failure is an error, never the bare base URL.
    fn url(&self, version: &str, path: &str) -> Result<Url, GraphFailure> {
        let text = format!("{}/{version}{path}", self.base.as_str().trim_end_matches('/'));
        Url::parse(&text).map_err(|_| GraphFailure { status: 0, code: "invalid request URL".into(), receipt: None })
    }

    async fn send(
        &self,
        operation: &'static str,
        token: &SecretString,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(GraphAnswer, Option<Value>), GraphFailure> {
        let started = std::time::Instant::now();
        // Our own id on every call (the same on its retries), so that a call can be found in
        // Graph's logs and in Microsoft support cases from our log line.
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let result = crate::outbound::send_with_retry(&self.retry, &RETRY_STATUSES, false, || {
            build().bearer_auth(token.expose_secret()).header(CLIENT_REQUEST_ID, &client_request_id)
        })
        .await;
        self.metrics.observe("chatwarden_graph_call_duration_seconds", &[("operation", operation)], started.elapsed().as_secs_f64());
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                self.metrics.inc("chatwarden_graph_calls_total", &[("operation", operation), ("status", "network_error")]);
                let code = if err.is_timeout() { "timeout" } else { "unreachable" };
                let receipt = GraphReceipt { client_request_id, request_id: None, date: None };
                return Err(GraphFailure { status: 0, code: code.into(), receipt: Some(receipt) });
            }
        };
        let status = response.status();
        self.metrics.inc("chatwarden_graph_calls_total", &[("operation", operation), ("status", status_label(status.as_u16()))]);
        // A header value has no control characters; a bound keeps a hostile one short in the log.
        let header = |name: &str| -> Option<String> {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(64).collect())
                .filter(|v: &String| !v.is_empty())
        };
        let request_id = header("request-id");
        let date = header("date");
        tracing::info!(
            operation,
            status = status.as_u16(),
            client_request_id = %client_request_id,
            graph.request_id = request_id.as_deref().unwrap_or_default(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Graph call"
        );
        let receipt = GraphReceipt { client_request_id, request_id, date };
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            Ok((GraphAnswer { status: status.as_u16(), receipt }, body))
        } else {
            let code = body
                .as_ref()
                .and_then(|b| serde_json::from_value::<ErrorBody>(b.clone()).ok())
                .and_then(|e| e.error)
                .map(|e| e.code)
                .unwrap_or_default();
            Err(GraphFailure { status: status.as_u16(), code, receipt: Some(receipt) })
        }
    }

    /// `POST /v1.0/chats/{chat}/removeAllAccessForUser` (or `/beta`, when configured); 204 on success.
    pub async fn remove_all_access(
        &self,
        token: &SecretString,
        chat_id: &str,
        user_oid: &str,
        tenant_id: &str,
    ) -> Result<GraphAnswer, GraphFailure> {
        let url = self.url(self.removal_version.as_str(), &remove_access_path(chat_id))?;
        let body = remove_access_body(user_oid, tenant_id);
        self.send("remove_all_access", token, || self.http.post(url.clone()).json(&body)).await.map(|(answer, _)| answer)
    }

    /// `POST /v1.0/users/{id}/revokeSignInSessions`; any 2xx is success.
    pub async fn revoke_sessions(&self, token: &SecretString, user: &str) -> Result<GraphAnswer, GraphFailure> {
        let url = self.url("v1.0", &revoke_path(user))?;
        self.send("revoke_sessions", token, || self.http.post(url.clone()).header("content-length", "0")).await.map(|(answer, _)| answer)
    }

    /// Every item of a paged list from `first` on, following `@odata.nextLink` (on the Graph
    /// host only), until more than `max_items`; `None` when the first page is a 404.
    async fn list_pages<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        token: &SecretString,
        first: Url,
        max_items: usize,
    ) -> Result<Option<Vec<T>>, GraphFailure> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut first_page = true;
        while let Some(page) = next.take() {
            let body = match self.send(operation, token, || self.http.get(page.clone())).await {
                Ok((_, Some(body))) => body,
                Ok((_, None)) => return Err(GraphFailure::unreadable("empty page")),
                Err(GraphFailure { status: 404, .. }) if first_page => return Ok(None),
                Err(failure) => return Err(failure),
            };
            first_page = false;
            let page_items: Vec<T> = body
                .get("value")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| GraphFailure::unreadable("invalid page"))?;
            items.extend(page_items);
            if items.len() > max_items {
                break;
            }
            next = match body.get("@odata.nextLink").and_then(Value::as_str) {
                Some(link) => {
                    let link = Url::parse(link).map_err(|_| GraphFailure::unreadable("invalid next link"))?;
                    if link.origin() != self.base.origin() {
                        return Err(GraphFailure::unreadable("next link outside Graph"));
                    }
                    Some(link)
                }
                None => None,
            };
        }
        Ok(Some(items))
    }

    /// The retry budget of this client.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }
}

/// Low-cardinality label for a status.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        412 => "412",
        429 => "429",
        500..=599 => "5xx",
        0 => "network_error",
        _ => "other",
    }
}
