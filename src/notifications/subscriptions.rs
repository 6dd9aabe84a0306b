//! The Graph subscription to chat membership (`/chats/getAllMembers`, resource data encrypted to
//! our certificate): created when missing, renewed well before it expires, replaced when it was
//! removed or is encrypted to a certificate that is no longer the newest, reauthorized when Graph
//! asks. Its id, expiry and certificate are kept in the database, and only the replica holding
//! the subscription lock changes it, so several replicas keep exactly one subscription.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};
use url::Url;

use super::certificate::CertificateSet;
use super::payload::ChangeNotification;
use super::processor::NotificationProcessor;
use crate::cases::{now_ms, rfc3339};
use crate::entra::app_token::AppTokenProvider;
use crate::graph::{GraphClient, GraphFailure, NewSubscription};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// The resource subscribed to.
pub const MEMBERSHIP_RESOURCE: &str = "/chats/getAllMembers";
/// Where the subscription's id, expiry and certificate are kept.
const STATE_KEY: &str = "graph_subscription:chat_members";
/// The advisory lock of subscription changes ("chatsubs").
const SUBSCRIPTION_LOCK: i64 = 0x6368_6174_7375_6273;
/// Graph keeps chat-membership subscriptions 3 days at most; ask for a little less.
pub const LIFETIME: Duration = Duration::from_secs(70 * 3600);
/// Renew once less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
/// How far back a reconciliation after `missed` looks, and how many chats it reads at most.
const RECONCILE_LOOKBACK_MS: i64 = 24 * 3600 * 1000;
const RECONCILE_MAX_CHATS: i64 = 500;

/// How the subscription is made.
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    /// The public URL of `/api/notifications`; lifecycle notifications go to it + `/lifecycle`.
    pub notification_url: Url,
    /// Licensing model (`A` or `B`), added to the resource as `?model=`; none = evaluation.
    pub model: Option<String>,
    /// The secret every notification carries.
    pub client_state: SecretString,
}

impl SubscriptionSettings {
    /// The resource with its licensing model.
    pub fn resource(&self) -> String {
        match &self.model {
            Some(model) => format!("{MEMBERSHIP_RESOURCE}?model={model}"),
            None => MEMBERSHIP_RESOURCE.to_owned(),
        }
    }

    /// The lifecycle URL: the notification URL + `/lifecycle`.
    pub fn lifecycle_url(&self) -> String {
        format!("{}/lifecycle", self.notification_url.as_str().trim_end_matches('/'))
    }
}

/// The subscription as the database keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    /// Graph's id.
    pub id: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
    /// The certificate it is encrypted to.
    pub certificate_id: String,
}

/// What one maintenance round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionAction {
    /// There was none: created.
    Created,
    /// Renewed (and so reauthorized).
    Renewed,
    /// Replaced by one encrypted to the newest certificate (created before the old was deleted).
    Replaced,
    /// Nothing due.
    Unchanged,
    /// Another replica holds the subscription lock.
    NotOwner,
}

impl SubscriptionAction {
    fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Renewed => "renewed",
            Self::Replaced => "replaced",
            Self::Unchanged => "unchanged",
            Self::NotOwner => "not_owner",
        }
    }
}

