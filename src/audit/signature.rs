//! The signature of pushed alerts: `X-Chatwarden-Signature-256: sha256=<hex HMAC-SHA256(secret,
//! raw body)>`, as GitHub signs webhooks. The comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header that carries the signature.
pub(crate) const SIGNATURE_HEADER: &str = "x-chatwarden-signature-256";

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header.
    #[error("missing signature")]
    Missing,
    /// Not `sha256=<64 hex digits>`.
    #[error("malformed signature")]
    Malformed,
    /// Does not match the body.
    #[error("signature does not match")]
    Mismatch,
}

/// Computes the header value for `body` (used by senders and tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail here.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `header` against `body` in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_and_secret() {
        let header = sign(b"secret-0123456789", b"{\"Id\":\"1\"}");
        assert!(header.starts_with("sha256=") && header.len() == 71);
        assert_eq!(verify(b"secret-0123456789", b"{\"Id\":\"1\"}", Some(&header)), Ok(()));
        assert_eq!(verify(b"secret-0123456789", b"{\"Id\":\"2\"}", Some(&header)), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other-secret-0000", b"{\"Id\":\"1\"}", Some(&header)), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"s", b"x", None), Err(SignatureError::Missing));
        assert_eq!(verify(b"s", b"x", Some("sha1=abc")), Err(SignatureError::Malformed));
        assert_eq!(verify(b"s", b"x", Some(&format!("sha256={}", "zz".repeat(32)))), Err(SignatureError::Malformed));
    }

    #[test]
    fn a_known_vector_matches() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
