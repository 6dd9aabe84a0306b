//! The Teams side of cases: who may ask, commands that open cases and post approval cards, card
//! actions that become decisions, and card updates as cases move.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::actions::explain;
use crate::alerts::ChannelEndpoint;
use crate::audit::record::AuditRecord;
use crate::botframework::activity::{Activity, OutgoingActivity};
use crate::botframework::connector::ConnectorClient;
use crate::botframework::inbound::VerifiedActivity;
use crate::botframework::service_url::HostAllowlist;
use crate::cards;
use crate::cases::{Actor, CardRef, Case, CaseKind, CaseSource, CaseState, Decision, NewCase, NewTarget, Policy, Refusal, now_ms};
use crate::commands::{Command, RevokeTarget, UserRef};
use crate::execution::{CaseObserver, CaseRunner};
use crate::graph::{GraphClient, GraphUser};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{Created, DecisionOutcome, Store, StoreError};
use crate::tokens::{DelegatedTokens, SignInState, TokenError};

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
    /// The bot's app id (for sign-in state); `None` in local mode.
    pub app_id: Option<String>,
    /// Most users one session-revocation case may cover.
    pub revoke_ceiling: usize,
    /// Refusals answered per sender per minute (0 = no limit).
    pub refusals_per_minute: u32,
}

/// What a button of one of our cards asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardIntent {
    /// Approve or reject a proposed case.
    Decide(Decision),
    /// Open a follow-up case revoking the sign-in sessions of a finished removal's users.
    RevokeFollowUp,
}

/// A button press on a case card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardAction {
    /// The case.
    pub case_id: String,
    /// What the button asks for.
    pub intent: CardIntent,
}

impl CardAction {
    /// Reads the `data` of one of our buttons (`{"chatwarden":1,"caseId":..,"action":..}`).
    pub fn from_data(data: &Value) -> Option<Self> {
        data.get(cards::ACTION_MARKER)?;
        let case_id = data.get("caseId")?.as_str()?;
        if case_id.is_empty() || case_id.len() > 32 || !case_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        let intent = match data.get("action")?.as_str()? {
            "approve" => CardIntent::Decide(Decision::Approve),
            "reject" => CardIntent::Decide(Decision::Reject),
            "revoke_sessions" => CardIntent::RevokeFollowUp,
            _ => return None,
        };
        Some(Self { case_id: case_id.to_ascii_uppercase(), intent })
    }

    /// Reads an `adaptiveCard/action` invoke value (`{"action":{"type":"Action.Execute","verb":..,"data":..}}`).
    pub fn from_invoke(value: &Value) -> Option<Self> {
        let action = value.get("action")?;
        if action.get("type").and_then(Value::as_str) != Some("Action.Execute") {
            return None;
        }
        let parsed = Self::from_data(action.get("data")?)?;
        let verb = action.get("verb").and_then(Value::as_str)?;
        let expected = match parsed.intent {
            CardIntent::Decide(Decision::Approve) => "approve",
            CardIntent::Decide(Decision::Reject) => "reject",
            CardIntent::RevokeFollowUp => "revoke_sessions",
        };
        (verb == expected).then_some(parsed)
    }
}

/// Proof of sign-in that Teams attaches when it re-sends an action after a login request.
#[derive(Debug, Clone, Default)]
pub enum SignInProof {
    /// Nothing attached.
    #[default]
    None,
    /// A Teams SSO token (`value.authentication.token`, or a `signin/tokenExchange` invoke).
    SsoToken(SecretString),
    /// A sign-in magic code (`value.state`, or a `signin/verifyState` invoke).
    MagicCode(String),
}

impl SignInProof {
    /// Reads the proof from an invoke `value`.
    pub fn from_value(value: &Value) -> Self {
        let sso = value.get("authentication").and_then(|a| a.get("token")).or_else(|| value.get("token")).and_then(Value::as_str);
        if let Some(token) = sso.filter(|t| !t.is_empty()) {
            return Self::SsoToken(SecretString::from(token.to_owned()));
        }
        match value.get("state").and_then(Value::as_str) {
            Some(code) if !code.is_empty() && code.len() <= 64 => Self::MagicCode(code.to_owned()),
            _ => Self::None,
        }
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
    pub fn invoke_body(&self) -> Value {
        match self {
            ActionReply::Card(card) => json!({"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive", "value": card}),
            ActionReply::Message(text) => json!({"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": text}),
            ActionReply::LoginRequest(oauth) => {
                json!({"statusCode": 401, "type": "application/vnd.microsoft.activity.loginRequest", "value": oauth})
            }
            ActionReply::PreconditionFailed(text) => {
                json!({"statusCode": 412, "type": "application/vnd.microsoft.error.preconditionFailed", "value": {"code": "412", "message": text}})
            }
            ActionReply::IncorrectAuthCode => {
                json!({"statusCode": 401, "type": "application/vnd.microsoft.error.invalidAuthCode", "value": null})
            }
            ActionReply::Silent => json!({"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": REFUSAL_TEXT}),
        }
    }
}

/// The answer to a `signin/verifyState` or `signin/tokenExchange` invoke: HTTP status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInReply {
    /// HTTP status (200, 404 when no token came back, 412 for a failed exchange).
    pub status: u16,
    /// Body.
    pub body: Value,
}

