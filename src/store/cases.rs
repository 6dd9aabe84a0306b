//! Opening and reading cases: a case opened once per activity key, one case with its targets and
//! evidence (or its summary, or a page of its pending targets), the latest cases, where a case's
//! card was posted, and how many cases are in each state.
//!
//! Every state change is a compare-and-set on the state it leaves (`WHERE state = ...`; a decision
//! also on the case's `version`, since it was checked against the case as read) and is committed in
//! the same transaction as the activity dedupe key that caused it, so a double click, a redelivered
//! activity or two replicas never apply a change twice. Closing a case releases the alert key it
//! held, in the same transaction. Decisions and expiry are in `decisions.rs`, execution in
//! `leases.rs`.

use futures_util::TryStreamExt as _;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::dedupe::claim_activity;
use super::events::insert_event;
use super::{Store, StoreError};
use crate::cases::{
    Actor, CardRef, Case, CaseKind, CaseSource, CaseState, CaseSummary, GraphReceipt, NewCase, SUMMARY_TARGETS, Target, TargetStatus,
    TargetTally, new_case_id,
};

/// Result of opening a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new case.
    New(Box<Case>),
    /// The activity was already processed; holds the case it opened, if any.
    Duplicate(Option<String>),
}

const CASE_COLUMNS: &str = "id, kind, state, source, tenant_id, requester_oid, requester_name, requester_user_id, reason, no_evidence, \
     approver_oid, approver_name, approver_user_id, decided_at, decision_reason, escalated_at, service_url, conversation_id, card_activity_id, created_at, updated_at, \
     expires_at, version";

const TARGET_COLUMNS: &str = "position, thread_id, user_ref, user_oid, user_tenant_id, display_name, status, graph_status, detail, \
     graph_code, graph_request_id, client_request_id, graph_date";

/// The error for a stored value the code does not know.
pub(super) fn corrupt(what: &str, value: &str) -> StoreError {
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
        decision_reason: row.try_get("decision_reason")?,
        escalated_at: row.try_get("escalated_at")?,
        card,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        version: row.try_get("version")?,
        targets: Vec::new(),
        evidence: Vec::new(),
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
        graph_code: row.try_get("graph_code")?,
        receipt: row
            .try_get::<Option<String>, _>("client_request_id")?
            .map(|client_request_id| -> Result<_, StoreError> {
                Ok(GraphReceipt { client_request_id, request_id: row.try_get("graph_request_id")?, date: row.try_get("graph_date")? })
            })
            .transpose()?,
    })
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
        let Some(mut case) = self.case_row(id).await? else { return Ok(None) };
        // Row by row: a case of 10,000 targets never has all its rows and all its targets in
        // memory at once (BENCHMARKS.md, "Memory during a run").
        let sql = format!("SELECT {TARGET_COLUMNS} FROM case_targets WHERE case_id = $1 ORDER BY position");
        let mut targets = sqlx::query(&sql).bind(id).fetch(&self.pool);
        while let Some(row) = targets.try_next().await? {
            case.targets.push(target_from_row(&row)?);
        }
        drop(targets);
        Ok(Some(case))
    }

    /// One case with its evidence, only its first [`SUMMARY_TARGETS`] targets and the tally of all
    /// of them: what its card needs, whatever its size.
    pub async fn case_summary(&self, id: &str) -> Result<Option<CaseSummary>, StoreError> {
        let Some(mut case) = self.case_row(id).await? else { return Ok(None) };
        case.targets = sqlx::query(&format!("SELECT {TARGET_COLUMNS} FROM case_targets WHERE case_id = $1 ORDER BY position LIMIT $2"))
            .bind(id)
            .bind(SUMMARY_TARGETS as i64)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(target_from_row)
            .collect::<Result<_, _>>()?;
        let mut tally = TargetTally::default();
        for row in sqlx::query("SELECT status, COUNT(*) AS n FROM case_targets WHERE case_id = $1 GROUP BY status")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
        {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            tally.add(TargetStatus::parse(&status).ok_or_else(|| corrupt("target status", &status))?, usize::try_from(n).unwrap_or(0));
        }
        Ok(Some(CaseSummary { case, tally }))
    }

    /// Up to `limit` of a case's pending targets after position `after` (from the first when
    /// `None`), by position: how a run takes its targets, a page at a time.
    pub async fn pending_targets(&self, case_id: &str, after: Option<i64>, limit: usize) -> Result<Vec<Target>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TARGET_COLUMNS} FROM case_targets WHERE case_id = $1 AND status = 'pending' AND position > $2 \
             ORDER BY position LIMIT $3"
        ))
        .bind(case_id)
        .bind(after.unwrap_or(-1))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(target_from_row)
        .collect()
    }

    /// A case's row and evidence, without its targets.
    async fn case_row(&self, id: &str) -> Result<Option<Case>, StoreError> {
        let row = sqlx::query(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let mut case = case_from_row(&row)?;
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

    /// How many cases are in each state.
    pub async fn case_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM cases GROUP BY state ORDER BY state").fetch_all(&self.pool).await?;
        rows.iter().map(|row| Ok((row.try_get("state")?, row.try_get("n")?))).collect()
    }
}
