//! The serviceUrl allowlist: the only hosts the bot ever sends its own token to.
//!
//! Entries are host names compared case-insensitively with the URL's host; a leading `*.`
//! matches subdomains (not the bare domain). The port is not part of the match. Allowed hosts
//! are reached over https only, except loopback hosts (`127.0.0.1`, `localhost`, `[::1]`), which
//! may use http so that local fakes and Microsoft's local Teams client work.

use std::fmt;

use url::{Host, Url};

/// Hosts the bot may send its token to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAllowlist {
    entries: Vec<String>,
}

/// A service URL that passed the allowlist; the only way to address the Bot Connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedServiceUrl(Url);

/// Why a service URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceUrlRejection {
    /// Not an absolute URL.
    #[error("service URL is not a valid absolute URL")]
    Invalid,
    /// Carries user info (`https://user@host`).
    #[error("service URL must not carry credentials")]
    Credentials,
    /// Plain http to a non-loopback host, or another scheme.
    #[error("service URL must use https")]
    Scheme,
    /// Host not on the allowlist.
    #[error("service URL host `{0}` is not on the allowlist")]
    HostNotAllowed(String),
}

/// Whether the URL's host is a loopback host (`127.0.0.0/8`, `localhost`, `[::1]`).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn host_key(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Domain(d) => Some(d.trim_end_matches('.').to_ascii_lowercase()),
        Host::Ipv4(ip) => Some(ip.to_string()),
        Host::Ipv6(ip) => Some(format!("[{ip}]")),
    }
}

impl HostAllowlist {
    /// Parses a comma-separated list of host names (`*.example.com` for subdomains).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for raw in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let entry = raw.to_ascii_lowercase();
            let host = entry.strip_prefix("*.").unwrap_or(&entry);
            let valid = !host.is_empty() && !host.contains("*") && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
            if !valid {
                return Err(format!("`{raw}` is not a host name (use `host` or `*.domain`)"));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err("must name at least one host".into());
        }
        Ok(Self { entries })
    }

    /// Only the loopback hosts (local mode).
    pub fn loopback_only() -> Self {
        Self { entries: vec!["127.0.0.1".into(), "localhost".into(), "[::1]".into()] }
    }

    fn allows_host(&self, host: &str) -> bool {
        self.entries.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.'),
            None => entry == host,
        })
    }

    /// Checks a service URL against the list and the scheme rules.
    pub fn check(&self, text: &str) -> Result<AllowedServiceUrl, ServiceUrlRejection> {
        let url = Url::parse(text).map_err(|_| ServiceUrlRejection::Invalid)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ServiceUrlRejection::Credentials);
        }
        let host = host_key(&url).ok_or(ServiceUrlRejection::Invalid)?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            _ => return Err(ServiceUrlRejection::Scheme),
        }
        if !self.allows_host(&host) {
            return Err(ServiceUrlRejection::HostNotAllowed(host));
        }
        Ok(AllowedServiceUrl(url))
    }
}

impl fmt::Display for HostAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entries.join(","))
    }
}

impl AllowedServiceUrl {
    /// The URL as given (path prefix such as `/emea/` kept).
    pub(crate) fn as_url(&self) -> &Url {
        &self.0
    }

    /// Joins API path segments below the service URL's own path, percent-encoding each segment
    /// the way the Bot Framework SDKs do (`encodeURIComponent`), so ids such as
    /// `19:x@thread.tacv2;messageid=1` stay one segment.
    pub fn join(&self, segments: &[&str]) -> Url {
        let mut text = self.0.as_str().trim_end_matches('/').to_owned();
        // A service URL never carries a query or fragment worth keeping.
        if let Some(pos) = text.find(['?', '#']) {
            text.truncate(pos);
            text = text.trim_end_matches('/').to_owned();
        }
        for segment in segments {
            text.push('/');
            text.push_str(&encode_component(segment));
        }
        // The base parsed before and every added byte is unreserved or percent-encoded.
        Url::parse(&text).unwrap_or_else(|_| self.0.clone())
    }
}

/// Percent-encodes everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`, like `encodeURIComponent`.
pub fn encode_component(text: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    utf8_percent_encode(text, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teams() -> HostAllowlist {
        HostAllowlist::parse("smba.trafficmanager.net, *.teams.microsoft.com,127.0.0.1").unwrap()
    }

    #[test]
    fn exact_hosts_are_allowed_case_insensitively_whatever_the_port() {
        assert!(teams().check("https://smba.trafficmanager.net/emea/").is_ok());
        assert!(teams().check("https://SMBA.TrafficManager.NET:443/amer/").is_ok());
    }

    #[test]
    fn lookalike_hosts_are_refused() {
        for bad in [
            "https://smba.trafficmanager.net.evil.com/",
            "https://evilsmba.trafficmanager.net/",
            "https://attacker.trafficmanager.net/",
            "https://botframework.com.evil.com/",
            "https://webchat.botframework.com/",
        ] {
            assert!(matches!(teams().check(bad), Err(ServiceUrlRejection::HostNotAllowed(_))), "{bad}");
        }
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        assert!(teams().check("https://smba.infra.gcc.teams.microsoft.com/gcc").is_ok());
        assert!(teams().check("https://teams.microsoft.com/").is_err());
        assert!(teams().check("https://evilteams.microsoft.com/").is_err());
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert_eq!(teams().check("http://smba.trafficmanager.net/"), Err(ServiceUrlRejection::Scheme));
        assert!(teams().check("http://127.0.0.1:5555/").is_ok());
        assert_eq!(teams().check("ftp://127.0.0.1/"), Err(ServiceUrlRejection::Scheme));
    }

    #[test]
    fn credentials_and_garbage_are_refused() {
        assert_eq!(teams().check("https://u:p@smba.trafficmanager.net/"), Err(ServiceUrlRejection::Credentials));
        assert_eq!(teams().check("not a url"), Err(ServiceUrlRejection::Invalid));
    }

    #[test]
    fn loopback_only_list_refuses_the_cloud() {
        let list = HostAllowlist::loopback_only();
        assert!(list.check("http://localhost:56150").is_ok());
        assert!(list.check("http://[::1]:8080/").is_ok());
        assert!(list.check("https://smba.trafficmanager.net/emea/").is_err());
    }

    #[test]
    fn bad_entries_are_rejected() {
        assert!(HostAllowlist::parse("").is_err());
        assert!(HostAllowlist::parse("https://smba.trafficmanager.net/").is_err());
        assert!(HostAllowlist::parse("*").is_err());
    }

    #[test]
    fn join_keeps_the_path_prefix_and_encodes_ids_as_one_segment() {
        let url = teams().check("https://smba.trafficmanager.net/emea/").unwrap();
        let joined = url.join(&["v3", "conversations", "19:abc@thread.tacv2;messageid=17", "activities", "17"]);
        assert_eq!(
            joined.as_str(),
            "https://smba.trafficmanager.net/emea/v3/conversations/19%3Aabc%40thread.tacv2%3Bmessageid%3D17/activities/17"
        );
        let bare = teams().check("http://127.0.0.1:9000").unwrap();
        assert_eq!(bare.join(&["v3", "conversations"]).as_str(), "http://127.0.0.1:9000/v3/conversations");
    }
}
