//! Defender XDR as a detection source: polls `GET /v1.0/security/alerts_v2` (app token,
//! `SecurityAlert.Read.All`) for alerts updated since the checkpoint and turns their Teams
//! message evidence (an external sender in a chat with our recipients) into sightings for the
//! same case rules as audit records and change notifications. One replica polls at a time; the
//! checkpoint only moves once a page of alerts was fully handled, and an alert is evidence of a
//! pair's case at most once, so a restart neither loses nor repeats one.

use std::sync::Arc;
use std::time::Duration;

use crate::alerts::{AuditIngest, Sighting};
use crate::audit::detection::Finding;
use crate::audit::record::{ExternalParties, Member, parse_creation_time};
use crate::cases::{DEFENDER_ALERT_EVIDENCE, now_ms, rfc3339};
use crate::entra::app_token::AppTokenProvider;
use crate::graph::{AlertEvidence, GraphClient, SecurityAlert};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Checkpoint name of this source.
pub const SOURCE: &str = "defender:alerts_v2";
/// The advisory lock of the poll ("defender").
const DEFENDER_LOCK: i64 = 0x6465_6665_6e64_6572;
/// How far back the first poll looks.
const FIRST_LOOKBACK_MS: i64 = 24 * 3600 * 1000;

/// Why a poll failed (the checkpoint stays).
#[derive(Debug, thiserror::Error)]
pub enum DefenderError {
    /// No app token.
    #[error("no Graph app token: {0}")]
    Token(String),
    /// Graph refused or failed.
    #[error("alerts_v2 answered {status} ({code})")]
    Graph {
        /// HTTP status (0: no answer).
        status: u16,
        /// Graph's error code.
        code: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefenderReport {
    /// Alerts read.
    pub alerts: usize,
    /// Teams message evidence items that named an outsider and our recipients.
    pub sightings: usize,
    /// Cases opened.
    pub cases: Vec<String>,
}

fn domain(address: &str) -> Option<String> {
    address.rsplit_once('@').map(|(_, d)| d.trim().to_ascii_lowercase()).filter(|d| !d.is_empty())
}

/// The findings of one piece of evidence: each recipient of a message from outside, in a chat.
fn evidence_findings(evidence: &AlertEvidence, ingest: &AuditIngest) -> Vec<Finding> {
    let from_outside =
        evidence.is_external == Some(true) || evidence.message_direction.as_deref().is_some_and(|d| d.eq_ignore_ascii_case("inbound"));
    let Some(chat) = evidence.thread_id.as_deref().filter(|t| t.starts_with("19:")) else { return Vec::new() };
    if !evidence.is_teams_message() || !from_outside || !ingest.rules().enabled {
        return Vec::new();
    }
    let sender = evidence.sender_from_address.as_deref().unwrap_or_default().to_ascii_lowercase();
    let sender_domain = domain(&sender);
    if sender_domain.as_deref().is_some_and(|d| ingest.rules().domain_allowed(d)) {
        return Vec::new();
    }
    let external = ExternalParties { foreign_flag: true, domains: sender_domain.into_iter().collect(), ..ExternalParties::default() };
    let recipients = if evidence.suspicious_recipients.is_empty() { &evidence.recipients } else { &evidence.suspicious_recipients };
    let mut seen = Vec::new();
    recipients
        .iter()
        .map(|r| r.trim().to_ascii_lowercase())
        .filter(|r| !r.is_empty() && *r != sender)
        .filter(|r| {
            let fresh = !seen.contains(r);
            seen.push(r.clone());
            fresh
        })
        .map(|recipient| Finding {
            chat_thread_id: chat.to_owned(),
            member: Member { upn: Some(recipient), display_name: None, user_object_id: None, organization_id: None, role: None },
            external: external.clone(),
        })
        .collect()
}

/// Polls Defender XDR alerts.
pub struct DefenderPoller {
    graph: Arc<GraphClient>,
    tokens: AppTokenProvider,
    store: Store,
    ingest: Arc<AuditIngest>,
    tenant_id: String,
    interval: Duration,
    metrics: Arc<Metrics>,
}

impl DefenderPoller {
    /// A poller every `interval`, reading with `tokens` (Graph app token).
    pub fn new(
        graph: Arc<GraphClient>,
        tokens: AppTokenProvider,
        store: Store,
        ingest: Arc<AuditIngest>,
        tenant_id: String,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { graph, tokens, store, ingest, tenant_id, interval, metrics }
    }

    fn sightings(&self, alert: &SecurityAlert) -> Vec<Sighting> {
        let observed_at = alert.created_date_time.as_deref().and_then(parse_creation_time);
        let title = alert.title.as_deref().unwrap_or("untitled alert");
        alert
            .evidence
            .iter()
            .flat_map(|evidence| evidence_findings(evidence, &self.ingest).into_iter().map(move |finding| (evidence, finding)))
            .map(|(evidence, finding)| {
                let when = observed_at.map(crate::cards::timestamp).unwrap_or_else(|| "an unknown time".into());
                let sender = evidence.sender_from_address.as_deref().unwrap_or("an unknown sender");
                let recipient = finding.member.upn.clone().unwrap_or_default();
                Sighting {
                    evidence_id: format!("{DEFENDER_ALERT_EVIDENCE}{}", alert.id),
                    evidence_detail: format!("Defender alert {} ({title})", alert.id),
                    observed_at,
                    tenant_id: alert.tenant_id.clone().unwrap_or_else(|| self.tenant_id.clone()),
                    reason: format!("Defender XDR alert at {when}: {title}; a Teams message from {sender} to {recipient}"),
                    finding,
                }
            })
            .collect()
    }

    /// One poll at `now` (Unix ms), under the poll lock; `None` when another replica polls.
    pub async fn poll_once(&self, now: i64) -> Result<Option<DefenderReport>, DefenderError> {
        match self.store.with_advisory_lock(DEFENDER_LOCK, self.poll_locked(now)).await? {
            Some(result) => result.map(Some),
            None => Ok(None),
        }
    }

    async fn poll_locked(&self, now: i64) -> Result<DefenderReport, DefenderError> {
        let since = self.store.checkpoint(SOURCE).await?.unwrap_or(now - FIRST_LOOKBACK_MS);
        let token = self.tokens.bearer().await.map_err(|err| DefenderError::Token(err.to_string()))?;
        let alerts = self
            .graph
            .security_alerts_since(&token, &rfc3339(since))
            .await
            .map_err(|f| DefenderError::Graph { status: f.status, code: f.code })?;
        let mut report = DefenderReport { alerts: alerts.len(), ..DefenderReport::default() };
        let mut newest = since;
        for alert in &alerts {
            if alert.tenant_id.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case(&self.tenant_id)) {
                self.metrics.inc("chatwarden_defender_alerts_total", &[("result", "other_tenant")]);
                continue;
            }
            let sightings = self.sightings(alert);
            self.metrics
                .inc("chatwarden_defender_alerts_total", &[("result", if sightings.is_empty() { "no_teams_evidence" } else { "sighted" })]);
            report.sightings += sightings.len();
            report.cases.extend(self.ingest.ingest_sightings(sightings).await?);
            if let Some(updated) = alert.last_update_date_time.as_deref().and_then(parse_creation_time) {
                newest = newest.max(updated);
            }
        }
        self.store.set_checkpoint(SOURCE, newest, now_ms()).await?;
        Ok(report)
    }

    /// Polls every interval until the task is stopped.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.poll_once(now_ms()).await {
                    Ok(Some(report)) if !report.cases.is_empty() => {
                        tracing::info!(alerts = report.alerts, cases = report.cases.len(), "Defender alerts opened cases")
                    }
                    Ok(_) => {}
                    Err(err) => tracing::error!(error = %err, "Defender alerts poll failed; it is tried again"),
                }
                tokio::time::sleep(self.interval).await;
            }
        })
    }
}
