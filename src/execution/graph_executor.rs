//! Carries out a case's targets through Graph with the approver's delegated token, and puts
//! every Graph answer into plain words for the card and the history.
//!
//! Decisions on Graph's answers: 204/2xx = done; 404 = skipped, "nothing to remove" (the chat or
//! the user no longer exists, so nobody has access through it; the case can still finish
//! `done`); 401 = the approver's token is evicted and the call retried once; every other error
//! fails the target with the reason spelled out.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;

use super::{CaseExecutor, ProgressSink, Report, TargetResult};
use crate::cases::{Actor, Case, CaseKind, Target, TargetStatus};
use crate::graph::{
    BatchItem, BatchOutcome, GraphAnswer, GraphClient, GraphFailure, GraphReceipt, MAX_BATCH, remove_access_body, remove_access_path,
    revoke_path,
};
use crate::tokens::DelegatedTokens;

/// Plain-language outcome of a Graph status for one kind of action.
pub(crate) fn explain(kind: CaseKind, status: u16, code: &str) -> (TargetStatus, String) {
    let removal = kind != CaseKind::RevokeSessions;
    match status {
        200..=299 if removal => (TargetStatus::Done, "removed: the user no longer has access to the chat".into()),
        200..=299 => (TargetStatus::Done, "sign-in sessions revoked".into()),
        404 if removal => (TargetStatus::Skipped, "nothing to remove: Graph does not know this chat or user (404)".into()),
        404 => (TargetStatus::Skipped, "nothing to revoke: no such user (404)".into()),
        401 => (TargetStatus::Failed, "the approver's sign-in has expired (401): sign in again and retry".into()),
        403 if code.eq_ignore_ascii_case("insufficient_claims") => {
            (TargetStatus::Failed, "Conditional Access wants the approver to sign in again (403 insufficient_claims)".into())
        }
        403 if removal => (
            TargetStatus::Failed,
            format!(
                "Graph refused (403 {code}): the approver needs the delegated Chat.ReadWrite.All consent and a Teams administrator role"
            ),
        ),
        403 => (
            TargetStatus::Failed,
            format!(
                "Graph refused (403 {code}): the approver needs User.RevokeSessions.All consent and a User or Privileged Authentication Administrator role"
            ),
        ),
        400 => (TargetStatus::Failed, format!("Graph rejected the request as invalid (400 {code}): check the chat and user ids")),
        429 => (TargetStatus::Failed, "Graph kept throttling the request (429) after every retry: try again later".into()),
        500..=599 => (TargetStatus::Failed, format!("Graph failed on its side (HTTP {status}): try again later")),
        0 => (TargetStatus::Failed, format!("Graph gave no usable answer ({code}): try again later")),
        other => (TargetStatus::Failed, format!("Graph answered HTTP {other} {code}")),
    }
}

/// A target's result from Graph's status and error code (status 0: no usable answer, so no
/// Graph status is recorded).
fn target_result(kind: CaseKind, target: &Target, oid: String, answer: GraphOutcome) -> TargetResult {
    let (status_code, code, receipt) = answer;
    let (status, detail) = explain(kind, status_code, &code);
    TargetResult {
        position: target.position,
        status,
        graph_status: (status_code != 0).then_some(i64::from(status_code)),
        detail,
        user_oid: Some(oid),
        graph_code: Some(code).filter(|c| !c.is_empty()),
        receipt,
    }
}

/// What Graph answered for one target: status (0 = no usable answer), error code, receipt.
type GraphOutcome = (u16, String, Option<GraphReceipt>);

fn outcome_of(result: Result<GraphAnswer, GraphFailure>) -> GraphOutcome {
    match result {
        Ok(answer) => (answer.status, String::new(), Some(answer.receipt)),
        Err(failure) => (failure.status, failure.code, failure.receipt),
    }
}

/// The Graph-backed executor.
pub struct GraphExecutor {
    graph: Arc<GraphClient>,
    tokens: Arc<DelegatedTokens>,
    items_per_second: usize,
}

/// Graph's documented limit for Teams writes per app per tenant.
pub(crate) const TENANT_WRITES_PER_SECOND: usize = 30;

/// Paces batched writes to a number of items per sliding second, so a bulk case runs at
/// Graph's limit instead of provoking a storm of 429s (the ones that still come are retried
/// after their `Retry-After`).
struct Pacer {
    per_second: usize,
    sent: std::collections::VecDeque<(tokio::time::Instant, usize)>,
}

