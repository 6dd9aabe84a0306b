//! Typed configuration: an optional TOML file overlaid by environment variables (env wins).
//!
//! Every setting has one public name, its environment variable (see [`SETTINGS`]); the file uses
//! the same name in lower case (`MICROSOFT_APP_ID` -> `microsoft_app_id`, `CHATWARDEN_BIND` ->
//! `bind`). Loading never stops at the first problem: [`ConfigErrors`] names every missing or
//! invalid setting at once. Secrets are held in [`SecretString`] and never printed.
//!
//! This module owns [`Config`] and its small public types; the settings table is in `settings`,
//! reading the sources in `parse`, the checks in `validate` and the printable view in `redact`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::audit::detection::DetectionRules;
use crate::botframework::service_url::HostAllowlist;
pub use crate::graph::RemovalApiVersion;

mod notifications;
mod parse;
mod redact;
mod reminders;
mod retention;
mod settings;
#[cfg(test)]
mod tests;
mod validate;

use parse::{gather, is_guid, parse_public_host};
pub(crate) use settings::MIN_RETENTION_DAYS;
pub use settings::{SETTINGS, Setting};
use validate::validate;

/// How the process runs: production (`serve`) or local (`dev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Production: every required setting must be present and inbound auth is always on.
    Serve,
    /// Local mode: no cloud, auth off, listener forced to loopback.
    Dev,
}

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

/// Progress updates of a running case's card: one every 5 s stays well inside what Teams allows
/// a bot to edit one message (60 per 30 s, 1,800 per hour).
pub(crate) const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Timing of case execution and recovery.
#[derive(Debug, Clone, Copy)]
pub struct ExecutionPolicy {
    /// How long a runner's claim on a case lasts without renewal.
    pub lease: Duration,
    /// How often expired proposals and abandoned executions are swept.
    pub sweep_interval: Duration,
    /// The least time between two progress updates of a running case's card.
    pub progress_interval: Duration,
}

impl ExecutionPolicy {
    /// Leases of `lease`, swept twice per lease (at most every 30 s), so a case abandoned by a
    /// crashed runner resumes at most one and a half leases after the crash.
    pub(crate) fn with_lease(lease: Duration) -> Self {
        Self { lease, sweep_interval: (lease / 2).min(Duration::from_secs(30)), progress_interval: DEFAULT_PROGRESS_INTERVAL }
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
    /// Graph change notifications for chat membership (`None`: off).
    pub notifications: Option<crate::notifications::NotificationSettings>,
    /// How often Defender XDR alerts are polled (`None`: off).
    pub defender_poll: Option<Duration>,
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
    /// How long audit records, activity dedupe keys and poll contents are kept; `None` = forever.
    pub retention: Option<Duration>,
    /// History retention, checkpoint signing and forwarding.
    pub history: HistorySettings,
    /// How long before a proposed case expires its approvers are reminded; `None` = never.
    pub reminder_before: Option<Duration>,
    /// Entra object ids (lower case) a case is escalated to when it is reminded.
    pub escalation_admins: Vec<String>,
    /// Entra group ids whose (transitive) user members are escalation admins too.
    pub escalation_groups: Vec<String>,
    /// How long a case waits for a decision.
    pub case_ttl: Duration,
    /// The requester may not approve their own case.
    pub require_second_approver: bool,
    /// Approve and Reject need a written reason.
    pub require_reason: bool,
    /// Case execution timing (not an environment setting; tests shorten it).
    pub execution: ExecutionPolicy,
    /// Key cache timing (not an environment setting; tests shorten it).
    pub key_refresh: KeyRefreshPolicy,
    /// Outbound retry timing (not an environment setting; tests shorten it).
    pub retry: RetryPolicy,
    /// Each setting's effective text for [`Config::redacted`] (secrets already redacted).
    effective: BTreeMap<&'static str, String>,
}

/// What happens to the history beyond the database.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// How long history events are kept; `None` = forever.
    pub retention: Option<Duration>,
    /// Signs (and checks) the checkpoints history retention leaves.
    pub secret: Option<SecretString>,
    /// Where every event is forwarded; `None` = nowhere.
    pub forward: Option<ForwardTarget>,
    /// The longest wait between forwarding attempts after failures (not an environment
    /// setting; tests shorten it).
    pub forward_max_backoff: Duration,
}

/// A SIEM endpoint that receives every history event.
#[derive(Debug, Clone)]
pub struct ForwardTarget {
    /// The receiver's URL.
    pub url: Url,
    /// The HMAC-SHA256 key of the signature header.
    pub secret: SecretString,
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

    /// Whether inbound Bot Framework authentication is enforced.
    pub fn auth_enabled(&self) -> bool {
        self.app.is_some()
    }
}

/// What `chatwarden manifest` needs to build the Teams app package: the bot's app id and the
/// public host, and nothing secret (no password, no tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackageSettings {
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
