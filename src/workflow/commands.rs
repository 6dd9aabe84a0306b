//! Commands from authorised admins: `/remove-chat`, `/revoke-sessions`, `/remove-external` open
//! cases and post their approval cards; `/status`, `/history` and `/help` answer in the thread.

use std::collections::{HashMap, HashSet};

use crate::audit::record::AuditRecord;
use crate::botframework::activity::OutgoingActivity;
use crate::botframework::inbound::VerifiedActivity;
use crate::cards;
use crate::cases::{Actor, CardRef, CaseKind, CaseSource, NewCase, NewTarget, now_ms};
use crate::commands::{Command, RevokeTarget, UserRef};
use crate::execution::explain;
use crate::graph::GraphUser;
use crate::store::{Created, StoreError};

use super::CaseWorkflow;
use super::authorise::{activity_key, channel_of};

/// Most group members read for one `/revoke-sessions group:` (the ceiling is usually far lower).
const MAX_GROUP_USERS: usize = 100_000;

/// The object id and display name of `user` as the audit records name them.
fn matching_member(records: &[AuditRecord], user: &UserRef) -> Option<(Option<String>, Option<String>)> {
    let wanted = user.to_string();
    for record in records {
        for member in &record.members {
            let upn = member.upn.as_deref().map(str::to_ascii_lowercase);
            let oid = member.user_object_id.as_deref().map(str::to_ascii_lowercase);
            if upn.as_deref() == Some(wanted.as_str()) || oid.as_deref() == Some(wanted.as_str()) {
                return Some((oid, member.display_name.clone()));
            }
        }
        // The record's actor is the user: `UserKey` is their object id.
        if record.user_id.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(&wanted)) {
            return Some((record.user_key.as_deref().map(str::to_ascii_lowercase), None));
        }
    }
    None
}

/// Every (chat, internal user) pair of `records`, minus pairs removed after the record that names
/// them (a record newer than the removal means the user was pulled back in); and the evidence.
/// `removed` holds each removed pair's latest removal (Unix ms).
pub(crate) fn external_pairs(records: &[AuditRecord], removed: &HashMap<(String, String), i64>) -> (Vec<NewTarget>, Vec<String>) {
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    let mut evidence = Vec::new();
    for record in records {
        let Some(chat) = &record.chat_thread_id else { continue };
        let mut used = false;
        for member in record.internal_members() {
            let oid = member.user_object_id.as_deref().map(str::to_ascii_lowercase);
            let upn = member.upn.as_deref().map(str::to_ascii_lowercase);
            let Some(user) = oid.clone().or_else(|| upn.clone()) else { continue };
            // A record without a time cannot be placed before a removal: it counts as newer.
            let done = |u: &Option<String>| {
                u.as_ref()
                    .and_then(|u| removed.get(&(chat.clone(), u.clone())))
                    .is_some_and(|at| record.created_at.is_some_and(|t| t <= *at))
            };
            if done(&oid) || done(&upn) || !seen.insert((chat.clone(), user)) {
                continue;
            }
            used = true;
            targets.push(NewTarget {
                thread_id: Some(chat.clone()),
                user_ref: upn.clone().or_else(|| oid.clone()).unwrap_or_default(),
                user_oid: oid,
                user_tenant_id: record.organization_id.clone(),
                display_name: member.display_name.clone(),
            });
        }
        if used {
            evidence.push(record.id.clone());
        }
    }
    (targets, evidence)
}