impl Pacer {
    fn new(per_second: usize) -> Self {
        Self { per_second: per_second.max(1), sent: std::collections::VecDeque::new() }
    }

    /// Waits until at least one item may go, and says how many (at most `max`).
    async fn room(&mut self, max: usize) -> usize {
        loop {
            let now = tokio::time::Instant::now();
            while self.sent.front().is_some_and(|(at, _)| now.duration_since(*at) >= std::time::Duration::from_secs(1)) {
                self.sent.pop_front();
            }
            let in_window: usize = self.sent.iter().map(|(_, n)| n).sum();
            if in_window < self.per_second {
                return (self.per_second - in_window).min(max);
            }
            let oldest = self.sent.front().map(|(at, _)| *at).unwrap_or(now);
            tokio::time::sleep_until(oldest + std::time::Duration::from_secs(1)).await;
        }
    }

    fn sent(&mut self, items: usize) {
        self.sent.push_back((tokio::time::Instant::now(), items));
    }
}

fn failed_all(targets: &[&Target], detail: &str) -> Vec<TargetResult> {
    targets
        .iter()
        .map(|t| TargetResult {
            position: t.position,
            status: TargetStatus::Failed,
            graph_status: None,
            detail: detail.to_owned(),
            user_oid: None,
            graph_code: None,
            receipt: None,
        })
        .collect()
}

impl GraphExecutor {
    /// An executor calling `graph` with tokens from `tokens`, pacing bulk writes to Graph's
    /// limit of `TENANT_WRITES_PER_SECOND`.
    pub fn new(graph: Arc<GraphClient>, tokens: Arc<DelegatedTokens>) -> Self {
        Self { graph, tokens, items_per_second: TENANT_WRITES_PER_SECOND }
    }

    /// Runs `call` with the approver's token; on 401 evicts the cached token and retries once.
    async fn with_token<T, F, Fut>(&self, approver: &Actor, token: &mut SecretString, call: F) -> Result<T, GraphFailure>
    where
        F: Fn(SecretString) -> Fut,
        Fut: std::future::Future<Output = Result<T, GraphFailure>>,
    {
        match call(token.clone()).await {
            Err(GraphFailure { status: 401, .. }) => {
                tracing::info!("Graph refused the approver's token; fetching a fresh one");
                self.tokens.evict(&approver.oid).await;
                match self.tokens.token_for(approver).await {
                    Ok(Some(fresh)) => {
                        *token = fresh;
                        call(token.clone()).await
                    }
                    _ => Err(GraphFailure { status: 401, code: "sign-in expired".into(), receipt: None }),
                }
            }
            other => other,
        }
    }

    /// Resolves a UPN target to its object id (`Err` carries the final result when it cannot).
    async fn resolve(&self, approver: &Actor, token: &mut SecretString, target: &Target) -> Result<String, TargetResult> {
        if let Some(oid) = &target.user_oid {
            return Ok(oid.clone());
        }
        let graph = &self.graph;
        let upn = target.user_ref.clone();
        match self
            .with_token(approver, token, |t| {
                let upn = upn.clone();
                async move { graph.user(&t, &upn).await }
            })
            .await
        {
            Ok(Some(user)) => Ok(user.id),
            Ok(None) => Err(TargetResult {
                position: target.position,
                status: TargetStatus::Skipped,
                graph_status: Some(404),
                detail: format!("no user {} in the directory: nothing to do", target.user_ref),
                user_oid: None,
                graph_code: None,
                receipt: None,
            }),
            Err(failure) => {
                let (status, detail) = explain(CaseKind::RevokeSessions, failure.status, &failure.code);
                Err(TargetResult {
                    position: target.position,
                    status,
                    graph_status: (failure.status != 0).then_some(i64::from(failure.status)),
                    detail: format!("could not look up {}: {detail}", target.user_ref),
                    user_oid: None,
                    graph_code: Some(failure.code).filter(|c| !c.is_empty()),
                    receipt: failure.receipt,
                })
            }
        }
    }

