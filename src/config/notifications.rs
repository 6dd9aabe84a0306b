//! Real-time detection sources: Graph change notifications (the public URL, the certificate
//! Graph encrypts to and the next one of a rotation, the clientState secret, the licensing
//! model) and the Defender XDR alerts poll.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::parse::{RawSettings, is_loopback, poll_interval};
use crate::notifications::{CertificateSet, NotificationCertificate, NotificationSettings};

const NOTIFICATION_SETTINGS: [&str; 6] = [
    "CHATWARDEN_NOTIFICATION_CERT",
    "CHATWARDEN_NOTIFICATION_KEY",
    "CHATWARDEN_NOTIFICATION_NEXT_CERT",
    "CHATWARDEN_NOTIFICATION_NEXT_KEY",
    "CHATWARDEN_NOTIFICATION_CLIENT_STATE",
    "CHATWARDEN_NOTIFICATION_MODEL",
];

fn certificate(raw: &mut RawSettings, cert_env: &'static str, key_env: &'static str, now: i64) -> Option<NotificationCertificate> {
    let (cert, key) = (raw.get(cert_env).map(str::to_owned), raw.get(key_env).map(str::to_owned));
    match (cert, key) {
        (Some(cert), Some(key)) => match NotificationCertificate::from_pem(&cert, &key, now) {
            Ok(certificate) => Some(certificate),
            Err(err) => {
                raw.problem(cert_env, err.to_string());
                None
            }
        },
        (Some(_), None) => {
            raw.problem(key_env, format!("is required with {cert_env}"));
            None
        }
        (None, Some(_)) => {
            raw.problem(cert_env, format!("is required with {key_env}"));
            None
        }
        (None, None) => None,
    }
}

/// `CHATWARDEN_NOTIFICATION_*`: all of it, or none (then change notifications are off).
pub(super) fn notifications(raw: &mut RawSettings, registered: bool) -> Option<NotificationSettings> {
    let Some(url_text) = raw.get("CHATWARDEN_NOTIFICATION_URL").map(str::to_owned) else {
        for name in NOTIFICATION_SETTINGS {
            if raw.get(name).is_some() {
                raw.problem(name, "is set but CHATWARDEN_NOTIFICATION_URL is not");
            }
        }
        return None;
    };
    let url = match Url::parse(url_text.trim()) {
        Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) => Some(url),
        _ => {
            raw.problem(
                "CHATWARDEN_NOTIFICATION_URL",
                format!("`{url_text}` must be the public https URL of /api/notifications (http only on a loopback host)"),
            );
            None
        }
    };
    if !registered {
        raw.problem("CHATWARDEN_NOTIFICATION_URL", "change notifications need the MICROSOFT_APP_* registration (for Graph's app token)");
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let current = certificate(raw, "CHATWARDEN_NOTIFICATION_CERT", "CHATWARDEN_NOTIFICATION_KEY", now);
    if raw.get("CHATWARDEN_NOTIFICATION_CERT").is_none() && raw.get("CHATWARDEN_NOTIFICATION_KEY").is_none() {
        raw.problem("CHATWARDEN_NOTIFICATION_CERT", "is required with CHATWARDEN_NOTIFICATION_URL (with CHATWARDEN_NOTIFICATION_KEY)");
    }
    let next = certificate(raw, "CHATWARDEN_NOTIFICATION_NEXT_CERT", "CHATWARDEN_NOTIFICATION_NEXT_KEY", now);
    let client_state = raw.get("CHATWARDEN_NOTIFICATION_CLIENT_STATE").map(str::to_owned);
    match client_state.as_deref().map(str::len) {
        None => raw.problem("CHATWARDEN_NOTIFICATION_CLIENT_STATE", "is required with CHATWARDEN_NOTIFICATION_URL"),
        Some(len) if !(16..=128).contains(&len) => {
            raw.problem("CHATWARDEN_NOTIFICATION_CLIENT_STATE", "must be 16 to 128 characters (Graph keeps at most 128)")
        }
        Some(_) => {}
    }
    let model = raw.get("CHATWARDEN_NOTIFICATION_MODEL").map(|m| m.trim().to_ascii_uppercase());
    if let Some(model) = &model {
        if model != "A" && model != "B" {
            raw.problem("CHATWARDEN_NOTIFICATION_MODEL", format!("`{model}` must be A or B (unset: evaluation mode)"));
        }
    }
    let (url, current, client_state) = (url?, current?, client_state?);
    Some(NotificationSettings {
        url,
        certificates: CertificateSet::new(current, next),
        client_state: SecretString::from(client_state),
        model,
    })
}

/// `CHATWARDEN_DEFENDER_POLL_MINUTES` (0 = off).
pub(super) fn defender_poll(raw: &mut RawSettings, registered: bool) -> Option<Duration> {
    poll_interval(raw, "CHATWARDEN_DEFENDER_POLL_MINUTES", registered, "Graph's app token")
}
