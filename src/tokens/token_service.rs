//! The Bot Framework token service's side of delegated tokens: `GetToken` (with or without a
//! magic code), the SSO exchange, and the sign-in resource behind an OAuth card; each call made
//! with the bot's own token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::{DelegatedTokens, Miss, TokenError, owned_by};
use crate::cases::Actor;
use crate::entra::app_token::{CachedToken, use_until};

/// What the token service said about a sign-in resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInResource {
    /// The link the sign-in button opens.
    pub sign_in_link: String,
    /// SSO exchange resource (`{id, uri, providerId}`), if the connection supports it.
    pub token_exchange_resource: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: String,
    #[serde(default)]
    expiration: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignInResourceBody {
    sign_in_link: String,
    #[serde(default)]
    token_exchange_resource: Option<serde_json::Value>,
}

/// How long a token service `expiration` leaves, from an RFC 3339 timestamp.
fn remaining(expiration: Option<&str>) -> Duration {
    let parsed = expiration.and_then(|e| time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok());
    match parsed {
        Some(at) => {
            let left = at - time::OffsetDateTime::now_utc();
            Duration::try_from(left).unwrap_or(Duration::ZERO)
        }
        // Unknown lifetime: keep it briefly rather than trust it for an hour.
        None => Duration::from_secs(10 * 60),
    }
}

impl DelegatedTokens {
    fn endpoint(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let (base, _) = self.base_and_connection();
        let mut url = base.clone();
        url.set_path(&format!("{}/{path}", base.path().trim_end_matches('/')));
        url.query_pairs_mut().extend_pairs(query);
        url
    }

    async fn bot_token(&self) -> Result<Option<SecretString>, TokenError> {
        Ok(self.bot_tokens.token().await?)
    }

    fn authorised(&self, request: reqwest::RequestBuilder, bot: &Option<SecretString>) -> reqwest::RequestBuilder {
        match bot {
            Some(token) => request.bearer_auth(token.expose_secret()),
            None => request,
        }
    }

    pub(super) async fn get_token(&self, admin: &Actor, code: Option<&str>) -> Result<Arc<CachedToken>, Miss> {
        let bot = self.bot_token().await.map_err(Miss::Failed)?;
        let connection = self.connection().to_owned();
        let mut query = vec![("userId", admin.user_id.as_str()), ("connectionName", connection.as_str()), ("channelId", "msteams")];
        if let Some(code) = code {
            query.push(("code", code));
        }
        let url = self.endpoint("api/usertoken/GetToken", &query);
        let statuses =
            [StatusCode::TOO_MANY_REQUESTS, StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT];
        let response = crate::outbound::send_with_retry(&self.retry, &statuses, true, || self.authorised(self.http.get(url.clone()), &bot))
            .await
            .map_err(|e| Miss::Failed(TokenError::Network(e.without_url().to_string())))?;
        match response.status() {
            StatusCode::NOT_FOUND => {
                self.metrics.inc("chatwarden_token_service_total", &[("call", "get_token"), ("result", "not_signed_in")]);
                Err(Miss::NotSignedIn)
            }
            status if status.is_success() => {
                let body: TokenResponse = response.json().await.map_err(|_| Miss::Failed(TokenError::Invalid))?;
                let secret = SecretString::from(body.token);
                owned_by(&secret, admin).map_err(Miss::Failed)?;
                self.metrics.inc("chatwarden_token_service_total", &[("call", "get_token"), ("result", "ok")]);
                let left = remaining(body.expiration.as_deref());
                Ok(Arc::new(CachedToken { secret, use_until: use_until(Instant::now(), left) }))
            }
            status => {
                self.metrics.inc("chatwarden_token_service_total", &[("call", "get_token"), ("result", "error")]);
                Err(Miss::Failed(TokenError::Refused { status: status.as_u16(), code: String::new() }))
            }
        }
    }

    pub(super) async fn exchange_at_token_service(
        &self,
        admin: &Actor,
        sso_token: &SecretString,
    ) -> Result<Option<Arc<CachedToken>>, TokenError> {
        let bot = self.bot_token().await?;
        let connection = self.connection().to_owned();
        let url = self.endpoint(
            "api/usertoken/exchange",
            &[("userId", admin.user_id.as_str()), ("connectionName", connection.as_str()), ("channelId", "msteams")],
        );
        let body = json!({"token": sso_token.expose_secret()});
        let response = self
            .authorised(self.http.post(url), &bot)
            .json(&body)
            .send()
            .await
            .map_err(|e| TokenError::Network(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            let body: TokenResponse = response.json().await.map_err(|_| TokenError::Invalid)?;
            self.metrics.inc("chatwarden_token_service_total", &[("call", "exchange"), ("result", "ok")]);
            let left = remaining(body.expiration.as_deref());
            return Ok(Some(Arc::new(CachedToken { secret: SecretString::from(body.token), use_until: use_until(Instant::now(), left) })));
        }
        self.metrics.inc("chatwarden_token_service_total", &[("call", "exchange"), ("result", "refused")]);
        if status.is_client_error() {
            tracing::info!(status = status.as_u16(), "SSO token exchange refused; the admin must sign in or consent");
            return Ok(None);
        }
        Err(TokenError::Refused { status: status.as_u16(), code: String::new() })
    }

    /// Asks the token service for a sign-in link for `admin` in the conversation of an activity.
    pub async fn sign_in_resource(&self, state: &SignInState<'_>) -> Result<SignInResource, TokenError> {
        let bot = self.bot_token().await?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(state.to_json().to_string());
        let url = self.endpoint("api/botsignin/GetSignInResource", &[("state", encoded.as_str())]);
        let response =
            self.authorised(self.http.get(url), &bot).send().await.map_err(|e| TokenError::Network(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError::Refused { status: status.as_u16(), code: String::new() });
        }
        let body: SignInResourceBody = response.json().await.map_err(|_| TokenError::Invalid)?;
        Ok(SignInResource { sign_in_link: body.sign_in_link, token_exchange_resource: body.token_exchange_resource })
    }
}

/// The `state` the token service needs to build a sign-in link (base64 JSON).
pub struct SignInState<'a> {
    /// OAuth connection name.
    pub connection: &'a str,
    /// The bot's app id.
    pub app_id: &'a str,
    /// The activity that needs the sign-in.
    pub activity: &'a crate::botframework::activity::Activity,
}

impl SignInState<'_> {
    fn to_json(&self) -> serde_json::Value {
        let a = self.activity;
        json!({
            "ConnectionName": self.connection,
            "Conversation": {
                "ActivityId": a.id,
                "Bot": a.recipient,
                "ChannelId": a.channel_id,
                "Conversation": a.conversation,
                "ServiceUrl": a.service_url,
                "User": a.from,
            },
            "RelatesTo": null,
            "MsAppId": self.app_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_timestamps_from_the_token_service_are_understood() {
        let in_an_hour =
            (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339).unwrap();
        let left = remaining(Some(&in_an_hour));
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600), "{left:?}");
        assert_eq!(remaining(Some("2020-01-01T00:00:00.1234567+00:00")), Duration::ZERO);
        assert_eq!(remaining(Some("garbage")), Duration::from_secs(600));
        assert_eq!(remaining(None), Duration::from_secs(600));
    }
}