/// Why a round failed (it is tried again at the next).
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// No app token.
    #[error("no Graph app token: {0}")]
    Token(String),
    /// Graph refused or failed.
    #[error("Graph answered {status} ({code}) to {what}")]
    Graph {
        /// What was asked.
        what: &'static str,
        /// HTTP status (0: no answer).
        status: u16,
        /// Graph's error code.
        code: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn graph_error(what: &'static str) -> impl FnOnce(GraphFailure) -> SubscriptionError {
    move |f| SubscriptionError::Graph { what, status: f.status, code: f.code }
}

/// Keeps the membership subscription alive and answers its lifecycle notifications.
pub struct SubscriptionManager {
    graph: Arc<GraphClient>,
    tokens: AppTokenProvider,
    store: Store,
    certificates: CertificateSet,
    settings: SubscriptionSettings,
    processor: Arc<NotificationProcessor>,
    metrics: Arc<Metrics>,
    local: Mutex<()>,
}

impl SubscriptionManager {
    /// A manager calling Graph with `tokens` (app token, `ChatMember.Read.All`).
    pub fn new(
        graph: Arc<GraphClient>,
        tokens: AppTokenProvider,
        store: Store,
        certificates: CertificateSet,
        settings: SubscriptionSettings,
        processor: Arc<NotificationProcessor>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { graph, tokens, store, certificates, settings, processor, metrics, local: Mutex::new(()) }
    }

    /// The subscription as stored.
    pub async fn state(&self) -> Result<Option<SubscriptionState>, StoreError> {
        Ok(self.store.setting(STATE_KEY).await?.and_then(|text| serde_json::from_str(&text).ok()))
    }

    async fn save(&self, state: &SubscriptionState, now: i64) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).unwrap_or_default();
        self.store.set_setting(STATE_KEY, &text, now).await
    }

    async fn token(&self) -> Result<SecretString, SubscriptionError> {
        self.tokens.bearer().await.map_err(|err| SubscriptionError::Token(err.to_string()))
    }

    async fn create(&self, now: i64) -> Result<SubscriptionState, SubscriptionError> {
        let certificate = self.certificates.newest();
        let body = NewSubscription {
            change_type: "created".into(),
            notification_url: self.settings.notification_url.to_string(),
            lifecycle_notification_url: self.settings.lifecycle_url(),
            resource: self.settings.resource(),
            include_resource_data: true,
            encryption_certificate: certificate.encoded(),
            encryption_certificate_id: certificate.id().to_owned(),
            expiration_date_time: rfc3339(now + LIFETIME.as_millis() as i64),
            client_state: self.settings.client_state.expose_secret().to_owned(),
        };
        let token = self.token().await?;
        let created = self.graph.create_subscription(&token, &body).await.map_err(graph_error("create the subscription"))?;
        let expires_at = created
            .expiration_date_time
            .as_deref()
            .and_then(crate::audit::record::parse_creation_time)
            .unwrap_or(now + LIFETIME.as_millis() as i64);
        let state = SubscriptionState { id: created.id, expires_at, certificate_id: certificate.id().to_owned() };
        self.save(&state, now).await?;
        tracing::info!(subscription = %state.id, expires = %rfc3339(expires_at), "Graph subscription to chat membership created");
        Ok(state)
    }

    /// One maintenance round at `now` (Unix ms).
    pub async fn maintain(&self, now: i64) -> Result<SubscriptionAction, SubscriptionError> {
        let _one_at_a_time = self.local.lock().await;
        let action = match self.store.with_advisory_lock(SUBSCRIPTION_LOCK, self.maintain_locked(now)).await? {
            Some(result) => result?,
            None => SubscriptionAction::NotOwner,
        };
        self.metrics.inc("chatwarden_subscription_rounds_total", &[("action", action.label())]);
        Ok(action)
    }

    async fn maintain_locked(&self, now: i64) -> Result<SubscriptionAction, SubscriptionError> {
        let Some(state) = self.state().await? else {
            self.create(now).await?;
            return Ok(SubscriptionAction::Created);
        };
        let newest = self.certificates.newest().id();
        if state.certificate_id != newest {
            self.create(now).await?;
            let token = self.token().await?;
            if let Err(failure) = self.graph.delete_subscription(&token, &state.id).await {
                tracing::warn!(status = failure.status, "could not delete the subscription to the old certificate; it expires by itself");
            }
            return Ok(SubscriptionAction::Replaced);
        }
        if state.expires_at - now > RENEW_BEFORE.as_millis() as i64 {
            return Ok(SubscriptionAction::Unchanged);
        }
        let token = self.token().await?;
        let expires_at = now + LIFETIME.as_millis() as i64;
        match self.graph.renew_subscription(&token, &state.id, &rfc3339(expires_at)).await {
            Ok(()) => {
                self.save(&SubscriptionState { expires_at, ..state }, now).await?;
                Ok(SubscriptionAction::Renewed)
            }
            Err(GraphFailure { status: 404, .. }) => {
                self.create(now).await?;
                Ok(SubscriptionAction::Created)
            }
            Err(failure) => Err(graph_error("renew the subscription")(failure)),
        }
    }

    /// Answers one lifecycle notification: `reauthorizationRequired` reauthorizes,
    /// `subscriptionRemoved` creates a new subscription, `missed` reconciles. Returns the event's
    /// metric label.
    pub async fn on_lifecycle(&self, notification: &ChangeNotification, now: i64) -> Result<&'static str, SubscriptionError> {
        let event = notification.lifecycle_event.as_deref().unwrap_or_default();
        let current = self.state().await?;
        let is_current = current.as_ref().is_some_and(|s| s.id.eq_ignore_ascii_case(&notification.subscription_id));
        let label = match event {
            "reauthorizationRequired" if is_current => {
                let _one_at_a_time = self.local.lock().await;
                let work = async {
                    let token = self.token().await?;
                    match self.graph.reauthorize_subscription(&token, &notification.subscription_id).await {
                        Ok(()) => Ok(()),
                        Err(GraphFailure { status: 404, .. }) => self.create(now).await.map(|_| ()),
                        Err(failure) => Err(graph_error("reauthorize the subscription")(failure)),
                    }
                };
                self.locked(work).await?;
                "reauthorized"
            }
            "subscriptionRemoved" if is_current => {
                let _one_at_a_time = self.local.lock().await;
                self.locked(async { self.create(now).await.map(|_| ()) }).await?;
                "recreated"
            }
            "missed" => {
                let opened = self.processor.reconcile(now - RECONCILE_LOOKBACK_MS, RECONCILE_MAX_CHATS).await;
                tracing::info!(cases = opened.len(), "reconciled chat membership after missed notifications");
                "reconciled"
            }
            "reauthorizationRequired" | "subscriptionRemoved" => "stale_subscription",
            _ => "unknown_event",
        };
        self.metrics.inc("chatwarden_subscription_events_total", &[("result", label)]);
        Ok(label)
    }

    /// Runs `work` under the subscription lock, waiting for another replica to let go of it
    /// (a round takes a few Graph calls).
    async fn locked(&self, work: impl std::future::Future<Output = Result<(), SubscriptionError>>) -> Result<(), SubscriptionError> {
        let mut work = Box::pin(work);
        for _ in 0..50 {
            if let Some(result) = self.store.with_advisory_lock(SUBSCRIPTION_LOCK, &mut work).await? {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(SubscriptionError::Graph { what: "take the subscription lock", status: 0, code: "held by another replica".into() })
    }

    /// Maintains the subscription every `interval` and answers lifecycle notifications from
    /// `lifecycle` as they come.
    pub fn spawn(
        self: Arc<Self>,
        interval: Duration,
        mut lifecycle: mpsc::Receiver<ChangeNotification>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let rounds = Arc::clone(&self);
        let maintenance = tokio::spawn(async move {
            loop {
                if let Err(err) = rounds.maintain(now_ms()).await {
                    tracing::error!(error = %err, "Graph subscription maintenance failed; it is tried again");
                }
                tokio::time::sleep(interval).await;
            }
        });
        let events = tokio::spawn(async move {
            while let Some(notification) = lifecycle.recv().await {
                if let Err(err) = self.on_lifecycle(&notification, now_ms()).await {
                    tracing::error!(error = %err, "a Graph lifecycle notification could not be answered");
                }
            }
        });
        vec![maintenance, events]
    }
}
