//! Delegated Graph tokens of the approving admins.
//!
//! `removeAllAccessForUser` accepts only delegated tokens, so each removal runs with the token of
//! the admin who approved it, obtained through the bot's OAuth connection and the Bot Framework
//! token service (`GetToken`, magic codes, SSO exchange), or, in OBO mode, by exchanging the
//! admin's Teams SSO token at Entra ID. Tokens are cached in moka **keyed by the admin's Entra
//! object id** (never by token), each entry expiring 5 minutes before the token does; concurrent
//! misses share one request. Tokens are `SecretString`s and are never logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::cases::Actor;
use crate::config::RetryPolicy;
use crate::entra::app_token::{AppTokenError, AppTokenProvider, CachedToken, use_until};
use crate::metrics::Metrics;

mod token_service;

pub use token_service::{SignInResource, SignInState};

/// Why a delegated token could not be obtained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The bot's own token (needed to call the token service) failed.
    #[error(transparent)]
    BotToken(#[from] AppTokenError),
    /// The token service or Entra ID could not be reached.
    #[error("token service unreachable: {0}")]
    Network(String),
    /// The token service or Entra ID refused with an unexpected status.
    #[error("token service answered HTTP {status} ({code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Error code, when one was given.
        code: String,
    },
    /// The answer was not a token.
    #[error("token service answered an invalid body")]
    Invalid,
    /// The SSO token, or the token that came back, belongs to someone other than the admin.
    #[error("the token belongs to another user than the admin who acted")]
    NotTheApprover,
}

/// Refuses a delegated token whose `oid` claim names another user than `admin`. Graph tokens
/// of work accounts are JWTs; one that cannot be read is not refused here (the SSO token it was
/// exchanged from, or the token service's own binding to the Teams user, vouched for it).
fn owned_by(token: &SecretString, admin: &Actor) -> Result<(), TokenError> {
    match crate::botframework::auth::unverified_oid(token.expose_secret()) {
        Some(oid) if !oid.eq_ignore_ascii_case(&admin.oid) => {
            tracing::warn!("a delegated token came back for another user than the admin; refused");
            Err(TokenError::NotTheApprover)
        }
        _ => Ok(()),
    }
}

/// Where delegated tokens come from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// The Bot Framework token service through the bot's OAuth connection (the default).
    TokenService {
        /// Token service base URL.
        base: Url,
        /// OAuth connection name.
        connection: String,
    },
    /// On-behalf-of exchange of the Teams SSO token at Entra ID.
    OnBehalfOf {
        /// `{login}/{tenant}/oauth2/v2.0/token`.
        token_url: Url,
        /// The bot's app id.
        client_id: String,
        /// The bot's client secret.
        client_secret: SecretString,
        /// Token service (still used for the sign-in resource).
        base: Url,
        /// OAuth connection name.
        connection: String,
    },
}

#[derive(Debug, Clone)]
enum Miss {
    NotSignedIn,
    Failed(TokenError),
}

struct UntilExpiry;

impl Expiry<String, Arc<CachedToken>> for UntilExpiry {
    fn expire_after_create(&self, _key: &String, value: &Arc<CachedToken>, created_at: Instant) -> Option<Duration> {
        Some(value.use_until.saturating_duration_since(created_at))
    }
}

/// What the case workflow needs of the approvers' delegated tokens. A seam, so the workflow's
/// rules can be tested without a token service.
#[async_trait::async_trait]
pub trait ApproverTokens: Send + Sync {
    /// The OAuth connection name.
    fn connection(&self) -> &str;
    /// The admin's token; `None` when they have not signed in.
    async fn token_for(&self, admin: &Actor) -> Result<Option<SecretString>, TokenError>;
    /// Redeems a sign-in magic code; `None` when it is wrong.
    async fn redeem_code(&self, admin: &Actor, code: &str) -> Result<Option<SecretString>, TokenError>;
    /// Exchanges a Teams SSO token bound to `admin`; `None` when the exchange is refused.
    async fn exchange_sso(&self, admin: &Actor, sso_token: &SecretString) -> Result<Option<SecretString>, TokenError>;
    /// A sign-in link (and SSO exchange resource) for the conversation of an activity.
    async fn sign_in_resource(&self, state: &SignInState<'_>) -> Result<SignInResource, TokenError>;
}

#[async_trait::async_trait]
impl ApproverTokens for DelegatedTokens {
    fn connection(&self) -> &str {
        DelegatedTokens::connection(self)
    }

    async fn token_for(&self, admin: &Actor) -> Result<Option<SecretString>, TokenError> {
        DelegatedTokens::token_for(self, admin).await
    }

    async fn redeem_code(&self, admin: &Actor, code: &str) -> Result<Option<SecretString>, TokenError> {
        DelegatedTokens::redeem_code(self, admin, code).await
    }

    async fn exchange_sso(&self, admin: &Actor, sso_token: &SecretString) -> Result<Option<SecretString>, TokenError> {
        DelegatedTokens::exchange_sso(self, admin, sso_token).await
    }

