//! What `/api/notifications` does with a batch before it answers: parse, check every item's
//! `clientState`, verify every validation token, drop what this process already took, and
//! queue the rest for [`NotificationProcessor`](super::NotificationProcessor). Nothing is
//! decrypted or looked up before Graph gets its 202; a full queue answers 503 so Graph
//! delivers again later instead of the notification being lost.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::payload::{ChangeNotification, NotificationBatch};
use super::validation_tokens::{TokenRejection, ValidationTokens};
use crate::metrics::Metrics;

/// Notifications waiting for processing at most; past it, batches get 503.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Most notifications in one batch (Graph sends up to a few hundred).
const MAX_BATCH_ITEMS: usize = 1_000;

/// A notification that passed the checks, with when it arrived and its dedupe key.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The notification.
    pub notification: ChangeNotification,
    /// When it arrived (Unix ms).
    pub received_at: i64,
    /// SHA-256 (hex) of what identifies this delivery.
    pub key: String,
    /// When it arrived, for the latency metric.
    pub arrived: std::time::Instant,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// Not the JSON of a notification batch.
    #[error("{0}")]
    BadJson(String),
    /// An item's `clientState` is not ours.
    #[error("a notification has the wrong clientState")]
    ClientState,
    /// A validation token failed.
    #[error(transparent)]
    Token(#[from] TokenRejection),
    /// The processing queue is full (Graph retries).
    #[error("busy")]
    Busy,
}

impl IntakeError {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadJson(_) => "bad_json",
            Self::ClientState => "client_state",
            Self::Token(rejection) => rejection.label(),
            Self::Busy => "busy",
        }
    }
}

/// Checks batches and queues their notifications.
pub struct NotificationIntake {
    client_state: SecretString,
    tokens: Arc<ValidationTokens>,
    queue: mpsc::Sender<Accepted>,
    lifecycle: mpsc::Sender<ChangeNotification>,
    seen: moka::sync::Cache<String, ()>,
    metrics: Arc<Metrics>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// The key of one delivery: Graph's id when it gives one, else what the notification says.
pub(crate) fn delivery_key(n: &ChangeNotification) -> String {
    let mut hasher = Sha256::new();
    for part in [
        n.id.as_deref().unwrap_or_default(),
        &n.subscription_id,
        n.change_type.as_deref().unwrap_or_default(),
        n.resource.as_deref().unwrap_or_default(),
        n.lifecycle_event.as_deref().unwrap_or_default(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    if n.id.is_none() {
        if let Some(content) = &n.encrypted_content {
            hasher.update(content.data.as_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

impl NotificationIntake {
    /// An intake that queues to `queue` (change notifications) and `lifecycle` (lifecycle ones).
    pub fn new(
        client_state: SecretString,
        tokens: Arc<ValidationTokens>,
        queue: mpsc::Sender<Accepted>,
        lifecycle: mpsc::Sender<ChangeNotification>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let seen = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(3600)).build();
        Self { client_state, tokens, queue, lifecycle, seen, metrics }
    }

    fn refuse(&self, error: IntakeError) -> IntakeError {
        self.metrics.inc("chatwarden_notifications_total", &[("result", error.label())]);
        error
    }

    /// Checks a batch and queues what it carries; how many notifications were queued.
    /// `lifecycle` is true for `/api/notifications/lifecycle`.
    pub async fn accept(&self, body: &[u8], lifecycle: bool) -> Result<usize, IntakeError> {
        let batch: NotificationBatch = serde_json::from_slice(body).map_err(|e| {
            self.refuse(IntakeError::BadJson(format!("malformed notification batch at line {} column {}", e.line(), e.column())))
        })?;
        if batch.value.len() > MAX_BATCH_ITEMS {
            return Err(self.refuse(IntakeError::BadJson(format!("more than {MAX_BATCH_ITEMS} notifications in one batch"))));
        }
        let ours = self.client_state.expose_secret().as_bytes();
        if batch.value.iter().any(|n| !n.client_state.as_deref().is_some_and(|c| constant_time_eq(c.as_bytes(), ours))) {
            return Err(self.refuse(IntakeError::ClientState));
        }
        let has_resource_data = batch.value.iter().any(|n| n.encrypted_content.is_some());
        if has_resource_data || !batch.validation_tokens.is_empty() {
            self.tokens.verify_all(&batch.validation_tokens).await.map_err(|e| self.refuse(IntakeError::Token(e)))?;
        }
        let now = crate::cases::now_ms();
        let arrived = std::time::Instant::now();
        let mut queued = 0;
        for notification in batch.value {
            let key = delivery_key(&notification);
            if self.seen.contains_key(&key) {
                self.metrics.inc("chatwarden_notifications_total", &[("result", "duplicate")]);
                continue;
            }
            let is_lifecycle = lifecycle || notification.lifecycle_event.is_some();
            let sent = if is_lifecycle {
                self.lifecycle.try_send(notification).map_err(|_| ())
            } else {
                self.queue.try_send(Accepted { notification, received_at: now, key: key.clone(), arrived }).map_err(|_| ())
            };
            if sent.is_err() {
                // What was queued stays queued; Graph's redelivery of those is dropped as seen.
                return Err(self.refuse(IntakeError::Busy));
            }
            self.seen.insert(key, ());
            queued += 1;
            self.metrics.inc("chatwarden_notifications_total", &[("result", if is_lifecycle { "lifecycle" } else { "queued" })]);
        }
        Ok(queued)
    }
}
