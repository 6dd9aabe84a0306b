//! The Bot Framework signing keys: OpenID metadata -> `jwks_uri` -> JWKS, cached in moka.
//!
//! - A background task loads the keys at start (retrying until it succeeds) and refreshes them
//!   every `refresh_interval` (24 h).
//! - A token with an unknown `kid` triggers at most one refresh per `unknown_kid_min_interval`
//!   (5 min). Refreshes are single-flight: concurrent callers wait for the one in progress, so a
//!   flood of tokens with random kids causes at most one fetch.
//! - A failed refresh keeps the last good keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use crate::config::KeyRefreshPolicy;
use crate::metrics::Metrics;

/// Upper bound on keys kept from one JWKS document.
const MAX_KEYS: u64 = 256;

/// A verification key and the channels it may sign for.
pub struct SigningKey {
    /// RSA public key.
    pub decoding: DecodingKey,
    /// Channel ids (`msteams`, ...) this key is endorsed for.
    pub endorsements: Vec<String>,
}

/// Why no key could be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookupError {
    /// The key set is loaded but has no key with that `kid`.
    Unknown,
    /// No key set has ever been loaded (metadata unreachable).
    Unavailable,
}

/// Why fetching the key set failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    /// Transport failure.
    #[error("request to {what} failed: {source}")]
    Network {
        /// `metadata` or `jwks`.
        what: &'static str,
        /// The cause.
        source: reqwest::Error,
    },
    /// Non-success HTTP status.
    #[error("{what} answered HTTP {status}")]
    Status {
        /// `metadata` or `jwks`.
        what: &'static str,
        /// The status.
        status: u16,
    },
    /// Document is not what was expected.
    #[error("{what} document is invalid: {reason}")]
    Invalid {
        /// `metadata` or `jwks`.
        what: &'static str,
        /// What was wrong with it (no key material, no `jwks_uri`, ...).
        reason: String,
    },
}

#[derive(Deserialize)]
struct OpenIdMetadata {
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    #[serde(default)]
    endorsements: Option<Vec<String>>,
}

#[derive(Default)]
struct RefreshBook {
    last_unknown_kid_refresh: Option<Instant>,
}

/// Cached signing keys of one OpenID metadata document.
pub struct KeyStore {
    http: reqwest::Client,
    metadata_url: Url,
    policy: KeyRefreshPolicy,
    keys: moka::sync::Cache<String, Arc<SigningKey>>,
    refresh_gate: Mutex<RefreshBook>,
    loaded: AtomicBool,
    metrics: Arc<Metrics>,
}

impl KeyStore {
    /// A store for `metadata_url`; nothing is fetched until [`KeyStore::refresh`] or a lookup.
    pub fn new(metadata_url: Url, policy: KeyRefreshPolicy, metrics: Arc<Metrics>) -> Result<Self, crate::outbound::ClientSetupError> {
        Ok(Self {
            http: crate::outbound::build_client(policy.fetch_timeout)?,
            metadata_url,
            policy,
            keys: moka::sync::Cache::builder().max_capacity(MAX_KEYS).build(),
            refresh_gate: Mutex::new(RefreshBook::default()),
            loaded: AtomicBool::new(false),
            metrics,
        })
    }

    /// Whether a key set has been loaded at least once.
    pub(crate) fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn missing(&self) -> KeyLookupError {
        if self.is_ready() { KeyLookupError::Unknown } else { KeyLookupError::Unavailable }
    }

    /// The key with this `kid`; an unknown kid may trigger one rate-limited refresh.
    pub async fn get(&self, kid: &str) -> Result<Arc<SigningKey>, KeyLookupError> {
        if let Some(key) = self.keys.get(kid) {
            return Ok(key);
        }
        let mut book = self.refresh_gate.lock().await;
        // A refresh that finished while we waited may have brought the key.
        if let Some(key) = self.keys.get(kid) {
            return Ok(key);
        }
        let now = Instant::now();
        let allowed = book.last_unknown_kid_refresh.is_none_or(|last| now.duration_since(last) >= self.policy.unknown_kid_min_interval);
        if !allowed {
            return Err(self.missing());
        }
        book.last_unknown_kid_refresh = Some(now);
        if let Err(err) = self.fetch_and_store("unknown_kid").await {
            tracing::warn!(error = %err, "key refresh for an unknown kid failed; keeping the last good keys");
        }
        drop(book);
        self.keys.get(kid).ok_or_else(|| self.missing())
    }

    /// Fetches the metadata and key set now (single-flight with every other refresh).
    pub async fn refresh(&self) -> Result<usize, KeyFetchError> {
        let _gate = self.refresh_gate.lock().await;
        self.fetch_and_store("scheduled").await
    }

    /// Starts the background task: load now (retrying until it works), then refresh on schedule.
    pub(crate) fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let wait = match store.refresh().await {
                    Ok(count) => {
                        tracing::info!(keys = count, "loaded Bot Framework signing keys");
                        store.policy.refresh_interval
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not load Bot Framework signing keys; keeping the last good keys");
                        store.policy.retry_interval
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }

    async fn fetch_and_store(&self, trigger: &'static str) -> Result<usize, KeyFetchError> {
        let result = self.fetch().await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.inc("chatwarden_key_refreshes_total", &[("trigger", trigger), ("result", outcome)]);
        let fresh = result?;
        let count = fresh.len();
        let stale: Vec<Arc<String>> =
            self.keys.iter().map(|(kid, _)| kid).filter(|kid| !fresh.iter().any(|(k, _)| k == kid.as_str())).collect();
        for (kid, key) in fresh {
            self.keys.insert(kid, Arc::new(key));
        }
        for kid in stale {
            self.keys.invalidate(kid.as_str());
        }
        self.loaded.store(true, Ordering::Release);
        Ok(count)
    }

    async fn fetch(&self) -> Result<Vec<(String, SigningKey)>, KeyFetchError> {
        let metadata: OpenIdMetadata = self.get_json("metadata", self.metadata_url.clone()).await?;
        let jwks_uri = Url::parse(&metadata.jwks_uri)
            .ok()
            .filter(|u| u.scheme() == "https" || (u.scheme() == "http" && super::service_url::is_loopback(u)))
            .ok_or_else(|| KeyFetchError::Invalid { what: "metadata", reason: "jwks_uri is not an https URL".into() })?;
        let jwks: Jwks = self.get_json("jwks", jwks_uri).await?;
        let mut keys = Vec::new();
        for jwk in jwks.keys.into_iter().take(MAX_KEYS as usize) {
            let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else { continue };
            if jwk.kty.as_deref().is_some_and(|kty| kty != "RSA") || kid.is_empty() {
                continue;
            }
            match DecodingKey::from_rsa_components(&n, &e) {
                Ok(decoding) => keys.push((kid, SigningKey { decoding, endorsements: jwk.endorsements.unwrap_or_default() })),
                Err(err) => tracing::warn!(kid = %kid, error = %err, "skipping unusable JWKS key"),
            }
        }
        if keys.is_empty() {
            return Err(KeyFetchError::Invalid { what: "jwks", reason: "no usable RSA key".into() });
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, what: &'static str, url: Url) -> Result<T, KeyFetchError> {
        let response = self.http.get(url).send().await.map_err(|source| KeyFetchError::Network { what, source })?;
        if !response.status().is_success() {
            return Err(KeyFetchError::Status { what, status: response.status().as_u16() });
        }
        let bytes = response.bytes().await.map_err(|source| KeyFetchError::Network { what, source })?;
        serde_json::from_slice(&bytes).map_err(|err| KeyFetchError::Invalid { what, reason: err.to_string() })
    }
}
