//! Redaction: the printable view of the effective configuration (`check-config`), one line per
//! entry of [`SETTINGS`] in table order, secrets shown as `[redacted]`.

use std::collections::BTreeMap;

use super::parse::RawSettings;
use super::{Config, SETTINGS};

/// What a secret that is set prints as, and all that is ever stored of it.
const REDACTED: &str = "[redacted]";
/// What a setting without a value (and without an `unset_hint`) prints as.
const UNSET: &str = "(unset)";
/// Setting names are padded to this width, so that the values line up.
const NAME_WIDTH: usize = 31;

/// Each setting's effective text: the given value, else its default, trimmed; settings with
/// neither have no entry. A secret's text is never copied: it is stored as `[redacted]`.
pub(super) fn effective_values(raw: &RawSettings) -> BTreeMap<&'static str, String> {
    SETTINGS
        .iter()
        .filter_map(|s| {
            let value = raw.get(s.env).or(s.default)?.trim();
            if value.is_empty() {
                return None;
            }
            Some((s.env, if s.secret { REDACTED.to_owned() } else { value.to_owned() }))
        })
        .collect()
}

impl Config {
    /// A printable view of the effective configuration with every secret redacted: the mode, then
    /// one line per entry of [`SETTINGS`] in table order.
    pub fn redacted(&self) -> String {
        let mut lines = Vec::with_capacity(SETTINGS.len() + 1);
        lines.push(line("mode", &format!("{:?}", self.mode)));
        for s in SETTINGS {
            let value = match self.effective.get(s.env) {
                Some(_) if s.secret => REDACTED,
                Some(value) => value.as_str(),
                None => s.unset_hint.unwrap_or(UNSET),
            };
            lines.push(line(s.env, value));
        }
        lines.join("\n")
    }
}

fn line(name: &str, value: &str) -> String {
    format!("{name:<NAME_WIDTH$} = {value}")
}
