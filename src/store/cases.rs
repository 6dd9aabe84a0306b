//! Case queries. Every state change is a compare-and-set on the state it leaves (`WHERE state =
//! ...`; a decision also on the case's `version`, since it was checked against the case as read)
//! and is committed in the same transaction as the activity dedupe key that caused it, so a
//! double click, a redelivered activity or two replicas never apply a change twice. Closing a case
//! releases the alert key it held, in the same transaction.

use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use super::pairs::release_alert_key;
use super::{Store, StoreError};
use crate::cases::{
    Actor, CardRef, Case, CaseEvent, CaseKind, CaseSource, CaseState, Decision, NewCase, Policy, Refusal, Target, TargetStatus,
    check_decision, new_case_id,
};

/// Result of opening a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new case.
    New(Box<Case>),
    /// The activity was already processed; holds the case it opened, if any.
    Duplicate(Option<String>),
}

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

const CASE_COLUMNS: &str = "id, kind, state, source, tenant_id, requester_oid, requester_name, requester_user_id, reason, no_evidence, \
     approver_oid, approver_name, approver_user_id, decided_at, service_url, conversation_id, card_activity_id, created_at, updated_at, \
     expires_at, version";

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}

fn case_from_row(row: &AnyRow) -> Result<Case, StoreError> {
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let source: String = row.try_get("source")?;
    let approver_oid: Option<String> = row.try_get("approver_oid")?;
    let approver = match approver_oid {
        Some(oid) => Some(Actor {
            oid,
            name: row.try_get::<Option<String>, _>("approver_name")?.unwrap_or_default(),
            user_id: row.try_get::<Option<String>, _>("approver_user_id")?.unwrap_or_default(),
        }),
        None => None,
    };
    let card = match (
        row.try_get::<Option<String>, _>("service_url")?,
        row.try_get::<Option<String>, _>("conversation_id")?,
        row.try_get::<Option<String>, _>("card_activity_id")?,
    ) {
        (Some(service_url), Some(conversation_id), Some(activity_id)) => Some(CardRef { service_url, conversation_id, activity_id }),
        _ => None,
    };
    Ok(Case {
        id: row.try_get("id")?,
        kind: CaseKind::parse(&kind).ok_or_else(|| corrupt("case kind", &kind))?,
        state: CaseState::parse(&state).ok_or_else(|| corrupt("case state", &state))?,
        source: CaseSource::parse(&source).ok_or_else(|| corrupt("case source", &source))?,
        tenant_id: row.try_get("tenant_id")?,
        requester: Actor {
            oid: row.try_get("requester_oid")?,
            name: row.try_get("requester_name")?,
            user_id: row.try_get("requester_user_id")?,
        },
        reason: row.try_get("reason")?,
        no_evidence: row.try_get::<i64, _>("no_evidence")? != 0,
        approver,
        decided_at: row.try_get("decided_at")?,
        card,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        version: row.try_get("version")?,
        targets: Vec::new(),
        evidence: Vec::new(),
    })
}

fn event_from_row(row: &AnyRow) -> Result<CaseEvent, StoreError> {
    Ok(CaseEvent {
        at: row.try_get("at")?,
        actor_oid: row.try_get("actor_oid")?,
        actor_name: row.try_get("actor_name")?,
        kind: row.try_get("kind")?,
        detail: row.try_get("detail")?,
    })
}

fn target_from_row(row: &AnyRow) -> Result<Target, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Target {
        position: row.try_get("position")?,
        thread_id: row.try_get("thread_id")?,
        user_ref: row.try_get("user_ref")?,
        user_oid: row.try_get("user_oid")?,
        user_tenant_id: row.try_get("user_tenant_id")?,
        display_name: row.try_get("display_name")?,
        status: TargetStatus::parse(&status).ok_or_else(|| corrupt("target status", &status))?,
        graph_status: row.try_get("graph_status")?,
        detail: row.try_get("detail")?,
    })
}

