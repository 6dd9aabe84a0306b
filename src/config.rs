//! Typed configuration: an optional TOML file overlaid by environment variables (env wins).
//!
//! Every setting has one public name, its environment variable (see [`SETTINGS`]); the file uses
//! the same name in lower case (`MICROSOFT_APP_ID` -> `microsoft_app_id`, `CHATWARDEN_BIND` ->
//! `bind`). Loading never stops at the first problem: [`ConfigErrors`] names every missing or
//! invalid setting at once. Secrets are held in [`SecretString`] and never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::audit::detection::DetectionRules;
use crate::botframework::service_url::HostAllowlist;
pub use crate::graph::RemovalApiVersion;

/// How the process runs: production (`serve`) or local (`dev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Production: every required setting must be present and inbound auth is always on.
    Serve,
    /// Local mode: no cloud, auth off, listener forced to loopback.
    Dev,
}

/// One documented setting: its environment variable, its file key and its default.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable name (the public contract).
    pub env: &'static str,
    /// Key in the TOML file.
    pub file_key: &'static str,
    /// What it is for (shown by `check-config` and in the README).
    pub meaning: &'static str,
    /// Default value, or `None` when there is none.
    pub default: Option<&'static str>,
    /// Whether the value is a secret (never printed).
    pub secret: bool,
}

const fn setting(env: &'static str, file_key: &'static str, meaning: &'static str, default: Option<&'static str>, secret: bool) -> Setting {
    Setting { env, file_key, meaning, default, secret }
}

/// Default Bot Framework OpenID metadata (public cloud).
pub const DEFAULT_OPENID_METADATA_URL: &str = "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// Default service URL hosts the bot may send its token to (public cloud Teams).
pub const DEFAULT_SERVICE_URL_ALLOWLIST: &str =
    "smba.trafficmanager.net,smba.onyx.prod.teams.trafficmanager.net,smba.infra.gcc.teams.microsoft.com";
/// Default JSON body limit for `/api/messages` (256 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// Shortest retention: longer than the 7 days the Management Activity API serves content for.
pub const MIN_RETENTION_DAYS: u64 = 8;

/// Every setting chatwarden reads, in documentation order.
pub const SETTINGS: &[Setting] = &[
    setting("CHATWARDEN_BIND", "bind", "listen address", Some("127.0.0.1:3978"), false),
    setting("MICROSOFT_APP_ID", "microsoft_app_id", "bot app (client) id", None, false),
    setting("MICROSOFT_APP_PASSWORD", "microsoft_app_password", "bot client secret", None, true),
    setting("MICROSOFT_APP_TENANT_ID", "microsoft_app_tenant_id", "bot's Entra tenant id (single-tenant)", None, false),
    setting(
        "CHATWARDEN_OPENID_METADATA_URL",
        "openid_metadata_url",
        "Bot Framework OpenID metadata",
        Some(DEFAULT_OPENID_METADATA_URL),
        false,
    ),
    setting("CHATWARDEN_LOGIN_URL", "login_url", "Entra ID authority host", Some("https://login.microsoftonline.com"), false),
    setting(
        "CHATWARDEN_TOKEN_SERVICE_URL",
        "token_service_url",
        "Bot Framework token service",
        Some("https://token.botframework.com"),
        false,
    ),
    setting("CHATWARDEN_GRAPH_URL", "graph_url", "Microsoft Graph", Some("https://graph.microsoft.com"), false),
    setting("CHATWARDEN_MANAGEMENT_URL", "management_url", "Office 365 Management Activity API", Some("https://manage.office.com"), false),
    setting("CHATWARDEN_SERVICE_URL", "service_url", "Bot Connector for proactive posts (else learned from traffic)", None, false),
    setting("CHATWARDEN_PUBLIC_HOST", "public_host", "host name where chatwarden is reached (Teams app package)", None, false),
    setting(
        "CHATWARDEN_SERVICE_URL_ALLOWLIST",
        "service_url_allowlist",
        "hosts the bot may send its token to",
        Some(DEFAULT_SERVICE_URL_ALLOWLIST),
        false,
    ),
    setting("CHATWARDEN_OAUTH_CONNECTION", "oauth_connection", "OAuth connection name for admin sign-in", Some("graph"), false),
    setting("CHATWARDEN_SECURITY_TEAM_ID", "security_team_id", "team where commands are accepted", None, false),
    setting("CHATWARDEN_SECURITY_CHANNEL_ID", "security_channel_id", "channel where commands are accepted and alerts go", None, false),
    setting("CHATWARDEN_ADMINS", "admins", "Entra object ids allowed to request/approve (comma-separated)", None, false),
    setting("CHATWARDEN_DATABASE_URL", "database_url", "sqlite://path or postgres://...", Some("sqlite://chatwarden.db"), true),
    setting("CHATWARDEN_ALERT_SECRET", "alert_secret", "HMAC-SHA256 key for /api/alerts (alerts disabled if unset)", None, true),
    setting("CHATWARDEN_MAX_BODY_BYTES", "max_body_bytes", "largest accepted request body in bytes", Some("262144"), false),
    setting(
        "CHATWARDEN_TOKEN_MODE",
        "token_mode",
        "how admins' Graph tokens are obtained: token_service or obo",
        Some("token_service"),
        false,
    ),
    setting("CHATWARDEN_DETECTION", "detection", "raise alerts from audit records (true/false)", Some("true"), false),
    setting(
        "CHATWARDEN_DETECTION_OPERATIONS",
        "detection_operations",
        "audit operations that can raise an alert",
        Some("MemberAdded,ChatCreated"),
        false,
    ),
    setting("CHATWARDEN_PARTNER_TENANTS", "partner_tenants", "allow-listed partner tenant ids: never alerted on", None, false),
    setting(
        "CHATWARDEN_PARTNER_DOMAINS",
        "partner_domains",
        "allow-listed partner domains (and their subdomains): never alerted on",
        None,
        false,
    ),
    setting(
        "CHATWARDEN_DETECT_UNAUTHENTICATED",
        "detect_unauthenticated",
        "alert on chats with unauthenticated users (true/false)",
        Some("true"),
        false,
    ),
    setting(
        "CHATWARDEN_AUDIT_POLL_MINUTES",
        "audit_poll_minutes",
        "poll the Management Activity API every N minutes (0 = off)",
        Some("0"),
        false,
    ),
    setting(
        "CHATWARDEN_AUDIT_LOOKBACK_HOURS",
        "audit_lookback_hours",
        "how far back the first audit poll looks (1 to 168)",
        Some("24"),
        false,
    ),
    setting("CHATWARDEN_REVOKE_CEILING", "revoke_ceiling", "most users one /revoke-sessions case may cover", Some("500"), false),
    setting(
        "CHATWARDEN_EXECUTION_LEASE_SECONDS",
        "execution_lease_seconds",
        "how long a case runner's claim lasts unrenewed; a crashed runner's case is resumed after it (2 to 3600)",
        Some("60"),
        false,
    ),
    setting(
        "CHATWARDEN_COMMANDS_PER_MINUTE",
        "commands_per_minute",
        "commands one admin may send per minute (0 = no limit)",
        Some("30"),
        false,
    ),
    setting(
        "CHATWARDEN_ALERTS_PER_MINUTE",
        "alerts_per_minute",
        "/api/alerts requests one source address may send per minute (0 = no limit)",
        Some("120"),
        false,
    ),
    setting(
        "CHATWARDEN_REMOVAL_API_VERSION",
        "removal_api_version",
        "Graph version for removeAllAccessForUser and its $batch: v1.0, or beta for clouds that lag",
        Some("v1.0"),
        false,
    ),
    setting(
        "CHATWARDEN_REFUSALS_PER_MINUTE",
        "refusals_per_minute",
        "refusals answered per sender per minute; past it a refusal is recorded once and not answered (0 = no limit)",
        Some("5"),
        false,
    ),
    setting(
        "CHATWARDEN_RETENTION_DAYS",
        "retention_days",
        "prune audit records, dedupe keys and refusals older than this many days (0 = keep everything, else 8 or more)",
        Some("0"),
        false,
    ),
    setting("CHATWARDEN_CASE_TTL_HOURS", "case_ttl_hours", "hours a case waits for a decision before it expires", Some("24"), false),
    setting(
        "CHATWARDEN_REQUIRE_SECOND_APPROVER",
        "require_second_approver",
        "the requester may not approve their own case (true/false)",
        Some("true in serve and in dev with a registration, false in local mode"),
        false,
    ),
];

