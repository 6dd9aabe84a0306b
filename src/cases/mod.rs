//! Cases: what is asked, who asked, who decided, what happened, and the state machine; the rules
//! of who may decide are in `rules`, case ids in `id`, the tally of a case's targets in `tally`.
//! Free of HTTP and SQL.
//!
//! States: `proposed -> approved -> executing -> done | failed`, or `proposed -> rejected |
//! expired`. `rejected` and `expired` never execute; `done`, `failed`, `rejected` and `expired`
//! are final.

use std::fmt;

/// What a case does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaseKind {
    /// Remove a user's access to a chat (`removeAllAccessForUser`).
    RemoveChat,
    /// Revoke a user's sign-in sessions.
    RevokeSessions,
    /// Remove every internal user from every chat with one external party.
    RemoveExternal,
}

/// Where a case state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaseState {
    /// Waiting for an admin's decision.
    Proposed,
    /// Approved, not yet picked up for execution.
    Approved,
    /// Graph calls under way.
    Executing,
    /// Every target succeeded (or had nothing to remove).
    Done,
    /// At least one target failed.
    Failed,
    /// An admin refused it.
    Rejected,
    /// Nobody decided in time.
    Expired,
}

/// How a case was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseSource {
    /// An admin's command in the security channel.
    Command,
    /// A detection rule over audit records.
    Alert,
}

/// Outcome of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetStatus {
    /// Not executed yet.
    Pending,
    /// Graph confirmed it.
    Done,
    /// Graph refused or failed.
    Failed,
    /// Deliberately not executed (e.g. nothing to remove).
    Skipped,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses a stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(CaseKind { RemoveChat => "remove_chat", RevokeSessions => "revoke_sessions", RemoveExternal => "remove_external" });
string_enum!(CaseState {
    Proposed => "proposed", Approved => "approved", Executing => "executing", Done => "done",
    Failed => "failed", Rejected => "rejected", Expired => "expired",
});
string_enum!(CaseSource { Command => "command", Alert => "alert" });
string_enum!(TargetStatus { Pending => "pending", Done => "done", Failed => "failed", Skipped => "skipped" });

impl CaseState {
    /// Whether nothing can change this state any more.
    #[cfg(test)]
    fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Rejected | Self::Expired)
    }

    /// Whether the state machine allows `self -> next`.
    pub fn can_become(self, next: CaseState) -> bool {
        use CaseState::*;
        matches!(
            (self, next),
            (Proposed, Approved)
                | (Proposed, Rejected)
                | (Proposed, Expired)
                | (Approved, Executing)
                | (Executing, Done)
                | (Executing, Failed)
        )
    }
}

impl CaseKind {
    /// A short human description.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::RemoveChat => "Remove user from chat",
            Self::RevokeSessions => "Revoke sign-in sessions",
            Self::RemoveExternal => "Remove external party's chats",
        }
    }
}

/// A person acting on a case, as Teams identifies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Entra object id (lower case).
    pub oid: String,
    /// Display name.
    pub name: String,
    /// Teams channel user id (`29:...`), needed for the token service.
    pub user_id: String,
}

/// One thing a case acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Position within the case (0-based).
    pub position: i64,
    /// The chat (None for session revocation).
    pub thread_id: Option<String>,
    /// The user as given (UPN or object id).
    pub user_ref: String,
    /// The user's Entra object id, once known.
    pub user_oid: Option<String>,
    /// The user's tenant.
    pub user_tenant_id: String,
    /// Display name, when known.
    pub display_name: Option<String>,
    /// Outcome so far.
    pub status: TargetStatus,
    /// HTTP status Graph answered.
    pub graph_status: Option<i64>,
    /// Plain-language outcome.
    pub detail: Option<String>,
    /// Graph's error code, when it answered with one.
    pub graph_code: Option<String>,
    /// The Graph call's ids and date, once Graph was called.
    pub receipt: Option<GraphReceipt>,
}

/// A target of a case about to be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTarget {
    /// The chat.
    pub thread_id: Option<String>,
    /// The user as given.
    pub user_ref: String,
    /// Object id when known.
    pub user_oid: Option<String>,
    /// The user's tenant.
    pub user_tenant_id: String,
    /// Display name when known.
    pub display_name: Option<String>,
}

/// A case about to be opened.
#[derive(Debug, Clone)]
pub struct NewCase {
    /// What it does.
    pub kind: CaseKind,
    /// How it was opened.
    pub source: CaseSource,
    /// Our tenant.
    pub tenant_id: String,
    /// Who asked (the detection rule for alerts).
    pub requester: Actor,
    /// The requester's reason (for alerts: what the detection saw), shown on the card.
    pub reason: Option<String>,
    /// Whom the case acts on, in order; each becomes a `Target` with its own outcome.
    pub targets: Vec<NewTarget>,
    /// Audit record ids backing it.
    pub evidence: Vec<String>,
    /// Opened without audit evidence (an explicit, recorded override).
    pub no_evidence: bool,
    /// How long it may wait for a decision, in milliseconds.
    pub ttl_ms: i64,
}

