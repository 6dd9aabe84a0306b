//! Where a run takes its targets from: the case's pending targets, a page at a time in position
//! order, so that a run of 10,000 targets holds a page of them and never the whole case.

use async_trait::async_trait;

use crate::cases::Target;
use crate::store::{Store, StoreError};

/// A case's pending targets, read in pages.
#[async_trait]
pub trait PendingTargets: Send + Sync {
    /// Up to `limit` pending targets after position `after` (from the first when `None`), in
    /// position order; fewer than `limit` when no more are pending.
    async fn after(&self, after: Option<i64>, limit: usize) -> Result<Vec<Target>, StoreError>;
}

/// The pending targets of a stored case. A target recorded since the run began is not read
/// again, so a restarted run sends only what is still unanswered.
pub struct StoredTargets {
    store: Store,
    case_id: String,
}

impl StoredTargets {
    /// The pending targets of case `case_id` in `store`.
    pub fn new(store: Store, case_id: &str) -> Self {
        Self { store, case_id: case_id.to_owned() }
    }
}

#[async_trait]
impl PendingTargets for StoredTargets {
    async fn after(&self, after: Option<i64>, limit: usize) -> Result<Vec<Target>, StoreError> {
        self.store.pending_targets(&self.case_id, after, limit).await
    }
}

/// Targets held in memory, for running an executor on its own (tests, benchmarks): the pending
/// ones among them.
pub struct ListedTargets(pub Vec<Target>);

#[async_trait]
impl PendingTargets for ListedTargets {
    async fn after(&self, after: Option<i64>, limit: usize) -> Result<Vec<Target>, StoreError> {
        Ok(self
            .0
            .iter()
            .filter(|t| t.status == crate::cases::TargetStatus::Pending && after.is_none_or(|a| t.position > a))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// Reads a source page by page, remembering where it stopped.
pub(super) struct Pages<'a> {
    source: &'a dyn PendingTargets,
    case_id: &'a str,
    after: Option<i64>,
    exhausted: bool,
}

impl<'a> Pages<'a> {
    /// Pages of `source`, the pending targets of case `case_id` (named in the log line of a
    /// failed read).
    pub(super) fn new(source: &'a dyn PendingTargets, case_id: &'a str) -> Self {
        Self { source, case_id, after: None, exhausted: false }
    }

    /// Whether every page was read (or a read failed: the targets left stay pending, and the
    /// run that did not get to them leaves the case unfinished for the next runner).
    pub(super) fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// The next page of up to `limit` targets; empty once exhausted.
    pub(super) async fn next(&mut self, limit: usize) -> Vec<Target> {
        if self.exhausted {
            return Vec::new();
        }
        match self.source.after(self.after, limit).await {
            Ok(page) => {
                self.exhausted = page.len() < limit;
                if let Some(last) = page.last() {
                    self.after = Some(last.position);
                }
                page
            }
            Err(err) => {
                tracing::error!(case.id = %self.case_id, error = %err, "could not read the case's pending targets; they stay pending for the next run");
                self.exhausted = true;
                Vec::new()
            }
        }
    }
}
