//! Defender XDR alerts (`GET /v1.0/security/alerts_v2`, `SecurityAlert.Read.All`) changed since
//! a moment, with their evidence; chatwarden reads the Teams message evidence.

use secrecy::SecretString;
use serde::Deserialize;

use super::{GraphClient, GraphFailure};

/// Most alerts read in one poll; the rest come with the next.
const MAX_ALERTS: usize = 5_000;

/// An alert, with what chatwarden reads of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityAlert {
    /// Graph's id.
    pub id: String,
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// `microsoftDefenderForOffice365`, ...
    #[serde(default)]
    pub service_source: Option<String>,
    /// The alert's tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Created (ISO 8601).
    #[serde(default)]
    pub created_date_time: Option<String>,
    /// Last changed (ISO 8601): the poll's checkpoint.
    #[serde(default)]
    pub last_update_date_time: Option<String>,
    /// The alert in the Defender portal.
    #[serde(default)]
    pub alert_web_url: Option<String>,
    /// Evidence of any kind; only `teamsMessageEvidence` is read.
    #[serde(default)]
    pub evidence: Vec<AlertEvidence>,
}

/// One piece of evidence (the fields of `#microsoft.graph.security.teamsMessageEvidence`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertEvidence {
    /// The evidence type.
    #[serde(default, rename = "@odata.type")]
    pub odata_type: Option<String>,
    /// The chat or channel the message is in.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// `Chat`, `Topic`, `Space`, `Meeting`.
    #[serde(default)]
    pub thread_type: Option<String>,
    /// The message's id in its thread.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Recipients (addresses).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Recipients Defender singles out.
    #[serde(default)]
    pub suspicious_recipients: Vec<String>,
    /// The sender's address.
    #[serde(default)]
    pub sender_from_address: Option<String>,
    /// Whether the message came from outside the organisation.
    #[serde(default)]
    pub is_external: Option<bool>,
    /// The tenant that owns the thread.
    #[serde(default)]
    pub owning_tenant_id: Option<String>,
    /// `inbound`, `outbound`, `intraorg`.
    #[serde(default)]
    pub message_direction: Option<String>,
    /// When the message was sent (ISO 8601).
    #[serde(default)]
    pub created_date_time: Option<String>,
}

impl AlertEvidence {
    /// Whether this is Teams message evidence.
    pub fn is_teams_message(&self) -> bool {
        self.odata_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("#microsoft.graph.security.teamsMessageEvidence"))
    }
}

impl GraphClient {
    /// Alerts updated at or after `since` (ISO 8601 UTC), paged (`alerts_v2` takes no `$orderby`).
    pub async fn security_alerts_since(&self, token: &SecretString, since: &str) -> Result<Vec<SecurityAlert>, GraphFailure> {
        let mut url = self.url("v1.0", "/security/alerts_v2")?;
        url.query_pairs_mut().append_pair("$filter", &format!("lastUpdateDateTime ge {since}")).append_pair("$top", "500");
        Ok(self.list_pages("list_security_alerts", token, url, MAX_ALERTS).await?.unwrap_or_default())
    }
}
