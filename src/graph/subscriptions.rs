//! Change-notification subscriptions (`/v1.0/subscriptions`) with chatwarden's app token:
//! create, renew (which also reauthorizes), reauthorize and delete.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{GraphClient, GraphFailure};
use crate::botframework::service_url::encode_component;

/// The body of `POST /v1.0/subscriptions`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSubscription {
    /// `created`.
    pub change_type: String,
    /// Where notifications go.
    pub notification_url: String,
    /// Where lifecycle notifications go.
    pub lifecycle_notification_url: String,
    /// `/chats/getAllMembers`, with `?model=A` or `B` when configured.
    pub resource: String,
    /// Always `true`: the member comes encrypted with the notification.
    pub include_resource_data: bool,
    /// Base64 DER of our certificate.
    pub encryption_certificate: String,
    /// Its id, echoed in every notification.
    pub encryption_certificate_id: String,
    /// ISO 8601 UTC.
    pub expiration_date_time: String,
    /// The secret each notification carries.
    pub client_state: String,
}

/// A subscription as Graph answers it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Graph's id.
    pub id: String,
    /// When it expires (ISO 8601).
    #[serde(default)]
    pub expiration_date_time: Option<String>,
}

impl GraphClient {
    /// `POST /v1.0/subscriptions`.
    pub async fn create_subscription(&self, token: &SecretString, body: &NewSubscription) -> Result<Subscription, GraphFailure> {
        let url = self.url("v1.0", "/subscriptions")?;
        match self.send("create_subscription", token, || self.http.post(url.clone()).json(body)).await? {
            (_, Some(body)) => serde_json::from_value(body).map_err(|_| GraphFailure::unreadable("invalid subscription")),
            (_, None) => Err(GraphFailure::unreadable("empty subscription")),
        }
    }

    /// `PATCH /v1.0/subscriptions/{id}` with a new `expirationDateTime` (renews and reauthorizes).
    pub async fn renew_subscription(&self, token: &SecretString, id: &str, expiration: &str) -> Result<(), GraphFailure> {
        let url = self.url("v1.0", &format!("/subscriptions/{}", encode_component(id)))?;
        let body = serde_json::json!({ "expirationDateTime": expiration });
        self.send("renew_subscription", token, || self.http.patch(url.clone()).json(&body)).await.map(|_| ())
    }

    /// `POST /v1.0/subscriptions/{id}/reauthorize`.
    pub async fn reauthorize_subscription(&self, token: &SecretString, id: &str) -> Result<(), GraphFailure> {
        let url = self.url("v1.0", &format!("/subscriptions/{}/reauthorize", encode_component(id)))?;
        self.send("reauthorize_subscription", token, || self.http.post(url.clone()).header("content-length", "0")).await.map(|_| ())
    }

    /// `DELETE /v1.0/subscriptions/{id}`; a subscription already gone is not an error.
    pub async fn delete_subscription(&self, token: &SecretString, id: &str) -> Result<(), GraphFailure> {
        let url = self.url("v1.0", &format!("/subscriptions/{}", encode_component(id)))?;
        match self.send("delete_subscription", token, || self.http.delete(url.clone())).await {
            Ok(_) | Err(GraphFailure { status: 404, .. }) => Ok(()),
            Err(failure) => Err(failure),
        }
    }
}
