//! Alerts: audit records in (pushed or polled), stored once, run through the detection rules;
//! each finding, like each sighting of Graph's change notifications and Defender's alerts,
//! opens one case per (chat, user) and posts its approval card into the security channel as a
//! new thread. A later sighting of the same pair joins the open case's evidence.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;

use crate::approvers::ApproverViews;
use crate::audit::detection::{DetectionRules, Finding};
use crate::audit::record::AuditRecord;
use crate::botframework::activity::OutgoingActivity;
use crate::botframework::connector::{ConnectorClient, NewChannelThread};
use crate::botframework::service_url::{AllowedServiceUrl, HostAllowlist};
use crate::cards;
use crate::cases::{Actor, CardRef, Case, CaseKind, CaseSource, NewCase, NewTarget, now_ms};
use crate::metrics::Metrics;
use crate::store::{Created, Pair, Store, StoreError};

/// Most records stored per transaction: a whole content blob of the Management Activity API
/// usually fits. Each commit writes every index page it touched, so larger transactions write
/// far less per record (see BENCHMARKS.md, audit ingestion); this bound keeps one transaction's
/// memory and lock time small.
pub const INGEST_BATCH: usize = 5_000;

/// Settings key of the service URL learned from the security channel's traffic.
const LEARNED_SERVICE_URL: &str = "security_channel_service_url";

/// The Bot Connector endpoint of the security channel: `CHATWARDEN_SERVICE_URL`, else the one
/// learned from the channel's own (authenticated) traffic, kept in the database.
pub struct ChannelEndpoint {
    fixed: Option<String>,
    learned: RwLock<Option<String>>,
    learned_channel: RwLock<Option<String>>,
    store: Store,
    allowlist: HostAllowlist,
}

impl ChannelEndpoint {
    /// An endpoint that prefers `fixed` and only ever answers allowlisted URLs.
    pub fn new(fixed: Option<String>, store: Store, allowlist: HostAllowlist) -> Self {
        Self { fixed, learned: RwLock::new(None), learned_channel: RwLock::new(None), store, allowlist }
    }

    /// The channel id last seen in the security channel's traffic (used when none is configured,
    /// i.e. in local mode).
    pub async fn learned_channel(&self) -> Option<String> {
        self.learned_channel.read().await.clone()
    }

    /// Remembers the service URL (and channel) of an authenticated activity from the security channel.
    pub async fn learn(&self, url: &AllowedServiceUrl, channel: Option<&str>) {
        if let Some(channel) = channel {
            if self.learned_channel.read().await.as_deref() != Some(channel) {
                *self.learned_channel.write().await = Some(channel.to_owned());
            }
        }
        let text = url.as_url().to_string();
        if self.learned.read().await.as_deref() == Some(text.as_str()) {
            return;
        }
        *self.learned.write().await = Some(text.clone());
        if let Err(err) = self.store.set_setting(LEARNED_SERVICE_URL, &text, now_ms()).await {
            tracing::error!(error = %err, "could not store the security channel's service URL");
        }
    }

    /// The URL to post to, if one is known.
    pub async fn current(&self) -> Option<AllowedServiceUrl> {
        let candidate = match &self.fixed {
            Some(fixed) => Some(fixed.clone()),
            None => match self.learned.read().await.clone() {
                Some(url) => Some(url),
                None => self.store.setting(LEARNED_SERVICE_URL).await.ok().flatten(),
            },
        };
        candidate.and_then(|url| self.allowlist.check(&url).ok())
    }
}

/// Where and how alerts become cases.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Our tenant: records of any other tenant are refused (`None` in local mode).
    pub tenant_id: Option<String>,
    /// The security channel the cards go to.
    pub channel_id: Option<String>,
    /// How long an alert case waits for a decision.
    pub case_ttl: Duration,
    /// The detection rules.
    pub rules: DetectionRules,
    /// Whether the approval card's reason field is required.
    pub require_reason: bool,
}

/// What an ingestion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Records received.
    pub received: usize,
    /// Records new to the index.
    pub stored: usize,
    /// Cases opened.
    pub cases: Vec<String>,
}

/// One internal user seen in a suspicious chat by one source: what opens (or joins) the case
/// of the pair. Audit records, Graph change notifications and Defender alerts all become these.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// The evidence id: an audit record id, `graph-notification:<key>` or `defender-alert:<id>`.
    pub evidence_id: String,
    /// How the evidence is named in the history (`audit record X (MemberAdded)`, ...).
    pub evidence_detail: String,
    /// When the source saw it (Unix ms): a sighting from before the pair's last removal or
    /// rejection tells of what was already decided.
    pub observed_at: Option<i64>,
    /// Our tenant.
    pub tenant_id: String,
    /// What was seen, by which source and when: the case's reason, shown on the card.
    pub reason: String,
    /// The chat, the internal user and the outside parties.
    pub finding: Finding,
}

