//! Validation: turns [`RawSettings`] into a [`Config`], or into every problem found, reported in
//! settings order (registration and endpoints, security scope, storage, requests and cases,
//! detection and audit polling, limits).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::notifications::{defender_poll, notifications};
use super::parse::{
    RawSettings, check_url, is_guid, lower_case_list, parse_bool, parse_public_host, parse_url, poll_interval, require, require_guid,
    value_or_default,
};
use super::redact::effective_values;
use super::reminders::reminders;
use super::retention::{history_settings, retention};
use super::{
    AppCredentials, Config, ConfigErrors, Endpoints, ExecutionPolicy, KeyRefreshPolicy, Mode, RetryPolicy, SecurityScope, TokenMode,
};
use crate::audit::detection::DetectionRules;
use crate::botframework::service_url::HostAllowlist;
use crate::graph::RemovalApiVersion;

/// Validates every setting for `mode`; the problems are in the order the settings are checked.
pub(super) fn validate(mode: Mode, mut raw: RawSettings) -> Result<Config, ConfigErrors> {
    let bind = bind_address(&mut raw);
    let app = registration(&mut raw, mode);
    let endpoints = endpoints(&mut raw);
    let (service_url, allowlist) = service_url_and_allowlist(&mut raw, mode);
    let public_host = parse_public_host(&mut raw);
    let oauth_connection = oauth_connection(&mut raw);
    let guard = Guard::new(mode, app.is_some());
    let security = security_scope(&mut raw, guard);
    let database_url = database_url(&mut raw);
    let alert_secret = alert_secret(&mut raw);
    let max_body_bytes = max_body_bytes(&mut raw);
    let case_ttl = case_ttl(&mut raw);
    let require_second_approver = guarded_switch(&mut raw, guard, "CHATWARDEN_REQUIRE_SECOND_APPROVER");
    let require_reason = guarded_switch(&mut raw, guard, "CHATWARDEN_REQUIRE_REASON");
    let token_mode = token_mode(&mut raw);
    let detection = detection_rules(&mut raw);
    let (audit_poll, audit_lookback) = audit_polling(&mut raw, app.is_some());
    let limits = limits(&mut raw);
    let removal_api_version = removal_api_version(&mut raw);
    let retention = retention(&mut raw);
    let history = history_settings(&mut raw);
    let (reminder_before, escalation) = reminders(&mut raw, case_ttl, app.is_some());
    let notifications = notifications(&mut raw, app.is_some());
    let defender_poll = defender_poll(&mut raw, app.is_some());

    let problems = std::mem::take(&mut raw.problems);
    let invalid = || ConfigErrors { problems: problems.clone() };
    let (Some(bind), Some(endpoints)) = (bind, endpoints) else {
        return Err(invalid());
    };
    let (Some(allowlist), Some(max_body_bytes), Some(case_ttl), Some(require_second_approver), Some(require_reason), Some(token_mode)) =
        (allowlist, max_body_bytes, case_ttl, require_second_approver, require_reason, token_mode)
    else {
        return Err(invalid());
    };
    if !problems.is_empty() {
        return Err(invalid());
    }
    let mut effective = effective_values(&raw);
    // Its default depends on the mode and the registration: record the value in force.
    effective.insert("CHATWARDEN_REQUIRE_SECOND_APPROVER", require_second_approver.to_string());
    effective.insert("CHATWARDEN_REQUIRE_REASON", require_reason.to_string());
    Ok(Config {
        mode,
        bind,
        app,
        endpoints,
        service_url,
        service_url_allowlist: allowlist,
        public_host,
        oauth_connection,
        security,
        database_url: SecretString::from(database_url),
        alert_secret,
        max_body_bytes,
        token_mode,
        revoke_ceiling: limits.revoke_ceiling,
        commands_per_minute: limits.commands_per_minute,
        alerts_per_minute: limits.alerts_per_minute,
        refusals_per_minute: limits.refusals_per_minute,
        removal_api_version,
        retention,
        history,
        reminder_before,
        escalation_admins: escalation.admins,
        escalation_groups: escalation.groups,
        detection,
        audit_poll,
        audit_lookback,
        notifications,
        defender_poll,
        case_ttl,
        require_second_approver,
        require_reason,
        execution: limits.execution,
        key_refresh: KeyRefreshPolicy::default(),
        retry: RetryPolicy::default(),
        effective,
    })
}

// Registration and endpoints.

fn bind_address(raw: &mut RawSettings) -> Option<SocketAddr> {
    let bind_text = value_or_default(raw, "CHATWARDEN_BIND").trim().to_owned();
    match bind_text.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(addr) => Some(addr),
        None => {
            raw.problem("CHATWARDEN_BIND", format!("`{bind_text}` is not a host:port address"));
            None
        }
    }
}