/// Bot registration: the credentials the bot uses for its own outbound token.
#[derive(Clone)]
pub struct AppCredentials {
    /// Microsoft App ID; also the audience every inbound token must carry.
    pub app_id: String,
    /// Client secret.
    pub password: SecretString,
    /// Tenant that issues the bot's outbound token (single-tenant bot).
    pub tenant_id: String,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_id", &self.app_id)
            .field("password", &"[redacted]")
            .field("tenant_id", &self.tenant_id)
            .finish()
    }
}

/// Base URLs of every external service (all configurable so tests can use local fakes).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Bot Framework OpenID metadata document.
    pub openid_metadata: Url,
    /// Entra ID authority host (`{login}/{tenant}/oauth2/v2.0/token`).
    pub login: Url,
    /// Bot Framework token service.
    pub token_service: Url,
    /// Microsoft Graph.
    pub graph: Url,
    /// Office 365 Management Activity API.
    pub management: Url,
}

/// Where commands are accepted and who may give them.
#[derive(Debug, Clone, Default)]
pub struct SecurityScope {
    /// Team id of the security team (`19:...@thread.tacv2`).
    pub team_id: Option<String>,
    /// Channel id of the security channel.
    pub channel_id: Option<String>,
    /// Entra object ids of the admins allowed to request and approve.
    pub admins: Vec<String>,
}

/// Timing of the OpenID key cache; defaults follow the Bot Framework guidance.
#[derive(Debug, Clone, Copy)]
pub struct KeyRefreshPolicy {
    /// Scheduled refresh of the key set.
    pub refresh_interval: Duration,
    /// Minimum time between two refreshes caused by an unknown `kid`.
    pub unknown_kid_min_interval: Duration,
    /// Delay before retrying a failed load or refresh.
    pub retry_interval: Duration,
    /// Timeout of each metadata / JWKS request.
    pub fetch_timeout: Duration,
}

impl Default for KeyRefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(24 * 3600),
            unknown_kid_min_interval: Duration::from_secs(300),
            retry_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// Retries of outbound calls (Bot Connector, token endpoints).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// First backoff delay when the server gives no `Retry-After`.
    pub base_delay: Duration,
    /// Upper bound for any single wait, `Retry-After` included.
    pub max_delay: Duration,
    /// Timeout of each request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// How admins' delegated Graph tokens are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// The Bot Framework token service through the bot's OAuth connection.
    TokenService,
    /// On-behalf-of exchange of the admin's Teams SSO token at Entra ID.
    OnBehalfOf,
}

/// Timing of case execution and recovery.
#[derive(Debug, Clone, Copy)]
pub struct ExecutionPolicy {
    /// How long a runner's claim on a case lasts without renewal.
    pub lease: Duration,
    /// How often expired proposals and abandoned executions are swept.
    pub sweep_interval: Duration,
}

impl ExecutionPolicy {
    /// Leases of `lease`, swept twice per lease (at most every 30 s), so a case abandoned by a
    /// crashed runner resumes at most one and a half leases after the crash.
    pub fn with_lease(lease: Duration) -> Self {
        Self { lease, sweep_interval: (lease / 2).min(Duration::from_secs(30)) }
    }
}

