//! The Teams side of cases: who may ask, commands that open cases and post approval cards, card
//! actions that become decisions, and card updates as cases move.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::botframework::activity::{Activity, OutgoingActivity};
use crate::botframework::connector::ConnectorClient;
use crate::botframework::inbound::VerifiedActivity;
use crate::botframework::service_url::HostAllowlist;
use crate::cards;
use crate::cases::{Actor, CardRef, Case, CaseKind, CaseSource, CaseState, Decision, NewCase, NewTarget, Policy, Refusal, now_ms};
use crate::commands::{Command, UserRef};
use crate::execution::{CaseObserver, CaseRunner};
use crate::store::{Created, DecisionOutcome, Store, StoreError};

/// The polite refusal for anyone outside the security channel or the admin list. It says
/// nothing about cases.
pub const REFUSAL_TEXT: &str = "Sorry, chatwarden only takes requests from its authorised admins in the security channel.";

/// Where commands and card actions are accepted (`None` = any, local mode only).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Our tenant.
    pub tenant_id: Option<String>,
    /// The security team.
    pub team_id: Option<String>,
    /// The security channel.
    pub channel_id: Option<String>,
}

/// Why a person was refused before any case was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The activity has no Entra object id for its sender.
    NoIdentity,
    /// Another tenant.
    WrongTenant,
    /// Not the security team's channel (or a personal chat).
    OutsideSecurityChannel,
    /// Not in `CHATWARDEN_ADMINS`.
    NotAdmin,
}

impl Denied {
    /// Stable code for the decision log.
    pub fn code(self) -> &'static str {
        match self {
            Denied::NoIdentity => "no_identity",
            Denied::WrongTenant => "wrong_tenant",
            Denied::OutsideSecurityChannel => "outside_security_channel",
            Denied::NotAdmin => "not_admin",
        }
    }
}

/// Settings of the desk.
#[derive(Debug, Clone)]
pub struct DeskSettings {
    /// Where requests are accepted.
    pub scope: Scope,
    /// Who may decide.
    pub policy: Policy,
    /// How long a proposal waits for a decision.
    pub case_ttl: Duration,
}

/// A button press on a case card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardAction {
    /// The case.
    pub case_id: String,
    /// Approve or reject.
    pub decision: Decision,
}

impl CardAction {
    /// Reads the `data` of one of our buttons (`{"chatwarden":1,"caseId":..,"action":..}`).
    pub fn from_data(data: &Value) -> Option<Self> {
        data.get(cards::ACTION_MARKER)?;
        let case_id = data.get("caseId")?.as_str()?;
        if case_id.is_empty() || case_id.len() > 32 || !case_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        let decision = match data.get("action")?.as_str()? {
            "approve" => Decision::Approve,
            "reject" => Decision::Reject,
            _ => return None,
        };
        Some(Self { case_id: case_id.to_ascii_uppercase(), decision })
    }

    /// Reads an `adaptiveCard/action` invoke value (`{"action":{"type":"Action.Execute","verb":..,"data":..}}`).
    pub fn from_invoke(value: &Value) -> Option<Self> {
        let action = value.get("action")?;
        if action.get("type").and_then(Value::as_str) != Some("Action.Execute") {
            return None;
        }
        let action_data = Self::from_data(action.get("data")?)?;
        match action.get("verb").and_then(Value::as_str) {
            Some("approve") if action_data.decision == Decision::Approve => Some(action_data),
            Some("reject") if action_data.decision == Decision::Reject => Some(action_data),
            _ => None,
        }
    }
}

/// What a card action answers to the person who pressed it.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionReply {
    /// A card that replaces theirs.
    Card(Value),
    /// A short message.
    Message(String),
}

impl ActionReply {
    /// The `adaptiveCard/action` invoke response body for this reply.
    pub fn invoke_body(&self) -> Value {
        match self {
            ActionReply::Card(card) => json!({"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive", "value": card}),
            ActionReply::Message(text) => json!({"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": text}),
        }
    }
}

/// Updates a case's card for everyone and reports final outcomes in its thread.
pub struct CardUpdater {
    connector: Arc<ConnectorClient>,
    allowlist: HostAllowlist,
}

impl CardUpdater {
    /// An updater that only writes to service URLs on `allowlist`.
    pub fn new(connector: Arc<ConnectorClient>, allowlist: HostAllowlist) -> Self {
        Self { connector, allowlist }
    }
}