/// The `MICROSOFT_APP_*` registration: all three settings, or none of them.
fn registration(raw: &mut RawSettings, mode: Mode) -> Option<AppCredentials> {
    let app_id = require_guid(raw, mode, "MICROSOFT_APP_ID");
    let password = require(raw, mode, "MICROSOFT_APP_PASSWORD");
    let tenant_id = require_guid(raw, mode, "MICROSOFT_APP_TENANT_ID");
    match (app_id, password, tenant_id) {
        (Some(app_id), Some(password), Some(tenant_id)) => {
            Some(AppCredentials { app_id, password: SecretString::from(password), tenant_id })
        }
        (None, None, None) => None,
        (app_id, password, tenant_id) => {
            // Dev mode with a partial registration: name what is missing rather than guess.
            if mode == Mode::Dev {
                for (env, v) in [
                    ("MICROSOFT_APP_ID", app_id.is_some()),
                    ("MICROSOFT_APP_PASSWORD", password.is_some()),
                    ("MICROSOFT_APP_TENANT_ID", tenant_id.is_some()),
                ] {
                    if !v {
                        raw.problem(env, "must be set together with the other MICROSOFT_APP_* settings");
                    }
                }
            }
            None
        }
    }
}

/// The five service base URLs; `None` when any of them is invalid (each one is checked).
fn endpoints(raw: &mut RawSettings) -> Option<Endpoints> {
    let openid_metadata = parse_url(raw, "CHATWARDEN_OPENID_METADATA_URL");
    let login = parse_url(raw, "CHATWARDEN_LOGIN_URL");
    let token_service = parse_url(raw, "CHATWARDEN_TOKEN_SERVICE_URL");
    let graph = parse_url(raw, "CHATWARDEN_GRAPH_URL");
    let management = parse_url(raw, "CHATWARDEN_MANAGEMENT_URL");
    Some(Endpoints {
        openid_metadata: openid_metadata?,
        login: login?,
        token_service: token_service?,
        graph: graph?,
        management: management?,
    })
}

/// The fixed Bot Connector URL (optional) and the allowlist it must be on in `serve`.
fn service_url_and_allowlist(raw: &mut RawSettings, mode: Mode) -> (Option<Url>, Option<HostAllowlist>) {
    let service_url = match raw.get("CHATWARDEN_SERVICE_URL").map(str::to_owned) {
        Some(text) => match check_url(text.trim()) {
            Ok(url) => Some(url),
            Err(problem) => {
                raw.problem("CHATWARDEN_SERVICE_URL", problem);
                None
            }
        },
        None => None,
    };

    let allowlist_text = value_or_default(raw, "CHATWARDEN_SERVICE_URL_ALLOWLIST").to_owned();
    let allowlist = match HostAllowlist::parse(&allowlist_text) {
        Ok(list) => Some(list),
        Err(problem) => {
            raw.problem("CHATWARDEN_SERVICE_URL_ALLOWLIST", problem);
            None
        }
    };
    if let (Some(url), Some(list)) = (&service_url, &allowlist) {
        if mode == Mode::Serve && list.check(url.as_str()).is_err() {
            raw.problem("CHATWARDEN_SERVICE_URL", "its host is not on CHATWARDEN_SERVICE_URL_ALLOWLIST");
        }
    }
    (service_url, allowlist)
}

fn oauth_connection(raw: &mut RawSettings) -> String {
    let oauth_connection = value_or_default(raw, "CHATWARDEN_OAUTH_CONNECTION").trim().to_owned();
    if oauth_connection.is_empty() {
        raw.problem("CHATWARDEN_OAUTH_CONNECTION", "must not be empty");
    }
    oauth_connection
}

// Security scope.

/// Whether who may act is guarded as in `serve`, and the words that say why.
#[derive(Debug, Clone, Copy)]
struct Guard {
    on: bool,
    by: &'static str,
}

impl Guard {
    /// With a real registration, inbound auth is on and Teams can reach the bot: `dev` then guards
    /// who may act exactly like `serve` (the same settings are required, four-eyes is the default).
    fn new(mode: Mode, registered: bool) -> Self {
        let by = if mode == Mode::Serve { "in `serve`" } else { "in `dev` with a MICROSOFT_APP_* registration" };
        Self { on: mode == Mode::Serve || registered, by }
    }

    /// The trimmed setting; a problem when it is missing and the guard is on.
    fn require(self, raw: &mut RawSettings, env: &'static str) -> Option<String> {
        match raw.get(env) {
            Some(v) => Some(v.trim().to_owned()),
            None => {
                if self.on {
                    raw.problem(env, format!("is required {}", self.by));
                }
                None
            }
        }
    }
}

