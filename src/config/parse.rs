//! Sources and small parsers: the TOML file overlaid by the environment into [`RawSettings`], each
//! setting's value or default, and the checks shared by validation (URLs, GUIDs, booleans, hosts).

use std::collections::BTreeMap;

use url::Url;

use super::{ConfigProblem, Mode, SETTINGS};

/// Raw values gathered from the file and the environment, before validation.
#[derive(Debug, Default)]
pub(super) struct RawSettings {
    /// Text of each setting that was given, by environment variable name.
    pub(super) values: BTreeMap<&'static str, String>,
    /// Problems found so far, in the order they were found.
    pub(super) problems: Vec<ConfigProblem>,
}

impl RawSettings {
    /// The setting's text when given and not blank.
    pub(super) fn get(&self, env: &str) -> Option<&str> {
        self.values.get(env).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// Records one problem with `setting`.
    pub(super) fn problem(&mut self, setting: &str, problem: impl Into<String>) {
        self.problems.push(ConfigProblem { setting: setting.to_owned(), problem: problem.into() });
    }
}

/// The file's values overlaid by the environment's.
pub(super) fn gather(file_text: Option<&str>, env: impl Fn(&str) -> Option<String>) -> RawSettings {
    let mut raw = RawSettings::default();
    if let Some(text) = file_text {
        read_file(&mut raw, text);
    }
    for s in SETTINGS {
        if let Some(value) = env(s.env) {
            raw.values.insert(s.env, value);
        }
    }
    raw
}

fn read_file(raw: &mut RawSettings, text: &str) {
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(err) => {
            raw.problem("--config", format!("not valid TOML: {}", err.message()));
            return;
        }
    };
    for (key, value) in table {
        let Some(s) = SETTINGS.iter().find(|s| s.file_key == key) else {
            raw.problem("--config", format!("unknown key `{key}`"));
            continue;
        };
        let text = match value {
            toml::Value::String(v) => v,
            toml::Value::Integer(v) => v.to_string(),
            toml::Value::Boolean(v) => v.to_string(),
            toml::Value::Array(items) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        toml::Value::String(v) => parts.push(v),
                        other => {
                            raw.problem(s.env, format!("file key `{key}`: list items must be strings, found {}", other.type_str()));
                        }
                    }
                }
                parts.join(",")
            }
            other => {
                raw.problem(s.env, format!("file key `{key}`: expected a string, found {}", other.type_str()));
                continue;
            }
        };
        raw.values.insert(s.env, text);
    }
}

fn default_of(env: &str) -> &'static str {
    SETTINGS.iter().find(|s| s.env == env).and_then(|s| s.default).unwrap_or("")
}

pub(super) fn value_or_default<'a>(raw: &'a RawSettings, env: &str) -> &'a str {
    raw.get(env).unwrap_or_else(|| default_of(env))
}

/// A comma-separated setting as trimmed, lower-case, non-empty items (none when unset).
pub(super) fn lower_case_list(raw: &RawSettings, env: &str) -> Vec<String> {
    raw.get(env).unwrap_or("").split(',').map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()).collect()
}

pub(super) fn parse_url(raw: &mut RawSettings, env: &'static str) -> Option<Url> {
    let text = value_or_default(raw, env).trim().to_owned();
    match check_url(&text) {
        Ok(url) => Some(url),
        Err(problem) => {
            raw.problem(env, problem);
            None
        }
    }
}

/// Parses a service URL: absolute, https (http only for loopback hosts), no credentials.
pub(super) fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if crate::botframework::service_url::is_loopback(&url) => Ok(url),
        "http" => Err(format!("`{text}` must use https (http is allowed for loopback hosts only)")),
        other => Err(format!("`{text}` has unsupported scheme `{other}`")),
    }
}

pub(super) fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    parts.len() == 5 && parts.iter().zip(lens).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

pub(super) fn parse_bool(raw: &mut RawSettings, env: &'static str, default: bool) -> bool {
    match raw.get(env).map(|v| v.trim().to_ascii_lowercase()) {
        None => default,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(v) => {
            raw.problem(env, format!("`{v}` must be true or false"));
            default
        }
    }
}

pub(super) fn require(raw: &mut RawSettings, mode: Mode, env: &'static str) -> Option<String> {
    match raw.get(env) {
        Some(v) => Some(v.trim().to_owned()),
        None => {
            if mode == Mode::Serve {
                raw.problem(env, "is required in `serve`");
            }
            None
        }
    }
}

pub(super) fn require_guid(raw: &mut RawSettings, mode: Mode, env: &'static str) -> Option<String> {
    let value = require(raw, mode, env)?;
    if mode == Mode::Serve && !is_guid(&value) {
        raw.problem(env, format!("`{value}` is not a GUID"));
        return None;
    }
    Some(value)
}

/// `CHATWARDEN_PUBLIC_HOST`, lower-cased, when set and a plain host name.
pub(super) fn parse_public_host(raw: &mut RawSettings) -> Option<String> {
    let host = raw.get("CHATWARDEN_PUBLIC_HOST").map(|h| h.trim().to_ascii_lowercase())?;
    let valid = host.contains('.') && host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !valid {
        raw.problem("CHATWARDEN_PUBLIC_HOST", format!("`{host}` is not a host name (no scheme, port or path)"));
        return None;
    }
    Some(host)
}

/// A poll interval in minutes from `env` (0 = off, at most a day); polling needs the
/// registration, for `token`.
pub(super) fn poll_interval(raw: &mut RawSettings, env: &'static str, registered: bool, token: &str) -> Option<std::time::Duration> {
    let text = value_or_default(raw, env).trim().to_owned();
    let interval = match text.parse::<u64>() {
        Ok(0) => None,
        Ok(minutes) if minutes <= 24 * 60 => Some(std::time::Duration::from_secs(minutes * 60)),
        _ => {
            raw.problem(env, format!("`{text}` must be a number of minutes from 0 (off) to 1440"));
            None
        }
    };
    if interval.is_some() && !registered {
        raw.problem(env, format!("polling needs the MICROSOFT_APP_* registration (for {token})"));
    }
    interval
}

/// Whether `url` names a loopback host (`127.0.0.1`, `localhost`, `[::1]`), where plain http is
/// allowed for an endpoint chatwarden sends to or is reached at.
pub(super) fn is_loopback(url: &Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}