impl Sighting {
    fn from_record(record: &AuditRecord, finding: Finding) -> Self {
        Self {
            evidence_id: record.id.clone(),
            evidence_detail: format!("audit record {} ({})", record.id, record.operation.as_str()),
            observed_at: record.created_at,
            tenant_id: record.organization_id.clone(),
            reason: finding_reason(record, &finding),
            finding,
        }
    }
}

/// The requester of alert cases.
pub(crate) fn detection_actor() -> Actor {
    Actor { oid: "chatwarden-detection".into(), name: "chatwarden detection".into(), user_id: String::new() }
}

/// Turns audit records into alert cases and cards.
pub struct AuditIngest {
    store: Store,
    connector: Arc<ConnectorClient>,
    endpoint: Arc<ChannelEndpoint>,
    settings: AlertSettings,
    metrics: Arc<Metrics>,
    approvers: Option<Arc<ApproverViews>>,
}

fn finding_reason(record: &AuditRecord, finding: &Finding) -> String {
    let when = record.created_at.map(cards::timestamp).unwrap_or_else(|| "an unknown time".into());
    let by = record.user_id.as_deref().unwrap_or("someone");
    format!("Audit log: {} at {when} by {by}: chat with {}", record.operation.as_str(), finding.external.describe())
}

impl AuditIngest {
    /// Audit ingestion posting through `connector` to `endpoint`.
    pub fn new(
        store: Store,
        connector: Arc<ConnectorClient>,
        endpoint: Arc<ChannelEndpoint>,
        settings: AlertSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { store, connector, endpoint, settings, metrics, approvers: None }
    }

    /// The same ingestion posting user-specific approval cards (status for everyone, the
    /// buttons for the approvers) instead of universal ones.
    pub fn with_approvers(mut self, approvers: Arc<ApproverViews>) -> Self {
        self.approvers = Some(approvers);
        self
    }

    /// Our tenant, when records must belong to it.
    pub fn tenant_id(&self) -> Option<&str> {
        self.settings.tenant_id.as_deref()
    }

    /// Stores the records (once each) and opens one case per new (chat, user) finding.
    pub async fn ingest(&self, records: Vec<AuditRecord>, source: &'static str) -> Result<IngestReport, StoreError> {
        let mut report = IngestReport { received: records.len(), ..IngestReport::default() };
        let mut fresh = Vec::with_capacity(records.len());
        for chunk in records.chunks(INGEST_BATCH) {
            fresh.extend(self.store.insert_audit_batch(chunk, now_ms()).await?);
        }
        for (record, is_new) in records.iter().zip(fresh) {
            if is_new {
                report.stored += 1;
                self.metrics.inc("chatwarden_audit_records_total", &[("source", source), ("result", "stored")]);
            } else {
                self.metrics.inc("chatwarden_audit_records_total", &[("source", source), ("result", "duplicate")]);
            }
            // Findings are evaluated even for known records: the (chat, user) key keeps cases
            // unique, and a crash between storing and opening cannot lose an alert.
            for finding in self.settings.rules.evaluate(record) {
                if let Some(case) = self.open_alert_case(&Sighting::from_record(record, finding)).await? {
                    report.cases.push(case.id.clone());
                    self.post_card(&case).await;
                }
            }
        }
        Ok(report)
    }

    /// Opens (or joins) the case of each sighting and posts the card of each new one; the ids of
    /// the cases opened.
    pub async fn ingest_sightings(&self, sightings: Vec<Sighting>) -> Result<Vec<String>, StoreError> {
        let mut opened = Vec::new();
        for sighting in &sightings {
            if let Some(case) = self.open_alert_case(sighting).await? {
                opened.push(case.id.clone());
                self.post_card(&case).await;
            }
        }
        Ok(opened)
    }

    /// The detection rules.
    pub(crate) fn rules(&self) -> &DetectionRules {
        &self.settings.rules
    }

