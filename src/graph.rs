//! Microsoft Graph client (the only module that talks to Graph): `removeAllAccessForUser`,
//! `revokeSignInSessions`, user lookup by UPN and JSON batching.
//!
//! Every call takes the approving admin's delegated token; the bot's own token is never sent
//! here. 429, 503 and 504 are retried honouring `Retry-After` (bounded attempts, jittered
//! backoff otherwise); inside a `$batch`, only the throttled items are sent again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::botframework::service_url::encode_component;
pub(crate) use crate::cases::GraphReceipt;
use crate::config::RetryPolicy;
use crate::metrics::Metrics;

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

/// A directory user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    /// Entra object id.
    pub id: String,
    /// User principal name, when Graph returned one.
    #[serde(default)]
    pub user_principal_name: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// One request of a `$batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// Unique id within the batch.
    pub id: String,
    /// `POST`, `GET`, ...
    pub method: &'static str,
    /// URL relative to the version root (`/chats/.../removeAllAccessForUser`).
    pub url: String,
    /// JSON body, if any.
    pub body: Option<Value>,
}

/// The outcome of one batch item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The item id.
    pub id: String,
    /// Its HTTP status.
    pub status: u16,
    /// Graph error code for failures.
    pub code: String,
    /// How long Graph asked to wait before sending it again (throttled items).
    pub retry_after: Option<Duration>,
    /// The receipt of the `$batch` call that carried it.
    pub receipt: Option<GraphReceipt>,
}

impl BatchOutcome {
    /// Whether Graph asked for this item to be sent again later (429, 503, 504).
    pub(crate) fn retryable(&self) -> bool {
        RETRY_STATUSES.iter().any(|s| s.as_u16() == self.status)
    }
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

#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    responses: Vec<BatchItemResponse>,
}

#[derive(Deserialize)]
struct BatchItemResponse {
    id: String,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
}

fn error_code(body: Option<&Value>) -> String {
    body.and_then(|b| b.get("error")).and_then(|e| e.get("code")).and_then(Value::as_str).unwrap_or_default().to_owned()
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

/// Directory look-ups the case workflow makes with the requester's token. A seam, so the
/// workflow's rules can be tested without Graph.
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    /// A user by UPN or object id; `None` when there is none.
    async fn user(&self, token: &SecretString, upn_or_id: &str) -> Result<Option<GraphUser>, GraphFailure>;
    /// Every transitive user member of a group, up to `max_users`; `None` when there is no such group.
    async fn group_users(&self, token: &SecretString, group_id: &str, max_users: usize) -> Result<Option<Vec<GraphUser>>, GraphFailure>;
}

#[async_trait::async_trait]
impl Directory for GraphClient {
    async fn user(&self, token: &SecretString, upn_or_id: &str) -> Result<Option<GraphUser>, GraphFailure> {
        GraphClient::user(self, token, upn_or_id).await
    }

