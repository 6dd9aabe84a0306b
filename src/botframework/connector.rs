//! Outbound calls to the Bot Connector: reply, send, create a channel thread, update a card.
//!
//! Every call takes an [`AllowedServiceUrl`], so the bot's token can only go to an allowlisted
//! host. Calls time out, retry 429/412/502/504 (honouring `Retry-After`), and retry once with a
//! fresh token when the Connector answers 401.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::activity::OutgoingActivity;
use super::service_url::AllowedServiceUrl;
use crate::config::RetryPolicy;
use crate::entra::app_token::{AppTokenError, AppTokenProvider};
use crate::metrics::Metrics;

/// Statuses the Connector documentation says to retry.
const RETRY_STATUSES: [StatusCode; 4] =
    [StatusCode::TOO_MANY_REQUESTS, StatusCode::PRECONDITION_FAILED, StatusCode::BAD_GATEWAY, StatusCode::GATEWAY_TIMEOUT];

/// Why a Connector call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The bot's own token could not be obtained.
    #[error(transparent)]
    Token(#[from] AppTokenError),
    /// Transport failure or timeout.
    #[error("Bot Connector unreachable: {0}")]
    Network(String),
    /// The Connector refused the call.
    #[error("Bot Connector answered HTTP {status} ({code})")]
    Status {
        /// HTTP status.
        status: u16,
        /// The Connector's error code, if any.
        code: String,
    },
}

/// `{ "id": ... }` returned by send, reply and update.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ResourceResponse {
    /// Id of the activity created or updated.
    #[serde(default)]
    pub id: Option<String>,
}

/// Returned by `POST /v3/conversations`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConversationResourceResponse {
    /// The new conversation (thread) id.
    #[serde(default)]
    pub id: Option<String>,
    /// Id of the first activity in it.
    #[serde(default)]
    pub activity_id: Option<String>,
}

/// Parameters for a new channel thread.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewChannelThread<'a> {
    /// Always true for a channel thread.
    pub is_group: bool,
    /// `{"channel": {"id": ...}}`.
    pub channel_data: Value,
    /// The first message of the thread.
    pub activity: &'a OutgoingActivity,
    /// Tenant of the channel.
    pub tenant_id: &'a str,
}

impl<'a> NewChannelThread<'a> {
    /// A new thread in `channel_id` starting with `activity`.
    pub fn new(channel_id: &str, tenant_id: &'a str, activity: &'a OutgoingActivity) -> Self {
        Self { is_group: true, channel_data: serde_json::json!({"channel": {"id": channel_id}}), activity, tenant_id }
    }
}

#[derive(Deserialize)]
struct ConnectorErrorBody {
    error: Option<ConnectorErrorDetail>,
}

#[derive(Deserialize)]
struct ConnectorErrorDetail {
    #[serde(default)]
    code: String,
}

/// The Connector calls the case workflow makes: replying in a thread, finding a member's account
/// and answering one person privately. A seam, so the
/// workflow's rules can be tested without a Connector.
#[async_trait::async_trait]
pub trait ThreadReplies: Send + Sync {
    /// Replies in the conversation of `activity_id` (in a channel: in its thread).
    async fn reply_to_activity(
        &self,
        service_url: &AllowedServiceUrl,
        conversation_id: &str,
        activity_id: &str,
        activity: &OutgoingActivity,
    ) -> Result<ResourceResponse, ConnectorError>;

    /// The Teams account id and display name of a team member, by Entra object id; `None`
    /// when not a member.
    async fn team_member_account(
        &self,
        service_url: &AllowedServiceUrl,
        team_id: &str,
        aad_object_id: &str,
    ) -> Result<Option<(String, String)>, ConnectorError>;

    /// Sends `activity`, an answer to `to`, so that only `to`'s sender sees it.
    async fn send_privately(
        &self,
        service_url: &AllowedServiceUrl,
        to: &super::activity::Activity,
        activity: &OutgoingActivity,
    ) -> Result<super::private::PrivateRoute, ConnectorError>;
}

#[async_trait::async_trait]
impl ThreadReplies for ConnectorClient {
    async fn reply_to_activity(
        &self,
        service_url: &AllowedServiceUrl,
        conversation_id: &str,
        activity_id: &str,
        activity: &OutgoingActivity,
    ) -> Result<ResourceResponse, ConnectorError> {
        ConnectorClient::reply_to_activity(self, service_url, conversation_id, activity_id, activity).await
    }

    async fn team_member_account(
        &self,
        service_url: &AllowedServiceUrl,
        team_id: &str,
        aad_object_id: &str,
    ) -> Result<Option<(String, String)>, ConnectorError> {
        ConnectorClient::team_member_account(self, service_url, team_id, aad_object_id).await
    }

    async fn send_privately(
        &self,
        service_url: &AllowedServiceUrl,
        to: &super::activity::Activity,
        activity: &OutgoingActivity,
    ) -> Result<super::private::PrivateRoute, ConnectorError> {
        ConnectorClient::send_privately(self, service_url, to, activity).await
    }
}

