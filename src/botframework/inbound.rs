//! The `VerifiedActivity` extractor: the only way a handler can obtain an activity.
//!
//! It reads the body (bounded by the configured limit, unparsed), authenticates the request with
//! [`ChannelAuthenticator`] (unless local mode turned auth off), parses the activity, binds the
//! token to it and checks its `serviceUrl` against the allowlist. Every rejection is counted,
//! logged without the token, and answered before any outbound request is made.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{FromRequest, HttpRequest, web};

use super::activity::Activity;
use super::auth::{AuthRejection, ChannelAuthenticator, VerifiedToken};
use super::service_url::{AllowedServiceUrl, HostAllowlist};
use crate::http::ApiError;
use crate::metrics::Metrics;

/// How inbound requests are authenticated.
pub(crate) enum InboundAuth {
    /// Production: every request carries a valid Bot Connector JWT.
    Channel(Box<ChannelAuthenticator>),
    /// Local mode only (no app id configured): no token is checked. The allowlist still applies
    /// and is loopback-only in that mode.
    Disabled,
}

/// Everything the extractor needs, registered as app data.
pub(crate) struct InboundGate {
    auth: InboundAuth,
    allowlist: HostAllowlist,
    /// Service URLs the allowlist accepted, by their exact text: the allowlist is fixed for the
    /// process, so a verdict never changes, and the Connector sends the same few URLs all day
    /// (what parsing one costs at peak is in BENCHMARKS.md).
    allowed_urls: moka::sync::Cache<String, AllowedServiceUrl>,
    max_body_bytes: usize,
    metrics: Arc<Metrics>,
}

/// Most distinct allowed service URLs remembered (the Connector uses one per region).
const ALLOWED_URLS_REMEMBERED: u64 = 256;

/// An activity that passed every inbound check, with its allowlisted service URL.
#[derive(Debug)]
pub struct VerifiedActivity {
    activity: Activity,
    service_url: AllowedServiceUrl,
}

impl VerifiedActivity {
    /// The activity.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Where replies to this activity go.
    pub fn service_url(&self) -> &AllowedServiceUrl {
        &self.service_url
    }
}

#[cfg(test)]
impl VerifiedActivity {
    /// An activity as if it had passed the gate: only for unit tests of what comes after it.
    pub(crate) fn trusted_for_tests(activity: Activity, service_url: AllowedServiceUrl) -> Self {
        Self { activity, service_url }
    }
}

impl InboundGate {
    /// A gate authenticating with `auth`, replying only to `allowlist`ed hosts, reading bodies of
    /// at most `max_body_bytes`, counting rejections in `metrics`.
    pub fn new(auth: InboundAuth, allowlist: HostAllowlist, max_body_bytes: usize, metrics: Arc<Metrics>) -> Self {
        Self { auth, allowlist, allowed_urls: moka::sync::Cache::new(ALLOWED_URLS_REMEMBERED), max_body_bytes, metrics }
    }

    /// How inbound requests are authenticated.
    pub fn auth(&self) -> &InboundAuth {
        &self.auth
    }

    /// The service URL of an authenticated activity, if the allowlist accepts it.
    fn allowed_service_url(&self, url: &str) -> Result<AllowedServiceUrl, ApiError> {
        if let Some(allowed) = self.allowed_urls.get(url) {
            return Ok(allowed);
        }
        let allowed = self.allowlist.check(url).map_err(|_| self.reject(AuthRejection::ServiceUrlNotAllowed))?;
        self.allowed_urls.insert(url.to_owned(), allowed.clone());
        Ok(allowed)
    }

    fn reject(&self, reason: AuthRejection) -> ApiError {
        self.metrics.inc("chatwarden_auth_rejections_total", &[("reason", reason.code())]);
        tracing::debug!(reason = reason.code(), "rejected inbound activity");
        ApiError::Auth(reason)
    }

    /// Checks the request's token (nothing else is looked at before this passes).
    async fn authenticate(&self, req: &HttpRequest) -> Result<Option<VerifiedToken>, ApiError> {
        match &self.auth {
            InboundAuth::Channel(auth) => Ok(Some(auth.verify(req.headers()).await.map_err(|r| self.reject(r))?)),
            InboundAuth::Disabled => Ok(None),
        }
    }

    /// Parses the body of an authenticated request and binds the token to the activity.
    fn admit(&self, req: &HttpRequest, token: Option<VerifiedToken>, body: &[u8]) -> Result<VerifiedActivity, ApiError> {
        if !is_json(req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let activity: Activity = serde_json::from_slice(body).map_err(|err| ApiError::BadJson(json_error_summary(&err)))?;
        if let Some(token) = token {
            token.bind(&activity).map_err(|r| self.reject(r))?;
        }
        let url = activity.service_url.as_deref().ok_or_else(|| self.reject(AuthRejection::ServiceUrlMissing))?;
        let service_url = self.allowed_service_url(url)?;
        Ok(VerifiedActivity { activity, service_url })
    }
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// A short description of a JSON error: position and category, never the input itself.
fn json_error_summary(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match err.classify() {
        Category::Syntax => "malformed JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "JSON is not an activity (`type` missing or a field has the wrong type)",
        Category::Io => "unreadable body",
    };
    format!("{what} at line {} column {}", err.line(), err.column())
}

impl FromRequest for VerifiedActivity {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let gate = req.app_data::<web::Data<InboundGate>>().cloned().ok_or_else(|| {
                tracing::error!("InboundGate is not registered as app data");
                ApiError::Internal
            })?;
            refuse_declared_oversize(&req, gate.max_body_bytes)?;
            // The (bounded) body is read before a refusal so that the client receives the answer
            // instead of a reset connection; nothing in it is looked at until the token passes.
            let body = read_body(&mut payload, gate.max_body_bytes).await?;
            let token = gate.authenticate(&req).await?;
            gate.admit(&req, token, &body)
        })
    }
}

