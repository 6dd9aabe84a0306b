//! Forwarding: every event of the chain POSTed to `CHATWARDEN_FORWARD_URL`, in order, through
//! the chain itself as the outbox (a cursor in the database says how far the receiver has
//! acknowledged).
//!
//! Each request carries one event as the export's JSON (`export.rs`), signed like `/api/alerts`
//! (`X-Chatwarden-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`), with the event's hash
//! as `Idempotency-Key` and its place as `X-Chatwarden-Event-Seq`. The cursor moves only after a
//! 2xx, so an event is sent again after a failure, a timeout or a crash between the answer and
//! the cursor update: delivery is at least once, and once per event for a receiver that
//! deduplicates on the key. A failing receiver holds back the events after it (order is kept),
//! retried with exponential backoff that honours `Retry-After`. With several replicas on
//! PostgreSQL one forwards at a time (an advisory lock).

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

use super::HistoryEvent;
use super::export::ExportLine;
use crate::audit::signature::{SIGNATURE_HEADER, sign};
use crate::cases::now_ms;
use crate::metrics::Metrics;
use crate::outbound::ClientSetupError;
use crate::store::{Store, StoreError};

/// The advisory lock forwarders take on PostgreSQL ("chatfwd1").
const FORWARD_LOCK: i64 = 0x6368_6174_6677_6431;

/// How many events one pass reads from the database at a time.
const PAGE: i64 = 200;

/// Where and how events are forwarded.
#[derive(Debug, Clone)]
pub(crate) struct ForwardSettings {
    /// The receiver (https, or http on a loopback host).
    pub url: Url,
    /// The HMAC-SHA256 key of the signature header.
    pub secret: SecretString,
    /// Timeout of each request.
    pub timeout: Duration,
    /// The longest wait between attempts after failures.
    pub max_backoff: Duration,
    /// How often to look for new events when caught up.
    pub idle: Duration,
}

/// Why a forwarding pass stopped before it caught up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The receiver did not take an event.
    #[error("the receiver did not take event {seq}: {reason}")]
    Refused {
        /// The event's place.
        seq: i64,
        /// HTTP status or transport failure, in words.
        reason: String,
        /// How long the receiver asked to wait.
        retry_after: Option<Duration>,
    },
    /// The database could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sends the history to the receiver.
pub(crate) struct Forwarder {
    store: Store,
    http: reqwest::Client,
    settings: ForwardSettings,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// A forwarder of `store`'s history.
    pub fn new(store: Store, settings: ForwardSettings, metrics: Arc<Metrics>) -> Result<Self, ClientSetupError> {
        let http = crate::outbound::build_client(settings.timeout)?;
        Ok(Self { store, http, settings, metrics })
    }

    /// Sends every event after the cursor, in order, until caught up or one is not taken.
    /// Returns how many were sent; `Ok(0)` too when another replica is forwarding.
    pub async fn forward_pending(&self) -> Result<u64, ForwardError> {
        match self.store.with_advisory_lock(FORWARD_LOCK, self.forward_unlocked()).await? {
            Some(result) => result,
            None => Ok(0),
        }
    }

    async fn forward_unlocked(&self) -> Result<u64, ForwardError> {
        let mut sent = 0;
        loop {
            let cursor = self.store.forward_cursor().await?;
            let page = self.store.history_after(cursor, PAGE).await?;
            if page.is_empty() {
                return Ok(sent);
            }
            let mut at = cursor;
            for event in &page {
                self.send(event).await?;
                if !self.store.advance_forward_cursor(at, event.seq, now_ms()).await? {
                    // Another forwarder moved the cursor (only possible without the lock, on
                    // SQLite with two processes): start again from where it is.
                    break;
                }
                at = event.seq;
                sent += 1;
                self.metrics.inc("chatwarden_forwarded_events_total", &[("result", "sent")]);
            }
        }
    }

    async fn send(&self, event: &HistoryEvent) -> Result<(), ForwardError> {
        let body = serde_json::to_vec(&ExportLine::of(event)).unwrap_or_default();
        let signature = sign(self.settings.secret.expose_secret().as_bytes(), &body);
        let refused = |reason: String, retry_after| ForwardError::Refused { seq: event.seq, reason, retry_after };
        let response = self
            .http
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header("idempotency-key", &event.hash)
            .header("x-chatwarden-event-seq", event.seq.to_string())
            .body(body)
            .send()
            .await
            .map_err(|err| refused(if err.is_timeout() { "timed out".into() } else { "unreachable".into() }, None))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = crate::outbound::retry_after(&response, self.settings.max_backoff);
        Err(refused(format!("HTTP {}", status.as_u16()), retry_after))
    }

    /// Forwards in the background for as long as the process runs: new events within
    /// `idle`, failures retried with backoff.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let wait = match self.forward_pending().await {
                    Ok(_) => {
                        failures = 0;
                        self.settings.idle
                    }
                    Err(err) => {
                        failures = failures.saturating_add(1);
                        let reason = match &err {
                            ForwardError::Refused { .. } => "refused",
                            ForwardError::Store(_) => "database",
                        };
                        self.metrics.inc("chatwarden_forwarded_events_total", &[("result", reason)]);
                        tracing::warn!(error = %err, failures, "forwarding the history paused; retrying");
                        let asked = match &err {
                            ForwardError::Refused { retry_after, .. } => *retry_after,
                            ForwardError::Store(_) => None,
                        };
                        asked.unwrap_or_else(|| self.backoff(failures))
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }

    /// Exponential backoff with jitter from 250 ms up to the configured ceiling.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = Duration::from_millis(250).saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
        let capped = exp.min(self.settings.max_backoff);
        capped / 2 + (capped / 2).mul_f64(fastrand::f64())
    }
}
