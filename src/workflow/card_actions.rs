//! Card actions: a button press on a case card (an `adaptiveCard/action` invoke, or an
//! Action.Submit message) read into a typed [`CardAction`], checked, and turned into a decision
//! or the sign-in follow-up.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use crate::botframework::inbound::VerifiedActivity;
use crate::cards;
use crate::cases::{
    Actor, CaseId, CaseKind, CaseSource, CaseState, Decision, DecisionNote, MAX_DECISION_REASON, NewCase, NewTarget, Refusal, now_ms,
};
use crate::store::{DecisionOutcome, StoreError};

use super::CaseWorkflow;
use super::authorise::{Denied, REFUSAL_TEXT, activity_key};
use super::sign_in::{NOT_THE_APPROVER_TEXT, TokenCheck};
use crate::botframework::invoke::ActionResponse;
use crate::botframework::invoke_request::{ExecuteAction, SignInProof};

/// What a button of one of our cards asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardIntent {
    /// Approve or reject a proposed case.
    Decide(Decision),
    /// Open a follow-up case revoking the sign-in sessions of a finished removal's users.
    RevokeFollowUp,
    /// Teams asks for the viewer's own view of the card (Universal Actions `refresh`).
    Refresh,
}

/// A button press on a case card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardAction {
    /// The case.
    pub case_id: CaseId,
    /// What the button asks for.
    pub intent: CardIntent,
    /// The reason typed into the card, as sent (checked by the workflow).
    pub reason: Option<String>,
}

impl CardAction {
    /// Reads the `data` of one of our buttons (`{"chatwarden":1,"caseId":..,"action":..}`).
    pub fn from_data(data: &Value) -> Option<Self> {
        data.get(cards::ACTION_MARKER)?;
        let case_id = CaseId::parse(data.get("caseId")?.as_str()?).ok()?;
        let intent = match data.get("action")?.as_str()? {
            "approve" => CardIntent::Decide(Decision::Approve),
            "reject" => CardIntent::Decide(Decision::Reject),
            "revoke_sessions" => CardIntent::RevokeFollowUp,
            "refresh" => CardIntent::Refresh,
            _ => return None,
        };
        let reason = data.get(cards::REASON_INPUT).and_then(Value::as_str).map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
        Some(Self { case_id, intent, reason })
    }

    /// Reads an `Action.Execute` of one of our buttons: its data, and a verb that agrees with it.
    pub fn from_execute(action: &ExecuteAction) -> Option<Self> {
        let parsed = Self::from_data(&action.data)?;
        let expected = match parsed.intent {
            CardIntent::Decide(Decision::Approve) => "approve",
            CardIntent::Decide(Decision::Reject) => "reject",
            CardIntent::RevokeFollowUp => "revoke_sessions",
            CardIntent::Refresh => "refresh",
        };
        (action.verb == expected).then_some(parsed)
    }
}

/// The reason a decision carries: `Err` names what is wrong with it (missing when required,
/// too long), for the card to show.
fn checked_reason(reason: Option<&str>, required: bool) -> Result<Option<String>, &'static str> {
    match reason {
        Some(reason) if reason.chars().count() > MAX_DECISION_REASON => Err("The reason is longer than 500 characters."),
        Some(reason) => Ok(Some(reason.to_owned())),
        None if required => Err("A reason is required for every decision."),
        None => Ok(None),
    }
}

/// How a card action reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionPath {
    /// `adaptiveCard/action` invoke (Action.Execute): the answer goes in the HTTP response.
    Invoke,
    /// Action.Submit message: answers are posted in the thread.
    Submit,
}

/// What a card action answers to the person who pressed it.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionReply {
    /// A card that replaces theirs.
    Card(Value),
    /// A short message.
    Message(String),
    /// They must sign in first: an OAuth card (with the SSO exchange resource when available).
    LoginRequest(Value),
    /// Their SSO token could not be exchanged (consent or sign-in needed).
    PreconditionFailed(String),
    /// The magic code they entered was wrong.
    IncorrectAuthCode,
    /// Nothing is answered (a sender over the refusal limit, on the Submit path).
    Silent,
}

impl ActionReply {
    /// The `adaptiveCard/action` invoke response body for this reply.
    pub(crate) fn invoke_body(&self) -> Value {
        let response = match self {
            ActionReply::Card(card) => ActionResponse::Card(card),
            ActionReply::Message(text) => ActionResponse::Message(text),
            ActionReply::LoginRequest(oauth) => ActionResponse::LoginRequest(oauth),
            ActionReply::PreconditionFailed(text) => ActionResponse::PreconditionFailed(text),
            ActionReply::IncorrectAuthCode => ActionResponse::InvalidAuthCode,
            // In the invoke's own response the refusal costs no outbound call.
            ActionReply::Silent => ActionResponse::Message(REFUSAL_TEXT),
        };
        response.body()
    }
}

