//! The hash chain over the history: the canonical form of an event, its SHA-256, and a
//! streaming check that names the first event that does not match.
//!
//! Canonical form (what an offline verifier recomputes): the event as a JSON object with exactly
//! the keys `actor_name`, `actor_oid`, `at`, `case_id`, `data`, `detail`, `kind`, `prev_hash`,
//! `seq`, in that (sorted) order, no whitespace, absent values as `null`, strings escaped as
//! RFC 8785 (JCS) does. `hash` is the lower-case hex SHA-256 of its UTF-8 bytes. The first event's
//! `prev_hash` is [`GENESIS`], or, after history retention pruned the start, the checkpoint's hash.
//! Python reproduces it with `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::HistoryEvent;

/// The `prev_hash` of the first event of a chain that was never pruned.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed fields of an event, in canonical order.
#[derive(Serialize)]
pub(crate) struct Canonical<'a> {
    pub(crate) actor_name: Option<&'a str>,
    pub(crate) actor_oid: Option<&'a str>,
    pub(crate) at: i64,
    pub(crate) case_id: Option<&'a str>,
    pub(crate) data: Option<&'a str>,
    pub(crate) detail: Option<&'a str>,
    pub(crate) kind: &'a str,
    pub(crate) prev_hash: &'a str,
    pub(crate) seq: i64,
}

impl Canonical<'_> {
    /// The lower-case hex SHA-256 of the canonical form.
    pub(crate) fn hash(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        let text = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&text))
    }
}

impl HistoryEvent {
    /// The hash this event must carry, recomputed from its content.
    pub fn expected_hash(&self) -> String {
        Canonical {
            actor_name: self.actor_name.as_deref(),
            actor_oid: self.actor_oid.as_deref(),
            at: self.at,
            case_id: self.case_id.as_deref(),
            data: self.data.as_deref(),
            detail: self.detail.as_deref(),
            kind: &self.kind,
            prev_hash: &self.prev_hash,
            seq: self.seq,
        }
        .hash()
    }
}

/// Why the chain does not verify at an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// An event's content does not give its hash: it was changed.
    #[error("event {seq} was altered: its content does not match its hash")]
    Altered {
        /// The event's place in the chain.
        seq: i64,
    },
    /// An event does not point at the hash of the one before: one was changed or inserted.
    #[error("event {seq} does not follow the event before it (its prev_hash is not that event's hash)")]
    Unlinked {
        /// The event's place in the chain.
        seq: i64,
    },
    /// Places are missing or out of order: events were deleted or reordered.
    #[error("event {expected} is missing (found event {found} in its place): events were deleted or reordered")]
    Missing {
        /// The place that should have come next.
        expected: i64,
        /// The place found instead.
        found: i64,
    },
    /// The chain ends before its recorded head: its last events were deleted.
    #[error("the chain ends at event {last} but its head records event {head}: the last events were deleted")]
    Truncated {
        /// The last event found.
        last: i64,
        /// The last event the head records.
        head: i64,
    },
    /// The chain's end does not match the hash its head records.
    #[error("the last event's hash is not the one the chain's head records")]
    HeadMismatch,
    /// An event was written without a place in the chain.
    #[error("an event has no place in the chain (written by a version before the chain, and not sealed yet)")]
    Unsealed,
}

/// Walks a chain one event at a time, in `seq` order.
#[derive(Debug, Clone)]
pub(crate) struct ChainCheck {
    next_seq: i64,
    prev_hash: String,
    checked: u64,
}

impl ChainCheck {
    /// A check that starts after `seq` with `prev_hash` (0 and [`GENESIS`] for a chain never pruned).
    pub(crate) fn starting_after(seq: i64, prev_hash: &str) -> Self {
        Self { next_seq: seq + 1, prev_hash: prev_hash.to_owned(), checked: 0 }
    }

    /// Checks the next event.
    pub fn push(&mut self, event: &HistoryEvent) -> Result<(), ChainBreak> {
        if event.seq != self.next_seq {
            return Err(ChainBreak::Missing { expected: self.next_seq, found: event.seq });
        }
        if event.prev_hash != self.prev_hash {
            return Err(ChainBreak::Unlinked { seq: event.seq });
        }
        if event.expected_hash() != event.hash {
            return Err(ChainBreak::Altered { seq: event.seq });
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&event.hash);
        self.checked += 1;
        Ok(())
    }

