//! Reminders and escalation of undecided cases: at `CHATWARDEN_REMINDER_MINUTES` before a
//! proposed case expires, its approvers are reminded in its thread (mentioned by name), and,
//! with `CHATWARDEN_ESCALATION_ADMINS`, the case is escalated to them in the same message with
//! its approval card; they may then decide it too. Each case is reminded once: the store's
//! compare-and-set on `reminded_at` lets one sweep of one replica win, before anything is sent.

use std::sync::Arc;
use std::time::Duration;

use crate::approvers::ApproverViews;
use crate::botframework::activity::{Attachment, OutgoingActivity};
use crate::botframework::connector::ConnectorClient;
use crate::botframework::service_url::HostAllowlist;
use crate::cards;
use crate::cases::{Case, now_ms};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Reminds (and escalates) proposed cases before they expire.
pub(crate) struct Reminders {
    store: Store,
    connector: Arc<ConnectorClient>,
    allowlist: HostAllowlist,
    approvers: Arc<ApproverViews>,
    before: Duration,
    escalate: bool,
    require_reason: bool,
    metrics: Arc<Metrics>,
}

/// What a reminder needs beside the store and the Connector.
pub(crate) struct ReminderSettings {
    /// How long before expiry.
    pub(crate) before: Duration,
    /// Whether escalation admins are configured.
    pub(crate) escalate: bool,
    /// Whether the escalation card's reason field is required.
    pub(crate) require_reason: bool,
}

impl Reminders {
    /// Reminders posted through `connector` to hosts on `allowlist`, naming `approvers`.
    pub(crate) fn new(
        store: Store,
        connector: Arc<ConnectorClient>,
        allowlist: HostAllowlist,
        approvers: Arc<ApproverViews>,
        settings: ReminderSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let ReminderSettings { before, escalate, require_reason } = settings;
        Self { store, connector, allowlist, approvers, before, escalate, require_reason, metrics }
    }

    /// Reminds every case that is due; returns how many this call reminded.
    pub(crate) async fn sweep(&self) -> Result<usize, StoreError> {
        let before_ms = i64::try_from(self.before.as_millis()).unwrap_or(i64::MAX);
        let mut reminded = 0;
        for case in self.store.reminders_due(before_ms, now_ms()).await? {
            let detail = if self.escalate {
                "no decision yet: the approvers were reminded and the case escalated to the escalation admins"
            } else {
                "no decision yet: the approvers were reminded"
            };
            if !self.store.mark_reminded(&case.id, self.escalate, detail, now_ms()).await? {
                continue;
            }
            reminded += 1;
            self.post(&case).await;
            self.metrics.inc("chatwarden_reminders_total", &[("kind", if self.escalate { "escalated" } else { "reminded" })]);
        }
        Ok(reminded)
    }

    async fn post(&self, case: &Case) {
        let Some(card) = &case.card else {
            tracing::warn!(case.id = %case.id, "no card to remind in: the reminder is recorded only");
            return;
        };
        let Ok(service_url) = self.allowlist.check(&card.service_url) else {
            tracing::error!(case.id = %case.id, "stored service URL is no longer on the allowlist; no reminder sent");
            return;
        };
        let mut people = self.approvers.approver_accounts(case, &service_url).await.unwrap_or_default();
        let mut text = format!(
            "Reminder: case {} ({}) has no decision yet and expires at {}.",
            case.id,
            case.kind.describe(),
            cards::timestamp(case.expires_at)
        );
        let mut message = OutgoingActivity::message(&card.conversation_id, String::new());
        if self.escalate {
            people.extend(self.approvers.escalation_accounts(&service_url).await);
            text.push_str(" Escalated: the escalation admins may decide it now, on the card below.");
            let approval = cards::approval_card(case, self.require_reason);
            message.attachments = vec![Attachment { content_type: "application/vnd.microsoft.card.adaptive".into(), content: approval }];
        }
        people.sort();
        people.dedup_by(|a, b| a.0 == b.0);
        let people: Vec<(String, String)> = people.into_iter().map(|(id, name)| (id, cards::plain(&name))).collect();
        message.text = Some(text);
        let message = message.mentioning(&people);
        if let Err(err) = self.connector.send_to_conversation(&service_url, &card.conversation_id, &message).await {
            tracing::error!(case.id = %case.id, error = %err, "could not post the reminder");
        }
    }

    /// Sweeps every `every` for as long as the process runs.
    pub(crate) fn spawn(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(err) = self.sweep().await {
                    tracing::error!(error = %err, "reminder sweep failed; it runs again");
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}