impl Default for ExecutionPolicy {
    fn default() -> Self {
        Self::with_lease(Duration::from_secs(60))
    }
}

/// The validated configuration the application runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// `serve` or `dev`.
    pub mode: Mode,
    /// Listen address.
    pub bind: SocketAddr,
    /// Bot registration; `None` only in dev mode, which turns inbound auth off.
    pub app: Option<AppCredentials>,
    /// External service base URLs.
    pub endpoints: Endpoints,
    /// Fixed Bot Connector URL for proactive posts.
    pub service_url: Option<Url>,
    /// Hosts the bot may send its token to.
    pub service_url_allowlist: HostAllowlist,
    /// Host name where chatwarden is reached (for the Teams app package).
    pub public_host: Option<String>,
    /// OAuth connection name for admin sign-in.
    pub oauth_connection: String,
    /// Security team, channel and admins.
    pub security: SecurityScope,
    /// Database URL (may hold a password: printed redacted).
    pub database_url: SecretString,
    /// HMAC key for `/api/alerts`; alerts are disabled without it.
    pub alert_secret: Option<SecretString>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How admins' delegated Graph tokens are obtained.
    pub token_mode: TokenMode,
    /// Detection rules over audit records.
    pub detection: DetectionRules,
    /// Management Activity API poll interval; `None` = off.
    pub audit_poll: Option<Duration>,
    /// How far back the first audit poll looks.
    pub audit_lookback: Duration,
    /// Most users one session-revocation case may cover.
    pub revoke_ceiling: usize,
    /// Commands one admin may send per minute (0 = no limit).
    pub commands_per_minute: u32,
    /// Alert pushes one source address may send per minute (0 = no limit).
    pub alerts_per_minute: u32,
    /// Refusals answered per sender per minute (0 = no limit).
    pub refusals_per_minute: u32,
    /// Graph version for `removeAllAccessForUser`.
    pub removal_api_version: RemovalApiVersion,
    /// How long audit records, activity dedupe keys and refusals are kept; `None` = forever.
    pub retention: Option<Duration>,
    /// How long a case waits for a decision.
    pub case_ttl: Duration,
    /// The requester may not approve their own case.
    pub require_second_approver: bool,
    /// Case execution timing (not an environment setting; tests shorten it).
    pub execution: ExecutionPolicy,
    /// Key cache timing (not an environment setting; tests shorten it).
    pub key_refresh: KeyRefreshPolicy,
    /// Outbound retry timing (not an environment setting; tests shorten it).
    pub retry: RetryPolicy,
}

/// One problem with one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The environment variable name of the setting.
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Every problem found while loading the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The problems, in settings order.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {}: {}", p.setting, p.problem)?;
        }
        Ok(())
    }
}

/// Raw values gathered from the file and the environment, before validation.
#[derive(Debug, Default)]
struct RawSettings {
    values: BTreeMap<&'static str, String>,
    problems: Vec<ConfigProblem>,
}

impl RawSettings {
    fn get(&self, env: &str) -> Option<&str> {
        self.values.get(env).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    fn problem(&mut self, setting: &str, problem: impl Into<String>) {
        self.problems.push(ConfigProblem { setting: setting.to_owned(), problem: problem.into() });
    }
}

impl Config {
    /// Loads the configuration for `mode` from an optional TOML file and the process environment.
    pub fn load(mode: Mode, file: Option<&Path>) -> Result<Config, ConfigErrors> {
        let text = match file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(err) => {
                    return Err(ConfigErrors {
                        problems: vec![ConfigProblem {
                            setting: "--config".into(),
                            problem: format!("cannot read {}: {err}", path.display()),
                        }],
                    });
                }
            },
            None => None,
        };
        Self::from_sources(mode, text.as_deref(), |name| std::env::var(name).ok())
    }

    /// Builds the configuration from TOML text (if any) and an environment lookup; env wins.
    pub fn from_sources(mode: Mode, file_text: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        validate(mode, gather(file_text, env))
    }
}

/// What `chatwarden manifest` needs to build the Teams app package: the bot's app id and the
/// public host, and nothing secret (no password, no tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSettings {
    /// `MICROSOFT_APP_ID`.
    pub app_id: String,
    /// `CHATWARDEN_PUBLIC_HOST`.
    pub public_host: String,
}

impl PackageSettings {
    /// Reads the two settings from TOML text (if any) and an environment lookup; env wins.
    /// Other settings are not validated: the package does not depend on them.
    pub fn from_sources(file_text: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut raw = gather(file_text, env);
        let app_id = raw.get("MICROSOFT_APP_ID").map(|v| v.trim().to_owned());
        let app_id = match app_id {
            Some(id) if is_guid(&id) => Some(id),
            Some(id) => {
                raw.problem("MICROSOFT_APP_ID", format!("`{id}` is not a GUID"));
                None
            }
            None => {
                raw.problem("MICROSOFT_APP_ID", "is required to build the Teams app package");
                None
            }
        };
        let public_host = parse_public_host(&mut raw);
        if public_host.is_none() && raw.get("CHATWARDEN_PUBLIC_HOST").is_none() {
            raw.problem("CHATWARDEN_PUBLIC_HOST", "is required to build the Teams app package");
        }
        match (app_id, public_host) {
            (Some(app_id), Some(public_host)) if raw.problems.is_empty() => Ok(Self { app_id, public_host }),
            _ => Err(ConfigErrors { problems: raw.problems }),
        }
    }
}