pub(super) async fn insert_event(
    tx: &mut Transaction<'_, Any>,
    case_id: Option<&str>,
    actor: Option<&Actor>,
    kind: &str,
    detail: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO events (case_id, at, actor_oid, actor_name, kind, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(case_id)
        .bind(now)
        .bind(actor.map(|a| a.oid.as_str()))
        .bind(actor.map(|a| a.name.as_str()))
        .bind(kind)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
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

/// Claims an activity key; `Ok(false)` when it was already claimed.
async fn claim_activity(tx: &mut Transaction<'_, Any>, key: &str, now: i64) -> Result<bool, StoreError> {
    let result = sqlx::query("INSERT INTO processed_activities (activity_key, case_id, processed_at) VALUES ($1, NULL, $2) ON CONFLICT (activity_key) DO NOTHING")
        .bind(key)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(result.rows_affected() == 1)
}

impl Store {
    /// Opens a case, once per activity key (a redelivered command opens nothing).
    pub async fn create_case(&self, new: &NewCase, activity_key: Option<&str>, now: i64) -> Result<Created, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = activity_key {
            if !claim_activity(&mut tx, key, now).await? {
                tx.rollback().await?;
                let case_id: Option<String> = sqlx::query_scalar("SELECT case_id FROM processed_activities WHERE activity_key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?
                    .flatten();
                return Ok(Created::Duplicate(case_id));
            }
        }
        let mut id = String::new();
        for _ in 0..8 {
            let candidate = new_case_id();
            let inserted = sqlx::query(
                "INSERT INTO cases (id, kind, state, source, tenant_id, requester_oid, requester_name, requester_user_id, reason, no_evidence, \
                 created_at, updated_at, expires_at, version) VALUES ($1, $2, 'proposed', $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, 0) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&candidate)
            .bind(new.kind.as_str())
            .bind(new.source.as_str())
            .bind(&new.tenant_id)
            .bind(&new.requester.oid)
            .bind(&new.requester.name)
            .bind(&new.requester.user_id)
            .bind(new.reason.as_deref())
            .bind(i64::from(new.no_evidence))
            .bind(now)
            .bind(now + new.ttl_ms)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                id = candidate;
                break;
            }
        }
        if id.is_empty() {
            return Err(StoreError::Corrupt("could not allocate a unique case id".into()));
        }
        for (position, target) in new.targets.iter().enumerate() {
            sqlx::query(
                "INSERT INTO case_targets (case_id, position, thread_id, user_ref, user_oid, user_tenant_id, display_name, status, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
            )
            .bind(&id)
            .bind(position as i64)
            .bind(target.thread_id.as_deref())
            .bind(&target.user_ref)
            .bind(target.user_oid.as_deref())
            .bind(&target.user_tenant_id)
            .bind(target.display_name.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for record_id in &new.evidence {
            sqlx::query("INSERT INTO case_evidence (case_id, audit_record_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&id)
                .bind(record_id)
                .execute(&mut *tx)
                .await?;
        }
        let detail = match (&new.reason, new.no_evidence) {
            (Some(reason), false) => format!("{} ({} target(s)); reason: {reason}", new.kind.describe(), new.targets.len()),
            (Some(reason), true) => {
                format!("{} ({} target(s)) without audit evidence; reason: {reason}", new.kind.describe(), new.targets.len())
            }
            (None, false) => format!("{} ({} target(s))", new.kind.describe(), new.targets.len()),
            (None, true) => format!("{} ({} target(s)) without audit evidence", new.kind.describe(), new.targets.len()),
        };
        insert_event(&mut tx, Some(&id), Some(&new.requester), "requested", Some(&detail), now).await?;
        if let Some(key) = activity_key {
            sqlx::query("UPDATE processed_activities SET case_id = $1 WHERE activity_key = $2")
                .bind(&id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let case = self.case(&id).await?.ok_or_else(|| StoreError::Corrupt(format!("case {id} vanished after insert")))?;
        Ok(Created::New(Box::new(case)))
    }

    /// One case with its targets and evidence.
    pub async fn case(&self, id: &str) -> Result<Option<Case>, StoreError> {
        let row = sqlx::query(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let mut case = case_from_row(&row)?;
        let targets = sqlx::query(
            "SELECT position, thread_id, user_ref, user_oid, user_tenant_id, display_name, status, graph_status, detail \
             FROM case_targets WHERE case_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        case.targets = targets.iter().map(target_from_row).collect::<Result<_, _>>()?;
        case.evidence = sqlx::query_scalar("SELECT audit_record_id FROM case_evidence WHERE case_id = $1 ORDER BY audit_record_id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(case))
    }

    /// The last `limit` cases, newest first.
    pub async fn history(&self, limit: u32) -> Result<Vec<Case>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM cases ORDER BY created_at DESC, id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut cases = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(case) = self.case(&id).await? {
                cases.push(case);
            }
        }
        Ok(cases)
    }

    /// The history of one case, oldest first.
    pub async fn events(&self, case_id: &str) -> Result<Vec<CaseEvent>, StoreError> {
        let rows = sqlx::query("SELECT at, actor_oid, actor_name, kind, detail FROM events WHERE case_id = $1 ORDER BY id")
            .bind(case_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Records a refusal or any other event (a `None` case for refusals that concern no case).
    pub async fn record_event(
        &self,
        case_id: Option<&str>,
        actor: Option<&Actor>,
        kind: &str,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_event(&mut tx, case_id, actor, kind, detail, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Events that concern no case (refusals of unauthorised people), newest first.
    pub async fn refusals(&self, limit: u32) -> Result<Vec<CaseEvent>, StoreError> {
        let rows =
            sqlx::query("SELECT at, actor_oid, actor_name, kind, detail FROM events WHERE case_id IS NULL ORDER BY id DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Remembers where a case's card was posted.
    pub async fn set_card(&self, case_id: &str, card: &CardRef, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE cases SET service_url = $1, conversation_id = $2, card_activity_id = $3, updated_at = $4 WHERE id = $5")
            .bind(&card.service_url)
            .bind(&card.conversation_id)
            .bind(&card.activity_id)
            .bind(now)
            .bind(case_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
                     updated_at = $5, version = version + 1 WHERE id = $6 AND state = 'proposed' AND version = $7",
                )
                .bind(next.as_str())
                .bind(&actor.oid)
                .bind(&actor.name)
                .bind(&actor.user_id)
                .bind(now)
                .bind(case_id)
                .bind(case.version)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 1 {
                    if decision == Decision::Reject {
                        release_alert_key(&mut tx, case_id).await?;
                    }
                    let kind = if decision == Decision::Approve { "approved" } else { "rejected" };
                    insert_event(&mut tx, Some(case_id), Some(actor), kind, None, now).await?;
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

    /// Claims a case for execution: `approved -> executing`, or an `executing` case whose lease
    /// ran out (its replica died). Returns the case when this caller won the claim.
    pub async fn claim_for_execution(&self, case_id: &str, owner: &str, lease_ms: i64, now: i64) -> Result<Option<Case>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE cases SET state = 'executing', lease_owner = $1, lease_until = $2, updated_at = $3, version = version + 1 \
             WHERE id = $4 AND (state = 'approved' OR (state = 'executing' AND (lease_until IS NULL OR lease_until < $3)))",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(case_id)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        insert_event(&mut tx, Some(case_id), None, "executing", None, now).await?;
        tx.commit().await?;
        self.case(case_id).await
    }

    /// Extends the execution lease of a case this owner holds.
    pub async fn renew_lease(&self, case_id: &str, owner: &str, lease_until: i64) -> Result<bool, StoreError> {
        let renewed = sqlx::query("UPDATE cases SET lease_until = $1 WHERE id = $2 AND state = 'executing' AND lease_owner = $3")
            .bind(lease_until)
            .bind(case_id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Records one target's outcome (and the object id it resolved to).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_target(
        &self,
        case_id: &str,
        position: i64,
        status: TargetStatus,
        graph_status: Option<i64>,
        detail: &str,
        user_oid: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE case_targets SET status = $1, graph_status = $2, detail = $3, user_oid = COALESCE($4, user_oid), updated_at = $5 \
             WHERE case_id = $6 AND position = $7",
        )
        .bind(status.as_str())
        .bind(graph_status)
        .bind(detail)
        .bind(user_oid)
        .bind(now)
        .bind(case_id)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        let event = format!("target {position}: {detail}");
        insert_event(&mut tx, Some(case_id), None, &format!("target_{}", status.as_str()), Some(&event), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends an execution this owner holds: `executing -> done | failed`.
    pub async fn finish(&self, case_id: &str, owner: &str, state: CaseState, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let finished = sqlx::query(
            "UPDATE cases SET state = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2, version = version + 1 \
             WHERE id = $3 AND state = 'executing' AND lease_owner = $4",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(case_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if finished.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        release_alert_key(&mut tx, case_id).await?;
        insert_event(&mut tx, Some(case_id), None, state.as_str(), None, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Cases waiting to be executed: approved, or executing with a lapsed lease.
    pub async fn claimable(&self, now: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM cases WHERE state = 'approved' OR (state = 'executing' AND (lease_until IS NULL OR lease_until < $1)) \
             ORDER BY created_at LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
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

impl Store {
    /// Remembers that `admin_oid` approved `case_id` and must sign in first (one pending
    /// approval per admin; a newer one replaces the older).
    pub async fn set_pending_signin(&self, admin_oid: &str, case_id: &str, decision: Decision, now: i64) -> Result<(), StoreError> {
        let decision = match decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        };
        sqlx::query(
            "INSERT INTO pending_signins (admin_oid, case_id, decision, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (admin_oid) DO UPDATE SET case_id = excluded.case_id, decision = excluded.decision, created_at = excluded.created_at",
        )
        .bind(admin_oid)
        .bind(case_id)
        .bind(decision)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes (and removes) the approval `admin_oid` left pending, if it is younger than `max_age_ms`.
    pub async fn take_pending_signin(&self, admin_oid: &str, max_age_ms: i64, now: i64) -> Result<Option<(String, Decision)>, StoreError> {
        let row = sqlx::query("DELETE FROM pending_signins WHERE admin_oid = $1 RETURNING case_id, decision, created_at")
            .bind(admin_oid)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let created_at: i64 = row.try_get("created_at")?;
        if now - created_at > max_age_ms {
            return Ok(None);
        }
        let decision = match row.try_get::<String, _>("decision")?.as_str() {
            "approve" => Decision::Approve,
            "reject" => Decision::Reject,
            other => return Err(corrupt("pending decision", other)),
        };
        Ok(Some((row.try_get("case_id")?, decision)))
    }

    /// Claims a one-time key (e.g. a repeated SSO token exchange); `false` when already claimed.
    pub async fn claim_key(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fresh = claim_activity(&mut tx, key, now).await?;
        tx.commit().await?;
        Ok(fresh)
    }
}

impl Store {
    /// How many cases are in each state.
    pub async fn case_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM cases GROUP BY state ORDER BY state").fetch_all(&self.pool).await?;
        rows.iter().map(|row| Ok((row.try_get("state")?, row.try_get("n")?))).collect()
    }
}
