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
use tokio::sync::Mutex;

use super::pacing::{DIRECTORY_WRITES, Pacer, Pacing, TEAMS_WRITES};
use super::pending::{Pages, PendingTargets};
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

/// The Graph-backed executor. One per process: every run it carries out shares its pacers, since
/// Graph's limits are per app and tenant, not per case.
pub struct GraphExecutor {
    graph: Arc<GraphClient>,
    tokens: Arc<DelegatedTokens>,
    removals: Mutex<Pacer>,
    revocations: Mutex<Pacer>,
}

fn failed_all(targets: &[Target], detail: &str) -> Vec<TargetResult> {
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
    /// An executor calling `graph` with tokens from `tokens`, pacing bulk writes to the limits
    /// of the service behind them: Teams for removals, Entra ID for revocations (`pacing`).
    pub fn new(graph: Arc<GraphClient>, tokens: Arc<DelegatedTokens>) -> Self {
        Self { graph, tokens, removals: Mutex::new(Pacer::new(TEAMS_WRITES)), revocations: Mutex::new(Pacer::new(DIRECTORY_WRITES)) }
    }

    /// The same executor sending every kind of write at `items_per_second` in any second
    /// instead: for running it where Graph's limits are not what is measured (tests of what a
    /// run holds, not of its pace).
    pub fn paced_at(self, items_per_second: usize) -> Self {
        let pacing = Pacing::Window { per_second: items_per_second };
        Self { removals: Mutex::new(Pacer::new(pacing)), revocations: Mutex::new(Pacer::new(pacing)), ..self }
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

    /// Runs a case's targets through `$batch`, paced to Graph's limit. `first` is the first
    /// page, read and prepared; the next pages come from `pages` whenever fewer than a request's
    /// worth are ready, while fewer than [`MAX_QUEUED`] wait. Throttled items go back in the queue
    /// until their `Retry-After` has passed, and are paced like every other send. Each round's
    /// answers go to `progress` before the next request; only those it did not record are kept
    /// and returned. When it says stop (the lease is gone), the run ends there.
    async fn batched(
        &self,
        kind: CaseKind,
        approver: &Actor,
        token: &mut SecretString,
        first: Prepared,
        pages: &mut Pages<'_>,
        progress: &dyn ProgressSink,
    ) -> Vec<TargetResult> {
        let version = if kind == CaseKind::RevokeSessions { "v1.0" } else { self.graph.removal_version().as_str() };
        let max_attempts = self.graph.retry_policy().max_attempts.max(1);
        let item = |work: &Work| match (&work.target.thread_id, kind) {
            (Some(thread), CaseKind::RemoveChat | CaseKind::RemoveExternal) => BatchItem {
                id: work.target.position.to_string(),
                method: "POST",
                url: remove_access_path(thread),
                body: Some(remove_access_body(&work.oid, &work.target.user_tenant_id)),
            },
            _ => BatchItem { id: work.target.position.to_string(), method: "POST", url: revoke_path(&work.oid), body: None },
        };
        let result_of = |work: Work, outcome: GraphOutcome| target_result(kind, &work.target, work.oid, outcome);
        // Kept in not-before order.
        let mut queue: VecDeque<Queued> = VecDeque::new();
        // Outcomes not yet handed to the sink: a round's answers, and the targets a page settled
        // without Graph (skipped, not found).
        let mut round = first.results;
        enqueue(&mut queue, first.work);
        // Outcomes the sink did not record; recorded ones are dropped at once, so the run holds
        // no result per target.
        let mut kept: Vec<TargetResult> = Vec::new();
        let pacer = if kind == CaseKind::RevokeSessions { &self.revocations } else { &self.removals };
        let mut refreshed = false;
        loop {
            let now = tokio::time::Instant::now();
            let ready = queue.iter().take_while(|queued| queued.not_before <= now).count();
            if ready < MAX_BATCH && queue.len() < MAX_QUEUED && !pages.exhausted() {
                let page = pages.next(PAGE).await;
                let prepared = self.prepare(kind, approver, token, page).await;
                round.extend(prepared.results);
                enqueue(&mut queue, prepared.work);
                continue;
            }
            let Some(first_ready) = queue.front().map(|queued| queued.not_before) else { break };
            if first_ready > now {
                tokio::time::sleep_until(first_ready).await;
                continue;
            }
            // Room is taken and counted under the lock, so runs at once share the limit: a run
            // waiting for room holds it, and the others queue behind.
            let mut sending: Vec<Queued> = {
                let mut pacer = pacer.lock().await;
                let room = pacer.room(ready.min(MAX_BATCH)).await;
                let sending: Vec<Queued> = queue.drain(..room.min(ready)).collect();
                pacer.sent(sending.len());
                sending
            };
            let items: Vec<BatchItem> = sending.iter().map(|queued| item(&queued.work)).collect();
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
                // Any other failure of the whole request (after the client's own retries) is final
                // for every item in it.
                Err(failure) => {
                    for queued in sending.drain(..) {
                        round.push(result_of(queued.work, (failure.status, failure.code.clone(), failure.receipt.clone())));
                    }
                    Vec::new()
                }
            };
            let mut unauthorised = Vec::new();
            for (queued, outcome) in sending.into_iter().zip(outcomes) {
                if outcome.retryable() && queued.attempts + 1 < max_attempts {
                    let wait =
                        outcome.retry_after.unwrap_or_else(|| crate::outbound::backoff(&self.graph.retry_policy(), queued.attempts + 1));
                    queue.push_back(Queued { attempts: queued.attempts + 1, not_before: tokio::time::Instant::now() + wait, ..queued });
                } else if outcome.status == 401 && !refreshed {
                    unauthorised.push(Queued { not_before: tokio::time::Instant::now(), ..queued });
                } else {
                    round.push(result_of(queued.work, (outcome.status, outcome.code, outcome.receipt)));
                }
            }
            if !unauthorised.is_empty() {
                refreshed = true;
                if self.refresh_token(approver, token).await {
                    for queued in unauthorised.into_iter().rev() {
                        queue.push_front(queued);
                    }
                } else {
                    for queued in unauthorised {
                        round.push(result_of(queued.work, (401, "sign-in expired".into(), None)));
                    }
                }
            }
            // Keep the queue in not-before order (re-queued items may be due earlier than others).
            queue.make_contiguous().sort_by_key(|queued| queued.not_before);
            // Durable before the next request: a restart sends only what is still unanswered.
            let now = tokio::time::Instant::now();
            progress.waiting(queue.iter().filter(|queued| queued.attempts > 0 && queued.not_before > now).count());
            if hand_over(progress, &mut round, &mut kept).await == Report::Stop {
                return sorted(kept);
            }
        }
        hand_over(progress, &mut round, &mut kept).await;
        sorted(kept)
    }

    /// What a page of targets needs before Graph: each target's object id (looked up for a
    /// UPN), or its outcome when there is nothing to send (not in the directory, the approver's
    /// own sessions).
    async fn prepare(&self, kind: CaseKind, approver: &Actor, token: &mut SecretString, page: Vec<Target>) -> Prepared {
        let mut prepared = Prepared { work: Vec::with_capacity(page.len()), results: Vec::new() };
        for target in page {
            // Revoking the approver's own sessions would cut the run short: skip and list them.
            if kind == CaseKind::RevokeSessions && target.user_oid.as_deref().is_some_and(|oid| oid.eq_ignore_ascii_case(&approver.oid)) {
                prepared.results.push(TargetResult {
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
            match self.resolve(approver, token, &target).await {
                Ok(oid) => prepared.work.push(Work { target, oid }),
                Err(result) => prepared.results.push(result),
            }
        }
        prepared
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
    async fn execute(&self, case: &Case, targets: &dyn PendingTargets, progress: &dyn ProgressSink) -> Vec<TargetResult> {
        let mut pages = Pages::new(targets, &case.id);
        let first = pages.next(PAGE).await;
        let Some(approver) = &case.approver else {
            return fail_every(first, &mut pages, progress, "the case has no approver").await;
        };
        let mut token = match self.tokens.token_for(approver).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                return fail_every(first, &mut pages, progress, "the approver is no longer signed in: sign in and approve a new case")
                    .await;
            }
            Err(err) => {
                tracing::error!(case.id = %case.id, error = %err, "could not get the approver's token");
                return fail_every(first, &mut pages, progress, "the sign-in service could not be reached: try again later").await;
            }
        };
        let mut first = self.prepare(case.kind, approver, &mut token, first).await;
        // One call to make: the plain request, no `$batch`.
        if pages.exhausted() && first.work.len() <= 1 {
            let mut results = first.results;
            if let Some(work) = first.work.pop() {
                results.push(self.single(case.kind, approver, &mut token, &work.target, work.oid).await);
            }
            return sorted(results);
        }
        self.batched(case.kind, approver, &mut token, first, &mut pages, progress).await
    }
}

/// Targets read from the store at a time: several `$batch` requests' worth, and all a run holds
/// of a case of any size besides the items waiting on `Retry-After`.
const PAGE: usize = 100;

/// Items a run lets wait in its queue before it reads the next page.
const MAX_QUEUED: usize = 5 * PAGE;

/// A target on its way to Graph, with the object id it resolved to.
struct Work {
    target: Target,
    oid: String,
}

/// A queued item: how often it was sent, and when it may go again.
struct Queued {
    work: Work,
    attempts: u32,
    not_before: tokio::time::Instant,
}

/// A page made ready for Graph: what to send, and the outcomes settled without Graph.
struct Prepared {
    work: Vec<Work>,
    results: Vec<TargetResult>,
}

/// Queues `work` as ready now, keeping the queue in not-before order.
fn enqueue(queue: &mut VecDeque<Queued>, work: Vec<Work>) {
    if work.is_empty() {
        return;
    }
    let now = tokio::time::Instant::now();
    queue.extend(work.into_iter().map(|work| Queued { work, attempts: 0, not_before: now }));
    queue.make_contiguous().sort_by_key(|queued| queued.not_before);
}

/// Hands `round` to the sink (emptying it); what it did not record goes to `kept`.
async fn hand_over(progress: &dyn ProgressSink, round: &mut Vec<TargetResult>, kept: &mut Vec<TargetResult>) -> Report {
    if round.is_empty() {
        return Report::Recorded;
    }
    let report = progress.finished(round).await;
    match report {
        Report::Recorded => round.clear(),
        Report::NotRecorded | Report::Stop => kept.append(round),
    }
    report
}

/// Fails every pending target with `detail`, page by page, starting with `first`.
async fn fail_every(first: Vec<Target>, pages: &mut Pages<'_>, progress: &dyn ProgressSink, detail: &str) -> Vec<TargetResult> {
    let mut kept = Vec::new();
    let mut page = first;
    while !page.is_empty() {
        let mut round = failed_all(&page, detail);
        if hand_over(progress, &mut round, &mut kept).await == Report::Stop {
            break;
        }
        page = pages.next(PAGE).await;
    }
    sorted(kept)
}

fn sorted(mut results: Vec<TargetResult>) -> Vec<TargetResult> {
    results.sort_unstable_by_key(|r| r.position);
    results
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