fn security_scope(raw: &mut RawSettings, guard: Guard) -> SecurityScope {
    let team_id = guard.require(raw, "CHATWARDEN_SECURITY_TEAM_ID");
    let channel_id = guard.require(raw, "CHATWARDEN_SECURITY_CHANNEL_ID");
    let admins = lower_case_list(raw, "CHATWARDEN_ADMINS");
    if guard.on {
        if admins.is_empty() {
            raw.problem("CHATWARDEN_ADMINS", format!("is required {} (at least one Entra object id)", guard.by));
        }
        let bad: Vec<&String> = admins.iter().filter(|a| !is_guid(a)).collect();
        if !bad.is_empty() {
            let list = bad.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ");
            raw.problem("CHATWARDEN_ADMINS", format!("not Entra object ids (GUIDs): {list}"));
        }
    }
    SecurityScope { team_id, channel_id, admins }
}

// Storage and the alert secret.

fn database_url(raw: &mut RawSettings) -> String {
    let database_url = value_or_default(raw, "CHATWARDEN_DATABASE_URL").trim().to_owned();
    if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        raw.problem("CHATWARDEN_DATABASE_URL", "must start with sqlite:, postgres:// or postgresql://");
    }
    database_url
}

fn alert_secret(raw: &mut RawSettings) -> Option<SecretString> {
    let alert_secret = raw.get("CHATWARDEN_ALERT_SECRET").map(|s| SecretString::from(s.to_owned()));
    if let Some(secret) = raw.get("CHATWARDEN_ALERT_SECRET") {
        if secret.len() < 16 {
            raw.problem("CHATWARDEN_ALERT_SECRET", "is too short (at least 16 characters)");
        }
    }
    alert_secret
}

// Requests and cases.

fn max_body_bytes(raw: &mut RawSettings) -> Option<usize> {
    let body_text = value_or_default(raw, "CHATWARDEN_MAX_BODY_BYTES").trim().to_owned();
    match body_text.parse::<usize>() {
        Ok(n) if (1024..=16 * 1024 * 1024).contains(&n) => Some(n),
        _ => {
            raw.problem("CHATWARDEN_MAX_BODY_BYTES", format!("`{body_text}` must be a number of bytes between 1024 and 16777216"));
            None
        }
    }
}

fn case_ttl(raw: &mut RawSettings) -> Option<Duration> {
    let ttl_text = value_or_default(raw, "CHATWARDEN_CASE_TTL_HOURS").trim().to_owned();
    match ttl_text.parse::<u64>() {
        Ok(hours) if (1..=24 * 30).contains(&hours) => Some(Duration::from_secs(hours * 3600)),
        _ => {
            raw.problem("CHATWARDEN_CASE_TTL_HOURS", format!("`{ttl_text}` must be a whole number of hours from 1 to 720"));
            None
        }
    }
}

/// A switch that is on by default wherever Teams can reach the bot (`guard.on`).
fn guarded_switch(raw: &mut RawSettings, guard: Guard, name: &'static str) -> Option<bool> {
    match raw.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Some(guard.on),
        Some(v) if v == "true" => Some(true),
        Some(v) if v == "false" => Some(false),
        Some(v) => {
            raw.problem(name, format!("`{v}` must be true or false"));
            None
        }
    }
}

fn token_mode(raw: &mut RawSettings) -> Option<TokenMode> {
    match value_or_default(raw, "CHATWARDEN_TOKEN_MODE").trim().to_ascii_lowercase().as_str() {
        "token_service" => Some(TokenMode::TokenService),
        "obo" => Some(TokenMode::OnBehalfOf),
        other => {
            let other = other.to_owned();
            raw.problem("CHATWARDEN_TOKEN_MODE", format!("`{other}` must be token_service or obo"));
            None
        }
    }
}

// Detection and audit polling.

fn detection_rules(raw: &mut RawSettings) -> DetectionRules {
    let detection_enabled = parse_bool(raw, "CHATWARDEN_DETECTION", true);
    let detect_unauthenticated = parse_bool(raw, "CHATWARDEN_DETECT_UNAUTHENTICATED", true);
    let operations: Vec<String> = value_or_default(raw, "CHATWARDEN_DETECTION_OPERATIONS")
        .split(',')
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    let partner_tenants = lower_case_list(raw, "CHATWARDEN_PARTNER_TENANTS");
    let partner_domains = lower_case_list(raw, "CHATWARDEN_PARTNER_DOMAINS");
    for tenant in partner_tenants.iter().filter(|t| !is_guid(t)) {
        raw.problem("CHATWARDEN_PARTNER_TENANTS", format!("`{tenant}` is not a tenant id (GUID)"));
    }
    for domain in partner_domains.iter().filter(|d| !d.contains('.') || d.contains('/') || d.contains('@')) {
        raw.problem("CHATWARDEN_PARTNER_DOMAINS", format!("`{domain}` is not a domain"));
    }
    DetectionRules {
        enabled: detection_enabled,
        operations,
        allowed_tenants: partner_tenants.into_iter().collect(),
        allowed_domains: partner_domains.into_iter().collect(),
        unauthenticated: detect_unauthenticated,
    }
}

