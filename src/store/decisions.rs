//! Decisions on proposed cases: an admin's approval or rejection, applied once, and the expiry of
//! proposals nobody decided before their deadline.

use sqlx::{Any, Transaction};

use super::dedupe::claim_activity;
use super::events::{insert_event, insert_event_with_data};
use super::pairs::release_alert_key;
use super::{Store, StoreError};
use crate::cases::{Actor, Case, CaseState, Decision, DecisionNote, Policy, Refusal, check_decision};

/// Result of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionOutcome {
    /// The case moved to approved or rejected.
    Applied(Box<Case>),
    /// The decision was refused (and recorded); holds the case when it exists.
    Refused(Refusal, Option<Box<Case>>),
    /// The same activity was already processed; nothing changed.
    Duplicate(Option<Box<Case>>),
}

/// `proposed -> expired` (compare-and-set) with its event; `false` when the case was no longer proposed.
async fn expire_proposal(tx: &mut Transaction<'_, Any>, case_id: &str, now: i64) -> Result<bool, StoreError> {
    let expired =
        sqlx::query("UPDATE cases SET state = 'expired', updated_at = $1, version = version + 1 WHERE id = $2 AND state = 'proposed'")
            .bind(now)
            .bind(case_id)
            .execute(&mut **tx)
            .await?;
    if expired.rows_affected() != 1 {
        return Ok(false);
    }
    release_alert_key(tx, case_id).await?;
    insert_event(tx, Some(case_id), None, "expired", Some("no decision before the deadline"), now).await?;
    Ok(true)
}

impl Store {
    /// Applies an admin's decision, once: the activity key and the state change commit together.
    pub async fn decide(
        &self,
        case_id: &str,
        actor: &Actor,
        decision: Decision,
        activity_key: Option<&str>,
        policy: &Policy,
        now: i64,
    ) -> Result<DecisionOutcome, StoreError> {
        self.decide_with(case_id, actor, &DecisionNote::default(), decision, activity_key, policy, now).await
    }

    /// [`Store::decide`] with what the decider gave: the reason is kept with the case and its
    /// event, the UPN the approver's delegated token names in the event (beside the object id).
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_with(
        &self,
        case_id: &str,
        actor: &Actor,
        note: &DecisionNote,
        decision: Decision,
        activity_key: Option<&str>,
        policy: &Policy,
        now: i64,
    ) -> Result<DecisionOutcome, StoreError> {
        let current = self.case(case_id).await?;
        let mut tx = self.pool.begin().await?;
        if let Some(key) = activity_key {
            if !claim_activity(&mut tx, key, now).await? {
                tx.rollback().await?;
                return Ok(DecisionOutcome::Duplicate(current.map(Box::new)));
            }
        }
        let Some(case) = current else {
            // Reveal nothing: the same refusal whether the id is unknown or belongs elsewhere.
            insert_event(&mut tx, None, Some(actor), "refused", Some(&format!("decision on unknown case {case_id}")), now).await?;
            tx.commit().await?;
            return Ok(DecisionOutcome::Refused(Refusal::NotFound, None));
        };
        let verdict = check_decision(&case, actor, decision, policy, now);
        let outcome = match verdict {
            Ok(next) => {
                let updated = sqlx::query(
                    "UPDATE cases SET state = $1, approver_oid = $2, approver_name = $3, approver_user_id = $4, decided_at = $5, \
                     updated_at = $5, decision_reason = $8, version = version + 1 WHERE id = $6 AND state = 'proposed' AND version = $7",
                )
                .bind(next.as_str())
                .bind(&actor.oid)
                .bind(&actor.name)
                .bind(&actor.user_id)
                .bind(now)
                .bind(case_id)
                .bind(case.version)
                .bind(note.reason.as_deref())
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 1 {
                    if decision == Decision::Reject {
                        release_alert_key(&mut tx, case_id).await?;
                    }
                    let kind = if decision == Decision::Approve { "approved" } else { "rejected" };
                    let detail = match (&note.approver_upn, &note.reason) {
                        (Some(upn), Some(reason)) => Some(format!("signed in as {upn}; reason: {reason}")),
                        (Some(upn), None) => Some(format!("signed in as {upn}")),
                        (None, Some(reason)) => Some(format!("reason: {reason}")),
                        (None, None) => None,
                    };
                    let data = serde_json::json!({"approver_oid": actor.oid, "approver_upn": note.approver_upn, "reason": note.reason})
                        .to_string();
                    insert_event_with_data(&mut tx, Some(case_id), Some(actor), kind, detail.as_deref(), Some(&data), now).await?;
                    None
                } else {
                    insert_event(&mut tx, Some(case_id), Some(actor), "refused", Some("already decided by someone else"), now).await?;
                    Some(Refusal::AlreadyDecided(CaseState::Approved))
                }
            }
            Err(Refusal::Expired) => {
                expire_proposal(&mut tx, case_id, now).await?;
                insert_event(&mut tx, Some(case_id), Some(actor), "refused", Some("decision after the deadline"), now).await?;
                Some(Refusal::Expired)
            }
            Err(refusal) => {
                // Refusals of non-admins are recorded without tying them to the case's history.
                let case_ref = if refusal == Refusal::NotAuthorised { None } else { Some(case_id) };
                let detail = format!("{} on {case_id}", refusal.code());
                insert_event(&mut tx, case_ref, Some(actor), "refused", Some(&detail), now).await?;
                Some(refusal)
            }
        };
        tx.commit().await?;
        let after = self.case(case_id).await?.map(Box::new);
        Ok(match (outcome, after) {
            (None, Some(case)) => DecisionOutcome::Applied(case),
            (None, None) => DecisionOutcome::Refused(Refusal::NotFound, None),
            (Some(Refusal::AlreadyDecided(_)), after) => {
                let state = after.as_ref().map_or(CaseState::Approved, |c| c.state);
                DecisionOutcome::Refused(Refusal::AlreadyDecided(state), after)
            }
            (Some(refusal), after) => DecisionOutcome::Refused(refusal, after),
        })
    }

    /// Expires every proposed case past its deadline; returns them (for card updates).
    pub async fn expire_due(&self, now: i64) -> Result<Vec<Case>, StoreError> {
        let due: Vec<String> =
            sqlx::query_scalar("SELECT id FROM cases WHERE state = 'proposed' AND expires_at <= $1 ORDER BY expires_at LIMIT 100")
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
        let mut expired = Vec::new();
        for id in due {
            let mut tx = self.pool.begin().await?;
            if expire_proposal(&mut tx, &id, now).await? {
                tx.commit().await?;
                if let Some(case) = self.case(&id).await? {
                    expired.push(case);
                }
            } else {
                tx.rollback().await?;
            }
        }
        Ok(expired)
    }
}
