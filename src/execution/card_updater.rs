//! The card updater: replaces a case's card for everyone as the case moves, and reports final
//! outcomes in the card's thread.

use std::sync::Arc;

use async_trait::async_trait;

use crate::botframework::activity::OutgoingActivity;
use crate::botframework::connector::ConnectorClient;
use crate::botframework::service_url::{AllowedServiceUrl, HostAllowlist};
use crate::cards;
use crate::cases::{Case, CaseState, CaseSummary, TargetTally};

use super::CaseObserver;

/// Updates a case's card for everyone and reports final outcomes in its thread.
pub(crate) struct CardUpdater {
    connector: Arc<ConnectorClient>,
    allowlist: HostAllowlist,
    require_reason: bool,
}

impl CardUpdater {
    /// An updater that only writes to service URLs on `allowlist`.
    pub fn new(connector: Arc<ConnectorClient>, allowlist: HostAllowlist, require_reason: bool) -> Self {
        Self { connector, allowlist, require_reason }
    }
}

/// The line posted in the card's thread when a case ends, from its tally of targets.
fn outcome_text(case: &Case, tally: &TargetTally) -> Option<String> {
    let (done, total) = (tally.done, tally.total());
    match case.state {
        CaseState::Done => Some(format!("Case {} is done: {done} of {total} target(s) completed.", case.id)),
        CaseState::Failed => {
            Some(format!("Case {} finished with failures: {done} of {total} target(s) completed. See `/status {}`.", case.id, case.id))
        }
        CaseState::Rejected => Some(format!("Case {} was rejected. Nothing was changed.", case.id)),
        CaseState::Expired => Some(format!("Case {} expired without a decision. Nothing was changed.", case.id)),
        _ => None,
    }
}

impl CardUpdater {
    /// Replaces the case's card with `content`; the allow-listed service URL, when it has a card.
    async fn replace_card(&self, case: &Case, content: serde_json::Value) -> Option<AllowedServiceUrl> {
        let card = case.card.as_ref()?;
        let Ok(service_url) = self.allowlist.check(&card.service_url) else {
            tracing::error!(case.id = %case.id, "stored service URL is no longer on the allowlist; card not updated");
            return None;
        };
        let update = OutgoingActivity::card_update(&card.activity_id, &card.conversation_id, content);
        if let Err(err) = self.connector.update_activity(&service_url, &card.conversation_id, &card.activity_id, &update).await {
            tracing::error!(case.id = %case.id, error = %err, "could not update the case card");
        }
        Some(service_url)
    }
}

impl CardUpdater {
    /// Replaces the case's card with `content` and posts the outcome in its thread when the case
    /// ended.
    async fn show(&self, case: &Case, tally: &TargetTally, content: serde_json::Value) {
        let Some(service_url) = self.replace_card(case, content).await else { return };
        let Some(card) = &case.card else { return };
        if let Some(text) = outcome_text(case, tally) {
            let message = OutgoingActivity::message(&card.conversation_id, text);
            if let Err(err) = self.connector.send_to_conversation(&service_url, &card.conversation_id, &message).await {
                tracing::error!(case.id = %case.id, error = %err, "could not post the case outcome");
            }
        }
    }
}

#[async_trait]
impl CaseObserver for CardUpdater {
    async fn case_changed(&self, case: &Case) {
        self.show(case, &TargetTally::of(&case.targets), cards::case_card(case, self.require_reason)).await;
    }

    async fn run_changed(&self, run: &CaseSummary) {
        self.show(&run.case, &run.tally, cards::summary_card(run)).await;
    }

    async fn progress(&self, run: &CaseSummary, waiting: usize) {
        if run.case.state == CaseState::Executing {
            self.replace_card(&run.case, cards::progress_card(run, waiting)).await;
        }
    }
}