    async fn group_users(&self, token: &SecretString, group_id: &str, max_users: usize) -> Result<Option<Vec<GraphUser>>, GraphFailure> {
        GraphClient::group_users(self, token, group_id, max_users).await
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

    /// `GET /v1.0/users/{upn}?$select=id,userPrincipalName,displayName`; `None` when not found.
    pub async fn user(&self, token: &SecretString, upn_or_id: &str) -> Result<Option<GraphUser>, GraphFailure> {
        let mut url = self.url("v1.0", &format!("/users/{}", encode_component(upn_or_id)))?;
        url.query_pairs_mut().append_pair("$select", "id,userPrincipalName,displayName");
        match self.send("get_user", token, || self.http.get(url.clone())).await {
            Ok((_, Some(body))) => serde_json::from_value(body).map(Some).map_err(|_| GraphFailure::unreadable("invalid user body")),
            Ok((_, None)) => Err(GraphFailure::unreadable("empty user body")),
            Err(GraphFailure { status: 404, .. }) => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    /// Every transitive user member of a group, following `@odata.nextLink` (on the Graph host
    /// only), up to `max_users` users; `None` when the group does not exist.
    pub async fn group_users(
        &self,
        token: &SecretString,
        group_id: &str,
        max_users: usize,
    ) -> Result<Option<Vec<GraphUser>>, GraphFailure> {
        let mut url = self.url("v1.0", &format!("/groups/{}/transitiveMembers/microsoft.graph.user", encode_component(group_id)))?;
        url.query_pairs_mut().append_pair("$select", "id,userPrincipalName,displayName").append_pair("$top", "999");
        let mut users = Vec::new();
        let mut next = Some(url);
        while let Some(page) = next.take() {
            let body = match self.send("list_group_users", token, || self.http.get(page.clone())).await {
                Ok((_, Some(body))) => body,
                Ok((_, None)) => return Err(GraphFailure::unreadable("empty group page")),
                Err(GraphFailure { status: 404, .. }) if users.is_empty() => return Ok(None),
                Err(failure) => return Err(failure),
            };
            let members: Vec<GraphUser> = body
                .get("value")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| GraphFailure::unreadable("invalid group page"))?;
            users.extend(members);
            if users.len() > max_users {
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
        Ok(Some(users))
    }

    /// The retry budget of this client.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Sends up to `MAX_BATCH` requests as one `$batch`, once: throttled items come back as
    /// outcomes with their `Retry-After`, for the caller to send again when it chooses.
    pub async fn batch_once(&self, token: &SecretString, version: &str, items: &[BatchItem]) -> Result<Vec<BatchOutcome>, GraphFailure> {
        let items = &items[..items.len().min(MAX_BATCH)];
        let url = self.url(version, "/$batch")?;
        let requests: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut request = json!({"id": item.id, "method": item.method, "url": item.url});
                if let Some(body) = &item.body {
                    request["body"] = body.clone();
                    request["headers"] = json!({"Content-Type": "application/json"});
                }
                request
            })
            .collect();
        let payload = json!({"requests": requests});
        let (answer, body) = self.send("batch", token, || self.http.post(url.clone()).json(&payload)).await?;
        let receipt = answer.receipt;
        let parsed: BatchResponse = body
            .and_then(|b| serde_json::from_value(b).ok())
            .ok_or_else(|| GraphFailure::unreadable("invalid batch body").with_receipt(&receipt))?;
        let mut outcomes: HashMap<String, BatchOutcome> = HashMap::new();
        for response in parsed.responses {
            if !items.iter().any(|i| i.id == response.id) {
                continue;
            }
            let retry_after = response
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s).min(self.retry.max_delay));
            let outcome = BatchOutcome {
                id: response.id.clone(),
                status: response.status,
                code: error_code(response.body.as_ref()),
                retry_after,
                receipt: Some(receipt.clone()),
            };
            if !outcome.retryable() {
                self.metrics.inc("chatwarden_graph_batch_items_total", &[("status", status_label(response.status))]);
            } else {
                self.metrics.inc("chatwarden_graph_batch_items_total", &[("status", "throttled")]);
            }
            outcomes.insert(response.id, outcome);
        }
        // Items Graph did not answer at all are reported as failures, not retried blindly.
        Ok(items
            .iter()
            .map(|item| {
                outcomes.remove(&item.id).unwrap_or_else(|| BatchOutcome {
                    id: item.id.clone(),
                    status: 0,
                    code: "missing from batch response".into(),
                    retry_after: None,
                    receipt: Some(receipt.clone()),
                })
            })
            .collect())
    }

    /// Sends up to `MAX_BATCH` requests as one `$batch`, re-sending throttled items (honouring
    /// their `Retry-After`) up to the retry budget. Returns one outcome per item.
    pub async fn batch(&self, token: &SecretString, version: &str, items: &[BatchItem]) -> Result<Vec<BatchOutcome>, GraphFailure> {
        let items = &items[..items.len().min(MAX_BATCH)];
        let mut finished: HashMap<String, BatchOutcome> = HashMap::new();
        let mut pending: Vec<BatchItem> = items.to_vec();
        let mut round = 1;
        while !pending.is_empty() {
            let outcomes = self.batch_once(token, version, &pending).await?;
            let mut wait = Duration::ZERO;
            let mut again = Vec::new();
            for outcome in outcomes {
                if outcome.retryable() && round < self.retry.max_attempts {
                    wait = wait.max(outcome.retry_after.unwrap_or_else(|| crate::outbound::backoff(&self.retry, round)));
                    if let Some(item) = pending.iter().find(|i| i.id == outcome.id) {
                        again.push(item.clone());
                    }
                } else {
                    finished.insert(outcome.id.clone(), outcome);
                }
            }
            if !again.is_empty() {
                tracing::debug!(items = again.len(), wait_ms = wait.as_millis() as u64, "re-sending throttled batch items");
                tokio::time::sleep(wait).await;
            }
            pending = again;
            round += 1;
        }
        Ok(items.iter().filter_map(|item| finished.remove(&item.id)).collect())
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
