//! Running approved cases, exactly once across retries, restarts and replicas.
//!
//! A runner claims a case in the database (`approved -> executing` with a lease), hands its
//! pending targets to the [`CaseExecutor`] (the Graph calls) a page at a time, records each
//! outcome as Graph gives it, and finishes the case (`done | failed`) from the tally of its
//! targets: no part of a run holds a whole case. A replica that dies mid-run leaves a
//! lapsed lease; the sweeper of any replica (and every start-up) picks such cases up again and
//! sends only the targets still pending. Graph removal is idempotent, so the one request Graph
//! had not answered when the process died is safe to send again.
//!
//! `runner` holds the claim-run-finish loop, `pending` the pages of pending targets, `progress`
//! the outcomes recorded as they come and the card's progress line, `graph_executor` the Graph
//! calls, `pacing` how fast they go, and `card_updater` what the cards show as a case moves.

mod card_updater;
mod graph_executor;
mod pacing;
mod pending;
mod progress;
mod reminders;
mod runner;

pub(crate) use card_updater::CardUpdater;
pub use graph_executor::GraphExecutor;
pub(crate) use graph_executor::explain;
pub use pending::{ListedTargets, PendingTargets, StoredTargets};
pub use progress::{ProgressSink, RecordedProgress, Report, Unrecorded};
pub(crate) use reminders::{ReminderSettings, Reminders};
pub use runner::{CaseExecutor, CaseObserver, CaseRunner, TargetResult};
