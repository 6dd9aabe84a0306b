//! Inbound JWT validation for activities from the Bot Connector (the only module that decodes
//! JWTs).
//!
//! Checks, in order: one `Authorization: Bearer <jwt>` header; header `alg` = RS256 and a `kid`
//! (so `none`, HS256 and every other algorithm are refused before any key is touched); the
//! unverified issuer (so foreign tokens cannot force a key refresh); the key by `kid`; signature,
//! `exp` (required), `nbf`, `iss` and `aud` (string or array) with 300 s of leeway. Then, against
//! the parsed activity ([`VerifiedToken::bind`]): `channelId` must be `msteams` and endorsed by
//! the key, and the `serviceurl` claim must equal the activity's `serviceUrl`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use url::Url;

use super::activity::Activity;
use super::keys::{KeyLookupError, KeyStore};

/// Issuer of Bot Connector tokens (public cloud).
pub(crate) const CHANNEL_ISSUER: &str = "https://api.botframework.com";
/// The only channel this bot serves.
pub(crate) const TEAMS_CHANNEL_ID: &str = "msteams";
/// Allowed clock skew for `exp` and `nbf`, in seconds.
pub const CLOCK_SKEW_SECONDS: u64 = 300;
/// Longest bearer token accepted (real ones are ~1.5 KB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why an inbound request was refused. Every variant is counted and logged without the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthRejection {
    /// No `Authorization` header.
    MissingAuthorization,
    /// Several headers, not `Bearer`, empty or oversized token.
    MalformedAuthorization,
    /// Not a decodable JWT.
    MalformedToken,
    /// Header `alg` is not RS256.
    UnsupportedAlgorithm,
    /// Header has no `kid`.
    MissingKeyId,
    /// `iss` is not the Bot Framework channel issuer.
    WrongIssuer,
    /// No key with that `kid`.
    UnknownKey,
    /// Signature does not verify.
    BadSignature,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// A required claim (`exp`, `iss`, `aud`) is missing.
    MissingClaim,
    /// `aud` is not our app id.
    WrongAudience,
    /// The key is not endorsed for the activity's channel.
    ChannelNotEndorsed,
    /// The activity is not from Microsoft Teams.
    ChannelNotSupported,
    /// The token or the activity has no service URL.
    ServiceUrlMissing,
    /// The `serviceurl` claim differs from the activity's `serviceUrl`.
    ServiceUrlMismatch,
    /// The activity's `serviceUrl` host is not on the allowlist.
    ServiceUrlNotAllowed,
    /// No signing keys have been loaded yet.
    KeysUnavailable,
}

