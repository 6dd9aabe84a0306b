//! Case ids: checked once at the edge, and new ones drawn from an alphabet nobody misreads.

use std::fmt;

/// A case id as a person types it or a button carries it (`CW-7K3P9`), checked once at the edge:
/// letters, digits and `-`, at most 32 characters, upper-cased. Reads as a `&str`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId(String);

impl CaseId {
    /// Checks and upper-cases `text`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() || text.len() > 32 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("a case id holds only letters, digits and `-`");
        }
        Ok(Self(text.to_ascii_uppercase()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for CaseId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for CaseId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CaseId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Alphabet of case ids: Crockford base32 (no I, L, O, U: nothing to misread or mistype).
const CASE_ID_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new random case id such as `CW-7K3P9` (32^5 = 33 million values; collisions are retried).
pub(crate) fn new_case_id() -> String {
    let mut id = String::from("CW-");
    for _ in 0..5 {
        id.push(CASE_ID_ALPHABET[fastrand::usize(..CASE_ID_ALPHABET.len())] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_ids_are_short_and_unambiguous() {
        for _ in 0..100 {
            let id = new_case_id();
            assert_eq!(id.len(), 8);
            assert!(id[3..].chars().all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c))), "{id}");
        }
    }
}