/// The poll interval (`None` = off; polling needs the registration) and the first look-back.
fn audit_polling(raw: &mut RawSettings, registered: bool) -> (Option<Duration>, Duration) {
    let audit_poll = poll_interval(raw, "CHATWARDEN_AUDIT_POLL_MINUTES", registered, "the Management API token");
    let lookback_text = value_or_default(raw, "CHATWARDEN_AUDIT_LOOKBACK_HOURS").trim().to_owned();
    let audit_lookback = match lookback_text.parse::<u64>() {
        Ok(hours) if (1..=168).contains(&hours) => Duration::from_secs(hours * 3600),
        _ => {
            raw.problem("CHATWARDEN_AUDIT_LOOKBACK_HOURS", format!("`{lookback_text}` must be a number of hours from 1 to 168"));
            Duration::from_secs(24 * 3600)
        }
    };
    (audit_poll, audit_lookback)
}

// Limits, the removal API version and retention.

/// Ceilings, the execution lease and the per-minute rate limits.
struct Limits {
    revoke_ceiling: usize,
    execution: ExecutionPolicy,
    commands_per_minute: u32,
    alerts_per_minute: u32,
    refusals_per_minute: u32,
}

fn limits(raw: &mut RawSettings) -> Limits {
    let ceiling_text = value_or_default(raw, "CHATWARDEN_REVOKE_CEILING").trim().to_owned();
    let revoke_ceiling = match ceiling_text.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => n,
        _ => {
            raw.problem("CHATWARDEN_REVOKE_CEILING", format!("`{ceiling_text}` must be a number of users from 1 to 100000"));
            500
        }
    };

    let lease_text = value_or_default(raw, "CHATWARDEN_EXECUTION_LEASE_SECONDS").trim().to_owned();
    let mut execution = match lease_text.parse::<u64>() {
        Ok(seconds) if (2..=3600).contains(&seconds) => ExecutionPolicy::with_lease(Duration::from_secs(seconds)),
        _ => {
            raw.problem("CHATWARDEN_EXECUTION_LEASE_SECONDS", format!("`{lease_text}` must be a number of seconds from 2 to 3600"));
            ExecutionPolicy::default()
        }
    };
    let progress_text = value_or_default(raw, "CHATWARDEN_PROGRESS_SECONDS").trim().to_owned();
    match progress_text.parse::<u64>() {
        Ok(seconds) if (2..=300).contains(&seconds) => execution.progress_interval = Duration::from_secs(seconds),
        _ => raw.problem("CHATWARDEN_PROGRESS_SECONDS", format!("`{progress_text}` must be a number of seconds from 2 to 300")),
    }

    let commands_per_minute = per_minute(raw, "CHATWARDEN_COMMANDS_PER_MINUTE");
    let alerts_per_minute = per_minute(raw, "CHATWARDEN_ALERTS_PER_MINUTE");
    let refusals_per_minute = per_minute(raw, "CHATWARDEN_REFUSALS_PER_MINUTE");
    Limits { revoke_ceiling, execution, commands_per_minute, alerts_per_minute, refusals_per_minute }
}

fn per_minute(raw: &mut RawSettings, env: &'static str) -> u32 {
    let text = value_or_default(raw, env).trim().to_owned();
    match text.parse::<u32>() {
        Ok(n) if n <= 100_000 => n,
        _ => {
            raw.problem(env, format!("`{text}` must be a number from 0 (no limit) to 100000"));
            0
        }
    }
}

fn removal_api_version(raw: &mut RawSettings) -> RemovalApiVersion {
    match value_or_default(raw, "CHATWARDEN_REMOVAL_API_VERSION").trim() {
        "v1.0" => RemovalApiVersion::V1,
        "beta" => RemovalApiVersion::Beta,
        other => {
            let other = other.to_owned();
            raw.problem("CHATWARDEN_REMOVAL_API_VERSION", format!("`{other}` must be v1.0 or beta"));
            RemovalApiVersion::V1
        }
    }
}