enum TokenCheck {
    Ready,
    NeedSignIn,
    ExchangeRefused,
    BadCode,
    /// The token offered or obtained belongs to someone else: the approval is refused.
    NotTheApprover,
    Unavailable,
}

/// What an approver is told when the token is someone else's.
const NOT_THE_APPROVER_TEXT: &str = "The sign-in offered with this approval belongs to another account than yours, so nothing was changed. Sign in as yourself and approve again.";

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
    tokens: Arc<DelegatedTokens>,
    graph: Arc<GraphClient>,
    endpoint: Arc<ChannelEndpoint>,
    settings: DeskSettings,
    metrics: Arc<Metrics>,
    refusals: RateLimiter,
    /// Senders over the refusal limit whose suppression was already recorded, for a minute.
    quiet_senders: moka::sync::Cache<String, ()>,
}

/// The services a desk works with.
pub struct DeskServices {
    /// The database.
    pub store: Store,
    /// The Bot Connector.
    pub connector: Arc<ConnectorClient>,
    /// Runs approved cases.
    pub runner: Arc<CaseRunner>,
    /// Updates case cards.
    pub updater: Arc<CardUpdater>,
    /// Admins' delegated tokens.
    pub tokens: Arc<DelegatedTokens>,
    /// Graph (user and group lookups).
    pub graph: Arc<GraphClient>,
    /// The security channel's endpoint.
    pub endpoint: Arc<ChannelEndpoint>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// Most group members read for one `/revoke-sessions group:` (the ceiling is usually far lower).
const MAX_GROUP_USERS: usize = 100_000;

/// How long an approval waits for its approver to finish signing in.
const PENDING_SIGNIN_MS: i64 = 15 * 60 * 1000;

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
pub fn external_pairs(records: &[AuditRecord], removed: &HashMap<(String, String), i64>) -> (Vec<NewTarget>, Vec<String>) {
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
    /// A desk over the given services.
    pub fn new(services: DeskServices, settings: DeskSettings) -> Self {
        let DeskServices { store, connector, runner, updater, tokens, graph, endpoint, metrics } = services;
        let refusals = RateLimiter::new(settings.refusals_per_minute);
        let quiet_senders = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build();
        Self { store, connector, runner, updater, tokens, graph, endpoint, settings, metrics, refusals, quiet_senders }
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

    /// Records a refusal (no case is named) and returns the polite text to answer with, or
    /// `None` when this sender is over `CHATWARDEN_REFUSALS_PER_MINUTE`: then the refusal is
    /// recorded once (saying that the next ones are not) and not answered, so a stranger cannot
    /// make the bot write rows and send messages at the rate they send.
    pub async fn refuse(&self, activity: &Activity, denied: Denied) -> Option<&'static str> {
        let from = activity.from.as_ref();
        let actor = Actor {
            oid: from.and_then(|f| f.aad_object_id.clone()).unwrap_or_default(),
            name: from.and_then(|f| f.name.clone()).unwrap_or_default(),
            user_id: from.map(|f| f.id.clone()).unwrap_or_default(),
        };
        let sender = if actor.oid.is_empty() { actor.user_id.clone() } else { actor.oid.clone() };
        let over_limit = self.refusals.check(&sender).is_err();
        if over_limit {
            self.metrics.inc("chatwarden_rate_limited_total", &[("what", "refusal")]);
            if self.quiet_senders.contains_key(&sender) {
                return None;
            }
            self.quiet_senders.insert(sender, ());
        }
        let detail = if over_limit {
            format!("{}; further refusals of this sender are neither recorded nor answered for a minute", denied.code())
        } else {
            denied.code().to_owned()
        };
        tracing::debug!(reason = denied.code(), "refused a request");
        if let Err(err) = self.store.record_event(None, Some(&actor), "refused", Some(&detail), now_ms()).await {
            tracing::error!(error = %err, "could not record a refusal");
        }
        (!over_limit).then_some(REFUSAL_TEXT)
    }

    fn tenant_for(&self, activity: &Activity) -> String {
        self.settings.scope.tenant_id.clone().or_else(|| activity.tenant_id().map(str::to_owned)).unwrap_or_default()
    }

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
            RevokeTarget::User(UserRef::Upn(upn)) => match self.graph.user(&token, &upn).await {
                Ok(Some(user)) => return Some(vec![user]),
                Ok(None) => format!("There is no user `{}` in the directory.", cards::plain(&upn)),
                Err(failure) => format!(
                    "Could not look up `{}`: {}",
                    cards::plain(&upn),
                    explain(CaseKind::RevokeSessions, failure.status, &failure.code).1
                ),
            },
            RevokeTarget::Group(group) => match self.graph.group_users(&token, &group, MAX_GROUP_USERS).await {
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

    async fn ask_sign_in(&self, incoming: &VerifiedActivity, text: &str) {
        let activity = incoming.activity();
        let mut reply = OutgoingActivity::reply_text(activity, text);
        if let Some(oauth) = self.oauth_card(activity).await {
            reply.attachments.push(crate::botframework::activity::Attachment {
                content_type: "application/vnd.microsoft.card.oauth".into(),
                content: oauth,
            });
        }
        self.send_reply(incoming, reply).await;
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
        let actor = match self.authorise(activity) {
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
        let decision = match action.intent {
            CardIntent::Decide(decision) => decision,
            CardIntent::RevokeFollowUp => return self.revoke_follow_up(incoming, actor, &action.case_id).await,
        };
        if decision == Decision::Approve {
            // Ask for a sign-in only when the approval can still apply.
            let case = self.store.case(&action.case_id).await?;
            if let Some(case) = &case {
                if case.state != CaseState::Proposed || !self.settings.policy.is_admin(&actor.oid) {
                    return self.apply_decision(activity_key(activity).as_deref(), &actor, &action.case_id, decision).await;
                }
                match self.check_token(&actor, &proof).await {
                    TokenCheck::Ready => {}
                    TokenCheck::NeedSignIn => {
                        if path == ActionPath::Submit {
                            self.store.set_pending_signin(&actor.oid, &case.id, decision, now_ms()).await?;
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
        self.apply_decision(activity_key(activity).as_deref(), &actor, &action.case_id, decision).await
    }

    async fn check_token(&self, actor: &Actor, proof: &SignInProof) -> TokenCheck {
        let result = match proof {
            SignInProof::SsoToken(token) => match self.tokens.exchange_sso(actor, token).await {
                Ok(Some(_)) => return TokenCheck::Ready,
                Ok(None) => return TokenCheck::ExchangeRefused,
                Err(err) => Err(err),
            },
            SignInProof::MagicCode(code) => match self.tokens.redeem_code(actor, code).await {
                Ok(Some(_)) => return TokenCheck::Ready,
                Ok(None) => return TokenCheck::BadCode,
                Err(err) => Err(err),
            },
            SignInProof::None => self.tokens.token_for(actor).await,
        };
        match result {
            Ok(Some(_)) => TokenCheck::Ready,
            Ok(None) => TokenCheck::NeedSignIn,
            Err(TokenError::NotTheApprover) => TokenCheck::NotTheApprover,
            Err(err) => {
                tracing::error!(error = %err, "could not get the approver's token");
                TokenCheck::Unavailable
            }
        }
    }

    /// The OAuth card asking the admin to sign in (SSO exchange resource included when offered).
    async fn oauth_card(&self, activity: &Activity) -> Option<Value> {
        let state =
            SignInState { connection: self.tokens.connection(), app_id: self.settings.app_id.as_deref().unwrap_or_default(), activity };
        match self.tokens.sign_in_resource(&state).await {
            Ok(resource) => {
                let mut card = json!({
                    "text": "Sign in so that chatwarden can act with your own permissions.",
                    "connectionName": self.tokens.connection(),
                    "buttons": [{"type": "signin", "title": "Sign in", "value": resource.sign_in_link}],
                });
                if let Some(exchange) = resource.token_exchange_resource {
                    card["tokenExchangeResource"] = exchange;
                }
                Some(card)
            }
            Err(err) => {
                tracing::error!(error = %err, "could not get a sign-in link");
                None
            }
        }
    }

    async fn apply_decision(&self, key: Option<&str>, actor: &Actor, case_id: &str, decision: Decision) -> Result<ActionReply, StoreError> {
        let outcome = self.store.decide(case_id, actor, decision, key, &self.settings.policy, now_ms()).await?;
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

    /// `signin/verifyState` and `signin/tokenExchange`: completes a sign-in and resumes the
    /// approval that was waiting for it.
    pub async fn on_sign_in(&self, incoming: &VerifiedActivity, proof: SignInProof) -> Result<SignInReply, StoreError> {
        let activity = incoming.activity();
        let value = activity.value.clone().unwrap_or(Value::Null);
        let exchange_id = value.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let failure = |detail: &str| SignInReply {
            status: 412,
            body: json!({"id": exchange_id, "connectionName": self.tokens.connection(), "failureDetail": detail}),
        };
        let actor = match self.authorise(activity) {
            Ok(actor) => actor,
            Err(denied) => {
                self.refuse(activity, denied).await;
                return Ok(SignInReply { status: 200, body: json!({}) });
            }
        };
        if let SignInProof::SsoToken(_) = proof {
            // Several Teams clients may send the same exchange: handle it once.
            let conversation = activity.conversation.as_ref().map(|c| c.id.as_str()).unwrap_or_default();
            if !exchange_id.is_empty() && !self.store.claim_key(&format!("exchange|{conversation}|{exchange_id}"), now_ms()).await? {
                return Ok(SignInReply { status: 200, body: json!({}) });
            }
        }
        match self.check_token(&actor, &proof).await {
            TokenCheck::Ready => {}
            TokenCheck::ExchangeRefused => return Ok(failure("The token could not be exchanged; consent or sign-in is needed.")),
            TokenCheck::BadCode | TokenCheck::NeedSignIn => return Ok(SignInReply { status: 404, body: json!({}) }),
            TokenCheck::NotTheApprover => return Ok(failure(NOT_THE_APPROVER_TEXT)),
            TokenCheck::Unavailable => return Ok(failure("The sign-in service could not be reached.")),
        }
        if let Some((case_id, decision)) = self.store.take_pending_signin(&actor.oid, PENDING_SIGNIN_MS, now_ms()).await? {
            tracing::info!(case.id = %case_id, "sign-in completed; resuming the pending approval");
            let reply = self.apply_decision(activity_key(activity).as_deref(), &actor, &case_id, decision).await?;
            if let ActionReply::Message(text) = reply {
                self.reply_text(incoming, text).await;
            }
        }
        Ok(SignInReply { status: 200, body: json!({}) })
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

    /// Replies with text in the activity's thread.
    pub async fn reply_text(&self, incoming: &VerifiedActivity, text: String) {
        let reply = OutgoingActivity::reply_text(incoming.activity(), text);
        self.send_reply(incoming, reply).await;
    }

    async fn reply_card(&self, incoming: &VerifiedActivity, card: Value) {
        let reply = OutgoingActivity::reply_card(incoming.activity(), card);
        self.send_reply(incoming, reply).await;
    }

    /// Sends a prepared reply in the activity's thread.
    pub async fn send(&self, incoming: &VerifiedActivity, reply: OutgoingActivity) {
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
        assert_eq!(
            CardAction::from_data(&data),
            Some(CardAction { case_id: "CW-ABCDE".into(), intent: CardIntent::Decide(Decision::Approve) })
        );
        assert_eq!(CardAction::from_data(&json!({"caseId": "CW-ABCDE", "action": "approve"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": "CW-ABCDE", "action": "delete"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": "'; DROP TABLE cases", "action": "approve"})), None);
        assert_eq!(CardAction::from_data(&json!({"chatwarden": 1, "caseId": 42, "action": "approve"})), None);
    }

    #[test]
    fn invoke_verbs_must_match_their_data() {
        let approve =
            json!({"action": {"type": "Action.Execute", "verb": "approve", "data": cards::decision_data("CW-1", Decision::Approve)}});
        assert_eq!(CardAction::from_invoke(&approve).map(|a| a.intent), Some(CardIntent::Decide(Decision::Approve)));
        let mixed =
            json!({"action": {"type": "Action.Execute", "verb": "reject", "data": cards::decision_data("CW-1", Decision::Approve)}});
        assert_eq!(CardAction::from_invoke(&mixed), None);
        let submit =
            json!({"action": {"type": "Action.Submit", "verb": "approve", "data": cards::decision_data("CW-1", Decision::Approve)}});
        assert_eq!(CardAction::from_invoke(&submit), None);
    }

    #[test]
    fn sign_in_proof_is_read_from_retried_invokes() {
        assert!(matches!(SignInProof::from_value(&json!({"authentication": {"id": "x", "token": "sso"}})), SignInProof::SsoToken(_)));
        assert!(matches!(SignInProof::from_value(&json!({"state": "123456"})), SignInProof::MagicCode(ref c) if c == "123456"));
        assert!(matches!(SignInProof::from_value(&json!({"action": {}})), SignInProof::None));
    }
}