    async fn single(&self, kind: CaseKind, approver: &Actor, token: &mut SecretString, target: &Target, oid: String) -> TargetResult {
        let graph = &self.graph;
        let result = match (kind, target.thread_id.clone()) {
            (CaseKind::RevokeSessions, _) | (_, None) => {
                self.with_token(approver, token, |t| {
                    let oid = oid.clone();
                    async move { graph.revoke_sessions(&t, &oid).await }
                })
                .await
            }
            (_, Some(thread)) => {
                let tenant = target.user_tenant_id.clone();
                self.with_token(approver, token, |t| {
                    let (thread, oid, tenant) = (thread.clone(), oid.clone(), tenant.clone());
                    async move { graph.remove_all_access(&t, &thread, &oid, &tenant).await }
                })
                .await
            }
        };
        target_result(kind, target, oid, outcome_of(result))
    }

    /// Runs many targets through `$batch`, paced to Graph's limit; throttled items go back in
    /// the queue until their `Retry-After` has passed, and are paced like every other send.
    /// Each round's answers go to `progress` before the next request; only those it did not
    /// record are kept and returned. When it says stop (the lease is gone), the run ends there.
    async fn batched(
        &self,
        kind: CaseKind,
        approver: &Actor,
        token: &mut SecretString,
        work: Vec<(&Target, String)>,
        progress: &dyn ProgressSink,
    ) -> Vec<TargetResult> {
        let version = if kind == CaseKind::RevokeSessions { "v1.0" } else { self.graph.removal_version().as_str() };
        let max_attempts = self.graph.retry_policy().max_attempts.max(1);
        let item = |index: usize| {
            let (target, oid) = &work[index];
            match (&target.thread_id, kind) {
                (Some(thread), CaseKind::RemoveChat | CaseKind::RemoveExternal) => BatchItem {
                    id: index.to_string(),
                    method: "POST",
                    url: remove_access_path(thread),
                    body: Some(remove_access_body(oid, &target.user_tenant_id)),
                },
                _ => BatchItem { id: index.to_string(), method: "POST", url: revoke_path(oid), body: None },
            }
        };
        let result_of = |index: usize, outcome: GraphOutcome| {
            let (target, oid) = &work[index];
            target_result(kind, target, oid.clone(), outcome)
        };
        let start = tokio::time::Instant::now();
        // (index into work, attempts so far, not before); kept in not-before order.
        let mut queue: VecDeque<(usize, u32, tokio::time::Instant)> = (0..work.len()).map(|i| (i, 0, start)).collect();
        // Outcomes the sink did not record; recorded ones are dropped at once, so the run holds
        // no result per target.
        let mut kept: Vec<TargetResult> = Vec::new();
        let mut pacer = Pacer::new(self.items_per_second);
        let mut refreshed = false;
        while let Some(&(_, _, first_ready)) = queue.front() {
            let now = tokio::time::Instant::now();
            if first_ready > now {
                tokio::time::sleep_until(first_ready).await;
                continue;
            }
            let ready = queue.iter().take_while(|(_, _, at)| *at <= now).count();
            let room = pacer.room(ready.min(MAX_BATCH)).await;
            let sending: Vec<(usize, u32, tokio::time::Instant)> = queue.drain(..room.min(ready)).collect();
            pacer.sent(sending.len());
            let items: Vec<BatchItem> = sending.iter().map(|(i, _, _)| item(*i)).collect();
            let mut round = Vec::with_capacity(sending.len());
            let outcomes = match self.graph.batch_once(token, version, &items).await {
                Ok(outcomes) => outcomes,
                // A refused token refuses every item: handled below like per-item 401s.
                Err(failure) if failure.status == 401 => items
                    .iter()
                    .map(|item| BatchOutcome {
                        id: item.id.clone(),
                        status: 401,
                        code: failure.code.clone(),
                        retry_after: None,
                        receipt: failure.receipt.clone(),
                    })
                    .collect(),
                Err(failure) => {
                    for (i, _, _) in &sending {
                        round.push(result_of(*i, (failure.status, failure.code.clone(), failure.receipt.clone())));
                    }
                    Vec::new()
                }
            };
            let mut unauthorised = Vec::new();
            for ((i, attempts, _), outcome) in sending.into_iter().zip(outcomes) {
                if outcome.retryable() && attempts + 1 < max_attempts {
                    let wait = outcome.retry_after.unwrap_or_else(|| crate::outbound::backoff(&self.graph.retry_policy(), attempts + 1));
                    queue.push_back((i, attempts + 1, tokio::time::Instant::now() + wait));
                } else if outcome.status == 401 && !refreshed {
                    unauthorised.push((i, attempts, tokio::time::Instant::now()));
                } else {
                    round.push(result_of(i, (outcome.status, outcome.code, outcome.receipt)));
                }
            }
            if !unauthorised.is_empty() {
                refreshed = true;
                if self.refresh_token(approver, token).await {
                    for entry in unauthorised.into_iter().rev() {
                        queue.push_front(entry);
                    }
                } else {
                    for (i, _, _) in unauthorised {
                        round.push(result_of(i, (401, "sign-in expired".into(), None)));
                    }
                }
            }
            // Keep the queue in not-before order (re-queued items may be due earlier than others).
            queue.make_contiguous().sort_by_key(|(_, _, at)| *at);
            // Durable before the next request: a restart sends only what is still unanswered.
            let now = tokio::time::Instant::now();
            progress.waiting(queue.iter().filter(|(_, attempts, at)| *attempts > 0 && *at > now).count());
            match progress.finished(&round).await {
                Report::Recorded => {}
                Report::NotRecorded => kept.append(&mut round),
                Report::Stop => {
                    kept.append(&mut round);
                    break;
                }
            }
        }
        kept.sort_unstable_by_key(|r| r.position);
        kept
    }