    /// Opens a case for a sighting, unless the pair already has one open (the evidence joins
    /// it), the evidence already backs a case about the pair, or the sighting is not newer than
    /// the pair's last removal or rejection.
    async fn open_alert_case(&self, sighting: &Sighting) -> Result<Option<Case>, StoreError> {
        let finding = &sighting.finding;
        let member = &finding.member;
        let user_ref = member.upn.clone().or_else(|| member.user_object_id.clone()).unwrap_or_default().to_ascii_lowercase();
        let user_oid = member.user_object_id.as_ref().map(|o| o.to_ascii_lowercase());
        let pair = Pair { chat: &finding.chat_thread_id, user_ref: &user_ref, user_oid: user_oid.as_deref() };
        if self.store.is_pair_evidence(&pair, &sighting.evidence_id).await? {
            self.metrics.inc("chatwarden_alert_cases_total", &[("result", "duplicate")]);
            return Ok(None);
        }
        if let Some(open) = self.store.open_alert_case(&pair).await? {
            self.join_open_case(&open, sighting).await?;
            return Ok(None);
        }
        let closed_at = self.store.pair_closed_at(&pair).await?;
        if let (Some(closed_at), Some(created_at)) = (closed_at, sighting.observed_at) {
            if created_at <= closed_at {
                // The record tells of what was already removed or rejected (the audit log lags).
                self.metrics.inc("chatwarden_alert_cases_total", &[("result", "already_closed")]);
                return Ok(None);
            }
        }
        let key = pair.alert_key();
        let new_case = NewCase {
            kind: CaseKind::RemoveChat,
            source: CaseSource::Alert,
            tenant_id: sighting.tenant_id.clone(),
            requester: detection_actor(),
            reason: Some(sighting.reason.clone()),
            targets: vec![NewTarget {
                thread_id: Some(finding.chat_thread_id.clone()),
                user_ref,
                user_oid: user_oid.clone(),
                user_tenant_id: sighting.tenant_id.clone(),
                display_name: member.display_name.clone(),
            }],
            evidence: vec![sighting.evidence_id.clone()],
            no_evidence: false,
            ttl_ms: self.settings.case_ttl.as_millis() as i64,
        };
        match self.store.create_case(&new_case, Some(&key), now_ms()).await? {
            Created::New(case) => {
                tracing::info!(case.id = %case.id, "alert case opened");
                self.metrics.inc("chatwarden_alert_cases_total", &[("result", "opened")]);
                Ok(Some(*case))
            }
            Created::Duplicate(Some(open)) => {
                // Another delivery (or replica) opened it a moment ago.
                self.join_open_case(&open, sighting).await?;
                Ok(None)
            }
            Created::Duplicate(None) => {
                self.metrics.inc("chatwarden_alert_cases_total", &[("result", "duplicate")]);
                Ok(None)
            }
        }
    }

    async fn join_open_case(&self, case_id: &str, sighting: &Sighting) -> Result<(), StoreError> {
        let added = self.store.add_evidence(case_id, &sighting.evidence_id, &sighting.evidence_detail, now_ms()).await?;
        let result = if added { "evidence_added" } else { "duplicate" };
        self.metrics.inc("chatwarden_alert_cases_total", &[("result", result)]);
        Ok(())
    }

    async fn post_card(&self, case: &Case) {
        let channel = match &self.settings.channel_id {
            Some(channel) => Some(channel.clone()),
            None => self.endpoint.learned_channel().await,
        };
        let (Some(service_url), Some(channel)) = (self.endpoint.current().await, channel.as_deref()) else {
            tracing::warn!(case.id = %case.id, "no service URL or security channel known yet: the alert card could not be posted");
            let _ = self
                .store
                .record_event(Some(&case.id), None, "card_failed", Some("no security channel endpoint known yet"), now_ms())
                .await;
            return;
        };
        let tenant = self.settings.tenant_id.clone().unwrap_or_else(|| case.tenant_id.clone());
        let card = match &self.approvers {
            Some(approvers) => approvers.posted_card(case, &service_url).await,
            None => cards::approval_card(case, self.settings.require_reason),
        };
        let activity = OutgoingActivity::card_message(card);
        match self.connector.create_channel_thread(&service_url, &NewChannelThread::new(channel, &tenant, &activity)).await {
            Ok(created) => match (created.id, created.activity_id) {
                (Some(conversation_id), Some(activity_id)) => {
                    let card = CardRef { service_url: service_url.as_url().to_string(), conversation_id, activity_id };
                    if let Err(err) = self.store.set_card(&case.id, &card, now_ms()).await {
                        tracing::error!(case.id = %case.id, error = %err, "could not store where the alert card is");
                    }
                }
                _ => tracing::warn!(case.id = %case.id, "the Connector returned no ids for the alert card; it cannot be updated"),
            },
            Err(err) => {
                tracing::error!(case.id = %case.id, error = %err, "could not post the alert card");
                let _ = self.store.record_event(Some(&case.id), None, "card_failed", Some("could not post the alert card"), now_ms()).await;
            }
        }
    }
}