    /// Checks that the walk ended where the head says the chain ends.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<u64, ChainBreak> {
        let last = self.next_seq - 1;
        if last < head_seq {
            return Err(ChainBreak::Truncated { last, head: head_seq });
        }
        if last == head_seq && self.prev_hash != head_hash {
            return Err(ChainBreak::HeadMismatch);
        }
        Ok(self.checked)
    }
}

#[cfg(test)]
pub(crate) fn sample_chain(template: &HistoryEvent, n: i64) -> Vec<HistoryEvent> {
    let mut prev = GENESIS.to_owned();
    (1..=n)
        .map(|seq| {
            let mut event = HistoryEvent { seq, at: template.at + seq * 1000, prev_hash: prev.clone(), ..template.clone() };
            event.hash = event.expected_hash();
            prev.clone_from(&event.hash);
            event
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<HistoryEvent> {
        let template = HistoryEvent {
            seq: 0,
            at: 1_780_000_000_000,
            case_id: Some("K7QX2M".into()),
            actor_oid: None,
            actor_name: Some("Dana \"Ops\" Ñúñez\n".into()),
            kind: "requested".into(),
            detail: Some("<b>é</b>\u{2028}\u{1}".into()),
            data: None,
            prev_hash: String::new(),
            hash: String::new(),
        };
        sample_chain(&template, n)
    }

    fn verify(events: &[HistoryEvent]) -> Result<u64, ChainBreak> {
        let mut check = ChainCheck::starting_after(0, GENESIS);
        for event in events {
            check.push(event)?;
        }
        let head = events.last().map_or((0, GENESIS.to_owned()), |e| (e.seq, e.hash.clone()));
        check.finish(head.0, &head.1)
    }

    #[test]
    fn the_canonical_form_is_sorted_compact_json() {
        let canonical = Canonical {
            actor_name: Some("a\"b"),
            actor_oid: None,
            at: 5,
            case_id: Some("C"),
            data: Some("{\"x\":1}"),
            detail: Some("é\n\u{1}"),
            kind: "k",
            prev_hash: GENESIS,
            seq: 1,
        };
        let text = String::from_utf8(serde_json::to_vec(&canonical).unwrap()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"actor_name\":\"a\\\"b\",\"actor_oid\":null,\"at\":5,\"case_id\":\"C\",\"data\":\"{{\\\"x\\\":1}}\",\"detail\":\"é\\n\\u0001\",\"kind\":\"k\",\"prev_hash\":\"{GENESIS}\",\"seq\":1}}"
            )
        );
        assert_eq!(canonical.hash(), hex::encode(Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn an_intact_chain_verifies_and_every_kind_of_tampering_is_named() {
        let events = chain(5);
        assert_eq!(verify(&events), Ok(5));

        let mut altered = events.clone();
        altered[2].detail = Some("nothing happened".into());
        assert_eq!(verify(&altered), Err(ChainBreak::Altered { seq: 3 }));

        let mut rehashed = events.clone();
        rehashed[2].detail = Some("nothing happened".into());
        rehashed[2].hash = rehashed[2].expected_hash();
        assert_eq!(verify(&rehashed), Err(ChainBreak::Unlinked { seq: 4 }));

        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted), Err(ChainBreak::Missing { expected: 2, found: 3 }));

        let mut reordered = events.clone();
        reordered.swap(1, 2);
        assert_eq!(verify(&reordered), Err(ChainBreak::Missing { expected: 2, found: 3 }));

        let mut check = ChainCheck::starting_after(0, GENESIS);
        for event in &events[..3] {
            check.push(event).unwrap();
        }
        assert_eq!(check.finish(5, &events[4].hash), Err(ChainBreak::Truncated { last: 3, head: 5 }));
        assert_eq!(check.finish(3, GENESIS), Err(ChainBreak::HeadMismatch));
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_checkpoint() {
        let events = chain(6);
        let mut check = ChainCheck::starting_after(3, &events[2].hash);
        for event in &events[3..] {
            check.push(event).unwrap();
        }
        assert_eq!(check.finish(6, &events[5].hash), Ok(3));
        let mut from_genesis = ChainCheck::starting_after(0, GENESIS);
        assert_eq!(from_genesis.push(&events[3]), Err(ChainBreak::Missing { expected: 1, found: 4 }));
    }
}