impl CaseWorkflow {
    /// Applies a card action and says what the presser sees. Approvals need the approver's
    /// delegated token first; approved cases run in the background.
    pub async fn on_card_action(
        &self,
        incoming: &VerifiedActivity,
        action: CardAction,
        proof: SignInProof,
        path: ActionPath,
    ) -> Result<ActionReply, StoreError> {
        let activity = incoming.activity();
        if action.intent == CardIntent::Refresh {
            return self.refresh_view(incoming, &action.case_id).await;
        }
        let actor = match self.authorise_decider(activity) {
            Ok(actor) => actor,
            // The presser sees the refusal in the invoke's own response (no message is sent), or,
            // on the Submit path, nothing once they are over the refusal limit.
            Err(denied) => {
                return Ok(match self.refuse(activity, denied).await {
                    Some(text) => ActionReply::Message(text.to_owned()),
                    None if path == ActionPath::Invoke => ActionReply::Message(REFUSAL_TEXT.to_owned()),
                    None => ActionReply::Silent,
                });
            }
        };
        self.approvers.learn(&actor).await;
        let decision = match action.intent {
            CardIntent::Decide(decision) => decision,
            CardIntent::RevokeFollowUp => return self.revoke_follow_up(incoming, actor, &action.case_id).await,
            CardIntent::Refresh => return self.refresh_view(incoming, &action.case_id).await,
        };
        // A decision needs a usable reason before anything else (no sign-in is asked for one
        // that would be sent back): the card comes back with the field marked.
        let reason = match checked_reason(action.reason.as_deref(), self.settings.require_reason) {
            Ok(reason) => reason,
            Err(problem) => {
                if let Some(case) = self.store.case(&action.case_id).await? {
                    if case.state == CaseState::Proposed && self.settings.policy.may_decide(&case, &actor.oid) {
                        return Ok(ActionReply::Card(cards::approval_card_marked(&case, self.settings.require_reason, Some(problem))));
                    }
                }
                None
            }
        };
        let mut approver_upn = None;
        if decision == Decision::Approve {
            // Ask for a sign-in only when the approval can still apply.
            let case = self.store.case(&action.case_id).await?;
            if let Some(case) = &case {
                if case.state != CaseState::Proposed || !self.settings.policy.may_decide(case, &actor.oid) {
                    let note = DecisionNote { reason, approver_upn: None };
                    return self.apply_decision(activity_key(activity).as_deref(), &actor, &action.case_id, decision, note).await;
                }
                match self.check_token(&actor, &proof).await {
                    TokenCheck::Ready(upn) => approver_upn = upn,
                    TokenCheck::NeedSignIn => {
                        if path == ActionPath::Submit {
                            self.store.set_pending_signin(&actor.oid, &case.id, decision, reason.as_deref(), now_ms()).await?;
                        }
                        return Ok(match self.oauth_card(activity).await {
                            Some(card) => ActionReply::LoginRequest(card),
                            None => {
                                ActionReply::Message("The sign-in service could not be reached; nothing was changed. Try again.".into())
                            }
                        });
                    }
                    TokenCheck::ExchangeRefused => {
                        return Ok(ActionReply::PreconditionFailed(
                            "Your Teams sign-in could not be used; sign in with the button instead.".into(),
                        ));
                    }
                    TokenCheck::BadCode => return Ok(ActionReply::IncorrectAuthCode),
                    TokenCheck::NotTheApprover => {
                        self.store
                            .record_event(
                                Some(&case.id),
                                Some(&actor),
                                "refused",
                                Some("the offered sign-in belongs to another user"),
                                now_ms(),
                            )
                            .await?;
                        return Ok(ActionReply::Message(NOT_THE_APPROVER_TEXT.into()));
                    }
                    TokenCheck::Unavailable => {
                        return Ok(ActionReply::Message(
                            "The sign-in service could not be reached; nothing was changed. Try again.".into(),
                        ));
                    }
                }
            }
        }
        let note = DecisionNote { reason, approver_upn };
        self.apply_decision(activity_key(activity).as_deref(), &actor, &action.case_id, decision, note).await
    }

