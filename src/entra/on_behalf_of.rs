//! The on-behalf-of exchange: an admin's Teams SSO token (its audience is chatwarden's own API)
//! traded at Entra ID for a delegated Graph token of the same admin (`jwt-bearer` grant).

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use crate::tokens::TokenError;

#[derive(Deserialize)]
struct OboResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    #[serde(default)]
    error: String,
}

/// Exchanges `sso_token` for a Graph token and its lifetime. `Ok(None)`: Entra ID refused with
/// 400 (`invalid_grant`: consent, interaction or a Conditional Access step-up is needed).
pub(crate) async fn exchange(
    http: &reqwest::Client,
    token_url: &Url,
    client_id: &str,
    client_secret: &SecretString,
    sso_token: &SecretString,
) -> Result<Option<(SecretString, Duration)>, TokenError> {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("client_id", client_id),
        ("client_secret", client_secret.expose_secret()),
        ("assertion", sso_token.expose_secret()),
        ("scope", "https://graph.microsoft.com/.default"),
        ("requested_token_use", "on_behalf_of"),
    ];
    let response = http.post(token_url.clone()).form(&form).send().await.map_err(|e| TokenError::Network(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        let body: OboResponse = response.json().await.map_err(|_| TokenError::Invalid)?;
        return Ok(Some((SecretString::from(body.access_token), Duration::from_secs(body.expires_in))));
    }
    let code = response.json::<OAuthErrorBody>().await.map(|b| b.error).unwrap_or_default();
    if status == StatusCode::BAD_REQUEST {
        tracing::info!(code = %code, "on-behalf-of exchange refused; the admin must sign in or consent");
        return Ok(None);
    }
    Err(TokenError::Refused { status: status.as_u16(), code })
}
