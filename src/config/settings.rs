//! The settings table: every setting's environment variable, file key, meaning, default and
//! secrecy, declared once and read by parsing, the README check and `check-config`'s redaction.

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
    /// What `check-config` prints when the setting has no value, instead of `(unset)`.
    pub unset_hint: Option<&'static str>,
}

impl Setting {
    /// This setting, printed by `check-config` as `hint` when it has no value.
    const fn with_unset_hint(self, hint: &'static str) -> Setting {
        Setting { unset_hint: Some(hint), ..self }
    }
}

const fn setting(env: &'static str, file_key: &'static str, meaning: &'static str, default: Option<&'static str>, secret: bool) -> Setting {
    Setting { env, file_key, meaning, default, secret, unset_hint: None }
}

/// Default Bot Framework OpenID metadata (public cloud).
pub(crate) const DEFAULT_OPENID_METADATA_URL: &str = "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// Default service URL hosts the bot may send its token to (public cloud Teams).
pub(crate) const DEFAULT_SERVICE_URL_ALLOWLIST: &str =
    "smba.trafficmanager.net,smba.onyx.prod.teams.trafficmanager.net,smba.infra.gcc.teams.microsoft.com";

/// Shortest retention: longer than the 7 days the Management Activity API serves content for.
pub(crate) const MIN_RETENTION_DAYS: u64 = 8;

/// Every setting chatwarden reads, in documentation order.
pub const SETTINGS: &[Setting] = &[
    setting("CHATWARDEN_BIND", "bind", "listen address", Some("127.0.0.1:3978"), false),
    setting("MICROSOFT_APP_ID", "microsoft_app_id", "bot app (client) id", None, false).with_unset_hint("(unset: inbound auth OFF)"),
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
    setting("CHATWARDEN_SERVICE_URL", "service_url", "Bot Connector for proactive posts (else learned from traffic)", None, false)
        .with_unset_hint("(learned from traffic)"),
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
    setting(
        "CHATWARDEN_NOTIFICATION_URL",
        "notification_url",
        "public https URL of /api/notifications given to Graph's chat-membership subscription (lifecycle: + /lifecycle; off if unset)",
        None,
        false,
    )
    .with_unset_hint("(unset: change notifications off)"),
    setting(
        "CHATWARDEN_NOTIFICATION_CERT",
        "notification_cert",
        "PEM certificate (a path, or the PEM itself) Graph encrypts resource data to; RSA 2048-4096",
        None,
        false,
    ),
    setting(
        "CHATWARDEN_NOTIFICATION_KEY",
        "notification_key",
        "its unencrypted PKCS#8 PEM private key (a path, or the PEM itself)",
        None,
        true,
    ),
    setting(
        "CHATWARDEN_NOTIFICATION_NEXT_CERT",
        "notification_next_cert",
        "the next certificate of a rotation: new subscriptions use it, notifications to either decrypt",
        None,
        false,
    ),
    setting("CHATWARDEN_NOTIFICATION_NEXT_KEY", "notification_next_key", "the next certificate's private key", None, true),
    setting(
        "CHATWARDEN_NOTIFICATION_CLIENT_STATE",
        "notification_client_state",
        "secret (16 to 128 characters) every notification must carry as clientState",
        None,
        true,
    ),
    setting(
        "CHATWARDEN_NOTIFICATION_MODEL",
        "notification_model",
        "Teams licensing model of the subscription: A or B (unset: evaluation mode, capped by Microsoft)",
        None,
        false,
    ),
    setting(
        "CHATWARDEN_DEFENDER_POLL_MINUTES",
        "defender_poll_minutes",
        "poll Defender XDR alerts_v2 for Teams message evidence every N minutes (0 = off)",
        Some("0"),
        false,
    ),
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
        "CHATWARDEN_PROGRESS_SECONDS",
        "progress_seconds",
        "least time between two progress updates of a running bulk case's card (2 to 300)",
        Some("5"),
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
        "prune audit records, dedupe keys and fetched poll contents older than this many days (0 = keep everything, else 8 or more)",
        Some("0"),
        false,
    ),
    setting(
        "CHATWARDEN_HISTORY_RETENTION_DAYS",
        "history_retention_days",
        "prune history events older than this many days from the start of the chain, keeping a signed checkpoint (0 = keep everything)",
        Some("0"),
        false,
    ),
    setting(
        "CHATWARDEN_HISTORY_SECRET",
        "history_secret",
        "HMAC-SHA256 key that signs history checkpoints (required with CHATWARDEN_HISTORY_RETENTION_DAYS; `history --verify` checks them with it)",
        None,
        true,
    ),
    setting(
        "CHATWARDEN_FORWARD_URL",
        "forward_url",
        "every history event is POSTed there in order, signed, once per Idempotency-Key (https, or http on a loopback host; off if unset)",
        None,
        false,
    ),
    setting("CHATWARDEN_FORWARD_SECRET", "forward_secret", "HMAC-SHA256 key of forwarded events' X-Chatwarden-Signature-256", None, true),
    setting("CHATWARDEN_CASE_TTL_HOURS", "case_ttl_hours", "hours a case waits for a decision before it expires", Some("24"), false),
    setting(
        "CHATWARDEN_REQUIRE_SECOND_APPROVER",
        "require_second_approver",
        "the requester may not approve their own case (true/false)",
        Some("true in serve and in dev with a registration, false in local mode"),
        false,
    ),
    setting(
        "CHATWARDEN_REMINDER_MINUTES",
        "reminder_minutes",
        "minutes before a proposed case expires that its approvers are reminded in its thread (0 = no reminder)",
        Some("120"),
        false,
    ),
    setting(
        "CHATWARDEN_ESCALATION_ADMINS",
        "escalation_admins",
        "Entra object ids (or group:<id>, members read through Graph) a case is escalated to when it is reminded; they may then decide it too (none = no escalation)",
        None,
        false,
    ),
    setting(
        "CHATWARDEN_REQUIRE_REASON",
        "require_reason",
        "Approve and Reject need a written reason, kept in the history (true/false)",
        Some("true in serve and in dev with a registration, false in local mode"),
        false,
    ),
];