/// Prefix of evidence ids that name a Graph change notification.
pub const GRAPH_NOTIFICATION_EVIDENCE: &str = "graph-notification:";
/// Prefix of evidence ids that name a Defender XDR alert.
pub const DEFENDER_ALERT_EVIDENCE: &str = "defender-alert:";

/// How an evidence id is shown: its source, then its id.
pub fn evidence_label(id: &str) -> String {
    if let Some(key) = id.strip_prefix(GRAPH_NOTIFICATION_EVIDENCE) {
        format!("Graph change notification {key}")
    } else if let Some(alert) = id.strip_prefix(DEFENDER_ALERT_EVIDENCE) {
        format!("Defender alert {alert}")
    } else {
        format!("audit record {id}")
    }
}

/// Where a case's card lives, so it can be updated in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRef {
    /// Bot Connector URL.
    pub service_url: String,
    /// Conversation (thread) id.
    pub conversation_id: String,
    /// Activity id of the card.
    pub activity_id: String,
}

/// A case as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Short, human-typable id (`CW-7K3P9`).
    pub id: String,
    /// What it does.
    pub kind: CaseKind,
    /// Where it stands.
    pub state: CaseState,
    /// How it was opened.
    pub source: CaseSource,
    /// Our tenant.
    pub tenant_id: String,
    /// Who asked.
    pub requester: Actor,
    /// The requester's reason (for alerts: what the detection saw), shown on the card.
    pub reason: Option<String>,
    /// Opened without audit evidence.
    pub no_evidence: bool,
    /// Who approved or rejected it.
    pub approver: Option<Actor>,
    /// When it was decided (Unix ms).
    pub decided_at: Option<i64>,
    /// Why, in the decider's words.
    pub decision_reason: Option<String>,
    /// When it was escalated to the escalation admins (Unix ms), who may then decide it too.
    pub escalated_at: Option<i64>,
    /// Its card.
    pub card: Option<CardRef>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
    /// Deadline for a decision (Unix ms).
    pub expires_at: i64,
    /// Optimistic-concurrency version.
    pub version: i64,
    /// Targets, by position.
    pub targets: Vec<Target>,
    /// Audit record ids.
    pub evidence: Vec<String>,
}

impl Case {
    /// Whether the case reached Graph for at least one target: `done`, or `failed` with a
    /// target done. Only such a case offers the "revoke sign-in sessions" follow-up.
    pub fn executed(&self) -> bool {
        TargetTally::of(&self.targets).executed(self.state)
    }
}

/// The outcome of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetResult {
    /// Target position in the case.
    pub position: i64,
    /// Done, failed or skipped.
    pub status: TargetStatus,
    /// HTTP status Graph answered, if it was called.
    pub graph_status: Option<i64>,
    /// Plain-language outcome for the card and history.
    pub detail: String,
    /// The object id the target resolved to (UPN lookups).
    pub user_oid: Option<String>,
    /// Graph's error code, when it answered with one.
    pub graph_code: Option<String>,
    /// The Graph call's ids and date, when a call was made.
    pub receipt: Option<GraphReceipt>,
}

/// What identifies one Graph call in Microsoft's logs and support cases: our own
/// `client-request-id` (sent on every call, the same on its retries), Graph's `request-id` and
/// the `date` Graph answered with. Kept per target as the proof of what Graph said.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct GraphReceipt {
    /// The id chatwarden sent.
    pub client_request_id: String,
    /// The id Graph answered with, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Graph's `date` header, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// One line of a case's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseEvent {
    /// When (Unix ms).
    pub at: i64,
    /// Who (object id), if a person.
    pub actor_oid: Option<String>,
    /// Who (display name).
    pub actor_name: Option<String>,
    /// What: `requested`, `approved`, `rejected`, `refused`, `executing`, `target_done`, ...
    pub kind: String,
    /// Details in plain words.
    pub detail: Option<String>,
    /// Structured facts as compact JSON text (Graph's ids for a target, the approver's UPN).
    pub data: Option<String>,
}

mod id;
mod rules;
mod tally;

pub use id::CaseId;
pub(crate) use id::new_case_id;
pub(crate) use rules::check_decision;
pub use rules::{Decision, DecisionNote, EscalationAdmins, MAX_DECISION_REASON, Policy, Refusal};
pub use tally::{CaseSummary, SUMMARY_TARGETS, TargetTally};

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A Unix-ms time as RFC 3339 UTC, to the second (`2026-12-02T05:38:21Z`), as Graph takes it.
pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_allow_no_transition() {
        use CaseState::*;
        let all = [Proposed, Approved, Executing, Done, Failed, Rejected, Expired];
        for s in all.into_iter().filter(|s| s.is_final()) {
            assert!(all.iter().all(|n| !s.can_become(*n)), "{s} can still move");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in [CaseState::Proposed, CaseState::Executing, CaseState::Expired] {
            assert_eq!(CaseState::parse(s.as_str()), Some(s));
        }
        assert_eq!(CaseKind::parse("remove_external"), Some(CaseKind::RemoveExternal));
        assert_eq!(CaseKind::parse("nope"), None);
    }
}