    async fn sign_in_resource(&self, state: &SignInState<'_>) -> Result<SignInResource, TokenError> {
        DelegatedTokens::sign_in_resource(self, state).await
    }
}

/// The admins' delegated tokens.
pub struct DelegatedTokens {
    http: reqwest::Client,
    source: TokenSource,
    bot_tokens: Arc<AppTokenProvider>,
    retry: RetryPolicy,
    cache: moka::future::Cache<String, Arc<CachedToken>>,
    metrics: Arc<Metrics>,
}

impl DelegatedTokens {
    /// Tokens from `source`, calling the token service with the bot's own token.
    pub fn new(
        source: TokenSource,
        bot_tokens: Arc<AppTokenProvider>,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::outbound::ClientSetupError> {
        Ok(Self {
            http: crate::outbound::build_client(retry.request_timeout)?,
            source,
            bot_tokens,
            retry,
            cache: moka::future::Cache::builder().max_capacity(10_000).expire_after(UntilExpiry).build(),
            metrics,
        })
    }

    fn base_and_connection(&self) -> (&Url, &str) {
        match &self.source {
            TokenSource::TokenService { base, connection } | TokenSource::OnBehalfOf { base, connection, .. } => (base, connection),
        }
    }

    /// The OAuth connection name.
    pub fn connection(&self) -> &str {
        self.base_and_connection().1
    }

    /// The admin's token from the cache or the token service; `None` when they have not signed in.
    pub async fn token_for(&self, admin: &Actor) -> Result<Option<SecretString>, TokenError> {
        if let Some(cached) = self.cache.get(&admin.oid).await {
            self.metrics.inc("chatwarden_token_cache_total", &[("result", "hit")]);
            return Ok(Some(cached.secret.clone()));
        }
        self.metrics.inc("chatwarden_token_cache_total", &[("result", "miss")]);
        if matches!(self.source, TokenSource::OnBehalfOf { .. }) {
            // OBO tokens exist only after an SSO exchange; there is nothing to fetch.
            return Ok(None);
        }
        let result = self.cache.try_get_with(admin.oid.clone(), async { self.get_token(admin, None).await }).await;
        match result {
            Ok(token) => Ok(Some(token.secret.clone())),
            Err(err) => match &*err {
                Miss::NotSignedIn => Ok(None),
                Miss::Failed(err) => Err(err.clone()),
            },
        }
    }

    /// Redeems a sign-in magic code (`signin/verifyState` or the `state` of a retried invoke).
    pub async fn redeem_code(&self, admin: &Actor, code: &str) -> Result<Option<SecretString>, TokenError> {
        match self.get_token(admin, Some(code)).await {
            Ok(token) => {
                let secret = token.secret.clone();
                self.cache.insert(admin.oid.clone(), token).await;
                Ok(Some(secret))
            }
            Err(Miss::NotSignedIn) => Ok(None),
            Err(Miss::Failed(err)) => Err(err),
        }
    }

    /// Exchanges a Teams SSO token (token service exchange, or OBO at Entra ID in OBO mode).
    /// `Ok(None)` means the exchange was refused (consent or sign-in needed). In both modes the
    /// SSO token must name the admin who sent it (`oid`) before it is exchanged, and the token
    /// that comes back must not name anyone else: the removal runs with the approver's identity
    /// or not at all.
    pub async fn exchange_sso(&self, admin: &Actor, sso_token: &SecretString) -> Result<Option<SecretString>, TokenError> {
        if !crate::botframework::auth::unverified_oid_matches(sso_token.expose_secret(), &admin.oid) {
            tracing::warn!("SSO token does not belong to the admin who sent it; refused");
            self.metrics.inc("chatwarden_token_service_total", &[("call", "exchange"), ("result", "wrong_user")]);
            return Err(TokenError::NotTheApprover);
        }
        let token = match &self.source {
            TokenSource::TokenService { .. } => self.exchange_at_token_service(admin, sso_token).await?,
            TokenSource::OnBehalfOf { token_url, client_id, client_secret, .. } => {
                self.on_behalf_of(token_url, client_id, client_secret, sso_token).await?
            }
        };
        if let Some(token) = &token {
            owned_by(&token.secret, admin)?;
        }
        Ok(match token {
            Some(token) => {
                let secret = token.secret.clone();
                self.cache.insert(admin.oid.clone(), token).await;
                Some(secret)
            }
            None => None,
        })
    }

    /// Drops an admin's cached token (Graph answered 401).
    pub async fn evict(&self, admin_oid: &str) {
        self.cache.invalidate(admin_oid).await;
    }

    async fn on_behalf_of(
        &self,
        token_url: &Url,
        client_id: &str,
        client_secret: &SecretString,
        sso_token: &SecretString,
    ) -> Result<Option<Arc<CachedToken>>, TokenError> {
        match crate::entra::on_behalf_of::exchange(&self.http, token_url, client_id, client_secret, sso_token).await {
            Ok(Some((secret, lifetime))) => {
                self.metrics.inc("chatwarden_token_service_total", &[("call", "obo"), ("result", "ok")]);
                Ok(Some(Arc::new(CachedToken { secret, use_until: use_until(Instant::now(), lifetime) })))
            }
            Ok(None) => {
                self.metrics.inc("chatwarden_token_service_total", &[("call", "obo"), ("result", "refused")]);
                Ok(None)
            }
            Err(err) => {
                self.metrics.inc("chatwarden_token_service_total", &[("call", "obo"), ("result", "refused")]);
                Err(err)
            }
        }
    }
}
