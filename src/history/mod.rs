//! The verifiable history: every case event in one hash chain per database, its export, its
//! forwarding to a SIEM, and the signed checkpoints that keep a pruned chain verifiable.

mod chain;
mod checkpoint;
mod export;
mod forward;
mod retention;

pub(crate) use chain::Canonical;
pub(crate) use chain::ChainCheck;
pub use chain::{ChainBreak, GENESIS};
pub(crate) use checkpoint::{Checkpoint, checkpoint_signature};
pub(crate) use export::{ExportFormat, ExportWriter, TimeBound, verify_jsonl};
pub(crate) use forward::{ForwardSettings, Forwarder};
pub(crate) use retention::HistoryRetention;

use serde::{Deserialize, Serialize};

/// One event of the history as it is stored, verified, exported and forwarded.
///
/// `data` is compact JSON text of the event's structured facts (for a target: Graph's status,
/// error code, `request-id`, `client-request-id` and `date`; for an approval: the approver's
/// object id and UPN). It stays text so that its bytes are the ones that were hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Place in the chain (1, 2, 3, ... with no gaps).
    pub seq: i64,
    /// When (Unix ms).
    pub at: i64,
    /// The case, or `None` for refusals that concern no case.
    pub case_id: Option<String>,
    /// Who (Entra object id), when a person acted.
    pub actor_oid: Option<String>,
    /// Who (display name).
    pub actor_name: Option<String>,
    /// What: `requested`, `approved`, `rejected`, `refused`, `executing`, `target_done`, ...
    pub kind: String,
    /// Details in plain words.
    pub detail: Option<String>,
    /// Structured facts as compact JSON text.
    pub data: Option<String>,
    /// The previous event's hash ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// SHA-256 of this event's canonical form (see `ChainCheck`).
    pub hash: String,
}