fn outcome_text(case: &Case) -> Option<String> {
    let done = case.targets.iter().filter(|t| t.status == crate::cases::TargetStatus::Done).count();
    let total = case.targets.len();
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

#[async_trait]
impl CaseObserver for CardUpdater {
    async fn case_changed(&self, case: &Case) {
        let Some(card) = &case.card else { return };
        let Ok(service_url) = self.allowlist.check(&card.service_url) else {
            tracing::error!(case.id = %case.id, "stored service URL is no longer on the allowlist; card not updated");
            return;
        };
        let update = OutgoingActivity::card_update(&card.activity_id, &card.conversation_id, cards::case_card(case));
        if let Err(err) = self.connector.update_activity(&service_url, &card.conversation_id, &card.activity_id, &update).await {
            tracing::error!(case.id = %case.id, error = %err, "could not update the case card");
        }
        if let Some(text) = outcome_text(case) {
            let message = OutgoingActivity::message(&card.conversation_id, text);
            if let Err(err) = self.connector.send_to_conversation(&service_url, &card.conversation_id, &message).await {
                tracing::error!(case.id = %case.id, error = %err, "could not post the case outcome");
            }
        }
    }
}

/// Turns commands and card actions into cases and decisions.
pub struct Desk {
    store: Store,
    connector: Arc<ConnectorClient>,
    runner: Arc<CaseRunner>,
    updater: Arc<CardUpdater>,
    settings: DeskSettings,
}

/// The key under which an activity is deduplicated: conversation and activity id.
pub fn activity_key(activity: &Activity) -> Option<String> {
    let conversation = activity.conversation.as_ref()?;
    let id = activity.id.as_deref().filter(|id| !id.is_empty())?;
    Some(format!("{}|{id}", conversation.id))
}

fn channel_of(activity: &Activity) -> Option<&str> {
    let data = activity.channel_data.as_ref();
    data.and_then(|d| d.channel.as_ref()).map(|c| c.id.as_str()).filter(|c| !c.is_empty()).or_else(|| {
        let conversation = activity.conversation.as_ref()?;
        (conversation.conversation_type.as_deref() == Some("channel")).then(|| conversation.id.split(';').next().unwrap_or_default())
    })
}

impl Desk {
    /// A desk over `store` that posts through `connector` and runs approved cases with `runner`.
    pub fn new(
        store: Store,
        connector: Arc<ConnectorClient>,
        runner: Arc<CaseRunner>,
        updater: Arc<CardUpdater>,
        settings: DeskSettings,
    ) -> Self {
        Self { store, connector, runner, updater, settings }
    }

    /// Checks tenant, team, channel and admin list; returns who is acting.
    pub fn authorise(&self, activity: &Activity) -> Result<Actor, Denied> {
        let from = activity.from.as_ref().ok_or(Denied::NoIdentity)?;
        let oid = from.aad_object_id.as_deref().filter(|o| !o.is_empty()).ok_or(Denied::NoIdentity)?;
        let scope = &self.settings.scope;
        if let Some(tenant) = &scope.tenant_id {
            if !activity.tenant_id().is_some_and(|t| t.eq_ignore_ascii_case(tenant)) {
                return Err(Denied::WrongTenant);
            }
        }
        if let Some(channel) = &scope.channel_id {
            if channel_of(activity) != Some(channel.as_str()) {
                return Err(Denied::OutsideSecurityChannel);
            }
        }
        if let Some(team) = &scope.team_id {
            let sent_team = activity.channel_data.as_ref().and_then(|d| d.team.as_ref()).map(|t| t.id.as_str());
            if sent_team.is_some_and(|t| t != team) {
                return Err(Denied::OutsideSecurityChannel);
            }
        }
        if !self.settings.policy.is_admin(oid) {
            return Err(Denied::NotAdmin);
        }
        Ok(Actor { oid: oid.to_ascii_lowercase(), name: from.name.clone().unwrap_or_default(), user_id: from.id.clone() })
    }

    /// Records a refusal (no case is named) and returns the polite text.
    pub async fn refuse(&self, activity: &Activity, denied: Denied) -> &'static str {
        let from = activity.from.as_ref();
        let actor = Actor {
            oid: from.and_then(|f| f.aad_object_id.clone()).unwrap_or_default(),
            name: from.and_then(|f| f.name.clone()).unwrap_or_default(),
            user_id: from.map(|f| f.id.clone()).unwrap_or_default(),
        };
        tracing::warn!(reason = denied.code(), "refused a request");
        if let Err(err) = self.store.record_event(None, Some(&actor), "refused", Some(denied.code()), now_ms()).await {
            tracing::error!(error = %err, "could not record a refusal");
        }
        REFUSAL_TEXT
    }

    fn tenant_for(&self, activity: &Activity) -> String {
        self.settings.scope.tenant_id.clone().or_else(|| activity.tenant_id().map(str::to_owned)).unwrap_or_default()
    }

    /// Handles a command from an authorised admin; replies in the thread.
    pub async fn on_command(&self, incoming: &VerifiedActivity, actor: Actor, command: Command) -> Result<(), StoreError> {
        let activity = incoming.activity();
        let tenant = self.tenant_for(activity);
        let new_case = |kind, reason: Option<String>, targets: Vec<NewTarget>| NewCase {
            kind,
            source: CaseSource::Command,
            tenant_id: tenant.clone(),
            requester: actor.clone(),
            reason,
            targets,
            evidence: Vec::new(),
            no_evidence: true,
            ttl_ms: self.settings.case_ttl.as_millis() as i64,
        };
        let target = |thread: Option<String>, user: &UserRef| NewTarget {
            thread_id: thread,
            user_ref: user.to_string(),
            user_oid: match user {
                UserRef::ObjectId(oid) => Some(oid.clone()),
                UserRef::Upn(_) => None,
            },
            user_tenant_id: tenant.clone(),
            display_name: None,
        };
        match command {
            Command::RemoveChat { thread, user, reason } => {
                let case = new_case(CaseKind::RemoveChat, reason, vec![target(Some(thread.to_string()), &user)]);
                self.open_case(incoming, case).await
            }
            Command::RevokeSessions { user, reason } => {
                let case = new_case(CaseKind::RevokeSessions, reason, vec![target(None, &user)]);
                self.open_case(incoming, case).await
            }
            Command::RemoveExternal { party, .. } => {
                self.reply_text(
                    incoming,
                    format!("No chat with `{}` is in the audit index: nothing to remove.", cards::plain(&party.to_string())),
                )
                .await;
                Ok(())
            }
            Command::Status { case_id } => {
                match self.store.case(&case_id).await? {
                    Some(case) => {
                        let events = self.store.events(&case.id).await?;
                        self.reply_card(incoming, cards::status_card(&case, &events)).await;
                    }
                    None => self.reply_text(incoming, format!("There is no case `{}`.", cards::plain(&case_id))).await,
                }
                Ok(())
            }
            Command::History { limit } => {
                let cases = self.store.history(limit).await?;
                self.reply_card(incoming, cards::history_card(&cases)).await;
                Ok(())
            }
            Command::Help => {
                self.reply_text(incoming, crate::commands::help_text()).await;
                Ok(())
            }
        }
    }

    async fn open_case(&self, incoming: &VerifiedActivity, new_case: NewCase) -> Result<(), StoreError> {
        let activity = incoming.activity();
        let key = activity_key(activity);
        let case = match self.store.create_case(&new_case, key.as_deref(), now_ms()).await? {
            Created::New(case) => case,
            Created::Duplicate(case_id) => {
                tracing::info!(case.id = ?case_id, "redelivered command ignored");
                return Ok(());
            }
        };
        tracing::info!(case.id = %case.id, kind = %case.kind, "case opened");
        let (Some(conversation), Some(activity_id)) = (activity.conversation.as_ref(), activity.id.as_deref()) else { return Ok(()) };
        let reply = OutgoingActivity::reply_card(activity, cards::approval_card(&case));
        match self.connector.reply_to_activity(incoming.service_url(), &conversation.id, activity_id, &reply).await {
            Ok(posted) => match posted.id {
                Some(card_id) => {
                    let card = CardRef {
                        service_url: incoming.service_url().as_url().to_string(),
                        conversation_id: conversation.id.clone(),
                        activity_id: card_id,
                    };
                    self.store.set_card(&case.id, &card, now_ms()).await?;
                }
                None => tracing::warn!(case.id = %case.id, "the Connector returned no id for the approval card; it cannot be updated"),
            },
            Err(err) => {
                tracing::error!(case.id = %case.id, error = %err, "could not post the approval card");
                self.store.record_event(Some(&case.id), None, "card_failed", Some("could not post the approval card"), now_ms()).await?;
            }
        }
        Ok(())
    }

    /// Applies a card action and says what the presser sees. Runs approved cases in the background.
    pub async fn on_card_action(&self, incoming: &VerifiedActivity, action: CardAction) -> Result<ActionReply, StoreError> {
        let activity = incoming.activity();
        let actor = match self.authorise(activity) {
            Ok(actor) => actor,
            Err(denied) => return Ok(ActionReply::Message(self.refuse(activity, denied).await.to_owned())),
        };
        let key = activity_key(activity);
        let outcome = self.store.decide(&action.case_id, &actor, action.decision, key.as_deref(), &self.settings.policy, now_ms()).await?;
        Ok(match outcome {
            DecisionOutcome::Applied(case) => {
                tracing::info!(case.id = %case.id, state = %case.state, "case decided");
                if case.state == CaseState::Approved {
                    let runner = Arc::clone(&self.runner);
                    let id = case.id.clone();
                    tokio::spawn(async move {
                        if let Err(err) = runner.run(&id).await {
                            tracing::error!(case.id = %id, error = %err, "could not run the case; the sweeper will retry");
                        }
                    });
                } else {
                    let updater = Arc::clone(&self.updater);
                    let decided = (*case).clone();
                    tokio::spawn(async move { updater.case_changed(&decided).await });
                }
                ActionReply::Card(cards::case_card(&case))
            }
            DecisionOutcome::Duplicate(Some(case)) => ActionReply::Card(cards::case_card(&case)),
            DecisionOutcome::Duplicate(None) | DecisionOutcome::Refused(Refusal::NotFound, _) => {
                ActionReply::Message("This case does not exist.".into())
            }
            DecisionOutcome::Refused(Refusal::NotAuthorised, _) => ActionReply::Message(REFUSAL_TEXT.into()),
            DecisionOutcome::Refused(Refusal::OwnCase, _) => {
                ActionReply::Message("You requested this case: another admin must approve it.".into())
            }
            DecisionOutcome::Refused(Refusal::Expired, case) | DecisionOutcome::Refused(Refusal::AlreadyDecided(_), case) => match case {
                Some(case) => {
                    if case.state == CaseState::Expired {
                        let updater = Arc::clone(&self.updater);
                        let expired = (*case).clone();
                        tokio::spawn(async move { updater.case_changed(&expired).await });
                    }
                    ActionReply::Card(cards::case_card(&case))
                }
                None => ActionReply::Message("This case does not exist.".into()),
            },
        })
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

    async fn send_reply(&self, incoming: &VerifiedActivity, reply: OutgoingActivity) {
        let activity = incoming.activity();
        let (Some(conversation), Some(activity_id)) = (activity.conversation.as_ref(), activity.id.as_deref()) else {
            tracing::warn!("activity without conversation or id; no reply sent");
            return;
        };
        if let Err(err) = self.connector.reply_to_activity(incoming.service_url(), &conversation.id, activity_id, &reply).await {
            tracing::error!(error = %err, "could not send the reply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_data_is_read_strictly() {
        let data = cards::decision_data("CW-ABCDE", Decision::Approve);
        assert_eq!(CardAction::from_data(&data), Some(CardAction { case_id: "CW-ABCDE".into(), decision: Decision::Approve }));
        assert_eq!(CardAction::from_data(&json!({"caseId": "CW-ABCDE", "action": "approve"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": "CW-ABCDE", "action": "delete"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": "'; DROP TABLE cases", "action": "approve"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": 42, "action": "approve"})), None);
    }

    #[test]
    fn invoke_verbs_must_match_their_data() {
        let approve =
            json!({"action": {"type": "Action.Execute", "verb": "approve", "data": cards::decision_data("CW-1", Decision::Approve)}});
        assert_eq!(CardAction::from_invoke(&approve).map(|a| a.decision), Some(Decision::Approve));
        let mixed =
            json!({"action": {"type": "Action.Execute", "verb": "reject", "data": cards::decision_data("CW-1", Decision::Approve)}});
        assert_eq!(CardAction::from_invoke(&mixed), None);
        let submit =
            json!({"action": {"type": "Action.Submit", "verb": "approve", "data": cards::decision_data("CW-1", Decision::Approve)}});
        assert_eq!(CardAction::from_invoke(&submit), None);
    }
}
