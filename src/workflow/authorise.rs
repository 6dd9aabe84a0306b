//! Who may act: the tenant, team, channel and admin checks every command and card action passes
//! first, and the polite, rate-limited refusal for everyone else.

use crate::botframework::activity::Activity;
use crate::cases::{Actor, now_ms};

use super::CaseWorkflow;

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

/// The key under which an activity is deduplicated: conversation and activity id.
pub(crate) fn activity_key(activity: &Activity) -> Option<String> {
    let conversation = activity.conversation.as_ref()?;
    let id = activity.id.as_deref().filter(|id| !id.is_empty())?;
    Some(format!("{}|{id}", conversation.id))
}

pub(super) fn channel_of(activity: &Activity) -> Option<&str> {
    let data = activity.channel_data.as_ref();
    data.and_then(|d| d.channel.as_ref()).map(|c| c.id.as_str()).filter(|c| !c.is_empty()).or_else(|| {
        let conversation = activity.conversation.as_ref()?;
        (conversation.conversation_type.as_deref() == Some("channel")).then(|| conversation.id.split(';').next().unwrap_or_default())
    })
}

impl CaseWorkflow {
    /// Checks tenant, team, channel and admin list; returns who is acting.
    pub(crate) fn authorise(&self, activity: &Activity) -> Result<Actor, Denied> {
        self.authorise_where(activity, |policy, oid| policy.is_admin(oid))
    }

    /// Like [`CaseWorkflow::authorise`] for someone pressing a card's button: the escalation
    /// admins pass too (whether they may decide a given case, once escalated, is the decision's
    /// own rule).
    pub(crate) fn authorise_decider(&self, activity: &Activity) -> Result<Actor, Denied> {
        self.authorise_where(activity, |policy, oid| policy.is_admin(oid) || policy.is_escalation_admin(oid))
    }

    fn authorise_where(&self, activity: &Activity, admitted: impl Fn(&crate::cases::Policy, &str) -> bool) -> Result<Actor, Denied> {
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
        if !admitted(&self.settings.policy, oid) {
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

    pub(super) fn tenant_for(&self, activity: &Activity) -> String {
        self.settings.scope.tenant_id.clone().or_else(|| activity.tenant_id().map(str::to_owned)).unwrap_or_default()
    }
}