impl AuthRejection {
    /// Stable, low-cardinality code used in logs, metrics and error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingAuthorization => "missing_authorization",
            Self::MalformedAuthorization => "malformed_authorization",
            Self::MalformedToken => "malformed_token",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::MissingKeyId => "missing_kid",
            Self::WrongIssuer => "wrong_issuer",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingClaim => "missing_claim",
            Self::WrongAudience => "wrong_audience",
            Self::ChannelNotEndorsed => "channel_not_endorsed",
            Self::ChannelNotSupported => "channel_not_supported",
            Self::ServiceUrlMissing => "service_url_missing",
            Self::ServiceUrlMismatch => "service_url_mismatch",
            Self::ServiceUrlNotAllowed => "service_url_not_allowed",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// HTTP status: 403 for channel/endorsement failures, 503 while no keys are loaded, else 401.
    pub fn status(self) -> StatusCode {
        match self {
            Self::ChannelNotEndorsed | Self::ChannelNotSupported => StatusCode::FORBIDDEN,
            Self::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct UnverifiedClaims {
    #[serde(default)]
    iss: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChannelClaims {
    #[serde(default)]
    serviceurl: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
}

/// A signature that verified, remembered by the SHA-256 of the whole token so that the same
/// Connector token (reused for every activity during its hour) is not RSA-verified again.
/// Time claims are still checked on every use.
struct Verified {
    token: VerifiedToken,
    exp: u64,
    nbf: Option<u64>,
}

/// How long a verification is remembered at most (the token's own `exp` still applies).
const VERIFIED_TTL: Duration = Duration::from_secs(600);
/// Most verifications remembered.
const VERIFIED_CAPACITY: u64 = 10_000;

fn now_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A token whose signature and claims verified; it still has to be bound to its activity.
/// Cheap to clone (shared), since every request with a remembered token gets a copy.
#[derive(Debug, Clone)]
pub struct VerifiedToken(Arc<TokenFacts>);

/// What binding needs from a verified token.
#[derive(Debug)]
struct TokenFacts {
    service_url: Option<String>,
    endorsements: Vec<String>,
}

/// Validates Bot Connector tokens for one app id.
pub struct ChannelAuthenticator {
    keys: Arc<KeyStore>,
    validation: Validation,
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
}

impl ChannelAuthenticator {
    /// An authenticator that accepts tokens for `app_id`, signed by keys from `keys`.
    pub fn new(app_id: &str, keys: Arc<KeyStore>) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[CHANNEL_ISSUER]);
        validation.set_audience(&[app_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let verified = moka::sync::Cache::builder().max_capacity(VERIFIED_CAPACITY).time_to_live(VERIFIED_TTL).build();
        Self { keys, validation, verified }
    }

    /// The key store behind this authenticator.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Verifies the bearer token of a request.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<VerifiedToken, AuthRejection> {
        let token = bearer_token(headers)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.verified.get(&digest) {
            let now = now_seconds();
            if now > known.exp.saturating_add(CLOCK_SKEW_SECONDS) {
                self.verified.invalidate(&digest);
                return Err(AuthRejection::Expired);
            }
            if known.nbf.is_some_and(|nbf| nbf > now.saturating_add(CLOCK_SKEW_SECONDS)) {
                return Err(AuthRejection::NotYetValid);
            }
            return Ok(known.token.clone());
        }
        let kid = precheck_token(token)?;
        let key = self.keys.get(&kid).await.map_err(|err| match err {
            KeyLookupError::Unknown => AuthRejection::UnknownKey,
            KeyLookupError::Unavailable => AuthRejection::KeysUnavailable,
        })?;
        let data = jsonwebtoken::decode::<ChannelClaims>(token, &key.decoding, &self.validation).map_err(|err| match err.kind() {
            ErrorKind::ExpiredSignature => AuthRejection::Expired,
            ErrorKind::ImmatureSignature => AuthRejection::NotYetValid,
            ErrorKind::InvalidIssuer => AuthRejection::WrongIssuer,
            ErrorKind::InvalidAudience => AuthRejection::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) => AuthRejection::MissingClaim,
            ErrorKind::InvalidSignature => AuthRejection::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                AuthRejection::UnsupportedAlgorithm
            }
            _ => AuthRejection::MalformedToken,
        })?;
        let verified = VerifiedToken(Arc::new(TokenFacts { service_url: data.claims.serviceurl, endorsements: key.endorsements.clone() }));
        if let Some(exp) = data.claims.exp {
            self.verified.insert(digest, Arc::new(Verified { token: verified.clone(), exp, nbf: data.claims.nbf }));
        }
        Ok(verified)
    }
}

impl VerifiedToken {
    /// Binds the token to the activity it came with: Teams channel, endorsed key, same service URL.
    pub fn bind(&self, activity: &Activity) -> Result<(), AuthRejection> {
        let channel = activity.channel_id.as_deref().unwrap_or_default();
        if channel != TEAMS_CHANNEL_ID {
            return Err(AuthRejection::ChannelNotSupported);
        }
        if !self.0.endorsements.iter().any(|e| e == channel) {
            return Err(AuthRejection::ChannelNotEndorsed);
        }
        let claim = self.0.service_url.as_deref().ok_or(AuthRejection::ServiceUrlMissing)?;
        let actual = activity.service_url.as_deref().ok_or(AuthRejection::ServiceUrlMissing)?;
        if !same_service_url(claim, actual) {
            return Err(AuthRejection::ServiceUrlMismatch);
        }
        Ok(())
    }
}

/// Service URLs are equal when identical, or when they parse to the same URL up to one trailing
/// slash (scheme and host are case-insensitive after parsing).
fn same_service_url(claim: &str, actual: &str) -> bool {
    if claim == actual {
        return true;
    }
    match (Url::parse(claim), Url::parse(actual)) {
        (Ok(a), Ok(b)) => a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/'),
        _ => false,
    }
}

/// The checks that run on a token before any key is touched: the `Authorization` header value
/// shape, the three segments, the header (`alg` = RS256, `kid`) and the unverified issuer.
/// Returns the `kid`. Exposed for fuzzing and benchmarks; [`ChannelAuthenticator::verify`] runs
/// the same steps.
pub fn precheck(authorization: &str) -> Result<String, AuthRejection> {
    let mut headers = HeaderMap::new();
    let value = actix_web::http::header::HeaderValue::from_str(authorization).map_err(|_| AuthRejection::MalformedAuthorization)?;
    headers.insert(AUTHORIZATION, value);
    let token = bearer_token(&headers)?;
    precheck_token(token)
}

fn precheck_token(token: &str) -> Result<String, AuthRejection> {
    let (header_b64, payload_b64) = split_token(token)?;
    let header: TokenHeader = decode_segment(header_b64)?;
    if header.alg != "RS256" {
        return Err(AuthRejection::UnsupportedAlgorithm);
    }
    let kid = header.kid.filter(|k| !k.is_empty()).ok_or(AuthRejection::MissingKeyId)?;
    let unverified: UnverifiedClaims = decode_segment(payload_b64)?;
    if unverified.iss.as_ref().and_then(|v| v.as_str()) != Some(CHANNEL_ISSUER) {
        return Err(AuthRejection::WrongIssuer);
    }
    Ok(kid)
}

#[derive(Deserialize)]
struct OidClaim {
    #[serde(default)]
    oid: Option<String>,
}

#[derive(Deserialize)]
struct UpnClaims {
    #[serde(default)]
    upn: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
}

/// The user principal name a delegated token names (`upn`, else `preferred_username`), read
/// without verifying it: Entra ID issued the token to chatwarden itself, and the name is only
/// recorded in the history beside the object id the token was already bound to.
pub(crate) fn unverified_upn(token: &str) -> Option<String> {
    let (_, payload) = split_token(token).ok()?;
    let claims: UpnClaims = decode_segment(payload).ok()?;
    claims.upn.or(claims.preferred_username).filter(|upn| !upn.is_empty() && upn.len() <= 256)
}

/// Whether the unverified `oid` claim of `token` equals `oid` (case-insensitive). Used only to
/// bind a Teams SSO token to the admin who sent it before Entra ID verifies that token in the
/// on-behalf-of exchange; never as proof of identity on its own.
pub(crate) fn unverified_oid_matches(token: &str, oid: &str) -> bool {
    unverified_oid(token).is_some_and(|claimed| claimed.eq_ignore_ascii_case(oid))
}

/// The `oid` claim of a JWT, read without verifying it; `None` when it is not a JWT or has none.
pub(crate) fn unverified_oid(token: &str) -> Option<String> {
    let (_, payload) = split_token(token).ok()?;
    let claims: OidClaim = decode_segment(payload).ok()?;
    claims.oid
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthRejection> {
    let mut values = headers.get_all(AUTHORIZATION);
    let value = values.next().ok_or(AuthRejection::MissingAuthorization)?;
    if values.next().is_some() {
        return Err(AuthRejection::MalformedAuthorization);
    }
    // A `HeaderValue` never holds control characters other than tab (its constructors and the
    // HTTP parser reject them), so a word-at-a-time ASCII check accepts exactly what
    // `HeaderValue::to_str` accepts, without its byte-by-byte loop over a kilobyte of token.
    let bytes = value.as_bytes();
    if !bytes.is_ascii() {
        return Err(AuthRejection::MalformedAuthorization);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| AuthRejection::MalformedAuthorization)?;
    let token = text.strip_prefix("Bearer ").ok_or(AuthRejection::MalformedAuthorization)?;
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || token.contains(' ') {
        return Err(AuthRejection::MalformedAuthorization);
    }
    Ok(token)
}

fn split_token(token: &str) -> Result<(&str, &str), AuthRejection> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(_sig), None) if !h.is_empty() && !p.is_empty() => Ok((h, p)),
        _ => Err(AuthRejection::MalformedToken),
    }
}

fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, AuthRejection> {
    let bytes = URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).map_err(|_| AuthRejection::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthRejection::MalformedToken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use serde_json::json;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_scheme_is_exact_and_single() {
        assert_eq!(bearer_token(&headers(&[])), Err(AuthRejection::MissingAuthorization));
        assert_eq!(bearer_token(&headers(&["bearer abc"])), Err(AuthRejection::MalformedAuthorization));
        assert_eq!(bearer_token(&headers(&["Basic abc"])), Err(AuthRejection::MalformedAuthorization));
        assert_eq!(bearer_token(&headers(&["Bearer "])), Err(AuthRejection::MalformedAuthorization));
        assert_eq!(bearer_token(&headers(&["Bearer a b"])), Err(AuthRejection::MalformedAuthorization));
        assert_eq!(bearer_token(&headers(&["Bearer a", "Bearer a"])), Err(AuthRejection::MalformedAuthorization));
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["Bearer\ta"])), Err(AuthRejection::MalformedAuthorization));
        let mut non_ascii = HeaderMap::new();
        non_ascii.insert(AUTHORIZATION, HeaderValue::from_bytes(b"Bearer a\xffb").unwrap());
        assert_eq!(bearer_token(&non_ascii), Err(AuthRejection::MalformedAuthorization));
    }

    #[test]
    fn sso_tokens_are_bound_to_their_sender_by_oid() {
        let e = URL_SAFE_NO_PAD;
        let token = format!("{}.{}.sig", e.encode(r#"{"alg":"RS256"}"#), e.encode(r#"{"oid":"ABC-1"}"#));
        assert!(unverified_oid_matches(&token, "abc-1"));
        assert!(!unverified_oid_matches(&token, "abc-2"));
        assert!(!unverified_oid_matches("garbage", "abc-1"));
    }

    #[test]
    fn tokens_need_three_segments() {
        assert_eq!(split_token("a.b"), Err(AuthRejection::MalformedToken));
        assert_eq!(split_token("a.b.c.d"), Err(AuthRejection::MalformedToken));
        assert_eq!(split_token(".b.c"), Err(AuthRejection::MalformedToken));
        assert_eq!(split_token("a.b."), Ok(("a", "b")));
    }

    fn activity(channel: &str, service_url: Option<&str>) -> Activity {
        serde_json::from_value(json!({"type": "message", "channelId": channel, "serviceUrl": service_url})).unwrap()
    }

    fn token(service_url: Option<&str>, endorsements: &[&str]) -> VerifiedToken {
        VerifiedToken(Arc::new(TokenFacts {
            service_url: service_url.map(str::to_owned),
            endorsements: endorsements.iter().map(|e| e.to_string()).collect(),
        }))
    }

    #[test]
    fn binding_requires_teams_an_endorsed_key_and_the_same_service_url() {
        let url = Some("https://smba.trafficmanager.net/emea/");
        assert_eq!(token(url, &["msteams"]).bind(&activity("msteams", url)), Ok(()));
        assert_eq!(token(url, &["msteams"]).bind(&activity("webchat", url)), Err(AuthRejection::ChannelNotSupported));
        assert_eq!(token(url, &["webchat"]).bind(&activity("msteams", url)), Err(AuthRejection::ChannelNotEndorsed));
        assert_eq!(token(url, &[]).bind(&activity("msteams", url)), Err(AuthRejection::ChannelNotEndorsed));
        assert_eq!(token(None, &["msteams"]).bind(&activity("msteams", url)), Err(AuthRejection::ServiceUrlMissing));
        assert_eq!(token(url, &["msteams"]).bind(&activity("msteams", None)), Err(AuthRejection::ServiceUrlMissing));
        assert_eq!(
            token(url, &["msteams"]).bind(&activity("msteams", Some("https://smba.trafficmanager.net/amer/"))),
            Err(AuthRejection::ServiceUrlMismatch)
        );
    }

    #[test]
    fn service_urls_compare_up_to_a_trailing_slash_and_host_case() {
        assert!(same_service_url("https://smba.trafficmanager.net/emea/", "https://smba.trafficmanager.net/emea"));
        assert!(same_service_url("https://SMBA.trafficmanager.net/emea/", "https://smba.trafficmanager.net/emea/"));
        assert!(!same_service_url("https://smba.trafficmanager.net/emea/", "https://smba.trafficmanager.net/emea/x"));
        assert!(!same_service_url("https://evil.example/emea/", "https://smba.trafficmanager.net/emea/"));
    }
}