/// The file's values overlaid by the environment's.
fn gather(file_text: Option<&str>, env: impl Fn(&str) -> Option<String>) -> RawSettings {
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

/// `CHATWARDEN_PUBLIC_HOST`, lower-cased, when set and a plain host name.
fn parse_public_host(raw: &mut RawSettings) -> Option<String> {
    let host = raw.get("CHATWARDEN_PUBLIC_HOST").map(|h| h.trim().to_ascii_lowercase())?;
    let valid = host.contains('.') && host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !valid {
        raw.problem("CHATWARDEN_PUBLIC_HOST", format!("`{host}` is not a host name (no scheme, port or path)"));
        return None;
    }
    Some(host)
}

impl Config {
    /// Whether inbound Bot Framework authentication is enforced.
    pub fn auth_enabled(&self) -> bool {
        self.app.is_some()
    }

    /// A printable view of the effective configuration with every secret redacted.
    pub fn redacted(&self) -> String {
        let set = |v: bool| if v { "[redacted]" } else { "(unset)" };
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        let mut lines =
            vec![format!("mode                            = {:?}", self.mode), format!("CHATWARDEN_BIND                 = {}", self.bind)];
        match &self.app {
            Some(app) => {
                lines.push(format!("MICROSOFT_APP_ID                = {}", app.app_id));
                lines.push("MICROSOFT_APP_PASSWORD          = [redacted]".into());
                lines.push(format!("MICROSOFT_APP_TENANT_ID         = {}", app.tenant_id));
            }
            None => lines.push("MICROSOFT_APP_ID                = (unset: inbound auth OFF)".into()),
        }
        let e = &self.endpoints;
        lines.extend([
            format!("CHATWARDEN_OPENID_METADATA_URL  = {}", e.openid_metadata),
            format!("CHATWARDEN_LOGIN_URL            = {}", e.login),
            format!("CHATWARDEN_TOKEN_SERVICE_URL    = {}", e.token_service),
            format!("CHATWARDEN_GRAPH_URL            = {}", e.graph),
            format!("CHATWARDEN_MANAGEMENT_URL       = {}", e.management),
            format!(
                "CHATWARDEN_SERVICE_URL          = {}",
                self.service_url.as_ref().map_or("(learned from traffic)".into(), Url::to_string)
            ),
            format!("CHATWARDEN_PUBLIC_HOST          = {}", opt(&self.public_host)),
            format!("CHATWARDEN_SERVICE_URL_ALLOWLIST = {}", self.service_url_allowlist),
            format!("CHATWARDEN_OAUTH_CONNECTION     = {}", self.oauth_connection),
            format!("CHATWARDEN_SECURITY_TEAM_ID     = {}", opt(&self.security.team_id)),
            format!("CHATWARDEN_SECURITY_CHANNEL_ID  = {}", opt(&self.security.channel_id)),
            format!("CHATWARDEN_ADMINS               = {}", self.security.admins.join(",")),
            "CHATWARDEN_DATABASE_URL         = [redacted]".into(),
            format!("CHATWARDEN_ALERT_SECRET         = {}", set(self.alert_secret.is_some())),
            format!("CHATWARDEN_MAX_BODY_BYTES       = {}", self.max_body_bytes),
            format!("CHATWARDEN_TOKEN_MODE           = {:?}", self.token_mode),
            format!("CHATWARDEN_DETECTION            = {}", self.detection.enabled),
            format!("CHATWARDEN_DETECTION_OPERATIONS = {}", self.detection.operations.join(",")),
            format!("CHATWARDEN_PARTNER_TENANTS      = {}", sorted(&self.detection.allowed_tenants)),
            format!("CHATWARDEN_PARTNER_DOMAINS      = {}", sorted(&self.detection.allowed_domains)),
            format!("CHATWARDEN_DETECT_UNAUTHENTICATED = {}", self.detection.unauthenticated),
            format!("CHATWARDEN_AUDIT_POLL_MINUTES   = {}", self.audit_poll.map_or(0, |d| d.as_secs() / 60)),
            format!("CHATWARDEN_AUDIT_LOOKBACK_HOURS = {}", self.audit_lookback.as_secs() / 3600),
            format!("CHATWARDEN_REVOKE_CEILING       = {}", self.revoke_ceiling),
            format!("CHATWARDEN_EXECUTION_LEASE_SECONDS = {}", self.execution.lease.as_secs()),
            format!("CHATWARDEN_COMMANDS_PER_MINUTE  = {}", self.commands_per_minute),
            format!("CHATWARDEN_ALERTS_PER_MINUTE    = {}", self.alerts_per_minute),
            format!("CHATWARDEN_REFUSALS_PER_MINUTE  = {}", self.refusals_per_minute),
            format!("CHATWARDEN_REMOVAL_API_VERSION  = {}", self.removal_api_version.as_str()),
            format!("CHATWARDEN_RETENTION_DAYS       = {}", self.retention.map_or(0, |d| d.as_secs() / 86_400)),
            format!("CHATWARDEN_CASE_TTL_HOURS       = {}", self.case_ttl.as_secs() / 3600),
            format!("CHATWARDEN_REQUIRE_SECOND_APPROVER = {}", self.require_second_approver),
        ]);
        lines.join("\n")
    }
}

fn sorted(set: &std::collections::HashSet<String>) -> String {
    let mut items: Vec<&str> = set.iter().map(String::as_str).collect();
    items.sort_unstable();
    items.join(",")
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

fn value_or_default<'a>(raw: &'a RawSettings, env: &str) -> &'a str {
    raw.get(env).unwrap_or_else(|| default_of(env))
}