    /// Drops the approver's cached token and fetches a fresh one; false when there is none.
    async fn refresh_token(&self, approver: &Actor, token: &mut SecretString) -> bool {
        self.tokens.evict(&approver.oid).await;
        match self.tokens.token_for(approver).await {
            Ok(Some(fresh)) => {
                *token = fresh;
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl CaseExecutor for GraphExecutor {
    async fn execute(&self, case: &Case, progress: &dyn ProgressSink) -> Vec<TargetResult> {
        let pending: Vec<&Target> = case.targets.iter().filter(|t| t.status == TargetStatus::Pending).collect();
        let Some(approver) = &case.approver else {
            return failed_all(&pending, "the case has no approver");
        };
        let mut token = match self.tokens.token_for(approver).await {
            Ok(Some(token)) => token,
            Ok(None) => return failed_all(&pending, "the approver is no longer signed in: sign in and approve a new case"),
            Err(err) => {
                tracing::error!(case.id = %case.id, error = %err, "could not get the approver's token");
                return failed_all(&pending, "the sign-in service could not be reached: try again later");
            }
        };
        let mut results = Vec::with_capacity(pending.len());
        let mut work = Vec::with_capacity(pending.len());
        for target in pending {
            // Revoking the approver's own sessions would cut the run short: skip and list them.
            if case.kind == CaseKind::RevokeSessions
                && target.user_oid.as_deref().is_some_and(|oid| oid.eq_ignore_ascii_case(&approver.oid))
            {
                results.push(TargetResult {
                    position: target.position,
                    status: TargetStatus::Skipped,
                    graph_status: None,
                    detail: "skipped: these are the approver's own sessions (revoke them separately)".into(),
                    user_oid: Some(approver.oid.clone()),
                    graph_code: None,
                    receipt: None,
                });
                continue;
            }
            match self.resolve(approver, &mut token, target).await {
                Ok(oid) => work.push((target, oid)),
                Err(result) => results.push(result),
            }
        }
        if work.len() == 1 {
            let (target, oid) = work.remove(0);
            results.push(self.single(case.kind, approver, &mut token, target, oid).await);
        } else if !work.is_empty() {
            results.extend(self.batched(case.kind, approver, &mut token, work, progress).await);
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_answers_read_as_plain_words() {
        assert_eq!(explain(CaseKind::RemoveChat, 204, "").0, TargetStatus::Done);
        assert_eq!(explain(CaseKind::RevokeSessions, 200, "").1, "sign-in sessions revoked");
        assert_eq!(explain(CaseKind::RemoveChat, 404, "NotFound").0, TargetStatus::Skipped);
        let (status, detail) = explain(CaseKind::RemoveChat, 403, "Forbidden");
        assert_eq!(status, TargetStatus::Failed);
        assert!(detail.contains("Chat.ReadWrite.All"), "{detail}");
        assert!(explain(CaseKind::RevokeSessions, 403, "Authorization_RequestDenied").1.contains("User.RevokeSessions.All"));
        assert!(explain(CaseKind::RemoveChat, 403, "insufficient_claims").1.contains("Conditional Access"));
        assert!(explain(CaseKind::RemoveChat, 429, "").1.contains("throttling"));
        assert!(explain(CaseKind::RemoveChat, 503, "").1.contains("HTTP 503"));
        assert!(explain(CaseKind::RemoveChat, 0, "timeout").1.contains("no usable answer (timeout)"));
    }
}
