//! What a queued membership notification becomes: decrypted (the signature first), read as the
//! member who joined, completed with the chat's members (app token), evaluated by the same rules
//! as audit records and turned into sightings, which open or join one case per pair.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, mpsc};

use super::certificate::CertificateSet;
use super::crypto::decrypt;
use super::intake::Accepted;
use super::membership::findings;
use super::payload::ChatMember;
use crate::alerts::{AuditIngest, Sighting};
use crate::audit::detection::Finding;
use crate::cases::{GRAPH_NOTIFICATION_EVIDENCE, now_ms};
use crate::entra::app_token::AppTokenProvider;
use crate::graph::GraphClient;
use crate::metrics::Metrics;
use crate::store::Store;

/// Notifications processed at once.
const CONCURRENCY: usize = 16;

/// Turns accepted notifications into cases.
pub struct NotificationProcessor {
    store: Store,
    certificates: CertificateSet,
    graph: Arc<GraphClient>,
    tokens: AppTokenProvider,
    ingest: Arc<AuditIngest>,
    tenant_id: String,
    metrics: Arc<Metrics>,
}

/// What became of one notification (each a metric label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Not a new member.
    Ignored,
    /// Refused, with the reason's label.
    Rejected(&'static str),
    /// Evaluated: the cases it opened (none when the rules flag nothing or the pair's case is open).
    Evaluated(Vec<String>),
}

fn who(member: &ChatMember) -> String {
    let name = member.display_name.as_deref().unwrap_or("someone");
    match (&member.email, &member.tenant_id) {
        (Some(email), Some(tenant)) => format!("{name} ({email}, tenant {tenant})"),
        (Some(email), None) => format!("{name} ({email}, no tenant)"),
        (None, Some(tenant)) => format!("{name} (tenant {tenant})"),
        (None, None) => format!("{name} (unauthenticated)"),
    }
}

impl NotificationProcessor {
    /// A processor reading chats with `tokens` (Graph app token) and opening cases through `ingest`.
    pub fn new(
        store: Store,
        certificates: CertificateSet,
        graph: Arc<GraphClient>,
        tokens: AppTokenProvider,
        ingest: Arc<AuditIngest>,
        tenant_id: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { store, certificates, graph, tokens, ingest, tenant_id, metrics }
    }

    fn count(&self, result: &'static str) {
        self.metrics.inc("chatwarden_notifications_total", &[("result", result)]);
    }

