//! chatwarden's own app tokens, by client credentials against `{login}/{tenant}/oauth2/v2.0/token`:
//! the bot's token for the Bot Connector and the token service (scope
//! `https://api.botframework.com/.default`), and the Management Activity API's.
//!
//! The token is cached in moka until 5 minutes before it expires; concurrent misses share one
//! request (`try_get_with`). It is held as a [`SecretString`] and never logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::config::{AppCredentials, RetryPolicy};
use crate::metrics::Metrics;
use crate::outbound::ClientSetupError;

/// Scope of the bot's outbound token.
pub(crate) const BOT_FRAMEWORK_SCOPE: &str = "https://api.botframework.com/.default";
/// How long before expiry a cached token is dropped.
pub(crate) const EXPIRY_MARGIN: Duration = Duration::from_secs(300);

/// Why the bot's token could not be obtained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppTokenError {
    /// Transport failure.
    #[error("token endpoint unreachable: {0}")]
    Network(String),
    /// The endpoint refused (with the OAuth `error` code, never the secret).
    #[error("token endpoint answered HTTP {status} ({code})")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// OAuth error code such as `invalid_client`.
        code: String,
    },
    /// The answer is not a token response.
    #[error("token endpoint answered an invalid body")]
    Invalid,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: String,
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub(crate) struct CachedToken {
    /// The token.
    pub secret: SecretString,
    /// When the cache entry expires (the token's expiry minus the margin).
    pub use_until: Instant,
}

struct UntilExpiry;

impl Expiry<(), Arc<CachedToken>> for UntilExpiry {
    fn expire_after_create(&self, _key: &(), value: &Arc<CachedToken>, created_at: Instant) -> Option<Duration> {
        Some(value.use_until.saturating_duration_since(created_at))
    }
}

/// Computes when to stop using a token that lives `expires_in` seconds from `now`.
pub(crate) fn use_until(now: Instant, expires_in: Duration) -> Instant {
    // Tokens shorter than twice the margin are used for half their life.
    let usable = if expires_in > EXPIRY_MARGIN * 2 { expires_in - EXPIRY_MARGIN } else { expires_in / 2 };
    now + usable
}

/// Source of the bot's token: client credentials, or none at all in local mode. Clones share
/// one cache (and one fetch at a time).
#[derive(Clone)]
pub struct AppTokenProvider {
    inner: Option<Arc<ClientCredentials>>,
}

struct ClientCredentials {
    http: reqwest::Client,
    token_url: Url,
    app_id: String,
    password: SecretString,
    scope: String,
    retry: RetryPolicy,
    cache: moka::future::Cache<(), Arc<CachedToken>>,
    metrics: Arc<Metrics>,
}

impl AppTokenProvider {
    /// Client-credentials provider for a registered bot (scope `https://api.botframework.com/.default`).
    pub fn client_credentials(
        app: &AppCredentials,
        login: &Url,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ClientSetupError> {
        Self::client_credentials_for(app, login, BOT_FRAMEWORK_SCOPE, retry, metrics)
    }

    /// Client-credentials provider for the app's token to another resource (`scope`).
    pub fn client_credentials_for(
        app: &AppCredentials,
        login: &Url,
        scope: &str,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ClientSetupError> {
        Ok(Self {
            inner: Some(Arc::new(ClientCredentials {
                http: crate::outbound::build_client(retry.request_timeout)?,
                token_url: super::token_url(login, &app.tenant_id)?,
                app_id: app.app_id.clone(),
                password: app.password.clone(),
                scope: scope.to_owned(),
                retry,
                cache: moka::future::Cache::builder().max_capacity(1).expire_after(UntilExpiry).build(),
                metrics,
            })),
        })
    }

    /// Local mode: no token is sent (Microsoft's local Teams client does not check one).
    pub fn anonymous() -> Self {
        Self { inner: None }
    }

    /// The token to send as a bearer: the current one, or in local mode (no registration) a
    /// placeholder the local stand-ins accept and that is worth nothing anywhere else.
    pub(crate) async fn bearer(&self) -> Result<SecretString, AppTokenError> {
        Ok(self.token().await?.unwrap_or_else(|| SecretString::from("local".to_owned())))
    }

    /// The current token, fetched if the cache has none; `None` in local mode.
    pub async fn token(&self) -> Result<Option<SecretString>, AppTokenError> {
        let Some(cc) = &self.inner else { return Ok(None) };
        if let Some(cached) = cc.cache.get(&()).await {
            return Ok(Some(cached.secret.clone()));
        }
        let token = cc.cache.try_get_with((), cc.fetch()).await.map_err(|err| (*err).clone())?;
        Ok(Some(token.secret.clone()))
    }

    /// Drops the cached token (after the Connector refused it).
    pub async fn invalidate(&self) {
        if let Some(cc) = &self.inner {
            cc.cache.invalidate(&()).await;
        }
    }
}

impl ClientCredentials {
    async fn fetch(&self) -> Result<Arc<CachedToken>, AppTokenError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.app_id.as_str()),
            ("client_secret", self.password.expose_secret()),
            ("scope", self.scope.as_str()),
        ];
        let statuses =
            [StatusCode::TOO_MANY_REQUESTS, StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT];
        let started = Instant::now();
        let response =
            crate::outbound::send_with_retry(&self.retry, &statuses, true, || self.http.post(self.token_url.clone()).form(&form))
                .await
                .map_err(|err| {
                    self.metrics.inc("chatwarden_bot_token_requests_total", &[("result", "network_error")]);
                    AppTokenError::Network(err.without_url().to_string())
                })?;
        let status = response.status();
        if !status.is_success() {
            self.metrics.inc("chatwarden_bot_token_requests_total", &[("result", "rejected")]);
            let code = response.json::<OAuthError>().await.map(|e| e.error).unwrap_or_default();
            let code = if code.is_empty() { "no error code".to_owned() } else { code };
            tracing::error!(status = status.as_u16(), code = %code, "bot token request refused");
            return Err(AppTokenError::Rejected { status: status.as_u16(), code });
        }
        let body: TokenResponse = response.json().await.map_err(|_| AppTokenError::Invalid)?;
        self.metrics.inc("chatwarden_bot_token_requests_total", &[("result", "ok")]);
        tracing::debug!(expires_in = body.expires_in, elapsed_ms = started.elapsed().as_millis() as u64, "obtained bot token");
        Ok(Arc::new(CachedToken {
            secret: SecretString::from(body.access_token),
            use_until: use_until(Instant::now(), Duration::from_secs(body.expires_in)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_dropped_five_minutes_before_expiry() {
        let now = Instant::now();
        assert_eq!(use_until(now, Duration::from_secs(3600)) - now, Duration::from_secs(3300));
        assert_eq!(use_until(now, Duration::from_secs(400)) - now, Duration::from_secs(200));
        assert_eq!(use_until(now, Duration::ZERO) - now, Duration::ZERO);
    }
}
