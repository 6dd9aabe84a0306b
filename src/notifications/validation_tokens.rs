//! Graph's `validationTokens`: one JWT per app and tenant in every notification batch with
//! resource data, issued by the Microsoft identity platform to Graph's change-tracking app.
//! Each must verify (RS256, a key of the identity platform's OpenID metadata), be for our app
//! (`aud`) and our tenant (`tid`, and an issuer of that tenant), and come from Graph's
//! change-tracking app (`appid`, or `azp` in v2 tokens), within 300 s of clock skew.
//!
//! With `botframework::auth` this is one of the two places that decode JWTs. A token whose
//! unverified issuer is not of our tenant is refused before any key is looked up, so foreign
//! tokens cannot make the key store refresh.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::botframework::keys::{KeyLookupError, KeyStore};

/// Graph's change-tracking app, the `appid` (v1) or `azp` (v2) of every validation token.
pub const GRAPH_CHANGE_TRACKING_APP_ID: &str = "0bf30f3b-4a52-48df-9a82-234910c4a086";

const CLOCK_SKEW_SECONDS: u64 = 300;
/// Most tokens in one batch (Graph sends one per app and tenant).
const MAX_TOKENS: usize = 16;
/// Longest token accepted.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a batch's validation tokens were refused (each a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    /// A batch with resource data came without tokens.
    #[error("no validation tokens")]
    Missing,
    /// Not a JWT, or more or larger tokens than Graph sends.
    #[error("a validation token is malformed")]
    Malformed,
    /// Another algorithm than RS256, or no `kid`.
    #[error("a validation token is not RS256 with a key id")]
    UnsupportedAlgorithm,
    /// Issued by another tenant (or not the identity platform).
    #[error("a validation token has another issuer")]
    WrongIssuer,
    /// No key with that id.
    #[error("a validation token is signed by an unknown key")]
    UnknownKey,
    /// The identity platform's keys could not be loaded (Graph retries).
    #[error("the identity platform's keys are unavailable")]
    KeysUnavailable,
    /// The signature does not verify.
    #[error("a validation token's signature does not verify")]
    BadSignature,
    /// Expired or not yet valid.
    #[error("a validation token expired")]
    Expired,
    /// For another app.
    #[error("a validation token is for another app")]
    WrongAudience,
    /// Not issued to Graph's change-tracking app.
    #[error("a validation token was not issued to Graph")]
    WrongApp,
    /// For another tenant.
    #[error("a validation token is for another tenant")]
    WrongTenant,
}

impl TokenRejection {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "validation_token_missing",
            Self::Malformed => "validation_token_malformed",
            Self::UnsupportedAlgorithm => "validation_token_algorithm",
            Self::WrongIssuer => "validation_token_issuer",
            Self::UnknownKey => "validation_token_unknown_key",
            Self::KeysUnavailable => "validation_token_keys_unavailable",
            Self::BadSignature => "validation_token_signature",
            Self::Expired => "validation_token_expired",
            Self::WrongAudience => "validation_token_audience",
            Self::WrongApp => "validation_token_app",
            Self::WrongTenant => "validation_token_tenant",
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    tid: Option<String>,
}

/// Verifies validation tokens for one app in one tenant; a token that verified is remembered
/// (by its SHA-256) until it expires, as Graph sends the same one with every batch for an hour.
pub struct ValidationTokens {
    keys: Arc<KeyStore>,
    tenant_id: String,
    issuers: [String; 2],
    validation: Validation,
    verified: moka::sync::Cache<[u8; 32], u64>,
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn segment<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, TokenRejection> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| TokenRejection::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenRejection::Malformed)
}

impl ValidationTokens {
    /// Tokens for `app_id` in `tenant_id`, signed by keys of `keys` (the identity platform's
    /// OpenID metadata).
    pub fn new(app_id: &str, tenant_id: &str, keys: Arc<KeyStore>) -> Self {
        let tenant_id = tenant_id.to_ascii_lowercase();
        let issuers = [format!("https://sts.windows.net/{tenant_id}/"), format!("https://login.microsoftonline.com/{tenant_id}/v2.0")];
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation.validate_nbf = true;
        validation.set_audience(&[app_id]);
        validation.set_issuer(&issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let verified = moka::sync::Cache::builder().max_capacity(1_000).time_to_live(Duration::from_secs(3600)).build();
        Self { keys, tenant_id, issuers, validation, verified }
    }

    /// Checks every token of a batch; all must pass.
    pub async fn verify_all(&self, tokens: &[String]) -> Result<(), TokenRejection> {
        if tokens.is_empty() {
            return Err(TokenRejection::Missing);
        }
        if tokens.len() > MAX_TOKENS {
            return Err(TokenRejection::Malformed);
        }
        for token in tokens {
            self.verify(token).await?;
        }
        Ok(())
    }

    async fn verify(&self, token: &str) -> Result<(), TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(exp) = self.verified.get(&digest) {
            if now_seconds() > exp.saturating_add(CLOCK_SKEW_SECONDS) {
                self.verified.invalidate(&digest);
                return Err(TokenRejection::Expired);
            }
            return Ok(());
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenRejection::Malformed);
        };
        let header: Header = segment(header)?;
        if header.alg != "RS256" {
            return Err(TokenRejection::UnsupportedAlgorithm);
        }
        let kid = header.kid.filter(|k| !k.is_empty()).ok_or(TokenRejection::UnsupportedAlgorithm)?;
        let issuer: UnverifiedIssuer = segment(payload)?;
        if !issuer.iss.as_deref().is_some_and(|iss| self.issuers.iter().any(|ours| ours.eq_ignore_ascii_case(iss))) {
            return Err(TokenRejection::WrongIssuer);
        }
        let key = self.keys.get(&kid).await.map_err(|err| match err {
            KeyLookupError::Unknown => TokenRejection::UnknownKey,
            KeyLookupError::Unavailable => TokenRejection::KeysUnavailable,
        })?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation).map_err(|err| match err.kind() {
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => TokenRejection::Expired,
            ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
            ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
            ErrorKind::InvalidSignature => TokenRejection::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                TokenRejection::UnsupportedAlgorithm
            }
            _ => TokenRejection::Malformed,
        })?;
        let claims = data.claims;
        let app = claims.appid.as_deref().or(claims.azp.as_deref());
        if app != Some(GRAPH_CHANGE_TRACKING_APP_ID) {
            return Err(TokenRejection::WrongApp);
        }
        if !claims.tid.as_deref().is_some_and(|tid| tid.eq_ignore_ascii_case(&self.tenant_id)) {
            return Err(TokenRejection::WrongTenant);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now_seconds().saturating_add(CLOCK_SKEW_SECONDS)) {
            return Err(TokenRejection::Expired);
        }
        self.verified.insert(digest, claims.exp);
        Ok(())
    }
}
