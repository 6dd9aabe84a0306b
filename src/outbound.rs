//! Outbound HTTP hygiene shared by every client: one reqwest client per service with timeouts,
//! a user agent and no redirects, and bounded retries that honour `Retry-After`.

use std::time::Duration;

use reqwest::{Response, StatusCode};

use crate::config::RetryPolicy;

/// User agent sent on every outbound request.
pub(crate) const USER_AGENT: &str = concat!("chatwarden/", env!("CARGO_PKG_VERSION"));

/// An outbound client that could not be set up as required; the service refuses to start
/// rather than run with weaker defaults.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    /// The TLS backend could not initialise.
    #[error("the HTTP client could not be built: {0}")]
    Build(String),
    /// A configured base URL and a fixed path do not make a valid URL.
    #[error("`{0}` is not a valid endpoint URL")]
    Url(String),
}

/// Builds a client with the given per-request timeout, rustls, and redirects disabled (a
/// redirect could carry the bot's token to a host that was never checked). There is no
/// fallback: `reqwest::Client::new()` would follow redirects and never time out.
pub(crate) fn build_client(timeout: Duration) -> Result<reqwest::Client, ClientSetupError> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|err| ClientSetupError::Build(err.to_string()))
}

/// The delay a response asks for with `Retry-After` (seconds form), capped at `max`.
pub(crate) fn retry_after(response: &Response, max: Duration) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds).min(max))
}

/// Exponential backoff with full jitter for attempt `attempt` (1-based) when no `Retry-After`.
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy.base_delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let capped = exp.min(policy.max_delay);
    // Full jitter in [capped/2, capped] keeps retries spread without ever retrying at once.
    let half = capped / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The outcome of [`send_with_retry`]: the last response, or the last transport error.
pub(crate) type RetryResult = Result<Response, reqwest::Error>;

/// Sends the request built by `make` until it succeeds, fails with a status not in
/// `retry_statuses`, or `policy.max_attempts` is reached. Waits honour `Retry-After`.
/// Transport errors are retried only when `retry_transport` is set (idempotent calls).
pub async fn send_with_retry(
    policy: &RetryPolicy,
    retry_statuses: &[StatusCode],
    retry_transport: bool,
    mut make: impl FnMut() -> reqwest::RequestBuilder,
) -> RetryResult {
    let mut attempt = 1;
    loop {
        let result = make().send().await;
        let last = attempt >= policy.max_attempts;
        match result {
            Ok(response) if retry_statuses.contains(&response.status()) && !last => {
                let wait = retry_after(&response, policy.max_delay).unwrap_or_else(|| backoff(policy, attempt));
                tracing::debug!(status = response.status().as_u16(), attempt, wait_ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
            }
            Err(err) if retry_transport && !last && (err.is_connect() || err.is_timeout()) => {
                tokio::time::sleep(backoff(policy, attempt)).await;
            }
            other => return other,
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_the_cap() {
        let policy =
            RetryPolicy { base_delay: Duration::from_millis(100), max_delay: Duration::from_millis(350), ..RetryPolicy::default() };
        for _ in 0..50 {
            let first = backoff(&policy, 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
            let third = backoff(&policy, 3);
            assert!(third >= Duration::from_millis(175) && third <= Duration::from_millis(350), "{third:?}");
        }
    }
}