fn parse_url(raw: &mut RawSettings, env: &'static str) -> Option<Url> {
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
fn check_url(text: &str) -> Result<Url, String> {
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

fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    parts.len() == 5 && parts.iter().zip(lens).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn parse_bool(raw: &mut RawSettings, env: &'static str, default: bool) -> bool {
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

fn require(raw: &mut RawSettings, mode: Mode, env: &'static str) -> Option<String> {
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

fn require_guid(raw: &mut RawSettings, mode: Mode, env: &'static str) -> Option<String> {
    let value = require(raw, mode, env)?;
    if mode == Mode::Serve && !is_guid(&value) {
        raw.problem(env, format!("`{value}` is not a GUID"));
        return None;
    }
    Some(value)
}

fn validate(mode: Mode, mut raw: RawSettings) -> Result<Config, ConfigErrors> {
    let bind_text = value_or_default(&raw, "CHATWARDEN_BIND").trim().to_owned();
    let bind = match bind_text.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(addr) => Some(addr),
        None => {
            raw.problem("CHATWARDEN_BIND", format!("`{bind_text}` is not a host:port address"));
            None
        }
    };

    let app_id = require_guid(&mut raw, mode, "MICROSOFT_APP_ID");
    let password = require(&mut raw, mode, "MICROSOFT_APP_PASSWORD");
    let tenant_id = require_guid(&mut raw, mode, "MICROSOFT_APP_TENANT_ID");
    let app = match (app_id, password, tenant_id) {
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
    };

    let openid_metadata = parse_url(&mut raw, "CHATWARDEN_OPENID_METADATA_URL");
    let login = parse_url(&mut raw, "CHATWARDEN_LOGIN_URL");
    let token_service = parse_url(&mut raw, "CHATWARDEN_TOKEN_SERVICE_URL");
    let graph = parse_url(&mut raw, "CHATWARDEN_GRAPH_URL");
    let management = parse_url(&mut raw, "CHATWARDEN_MANAGEMENT_URL");
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

    let allowlist_text = value_or_default(&raw, "CHATWARDEN_SERVICE_URL_ALLOWLIST").to_owned();
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

    let public_host = parse_public_host(&mut raw);
    let oauth_connection = value_or_default(&raw, "CHATWARDEN_OAUTH_CONNECTION").trim().to_owned();
    if oauth_connection.is_empty() {
        raw.problem("CHATWARDEN_OAUTH_CONNECTION", "must not be empty");
    }
    // With a real registration, inbound auth is on and Teams can reach the bot: `dev` then guards
    // who may act exactly like `serve` (the same settings are required, four-eyes is the default).
    let guarded = mode == Mode::Serve || app.is_some();
    let guarded_by = if mode == Mode::Serve { "in `serve`" } else { "in `dev` with a MICROSOFT_APP_* registration" };
    let require_guarded = |raw: &mut RawSettings, env: &'static str| match raw.get(env) {
        Some(v) => Some(v.trim().to_owned()),
        None => {
            if guarded {
                raw.problem(env, format!("is required {guarded_by}"));
            }
            None
        }
    };
    let team_id = require_guarded(&mut raw, "CHATWARDEN_SECURITY_TEAM_ID");
    let channel_id = require_guarded(&mut raw, "CHATWARDEN_SECURITY_CHANNEL_ID");
    let admins: Vec<String> =
        raw.get("CHATWARDEN_ADMINS").unwrap_or("").split(',').map(|a| a.trim().to_ascii_lowercase()).filter(|a| !a.is_empty()).collect();
    if guarded {
        if admins.is_empty() {
            raw.problem("CHATWARDEN_ADMINS", format!("is required {guarded_by} (at least one Entra object id)"));
        }
        let bad: Vec<&String> = admins.iter().filter(|a| !is_guid(a)).collect();
        if !bad.is_empty() {
            let list = bad.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ");
            raw.problem("CHATWARDEN_ADMINS", format!("not Entra object ids (GUIDs): {list}"));
        }
    }

    let database_url = value_or_default(&raw, "CHATWARDEN_DATABASE_URL").trim().to_owned();
    if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        raw.problem("CHATWARDEN_DATABASE_URL", "must start with sqlite:, postgres:// or postgresql://");
    }
    let alert_secret = raw.get("CHATWARDEN_ALERT_SECRET").map(|s| SecretString::from(s.to_owned()));
    if let Some(secret) = raw.get("CHATWARDEN_ALERT_SECRET") {
        if secret.len() < 16 {
            raw.problem("CHATWARDEN_ALERT_SECRET", "is too short (at least 16 characters)");
        }
    }

    let body_text = value_or_default(&raw, "CHATWARDEN_MAX_BODY_BYTES").trim().to_owned();
    let max_body_bytes = match body_text.parse::<usize>() {
        Ok(n) if (1024..=16 * 1024 * 1024).contains(&n) => Some(n),
        _ => {
            raw.problem("CHATWARDEN_MAX_BODY_BYTES", format!("`{body_text}` must be a number of bytes between 1024 and 16777216"));
            None
        }
    };

    let ttl_text = value_or_default(&raw, "CHATWARDEN_CASE_TTL_HOURS").trim().to_owned();
    let case_ttl = match ttl_text.parse::<u64>() {
        Ok(hours) if (1..=24 * 30).contains(&hours) => Some(Duration::from_secs(hours * 3600)),
        _ => {
            raw.problem("CHATWARDEN_CASE_TTL_HOURS", format!("`{ttl_text}` must be a whole number of hours from 1 to 720"));
            None
        }
    };
    let require_second_approver = match raw.get("CHATWARDEN_REQUIRE_SECOND_APPROVER").map(|v| v.trim().to_ascii_lowercase()) {
        None => Some(guarded),
        Some(v) if v == "true" => Some(true),
        Some(v) if v == "false" => Some(false),
        Some(v) => {
            raw.problem("CHATWARDEN_REQUIRE_SECOND_APPROVER", format!("`{v}` must be true or false"));
            None
        }
    };

    let token_mode = match value_or_default(&raw, "CHATWARDEN_TOKEN_MODE").trim().to_ascii_lowercase().as_str() {
        "token_service" => Some(TokenMode::TokenService),
        "obo" => Some(TokenMode::OnBehalfOf),
        other => {
            let other = other.to_owned();
            raw.problem("CHATWARDEN_TOKEN_MODE", format!("`{other}` must be token_service or obo"));
            None
        }
    };

    let detection_enabled = parse_bool(&mut raw, "CHATWARDEN_DETECTION", true);
    let detect_unauthenticated = parse_bool(&mut raw, "CHATWARDEN_DETECT_UNAUTHENTICATED", true);
    let operations: Vec<String> = value_or_default(&raw, "CHATWARDEN_DETECTION_OPERATIONS")
        .split(',')
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    let list = |raw: &RawSettings, env: &str| -> Vec<String> {
        raw.get(env).unwrap_or("").split(',').map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()).collect()
    };
    let partner_tenants = list(&raw, "CHATWARDEN_PARTNER_TENANTS");
    let partner_domains = list(&raw, "CHATWARDEN_PARTNER_DOMAINS");
    for tenant in partner_tenants.iter().filter(|t| !is_guid(t)) {
        raw.problem("CHATWARDEN_PARTNER_TENANTS", format!("`{tenant}` is not a tenant id (GUID)"));
    }
    for domain in partner_domains.iter().filter(|d| !d.contains('.') || d.contains('/') || d.contains('@')) {
        raw.problem("CHATWARDEN_PARTNER_DOMAINS", format!("`{domain}` is not a domain"));
    }
    let detection = DetectionRules {
        enabled: detection_enabled,
        operations,
        allowed_tenants: partner_tenants.into_iter().collect(),
        allowed_domains: partner_domains.into_iter().collect(),
        unauthenticated: detect_unauthenticated,
    };
    let poll_text = value_or_default(&raw, "CHATWARDEN_AUDIT_POLL_MINUTES").trim().to_owned();
    let audit_poll = match poll_text.parse::<u64>() {
        Ok(0) => None,
        Ok(minutes) if minutes <= 24 * 60 => Some(Duration::from_secs(minutes * 60)),
        _ => {
            raw.problem("CHATWARDEN_AUDIT_POLL_MINUTES", format!("`{poll_text}` must be a number of minutes from 0 (off) to 1440"));
            None
        }
    };
    if audit_poll.is_some() && app.is_none() {
        raw.problem("CHATWARDEN_AUDIT_POLL_MINUTES", "polling needs the MICROSOFT_APP_* registration (for the Management API token)");
    }
    let lookback_text = value_or_default(&raw, "CHATWARDEN_AUDIT_LOOKBACK_HOURS").trim().to_owned();
    let audit_lookback = match lookback_text.parse::<u64>() {
        Ok(hours) if (1..=168).contains(&hours) => Duration::from_secs(hours * 3600),
        _ => {
            raw.problem("CHATWARDEN_AUDIT_LOOKBACK_HOURS", format!("`{lookback_text}` must be a number of hours from 1 to 168"));
            Duration::from_secs(24 * 3600)
        }
    };

    let ceiling_text = value_or_default(&raw, "CHATWARDEN_REVOKE_CEILING").trim().to_owned();
    let revoke_ceiling = match ceiling_text.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => n,
        _ => {
            raw.problem("CHATWARDEN_REVOKE_CEILING", format!("`{ceiling_text}` must be a number of users from 1 to 100000"));
            500
        }
    };

    let lease_text = value_or_default(&raw, "CHATWARDEN_EXECUTION_LEASE_SECONDS").trim().to_owned();
    let execution = match lease_text.parse::<u64>() {
        Ok(seconds) if (2..=3600).contains(&seconds) => ExecutionPolicy::with_lease(Duration::from_secs(seconds)),
        _ => {
            raw.problem("CHATWARDEN_EXECUTION_LEASE_SECONDS", format!("`{lease_text}` must be a number of seconds from 2 to 3600"));
            ExecutionPolicy::default()
        }
    };

    let per_minute = |raw: &mut RawSettings, env: &'static str| -> u32 {
        let text = value_or_default(raw, env).trim().to_owned();
        match text.parse::<u32>() {
            Ok(n) if n <= 100_000 => n,
            _ => {
                raw.problem(env, format!("`{text}` must be a number from 0 (no limit) to 100000"));
                0
            }
        }
    };
    let commands_per_minute = per_minute(&mut raw, "CHATWARDEN_COMMANDS_PER_MINUTE");
    let alerts_per_minute = per_minute(&mut raw, "CHATWARDEN_ALERTS_PER_MINUTE");
    let refusals_per_minute = per_minute(&mut raw, "CHATWARDEN_REFUSALS_PER_MINUTE");
    let removal_api_version = match value_or_default(&raw, "CHATWARDEN_REMOVAL_API_VERSION").trim() {
        "v1.0" => RemovalApiVersion::V1,
        "beta" => RemovalApiVersion::Beta,
        other => {
            let other = other.to_owned();
            raw.problem("CHATWARDEN_REMOVAL_API_VERSION", format!("`{other}` must be v1.0 or beta"));
            RemovalApiVersion::V1
        }
    };
    let retention_text = value_or_default(&raw, "CHATWARDEN_RETENTION_DAYS").trim().to_owned();
    let retention = match retention_text.parse::<u64>() {
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
    };

    let problems = std::mem::take(&mut raw.problems);
    let invalid = || ConfigErrors { problems: problems.clone() };
    let (Some(bind), Some(openid_metadata), Some(login), Some(token_service), Some(graph), Some(management)) =
        (bind, openid_metadata, login, token_service, graph, management)
    else {
        return Err(invalid());
    };
    let (Some(allowlist), Some(max_body_bytes), Some(case_ttl), Some(require_second_approver), Some(token_mode)) =
        (allowlist, max_body_bytes, case_ttl, require_second_approver, token_mode)
    else {
        return Err(invalid());
    };
    if !problems.is_empty() {
        return Err(invalid());
    }
    Ok(Config {
        mode,
        bind,
        app,
        endpoints: Endpoints { openid_metadata, login, token_service, graph, management },
        service_url,
        service_url_allowlist: allowlist,
        public_host,
        oauth_connection,
        security: SecurityScope { team_id, channel_id, admins },
        database_url: SecretString::from(database_url),
        alert_secret,
        max_body_bytes,
        token_mode,
        revoke_ceiling,
        commands_per_minute,
        alerts_per_minute,
        refusals_per_minute,
        removal_api_version,
        retention,
        detection,
        audit_poll,
        audit_lookback,
        case_ttl,
        require_second_approver,
        execution,
        key_refresh: KeyRefreshPolicy::default(),
        retry: RetryPolicy::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const APP: &str = "9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3";
    const TENANT: &str = "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e";
    const ADMIN: &str = "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d";

    fn serve_env() -> HashMap<&'static str, String> {
        HashMap::from([
            ("MICROSOFT_APP_ID", APP.to_owned()),
            ("MICROSOFT_APP_PASSWORD", "s3cret-password-value".to_owned()),
            ("MICROSOFT_APP_TENANT_ID", TENANT.to_owned()),
            ("CHATWARDEN_SECURITY_TEAM_ID", "19:team@thread.tacv2".to_owned()),
            ("CHATWARDEN_SECURITY_CHANNEL_ID", "19:chan@thread.tacv2".to_owned()),
            ("CHATWARDEN_ADMINS", ADMIN.to_owned()),
        ])
    }

    fn load(mode: Mode, file: Option<&str>, env: &HashMap<&'static str, String>) -> Result<Config, ConfigErrors> {
        Config::from_sources(mode, file, |k| env.get(k).cloned())
    }

    fn named(err: &ConfigErrors) -> Vec<&str> {
        err.problems.iter().map(|p| p.setting.as_str()).collect()
    }

    #[test]
    fn serve_with_every_required_setting_loads_with_documented_defaults() {
        let config = load(Mode::Serve, None, &serve_env()).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:3978");
        assert_eq!(config.endpoints.openid_metadata.as_str(), DEFAULT_OPENID_METADATA_URL);
        assert_eq!(config.endpoints.graph.as_str(), "https://graph.microsoft.com/");
        assert_eq!(config.oauth_connection, "graph");
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(config.service_url_allowlist.check("https://smba.trafficmanager.net/emea/").is_ok());
        assert!(config.auth_enabled());
        assert!(config.alert_secret.is_none());
    }

    #[test]
    fn serve_without_settings_names_every_missing_one() {
        let err = load(Mode::Serve, None, &HashMap::new()).unwrap_err();
        assert_eq!(
            named(&err),
            [
                "MICROSOFT_APP_ID",
                "MICROSOFT_APP_PASSWORD",
                "MICROSOFT_APP_TENANT_ID",
                "CHATWARDEN_SECURITY_TEAM_ID",
                "CHATWARDEN_SECURITY_CHANNEL_ID",
                "CHATWARDEN_ADMINS"
            ]
        );
    }

    #[test]
    fn dev_needs_nothing_and_turns_auth_off() {
        let config = load(Mode::Dev, None, &HashMap::new()).unwrap();
        assert!(!config.auth_enabled());
        assert!(!config.require_second_approver);
    }

    #[test]
    fn dev_with_a_registration_guards_who_may_act_like_serve() {
        let registration: HashMap<&'static str, String> =
            serve_env().into_iter().filter(|(k, _)| k.starts_with("MICROSOFT_APP_")).collect();
        let err = load(Mode::Dev, None, &registration).unwrap_err();
        assert_eq!(named(&err), ["CHATWARDEN_SECURITY_TEAM_ID", "CHATWARDEN_SECURITY_CHANNEL_ID", "CHATWARDEN_ADMINS"]);
        assert!(err.problems.iter().all(|p| p.problem.contains("in `dev` with a MICROSOFT_APP_* registration")), "{err}");
        let config = load(Mode::Dev, None, &serve_env()).unwrap();
        assert!(config.auth_enabled());
        assert!(config.require_second_approver, "four-eyes is the default once Teams can reach the bot");
        assert_eq!(config.security.admins, [ADMIN]);
    }

    #[test]
    fn retention_and_the_removal_version_are_checked() {
        let mut env = serve_env();
        let config = load(Mode::Serve, None, &env).unwrap();
        assert_eq!(config.retention, None);
        assert_eq!(config.removal_api_version, RemovalApiVersion::V1);
        env.insert("CHATWARDEN_RETENTION_DAYS", "30".into());
        env.insert("CHATWARDEN_REMOVAL_API_VERSION", "beta".into());
        let config = load(Mode::Serve, None, &env).unwrap();
        assert_eq!(config.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(config.removal_api_version, RemovalApiVersion::Beta);
        env.insert("CHATWARDEN_RETENTION_DAYS", "7".into());
        env.insert("CHATWARDEN_REMOVAL_API_VERSION", "v2".into());
        let err = load(Mode::Serve, None, &env).unwrap_err();
        assert_eq!(named(&err), ["CHATWARDEN_REMOVAL_API_VERSION", "CHATWARDEN_RETENTION_DAYS"]);
    }

    #[test]
    fn environment_wins_over_the_file() {
        let mut env = serve_env();
        env.insert("CHATWARDEN_BIND", "127.0.0.1:4000".into());
        let file = "bind = \"127.0.0.1:5000\"\noauth_connection = \"from-file\"\nadmins = [\"AAAAAAAA-1111-4a1b-9c2d-3e4f5a6b7c8d\"]\n";
        let config = load(Mode::Serve, Some(file), &env).unwrap();
        assert_eq!(config.bind.port(), 4000);
        assert_eq!(config.oauth_connection, "from-file");
        assert_eq!(config.security.admins, [ADMIN]);
    }

    #[test]
    fn file_lists_are_read_when_env_is_silent() {
        let mut env = serve_env();
        env.remove("CHATWARDEN_ADMINS");
        let file = "admins = [\"AAAAAAAA-1111-4a1b-9c2d-3e4f5a6b7c8d\", \"bbbbbbbb-1111-4a1b-9c2d-3e4f5a6b7c8d\"]\n";
        let config = load(Mode::Serve, Some(file), &env).unwrap();
        assert_eq!(config.security.admins, ["aaaaaaaa-1111-4a1b-9c2d-3e4f5a6b7c8d", "bbbbbbbb-1111-4a1b-9c2d-3e4f5a6b7c8d"]);
    }

    #[test]
    fn the_execution_lease_defaults_to_a_minute_and_sets_the_sweep() {
        let config = load(Mode::Serve, None, &serve_env()).unwrap();
        assert_eq!(config.execution.lease, Duration::from_secs(60));
        assert_eq!(config.execution.sweep_interval, Duration::from_secs(30));
        let mut env = serve_env();
        env.insert("CHATWARDEN_EXECUTION_LEASE_SECONDS", "4".into());
        let config = load(Mode::Serve, None, &env).unwrap();
        assert_eq!(config.execution.lease, Duration::from_secs(4));
        assert_eq!(config.execution.sweep_interval, Duration::from_secs(2));
        for bad in ["1", "3601", "soon", "-5"] {
            env.insert("CHATWARDEN_EXECUTION_LEASE_SECONDS", bad.into());
            let text = load(Mode::Serve, None, &env).unwrap_err().to_string();
            assert!(text.contains("CHATWARDEN_EXECUTION_LEASE_SECONDS: `"), "{bad}: {text}");
            assert!(text.contains("must be a number of seconds from 2 to 3600"), "{bad}: {text}");
        }
    }

    #[test]
    fn invalid_values_are_named_with_what_is_wrong() {
        let mut env = serve_env();
        env.insert("CHATWARDEN_GRAPH_URL", "http://graph.example.com".into());
        env.insert("CHATWARDEN_LOGIN_URL", "not a url".into());
        env.insert("CHATWARDEN_ADMINS", "alice@contoso.com".into());
        env.insert("CHATWARDEN_MAX_BODY_BYTES", "12".into());
        env.insert("CHATWARDEN_DATABASE_URL", "mysql://x".into());
        env.insert("MICROSOFT_APP_ID", "my-bot".into());
        let err = load(Mode::Serve, None, &env).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("CHATWARDEN_GRAPH_URL: `http://graph.example.com` must use https"), "{text}");
        assert!(text.contains("CHATWARDEN_LOGIN_URL: `not a url` is not a valid URL"), "{text}");
        assert!(text.contains("CHATWARDEN_ADMINS: not Entra object ids (GUIDs): `alice@contoso.com`"), "{text}");
        assert!(text.contains("CHATWARDEN_MAX_BODY_BYTES"), "{text}");
        assert!(text.contains("CHATWARDEN_DATABASE_URL"), "{text}");
        assert!(text.contains("MICROSOFT_APP_ID: `my-bot` is not a GUID"), "{text}");
    }

    #[test]
    fn loopback_http_urls_are_accepted_for_local_fakes() {
        let mut env = serve_env();
        env.insert("CHATWARDEN_GRAPH_URL", "http://127.0.0.1:9999".into());
        let config = load(Mode::Serve, None, &env).unwrap();
        assert_eq!(config.endpoints.graph.as_str(), "http://127.0.0.1:9999/");
    }

    #[test]
    fn unknown_file_keys_and_bad_toml_are_reported() {
        let err = load(Mode::Serve, Some("bnid = \"x\""), &serve_env()).unwrap_err();
        assert_eq!(err.problems[0].problem, "unknown key `bnid`");
        let err = load(Mode::Serve, Some("bind = "), &serve_env()).unwrap_err();
        assert!(err.problems[0].problem.starts_with("not valid TOML"));
    }

    #[test]
    fn service_url_must_be_on_the_allowlist() {
        let mut env = serve_env();
        env.insert("CHATWARDEN_SERVICE_URL", "https://evil.example.com/".into());
        let err = load(Mode::Serve, None, &env).unwrap_err();
        assert_eq!(named(&err), ["CHATWARDEN_SERVICE_URL"]);
    }

    #[test]
    fn secrets_never_appear_in_redacted_or_debug_output() {
        let mut env = serve_env();
        env.insert("CHATWARDEN_ALERT_SECRET", "alert-secret-0123456789".into());
        env.insert("CHATWARDEN_DATABASE_URL", "postgres://user:dbpass-xyz@db/chatwarden".into());
        let config = load(Mode::Serve, None, &env).unwrap();
        for text in [config.redacted(), format!("{config:?}")] {
            assert!(!text.contains("s3cret-password-value"), "{text}");
            assert!(!text.contains("alert-secret-0123456789"), "{text}");
            assert!(!text.contains("dbpass-xyz"), "{text}");
        }
        assert!(config.redacted().contains("MICROSOFT_APP_PASSWORD          = [redacted]"));
    }

    #[test]
    fn every_setting_the_code_reads_is_declared_and_documented() {
        let source = include_str!("config.rs");
        let readme = include_str!("../README.md");
        let mut names: Vec<&str> = Vec::new();
        for prefix in ["\"CHATWARDEN_", "\"MICROSOFT_APP_"] {
            for (start, _) in source.match_indices(prefix) {
                let rest = &source[start + 1..];
                let end = rest.find('"').unwrap();
                let name = &rest[..end];
                if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !name.ends_with('_') {
                    names.push(name);
                }
            }
        }
        assert!(names.len() > 20);
        for name in names {
            assert!(SETTINGS.iter().any(|s| s.env == name), "{name} is read but not in SETTINGS");
        }
        for setting in SETTINGS {
            assert!(readme.contains(&format!("`{}`", setting.env)), "{} is not documented in README.md", setting.env);
        }
    }

    #[test]
    fn partial_app_registration_in_dev_is_an_error() {
        let env = HashMap::from([("MICROSOFT_APP_ID", APP.to_owned())]);
        let err = load(Mode::Dev, None, &env).unwrap_err();
        assert_eq!(named(&err), ["MICROSOFT_APP_PASSWORD", "MICROSOFT_APP_TENANT_ID"]);
    }
}
