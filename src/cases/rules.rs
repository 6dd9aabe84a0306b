//! The rules of deciding: who may decide, which decision applies, and how an executed case ends.

use std::collections::HashSet;

use super::{Actor, Case, CaseState};

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

/// The longest reason a decision may carry, in characters.
pub const MAX_DECISION_REASON: usize = 500;

/// What a decider gives with a decision: why (their words, at most [`MAX_DECISION_REASON`]
/// characters), and the UPN their delegated token names when they signed in to approve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionNote {
    /// The decider's reason.
    pub reason: Option<String>,
    /// The UPN of the approver's delegated token.
    pub approver_upn: Option<String>,
}

/// The escalation admins: the configured object ids plus the members of the configured groups,
/// resolved through Graph and refreshed while the service runs. Clones share one set.
#[derive(Debug, Clone, Default)]
pub struct EscalationAdmins(std::sync::Arc<std::sync::RwLock<HashSet<String>>>);

impl EscalationAdmins {
    /// A set of these object ids (any case).
    pub fn of(oids: impl IntoIterator<Item = String>) -> Self {
        let set = oids.into_iter().map(|o| o.to_ascii_lowercase()).collect();
        Self(std::sync::Arc::new(std::sync::RwLock::new(set)))
    }

    /// Whether `oid` (any case) is one of them.
    pub fn contains(&self, oid: &str) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).contains(&oid.to_ascii_lowercase())
    }

    /// Every object id, sorted.
    pub fn snapshot(&self) -> Vec<String> {
        let mut all: Vec<String> = self.0.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        all.sort();
        all
    }

    /// Replaces the set (for everyone holding a clone).
    pub fn replace(&self, oids: impl IntoIterator<Item = String>) {
        let set = oids.into_iter().map(|o| o.to_ascii_lowercase()).collect();
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = set;
    }
}

/// Who may request and decide.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Admin object ids (lower case); `None` only in local mode, where anyone on loopback is an admin.
    pub admins: Option<HashSet<String>>,
    /// The requester may not approve their own case.
    pub require_second_approver: bool,
    /// Object ids who may also decide a case once it was escalated to them.
    pub escalation_admins: EscalationAdmins,
}

impl Policy {
    /// Whether this object id may decide `case`: an authorised admin, or an escalation admin
    /// once the case was escalated.
    pub(crate) fn may_decide(&self, case: &Case, oid: &str) -> bool {
        self.is_admin(oid) || (case.escalated_at.is_some() && self.is_escalation_admin(oid))
    }

    /// Whether this object id is one of the escalation admins.
    pub(crate) fn is_escalation_admin(&self, oid: &str) -> bool {
        self.escalation_admins.contains(oid)
    }

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
    if !policy.may_decide(case, &actor.oid) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{CaseKind, CaseSource};

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
            decision_reason: None,
            escalated_at: None,
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
        Policy {
            admins: Some(["alice".to_owned(), "bob".to_owned()].into()),
            require_second_approver: second,
            escalation_admins: Default::default(),
        }
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
}