impl CaseWorkflow {
    /// Handles a command from an authorised admin; replies in the thread.
    pub async fn on_command(&self, incoming: &VerifiedActivity, actor: Actor, command: Command) -> Result<(), StoreError> {
        let activity = incoming.activity();
        self.endpoint.learn(incoming.service_url(), channel_of(activity)).await;
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
                let records = self.store.audit_for_chat_user(thread.as_str(), &user.to_string()).await?;
                let mut removal = target(Some(thread.to_string()), &user);
                if let Some(member) = matching_member(&records, &user) {
                    removal.user_oid = removal.user_oid.or(member.0);
                    removal.display_name = member.1;
                }
                let mut case = new_case(CaseKind::RemoveChat, reason, vec![removal]);
                case.evidence = records.iter().map(|r| r.id.clone()).collect();
                case.no_evidence = case.evidence.is_empty();
                self.open_case(incoming, case).await
            }
            Command::RevokeSessions { target: who, reason } => {
                let Some(users) = self.revocation_targets(incoming, &actor, who).await else { return Ok(()) };
                let targets = users
                    .into_iter()
                    .map(|u| NewTarget {
                        thread_id: None,
                        user_ref: u.user_principal_name.clone().unwrap_or_else(|| u.id.clone()).to_ascii_lowercase(),
                        user_oid: Some(u.id.to_ascii_lowercase()),
                        user_tenant_id: tenant.clone(),
                        display_name: u.display_name,
                    })
                    .collect();
                let case = new_case(CaseKind::RevokeSessions, reason, targets);
                self.open_case(incoming, case).await
            }
            Command::RemoveExternal { party, reason } => {
                let records = self.store.audit_for_party(&party.to_string()).await?;
                let mut removed: HashMap<(String, String), i64> = HashMap::new();
                for (pair, at) in self.store.removed_pairs().await? {
                    let latest = removed.entry(pair).or_insert(at);
                    *latest = (*latest).max(at);
                }
                let (targets, evidence) = external_pairs(&records, &removed);
                if targets.is_empty() {
                    self.reply_text(
                        incoming,
                        format!(
                            "No chat of ours with `{}` is in the audit index, or all of them were already removed: nothing to do.",
                            cards::plain(&party.to_string())
                        ),
                    )
                    .await;
                    return Ok(());
                }
                let mut case = new_case(CaseKind::RemoveExternal, reason, targets);
                case.evidence = evidence;
                case.no_evidence = false;
                self.open_case(incoming, case).await
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

    /// The users whose sessions a `/revoke-sessions` targets, looked up with the requester's own
    /// token (a UPN becomes its object id before the card is posted; a group becomes its
    /// transitive user members). Replies and returns `None` when it cannot go on.
    async fn revocation_targets(&self, incoming: &VerifiedActivity, actor: &Actor, who: RevokeTarget) -> Option<Vec<GraphUser>> {
        if let RevokeTarget::User(UserRef::ObjectId(oid)) = &who {
            return Some(vec![GraphUser { id: oid.clone(), user_principal_name: None, display_name: None }]);
        }
        let token = match self.tokens.token_for(actor).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                let text = "Sign in first: chatwarden looks the users up with your own permissions. Then send the command again.";
                self.ask_sign_in(incoming, text).await;
                return None;
            }
            Err(err) => {
                tracing::error!(error = %err, "could not get the requester's token");
                self.reply_text(incoming, "The sign-in service could not be reached; nothing was changed. Try again.".into()).await;
                return None;
            }
        };
        let ceiling = self.settings.revoke_ceiling;
        let reply = match who {
            RevokeTarget::User(UserRef::ObjectId(_)) => return None,
            RevokeTarget::User(UserRef::Upn(upn)) => match self.directory.user(&token, &upn).await {
                Ok(Some(user)) => return Some(vec![user]),
                Ok(None) => format!("There is no user `{}` in the directory.", cards::plain(&upn)),
                Err(failure) => format!(
                    "Could not look up `{}`: {}",
                    cards::plain(&upn),
                    explain(CaseKind::RevokeSessions, failure.status, &failure.code).1
                ),
            },
            RevokeTarget::Group(group) => match self.directory.group_users(&token, &group, MAX_GROUP_USERS).await {
                Ok(Some(users)) => {
                    let mut seen = HashSet::new();
                    let users: Vec<GraphUser> = users.into_iter().filter(|u| seen.insert(u.id.to_ascii_lowercase())).collect();
                    if users.len() > ceiling {
                        let count =
                            if users.len() > MAX_GROUP_USERS { format!("more than {MAX_GROUP_USERS}") } else { users.len().to_string() };
                        format!(
                            "Group `{group}` has {count} users, more than the {ceiling} one case may revoke (CHATWARDEN_REVOKE_CEILING). Nothing was opened."
                        )
                    } else if users.is_empty() {
                        format!("Group `{group}` has no user members: nothing to revoke.")
                    } else {
                        return Some(users);
                    }
                }
                Ok(None) => format!("There is no group `{group}` in the directory."),
                Err(failure) => format!(
                    "Could not list the members of `{group}`: {}",
                    explain(CaseKind::RevokeSessions, failure.status, &failure.code).1
                ),
            },
        };
        self.reply_text(incoming, reply).await;
        None
    }

    pub(super) async fn open_case(&self, incoming: &VerifiedActivity, new_case: NewCase) -> Result<(), StoreError> {
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
        let reply = OutgoingActivity::reply_card(activity, self.approvers.posted_card(&case, incoming.service_url()).await);
        match self.replies.reply_to_activity(incoming.service_url(), &conversation.id, activity_id, &reply).await {
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
}
