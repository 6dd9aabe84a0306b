//! The approval workflow, the Teams side of cases: who may ask (`authorise`), commands that
//! open cases and post approval cards (`commands`), card actions that become decisions
//! (`card_actions`) and the sign-ins an approval may need first (`sign_in`).

mod authorise;
mod card_actions;
mod commands;
mod sign_in;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::alerts::ChannelEndpoint;
use crate::approvers::ApproverViews;
use crate::botframework::activity::OutgoingActivity;
use crate::botframework::connector::ThreadReplies;
use crate::botframework::inbound::VerifiedActivity;
use crate::cases::Policy;
use crate::execution::{CaseObserver, CaseRunner};
use crate::graph::Directory;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::Store;
use crate::tokens::ApproverTokens;

pub use authorise::REFUSAL_TEXT;
pub(crate) use authorise::Scope;
pub use card_actions::CardAction;
pub(crate) use card_actions::{ActionPath, ActionReply};
pub use sign_in::SignInReply;

/// Settings of the case workflow.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// Where requests are accepted.
    pub scope: Scope,
    /// Who may decide.
    pub policy: Policy,
    /// How long a proposal waits for a decision.
    pub case_ttl: Duration,
    /// The bot's app id (for sign-in state); `None` in local mode.
    pub app_id: Option<String>,
    /// Most users one session-revocation case may cover.
    pub revoke_ceiling: usize,
    /// Refusals answered per sender per minute (0 = no limit).
    pub refusals_per_minute: u32,
    /// Approve and Reject need a written reason.
    pub require_reason: bool,
}

/// Turns commands and card actions into cases and decisions.
pub struct CaseWorkflow {
    store: Store,
    replies: Arc<dyn ThreadReplies>,
    runner: Arc<CaseRunner>,
    updater: Arc<dyn CaseObserver>,
    tokens: Arc<dyn ApproverTokens>,
    directory: Arc<dyn Directory>,
    approvers: Arc<ApproverViews>,
    endpoint: Arc<ChannelEndpoint>,
    settings: WorkflowSettings,
    metrics: Arc<Metrics>,
    refusals: RateLimiter,
    /// Senders over the refusal limit whose suppression was already recorded, for a minute.
    quiet_senders: moka::sync::Cache<String, ()>,
}

/// The services the case workflow works with.
pub struct WorkflowServices {
    /// The database.
    pub store: Store,
    /// Replies in a thread (the Bot Connector).
    pub replies: Arc<dyn ThreadReplies>,
    /// Runs approved cases.
    pub runner: Arc<CaseRunner>,
    /// Updates case cards as they move (`CardUpdater`).
    pub updater: Arc<dyn CaseObserver>,
    /// Admins' delegated tokens.
    pub tokens: Arc<dyn ApproverTokens>,
    /// User and group look-ups (Graph).
    pub directory: Arc<dyn Directory>,
    /// The security channel's endpoint.
    pub endpoint: Arc<ChannelEndpoint>,
    /// The card each viewer of a case sees.
    pub approvers: Arc<ApproverViews>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// How long a command may take before the typing indicator shows (what people notice as a wait).
const TYPING_AFTER: Duration = Duration::from_millis(500);
/// How often the typing indicator is renewed while a command is still worked on (Teams shows
/// each one for a few seconds).
const TYPING_EVERY: Duration = Duration::from_secs(2);

impl CaseWorkflow {
    /// A case workflow over the given services.
    pub fn new(services: WorkflowServices, settings: WorkflowSettings) -> Self {
        let WorkflowServices { store, replies, runner, updater, tokens, directory, endpoint, approvers, metrics } = services;
        let refusals = RateLimiter::new(settings.refusals_per_minute);
        let quiet_senders = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build();
        Self { store, replies, runner, updater, tokens, directory, endpoint, approvers, settings, metrics, refusals, quiet_senders }
    }

    /// Replies with text in the activity's thread.
    pub async fn reply_text(&self, incoming: &VerifiedActivity, text: String) {
        let reply = OutgoingActivity::reply_text(incoming.activity(), text);
        self.send_reply(incoming, reply).await;
    }

    async fn reply_card(&self, incoming: &VerifiedActivity, card: Value) {
        let reply = OutgoingActivity::reply_card(incoming.activity(), card);
        self.send_reply(incoming, reply).await;
    }

    /// Runs `work` (a command) and, when it takes longer than `TYPING_AFTER`, shows Teams' typing
    /// indicator in the thread, renewed every `TYPING_EVERY` until the work is done. Fast
    /// commands send none, and none follows the answer.
    pub async fn with_typing<T>(&self, incoming: &VerifiedActivity, work: impl std::future::Future<Output = T>) -> T {
        let (done, work_done) = tokio::sync::oneshot::channel();
        let work = async {
            let output = work.await;
            let _ = done.send(());
            output
        };
        tokio::join!(work, self.keep_typing(incoming, work_done)).0
    }

    /// The typing indicator until `work_done`. It runs beside the work, not in turns with it: a
    /// slow Connector delays the next indicator, never the work (which may hold a database write).
    async fn keep_typing(&self, incoming: &VerifiedActivity, mut work_done: tokio::sync::oneshot::Receiver<()>) {
        let mut next = tokio::time::Instant::now() + TYPING_AFTER;
        loop {
            tokio::select! {
                biased;
                _ = &mut work_done => return,
                () = tokio::time::sleep_until(next) => {
                    self.send_reply(incoming, OutgoingActivity::typing(incoming.activity())).await;
                    next = tokio::time::Instant::now() + TYPING_EVERY;
                }
            }
        }
    }

    /// Answers the sender of `incoming` so that only they see it: a plain reply in a personal
    /// chat; in a channel or group chat a targeted message, or a message in their one-to-one chat
    /// with the bot when Teams refuses that. When neither reaches them, the answer goes to the
    /// thread so they are not left without one. Counted by route in
    /// `chatwarden_private_answers_total`.
    pub async fn answer_privately(&self, incoming: &VerifiedActivity, reply: OutgoingActivity) {
        let activity = incoming.activity();
        if !crate::botframework::private::is_shared(activity) {
            self.send_reply(incoming, reply).await;
            return;
        }
        let route = match self.replies.send_privately(incoming.service_url(), activity, &reply).await {
            Ok(route) => route.as_str(),
            Err(err) => {
                tracing::warn!(error = %err, "could not answer privately; answering in the thread");
                self.send_reply(incoming, reply).await;
                "thread"
            }
        };
        self.metrics.inc("chatwarden_private_answers_total", &[("via", route)]);
    }

    /// [`Self::answer_privately`] with a text.
    pub async fn answer_text_privately(&self, incoming: &VerifiedActivity, text: String) {
        self.answer_privately(incoming, OutgoingActivity::reply_text(incoming.activity(), text)).await;
    }

    async fn send_reply(&self, incoming: &VerifiedActivity, reply: OutgoingActivity) {
        let activity = incoming.activity();
        let (Some(conversation), Some(activity_id)) = (activity.conversation.as_ref(), activity.id.as_deref()) else {
            tracing::warn!("activity without conversation or id; no reply sent");
            return;
        };
        if let Err(err) = self.replies.reply_to_activity(incoming.service_url(), &conversation.id, activity_id, &reply).await {
            tracing::error!(error = %err, "could not send the reply");
        }
    }
}
