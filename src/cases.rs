//! Cases: what is asked, who asked, who decided, what happened. The state machine and the rules
//! of who may decide live here, free of HTTP and SQL.
//!
//! States: `proposed -> approved -> executing -> done | failed`, or `proposed -> rejected |
//! expired`. `rejected` and `expired` never execute; `done`, `failed`, `rejected` and `expired`
//! are final.

use std::collections::HashSet;
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
        match self.state {
            CaseState::Done => true,
            CaseState::Failed => self.targets.iter().any(|t| t.status == TargetStatus::Done),
            _ => false,
        }
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

/// An admin's decision on a proposed case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Approve,
    /// Do not.
    Reject,
}

impl Decision {
    /// The state a proposed case moves to.
    pub(crate) fn target_state(self) -> CaseState {
        match self {
            Decision::Approve => CaseState::Approved,
            Decision::Reject => CaseState::Rejected,
        }
    }
}

/// Who may request and decide.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Admin object ids (lower case); `None` only in local mode, where anyone on loopback is an admin.
    pub admins: Option<HashSet<String>>,
    /// The requester may not approve their own case.
    pub require_second_approver: bool,
}

impl Policy {
    /// Whether this object id is an authorised admin.
    pub(crate) fn is_admin(&self, oid: &str) -> bool {
        match &self.admins {
            Some(admins) => admins.contains(&oid.to_ascii_lowercase()),
            None => true,
        }
    }
}

/// Why a decision was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an authorised admin.
    NotAuthorised,
    /// No such case.
    NotFound,
    /// The requester tried to approve their own case under `require_second_approver`.
    OwnCase,
    /// The case was already decided or run.
    AlreadyDecided(CaseState),
    /// The decision deadline passed.
    Expired,
}

impl Refusal {
    /// Stable code for logs and the case history.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotAuthorised => "not_authorised",
            Refusal::NotFound => "not_found",
            Refusal::OwnCase => "own_case",
            Refusal::AlreadyDecided(_) => "already_decided",
            Refusal::Expired => "expired",
        }
    }
}

/// Checks a decision against the rules; returns the state to move to.
pub(crate) fn check_decision(case: &Case, actor: &Actor, decision: Decision, policy: &Policy, now_ms: i64) -> Result<CaseState, Refusal> {
    if !policy.is_admin(&actor.oid) {
        return Err(Refusal::NotAuthorised);
    }
    if case.state != CaseState::Proposed {
        return Err(Refusal::AlreadyDecided(case.state));
    }
    if now_ms >= case.expires_at {
        return Err(Refusal::Expired);
    }
    if decision == Decision::Approve && policy.require_second_approver && case.requester.oid.eq_ignore_ascii_case(&actor.oid) {
        return Err(Refusal::OwnCase);
    }
    Ok(decision.target_state())
}

/// Final state of an executed case from its targets: `failed` if any failed, else `done`.
pub(crate) fn final_state(targets: &[Target]) -> CaseState {
    if targets.iter().any(|t| t.status == TargetStatus::Failed) { CaseState::Failed } else { CaseState::Done }
}

/// A case id as a person types it or a button carries it (`CW-7K3P9`), checked once at the edge:
/// letters, digits and `-`, at most 32 characters, upper-cased. Reads as a `&str`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId(String);

