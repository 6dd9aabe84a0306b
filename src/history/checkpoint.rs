//! Signed checkpoints: what history retention pruned, so the chain that remains verifies.
//!
//! A checkpoint names the last pruned event (its place and hash), how many events were pruned
//! in all and when; its signature is the hex HMAC-SHA256, keyed with
//! `CHATWARDEN_HISTORY_SECRET`, of `chatwarden-checkpoint-v1\n{seq}\n{hash}\n{pruned}\n{pruned_at}`.
//! Someone who can write the database but does not hold the secret cannot hide a deleted start
//! of the chain behind a checkpoint of their own.

use secrecy::{ExposeSecret as _, SecretString};

use crate::audit::signature;

/// The start of the chain as history retention left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Place of the last pruned event.
    pub seq: i64,
    /// Hash of the last pruned event: the next event's `prev_hash`.
    pub hash: String,
    /// How many events were pruned in all, up to this one.
    pub pruned: i64,
    /// When (Unix ms).
    pub pruned_at: i64,
    /// Hex HMAC-SHA256 of the fields above.
    pub signature: String,
}

/// The signature of a checkpoint's fields.
pub(crate) fn checkpoint_signature(secret: &SecretString, seq: i64, hash: &str, pruned: i64, pruned_at: i64) -> String {
    signature::sign(secret.expose_secret().as_bytes(), signed_text(seq, hash, pruned, pruned_at).as_bytes())
        .trim_start_matches("sha256=")
        .to_owned()
}

fn signed_text(seq: i64, hash: &str, pruned: i64, pruned_at: i64) -> String {
    format!("chatwarden-checkpoint-v1\n{seq}\n{hash}\n{pruned}\n{pruned_at}")
}

impl Checkpoint {
    /// Whether the signature is the one `secret` gives (constant-time comparison).
    pub fn signed_with(&self, secret: &SecretString) -> bool {
        let text = signed_text(self.seq, &self.hash, self.pruned, self.pruned_at);
        let header = format!("sha256={}", self.signature);
        signature::verify(secret.expose_secret().as_bytes(), text.as_bytes(), Some(&header)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_with_its_own_fields_and_secret() {
        let secret = SecretString::from("history-secret");
        let signature = checkpoint_signature(&secret, 40, &"a".repeat(64), 40, 1_780_000_000_000);
        let checkpoint = Checkpoint { seq: 40, hash: "a".repeat(64), pruned: 40, pruned_at: 1_780_000_000_000, signature };
        assert!(checkpoint.signed_with(&secret));
        assert!(!checkpoint.signed_with(&SecretString::from("another secret")));
        assert!(!Checkpoint { seq: 41, ..checkpoint.clone() }.signed_with(&secret));
        assert!(!Checkpoint { signature: "zz".into(), ..checkpoint }.signed_with(&secret));
    }
}