    /// Processes notifications from `queue` until it closes, 16 at a time.
    pub fn spawn(self: Arc<Self>, mut queue: mpsc::Receiver<Accepted>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(CONCURRENCY));
            while let Some(accepted) = queue.recv().await {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
                let processor = Arc::clone(&self);
                tokio::spawn(async move {
                    processor.process(accepted).await;
                    drop(permit);
                });
            }
        })
    }

    /// Processes one notification.
    pub async fn process(&self, accepted: Accepted) -> Processed {
        let outcome = self.evaluate(&accepted).await;
        match &outcome {
            Processed::Ignored => self.count("ignored"),
            Processed::Rejected(label) => self.count(label),
            Processed::Evaluated(cases) => {
                self.count(if cases.is_empty() { "evaluated" } else { "opened" });
                self.metrics.observe("chatwarden_notification_processing_seconds", &[], accepted.arrived.elapsed().as_secs_f64());
            }
        }
        outcome
    }

    async fn evaluate(&self, accepted: &Accepted) -> Processed {
        let notification = &accepted.notification;
        if !notification.is_created() {
            return Processed::Ignored;
        }
        let Some(content) = &notification.encrypted_content else { return Processed::Rejected("no_resource_data") };
        let Some(chat) = notification.chat_id() else { return Processed::Rejected("bad_resource") };
        // The signature is checked before anything is decrypted; nothing is claimed for a
        // notification that does not decrypt, so a genuine redelivery is still taken.
        let plain = match decrypt(&self.certificates, content) {
            Ok(plain) => plain,
            Err(rejection) => {
                tracing::warn!(reason = rejection.label(), "refused a change notification's encrypted content");
                return Processed::Rejected(rejection.label());
            }
        };
        let Ok(added) = serde_json::from_slice::<ChatMember>(&plain) else { return Processed::Rejected("bad_resource") };
        let members = match self.members(chat).await {
            Some(members) => members,
            None => return Processed::Rejected("members_unreadable"),
        };
        let found = findings(chat, &added, &members, &self.tenant_id, self.ingest.rules());
        // No claim of its own: the case rules keep one open case per pair across replicas (its
        // key is taken in the case's own transaction) and a delivery's evidence id once, so a
        // delivery that reached two replicas opens one case.
        let evidence_id = format!("{GRAPH_NOTIFICATION_EVIDENCE}{}", &accepted.key[..16]);
        let sightings =
            found.into_iter().map(|finding| self.sighting(&evidence_id, accepted.received_at, &added, finding)).collect::<Vec<_>>();
        match self.ingest.ingest_sightings(sightings).await {
            Ok(cases) => Processed::Evaluated(cases),
            Err(err) => {
                tracing::error!(error = %err, "could not open the case of a change notification");
                Processed::Rejected("store_error")
            }
        }
    }

    fn sighting(&self, evidence_id: &str, received_at: i64, added: &ChatMember, finding: Finding) -> Sighting {
        let inside = finding.member.display_name.clone().or_else(|| finding.member.upn.clone()).unwrap_or_else(|| "a user".into());
        let reason = format!(
            "Graph change notification at {}: {} joined a chat with {inside}; outside parties: {}",
            crate::cards::timestamp(received_at),
            who(added),
            finding.external.describe()
        );
        Sighting {
            evidence_id: evidence_id.to_owned(),
            evidence_detail: format!("Graph change notification {} (member added)", &evidence_id[GRAPH_NOTIFICATION_EVIDENCE.len()..]),
            observed_at: Some(received_at),
            tenant_id: self.tenant_id.clone(),
            reason,
            finding,
        }
    }

    /// The chat's members with the app token; `None` when they cannot be read.
    async fn members(&self, chat: &str) -> Option<Vec<ChatMember>> {
        let token = match self.tokens.bearer().await {
            Ok(token) => token,
            Err(err) => {
                tracing::error!(error = %err, "no Graph app token to read a chat's members");
                return None;
            }
        };
        let started = Instant::now();
        let result = self.graph.chat_members(&token, chat).await;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "read a chat's members");
        match result {
            Ok(members) => Some(members.unwrap_or_default()),
            Err(failure) => {
                tracing::error!(status = failure.status, code = %failure.code, "could not read a chat's members");
                None
            }
        }
    }

    /// After a `missed` lifecycle event: every chat the audit index saw since `since` (Unix ms),
    /// up to `max_chats`, is read again and every outsider in it is treated as just added.
    /// Returns the cases opened.
    pub async fn reconcile(&self, since: i64, max_chats: i64) -> Vec<String> {
        let chats = match self.store.recent_audit_chats(since, max_chats).await {
            Ok(chats) => chats,
            Err(err) => {
                tracing::error!(error = %err, "could not list chats to reconcile");
                return Vec::new();
            }
        };
        let now = now_ms();
        let mut opened = Vec::new();
        for chat in chats {
            let Some(members) = self.members(&chat).await else { continue };
            let key = hex::encode(&Sha256::digest(format!("{chat}|{now}").as_bytes())[..8]);
            let evidence_id = format!("{GRAPH_NOTIFICATION_EVIDENCE}reconcile-{key}");
            // Every outsider is merged into each finding, so the first that flags anyone does.
            let found =
                members.iter().map(|outsider| (outsider, findings(&chat, outsider, &members, &self.tenant_id, self.ingest.rules())));
            let Some((outsider, found)) = found.into_iter().find(|(_, f)| !f.is_empty()) else { continue };
            let sightings: Vec<Sighting> = found
                .into_iter()
                .map(|finding| {
                    let mut sighting = self.sighting(&evidence_id, now, outsider, finding);
                    sighting.reason =
                        sighting.reason.replacen("Graph change notification", "Chat members read after missed notifications", 1);
                    sighting.evidence_detail = "chat members read after Graph reported missed notifications".into();
                    sighting
                })
                .collect();
            match self.ingest.ingest_sightings(sightings).await {
                Ok(cases) => opened.extend(cases),
                Err(err) => tracing::error!(error = %err, "could not open a reconciled case"),
            }
        }
        self.metrics.inc("chatwarden_notification_reconciliations_total", &[]);
        opened
    }
}
