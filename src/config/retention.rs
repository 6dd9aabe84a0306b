//! What is kept and where it goes: audit-record retention, history retention with its signing
//! secret, and forwarding of the history with its URL and secret.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::parse::{RawSettings, is_loopback, value_or_default};
use super::{ForwardTarget, HistorySettings, MIN_RETENTION_DAYS};

/// History retention with its signing secret, and forwarding with its URL and secret.
pub(super) fn history_settings(raw: &mut RawSettings) -> HistorySettings {
    let secret = |raw: &mut RawSettings, name: &'static str| {
        let value = raw.get(name).map(str::to_owned);
        if value.as_ref().is_some_and(|s| s.len() < 16) {
            raw.problem(name, "is too short (at least 16 characters)");
        }
        value.map(SecretString::from)
    };
    let days_text = value_or_default(raw, "CHATWARDEN_HISTORY_RETENTION_DAYS").trim().to_owned();
    let retention = match days_text.parse::<u64>() {
        Ok(0) => None,
        Ok(days) if days <= 36_500 => Some(Duration::from_secs(days * 24 * 3600)),
        _ => {
            raw.problem(
                "CHATWARDEN_HISTORY_RETENTION_DAYS",
                format!("`{days_text}` must be 0 (keep everything) or a number of days up to 36500"),
            );
            None
        }
    };
    let history_secret = secret(raw, "CHATWARDEN_HISTORY_SECRET");
    if retention.is_some() && history_secret.is_none() {
        raw.problem(
            "CHATWARDEN_HISTORY_SECRET",
            "is required with CHATWARDEN_HISTORY_RETENTION_DAYS: it signs the checkpoint pruning leaves",
        );
    }
    let forward_secret = secret(raw, "CHATWARDEN_FORWARD_SECRET");
    let forward_url = raw.get("CHATWARDEN_FORWARD_URL").map(str::to_owned);
    let forward = match (forward_url, forward_secret) {
        (None, None) => None,
        (None, Some(_)) => {
            raw.problem("CHATWARDEN_FORWARD_SECRET", "is set but CHATWARDEN_FORWARD_URL is not");
            None
        }
        (Some(_), None) => {
            raw.problem("CHATWARDEN_FORWARD_SECRET", "is required with CHATWARDEN_FORWARD_URL: forwarded events are signed");
            None
        }
        (Some(text), Some(secret)) => match Url::parse(text.trim()) {
            Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) => Some(ForwardTarget { url, secret }),
            _ => {
                raw.problem("CHATWARDEN_FORWARD_URL", format!("`{text}` must be an https URL (http only on a loopback host)"));
                None
            }
        },
    };
    HistorySettings { retention, secret: history_secret, forward, forward_max_backoff: Duration::from_secs(300) }
}

pub(super) fn retention(raw: &mut RawSettings) -> Option<Duration> {
    let retention_text = value_or_default(raw, "CHATWARDEN_RETENTION_DAYS").trim().to_owned();
    match retention_text.parse::<u64>() {
        Ok(0) => None,
        // The Management Activity API serves content for 7 days: nothing younger may be pruned,
        // or the poller's look-back could bring a pruned record back as new.
        Ok(days) if (MIN_RETENTION_DAYS..=36_500).contains(&days) => Some(Duration::from_secs(days * 24 * 3600)),
        _ => {
            raw.problem(
                "CHATWARDEN_RETENTION_DAYS",
                format!("`{retention_text}` must be 0 (keep everything) or a number of days from {MIN_RETENTION_DAYS} to 36500"),
            );
            None
        }
    }
}