impl CaseId {
    /// Checks and upper-cases `text`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() || text.len() > 32 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("a case id holds only letters, digits and `-`");
        }
        Ok(Self(text.to_ascii_uppercase()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for CaseId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for CaseId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CaseId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Alphabet of case ids: Crockford base32 (no I, L, O, U: nothing to misread or mistype).
const CASE_ID_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new random case id such as `CW-7K3P9` (32^5 = 33 million values; collisions are retried).
pub(crate) fn new_case_id() -> String {
    let mut id = String::from("CW-");
    for _ in 0..5 {
        id.push(CASE_ID_ALPHABET[fastrand::usize(..CASE_ID_ALPHABET.len())] as char);
    }
    id
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(oid: &str) -> Actor {
        Actor { oid: oid.into(), name: oid.into(), user_id: format!("29:{oid}") }
    }

    fn case(state: CaseState) -> Case {
        Case {
            id: "CW-ABCDE".into(),
            kind: CaseKind::RemoveChat,
            state,
            source: CaseSource::Command,
            tenant_id: "t".into(),
            requester: actor("alice"),
            reason: None,
            no_evidence: false,
            approver: None,
            decided_at: None,
            card: None,
            created_at: 0,
            updated_at: 0,
            expires_at: 1000,
            version: 0,
            targets: vec![],
            evidence: vec![],
        }
    }

    fn policy(second: bool) -> Policy {
        Policy { admins: Some(["alice".to_owned(), "bob".to_owned()].into()), require_second_approver: second }
    }

    #[test]
    fn an_admin_approves_a_proposed_case() {
        assert_eq!(
            check_decision(&case(CaseState::Proposed), &actor("bob"), Decision::Approve, &policy(true), 10),
            Ok(CaseState::Approved)
        );
        assert_eq!(check_decision(&case(CaseState::Proposed), &actor("BOB"), Decision::Reject, &policy(true), 10), Ok(CaseState::Rejected));
    }

    #[test]
    fn non_admins_are_refused_whatever_the_state() {
        for state in [CaseState::Proposed, CaseState::Done] {
            assert_eq!(check_decision(&case(state), &actor("mallory"), Decision::Approve, &policy(false), 10), Err(Refusal::NotAuthorised));
        }
    }

    #[test]
    fn decided_cases_stay_decided() {
        for state in
            [CaseState::Approved, CaseState::Executing, CaseState::Done, CaseState::Failed, CaseState::Rejected, CaseState::Expired]
        {
            assert_eq!(
                check_decision(&case(state), &actor("bob"), Decision::Approve, &policy(false), 10),
                Err(Refusal::AlreadyDecided(state))
            );
        }
    }

    #[test]
    fn the_requester_cannot_approve_their_own_case_when_a_second_approver_is_required() {
        assert_eq!(
            check_decision(&case(CaseState::Proposed), &actor("alice"), Decision::Approve, &policy(true), 10),
            Err(Refusal::OwnCase)
        );
        assert_eq!(
            check_decision(&case(CaseState::Proposed), &actor("alice"), Decision::Reject, &policy(true), 10),
            Ok(CaseState::Rejected)
        );
        assert_eq!(
            check_decision(&case(CaseState::Proposed), &actor("alice"), Decision::Approve, &policy(false), 10),
            Ok(CaseState::Approved)
        );
    }

    #[test]
    fn late_decisions_are_refused() {
        assert_eq!(
            check_decision(&case(CaseState::Proposed), &actor("bob"), Decision::Approve, &policy(true), 1000),
            Err(Refusal::Expired)
        );
    }

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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any sequence of decisions by anyone, at any time: at most one applies, only an admin's,
            /// only before the deadline, never the requester's own approval, and a final state stays.
            #[test]
            fn decisions_apply_at_most_once_and_only_by_the_rules(
                steps in prop::collection::vec((prop::sample::select(vec!["alice", "bob", "mallory"]), any::<bool>(), 0i64..2000), 1..20),
                second in any::<bool>(),
            ) {
                let policy = policy(second);
                let mut current = case(CaseState::Proposed);
                let mut applied = 0;
                for (who, approve, at) in steps {
                    let decision = if approve { Decision::Approve } else { Decision::Reject };
                    let before = current.state;
                    match check_decision(&current, &actor(who), decision, &policy, at) {
                        Ok(next) => {
                            prop_assert!(before.can_become(next));
                            prop_assert_eq!(before, CaseState::Proposed);
                            prop_assert!(who != "mallory");
                            prop_assert!(at < current.expires_at);
                            prop_assert!(!(second && approve && who == "alice"));
                            current.state = next;
                            applied += 1;
                        }
                        // A refusal only ever comes from a rule.
                        Err(_) => prop_assert!(
                            before != CaseState::Proposed
                                || who == "mallory"
                                || at >= current.expires_at
                                || (second && approve && who == "alice")
                        ),
                    }
                }
                prop_assert!(applied <= 1);
            }
        }
    }

    #[test]
    fn case_ids_are_short_and_unambiguous() {
        for _ in 0..100 {
            let id = new_case_id();
            assert_eq!(id.len(), 8);
            assert!(id[3..].chars().all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c))), "{id}");
        }
    }
}