/// Most bytes of an oversized body that are read and thrown away before the 413 is sent. A
/// server that answers while the client is still sending and then closes makes the kernel reset
/// the connection, and the client sees the reset instead of the 413 (nginx lingers for the same
/// reason). Past this, or past [`DRAIN_TIME`], the 413 is sent anyway.
pub(crate) const DRAIN_LIMIT: usize = 32 * 1024 * 1024;
/// Longest time spent draining one oversized body.
pub(crate) const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses at once a request whose declared `Content-Length` is beyond even [`DRAIN_LIMIT`]
/// (smaller oversized bodies are drained by [`read_body`], so that the 413 arrives).
pub(crate) fn refuse_declared_oversize(req: &HttpRequest, limit: usize) -> Result<(), ApiError> {
    let declared =
        req.headers().get(actix_web::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit.max(DRAIN_LIMIT)) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(())
}

/// Reads and discards the rest of a body, up to [`DRAIN_LIMIT`] bytes in all and [`DRAIN_TIME`].
async fn drain<S>(payload: &mut S, mut length: usize)
where
    S: futures_util::Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    use futures_util::StreamExt as _;
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = payload.next().await {
            length += chunk.len();
            if length > DRAIN_LIMIT {
                return;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!("gave up draining an oversized body");
    }
}

/// Reads a request body of at most `limit` bytes (413 beyond it, once the rest was drained). A
/// body that arrives in one chunk (the usual case for an activity) is returned as is, without a
/// copy.
pub async fn read_body<S>(payload: &mut S, limit: usize) -> Result<web::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    use futures_util::StreamExt as _;
    let mut first: Option<web::Bytes> = None;
    let mut more = web::BytesMut::new();
    let mut length = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| match err {
            PayloadError::Overflow => ApiError::PayloadTooLarge(limit),
            _ => ApiError::BadBody,
        })?;
        length += chunk.len();
        if length > limit {
            drain(payload, length).await;
            return Err(ApiError::PayloadTooLarge(limit));
        }
        match first.take() {
            None if more.is_empty() => first = Some(chunk),
            None => more.extend_from_slice(&chunk),
            Some(earlier) => {
                more.extend_from_slice(&earlier);
                more.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| more.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(chunks: &[&'static [u8]], limit: usize) -> Result<web::Bytes, ApiError> {
        let mut stream =
            futures_util::stream::iter(chunks.iter().map(|c| Ok::<_, PayloadError>(web::Bytes::from_static(c))).collect::<Vec<_>>());
        read_body(&mut stream, limit).await
    }

    #[test]
    fn remembered_service_url_verdicts_match_the_allowlist() {
        let metrics = Arc::new(Metrics::default());
        let gate =
            InboundGate::new(InboundAuth::Disabled, HostAllowlist::parse("smba.trafficmanager.net").unwrap(), 1024, Arc::clone(&metrics));
        let good = "https://smba.trafficmanager.net/emea/";
        for _ in 0..2 {
            assert_eq!(gate.allowed_service_url(good).unwrap().as_url().as_str(), good);
        }
        gate.allowed_urls.run_pending_tasks();
        assert_eq!(gate.allowed_urls.entry_count(), 1, "only the accepted URL is remembered");
        for _ in 0..2 {
            assert!(gate.allowed_service_url("https://evil.example/emea/").is_err());
            assert!(gate.allowed_service_url("http://smba.trafficmanager.net/emea/").is_err());
        }
        assert_eq!(metrics.get("chatwarden_auth_rejections_total", &[("reason", AuthRejection::ServiceUrlNotAllowed.code())]), 4);
    }

    #[actix_web::test]
    async fn bodies_are_joined_in_order_and_bounded() {
        assert_eq!(read(&[], 10).await.unwrap(), web::Bytes::new());
        assert_eq!(read(&[b"{\"a\":1}"], 10).await.unwrap(), web::Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(read(&[b"", b"ab", b"", b"cd", b"e"], 10).await.unwrap(), web::Bytes::from_static(b"abcde"));
        assert_eq!(read(&[b"abcde", b"fghij"], 10).await.unwrap(), web::Bytes::from_static(b"abcdefghij"));
        assert!(matches!(read(&[b"abcde", b"fghij", b"k"], 10).await, Err(ApiError::PayloadTooLarge(10))));
        assert!(matches!(read(&[b"abcdefghijk"], 10).await, Err(ApiError::PayloadTooLarge(10))));
    }
}