/// A team member as the Connector describes them (their account id and display name).
#[derive(Debug, Default, Deserialize)]
struct TeamMember {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Client for the Bot Connector REST API.
pub struct ConnectorClient {
    http: reqwest::Client,
    tokens: Arc<AppTokenProvider>,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl ConnectorClient {
    /// A client that authenticates with `tokens`.
    pub fn new(
        tokens: Arc<AppTokenProvider>,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::outbound::ClientSetupError> {
        Ok(Self { http: crate::outbound::build_client(retry.request_timeout)?, tokens, retry, metrics })
    }

    /// Replies in the conversation of `activity_id` (in a channel: in its thread).
    pub async fn reply_to_activity(
        &self,
        service_url: &AllowedServiceUrl,
        conversation_id: &str,
        activity_id: &str,
        activity: &OutgoingActivity,
    ) -> Result<ResourceResponse, ConnectorError> {
        let url = service_url.join(&["v3", "conversations", conversation_id, "activities", activity_id]);
        self.call("reply", Method::POST, url, Some(activity)).await
    }

    /// Sends a message to a conversation.
    pub async fn send_to_conversation(
        &self,
        service_url: &AllowedServiceUrl,
        conversation_id: &str,
        activity: &OutgoingActivity,
    ) -> Result<ResourceResponse, ConnectorError> {
        let url = service_url.join(&["v3", "conversations", conversation_id, "activities"]);
        self.call("send", Method::POST, url, Some(activity)).await
    }

    /// Starts a new thread in a channel (`POST /v3/conversations`).
    pub async fn create_channel_thread(
        &self,
        service_url: &AllowedServiceUrl,
        params: &NewChannelThread<'_>,
    ) -> Result<ConversationResourceResponse, ConnectorError> {
        let url = service_url.join(&["v3", "conversations"]);
        self.call("create_conversation", Method::POST, url, Some(params)).await
    }

    /// Replaces an activity (card update) in place.
    pub async fn update_activity(
        &self,
        service_url: &AllowedServiceUrl,
        conversation_id: &str,
        activity_id: &str,
        activity: &OutgoingActivity,
    ) -> Result<ResourceResponse, ConnectorError> {
        let url = service_url.join(&["v3", "conversations", conversation_id, "activities", activity_id]);
        self.call("update", Method::PUT, url, Some(activity)).await
    }

    /// The Teams account id (`29:...`) and display name of the team member with Entra object
    /// id `aad_object_id` (`GET /v3/conversations/{team}/members/{id}`); `None` when they are
    /// not a member.
    pub async fn team_member_account(
        &self,
        service_url: &AllowedServiceUrl,
        team_id: &str,
        aad_object_id: &str,
    ) -> Result<Option<(String, String)>, ConnectorError> {
        let url = service_url.join(&["v3", "conversations", team_id, "members", aad_object_id]);
        match self.call::<(), TeamMember>("get_member", Method::GET, url, None).await {
            Ok(member) => Ok(member.id.filter(|id| !id.is_empty()).map(|id| (id, member.name.unwrap_or_default()))),
            Err(ConnectorError::Status { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub(super) async fn call<B: Serialize, R: for<'de> Deserialize<'de> + Default>(
        &self,
        operation: &'static str,
        method: Method,
        url: url::Url,
        body: Option<&B>,
    ) -> Result<R, ConnectorError> {
        let mut refreshed = false;
        loop {
            let token = self.tokens.token().await?;
            let response = crate::outbound::send_with_retry(&self.retry, &RETRY_STATUSES, false, || {
                let request = self.http.request(method.clone(), url.clone());
                let request = match body {
                    Some(body) => request.json(body),
                    None => request,
                };
                match &token {
                    Some(token) => request.bearer_auth(token.expose_secret()),
                    None => request,
                }
            })
            .await
            .map_err(|err| {
                self.metrics.inc("chatwarden_connector_calls_total", &[("operation", operation), ("result", "network_error")]);
                ConnectorError::Network(err.without_url().to_string())
            })?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && token.is_some() && !refreshed {
                tracing::warn!(operation, "Bot Connector refused the bot token; fetching a new one");
                self.tokens.invalidate().await;
                refreshed = true;
                continue;
            }
            let correlation = response
                .headers()
                .get("ms-cv")
                .or_else(|| response.headers().get("x-correlating-operationid"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if !status.is_success() {
                self.metrics.inc("chatwarden_connector_calls_total", &[("operation", operation), ("result", "error")]);
                let code = response
                    .json::<ConnectorErrorBody>()
                    .await
                    .ok()
                    .and_then(|b| b.error)
                    .map(|e| e.code)
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "no error code".into());
                tracing::error!(operation, status = status.as_u16(), code = %code, correlation = %correlation, "Bot Connector call failed");
                return Err(ConnectorError::Status { status: status.as_u16(), code });
            }
            self.metrics.inc("chatwarden_connector_calls_total", &[("operation", operation), ("result", "ok")]);
            tracing::debug!(operation, status = status.as_u16(), correlation = %correlation, "Bot Connector call succeeded");
            let bytes = response.bytes().await.map_err(|err| ConnectorError::Network(err.without_url().to_string()))?;
            // Some Connector answers (202, update) carry no body; that is a success too.
            return Ok(serde_json::from_slice(&bytes).unwrap_or_default());
        }
    }
}