    /// The viewer's own view of a case's card (a `refresh` invoke): nothing is decided or
    /// recorded. Outside the security channel or tenant the answer is the polite refusal; a
    /// member of the channel who is not an admin gets the read-only status.
    async fn refresh_view(&self, incoming: &VerifiedActivity, case_id: &CaseId) -> Result<ActionReply, StoreError> {
        let viewer = match self.authorise(incoming.activity()) {
            Ok(actor) => Some(actor),
            Err(Denied::NotAdmin) => None,
            Err(_) => return Ok(ActionReply::Message(REFUSAL_TEXT.into())),
        };
        if let Some(actor) = &viewer {
            self.approvers.learn(actor).await;
        }
        let Some(case) = self.store.case(case_id).await? else { return Ok(ActionReply::Message("This case does not exist.".into())) };
        Ok(ActionReply::Card(self.approvers.view_for(&case, viewer.as_ref(), incoming.service_url()).await))
    }

    pub(super) async fn apply_decision(
        &self,
        key: Option<&str>,
        actor: &Actor,
        case_id: &str,
        decision: Decision,
        note: DecisionNote,
    ) -> Result<ActionReply, StoreError> {
        let outcome = self.store.decide_with(case_id, actor, &note, decision, key, &self.settings.policy, now_ms()).await?;
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
                ActionReply::Card(cards::case_card(&case, self.settings.require_reason))
            }
            DecisionOutcome::Duplicate(Some(case)) => ActionReply::Card(cards::case_card(&case, self.settings.require_reason)),
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
                    ActionReply::Card(cards::case_card(&case, self.settings.require_reason))
                }
                None => ActionReply::Message("This case does not exist.".into()),
            },
        })
    }

    /// Opens a case revoking the sign-in sessions of the users of a finished removal.
    async fn revoke_follow_up(&self, incoming: &VerifiedActivity, actor: Actor, case_id: &str) -> Result<ActionReply, StoreError> {
        let Some(original) = self.store.case(case_id).await? else { return Ok(ActionReply::Message("This case does not exist.".into())) };
        if original.kind == CaseKind::RevokeSessions || !original.executed() {
            return Ok(ActionReply::Message(
                "Sessions can be revoked once a removal has run: this case was not executed, so nothing was opened.".into(),
            ));
        }
        let mut seen = HashSet::new();
        let targets: Vec<NewTarget> = original
            .targets
            .iter()
            .filter(|t| seen.insert(t.user_oid.clone().unwrap_or_else(|| t.user_ref.clone())))
            .map(|t| NewTarget {
                thread_id: None,
                user_ref: t.user_oid.clone().unwrap_or_else(|| t.user_ref.clone()),
                user_oid: t.user_oid.clone(),
                user_tenant_id: t.user_tenant_id.clone(),
                display_name: t.display_name.clone(),
            })
            .collect();
        let ceiling = self.settings.revoke_ceiling;
        if targets.len() > ceiling {
            return Ok(ActionReply::Message(format!(
                "{} covers {} users, more than the {ceiling} one case may revoke (CHATWARDEN_REVOKE_CEILING). Nothing was opened.",
                original.id,
                targets.len()
            )));
        }
        let new_case = NewCase {
            kind: CaseKind::RevokeSessions,
            source: CaseSource::Command,
            tenant_id: original.tenant_id.clone(),
            requester: actor,
            reason: Some(format!("follow-up of {}", original.id)),
            targets,
            evidence: original.evidence.clone(),
            no_evidence: original.no_evidence,
            ttl_ms: self.settings.case_ttl.as_millis() as i64,
        };
        self.open_case(incoming, new_case).await?;
        Ok(ActionReply::Message(format!("A case to revoke the sign-in sessions of the users of {} was posted for approval.", original.id)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn button_data_is_read_strictly() {
        let data = cards::decision_data("CW-ABCDE", Decision::Approve);
        assert_eq!(
            CardAction::from_data(&data),
            Some(CardAction { case_id: CaseId::parse("CW-ABCDE").unwrap(), intent: CardIntent::Decide(Decision::Approve), reason: None })
        );
        assert_eq!(CardAction::from_data(&json!({"caseId": "CW-ABCDE", "action": "approve"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": "CW-ABCDE", "action": "delete"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": "'; DROP TABLE cases", "action": "approve"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": 42, "action": "approve"})), None);
    }

    #[test]
    fn invoke_verbs_must_match_their_data() {
        let execute = |verb: &str| ExecuteAction { verb: verb.into(), data: cards::decision_data("CW-1", Decision::Approve) };
        assert_eq!(CardAction::from_execute(&execute("approve")).map(|a| a.intent), Some(CardIntent::Decide(Decision::Approve)));
        assert_eq!(CardAction::from_execute(&execute("reject")), None);
        assert_eq!(CardAction::from_execute(&execute("refresh")), None);
    }
}
