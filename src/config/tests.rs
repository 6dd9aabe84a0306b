//! Tests of loading and validation, of the redacted view and of the settings table against the
//! code and the README.

use std::collections::HashMap;

use super::settings::DEFAULT_OPENID_METADATA_URL;
use super::*;

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
    assert_eq!(config.max_body_bytes, 256 * 1024);
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
    let registration: HashMap<&'static str, String> = serve_env().into_iter().filter(|(k, _)| k.starts_with("MICROSOFT_APP_")).collect();
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
fn history_retention_needs_its_secret_and_forwarding_needs_a_secret_and_a_safe_url() {
    let mut env = serve_env();
    let config = load(Mode::Serve, None, &env).unwrap();
    assert!(config.history.retention.is_none() && config.history.forward.is_none());
    env.insert("CHATWARDEN_HISTORY_RETENTION_DAYS", "400".into());
    env.insert("CHATWARDEN_FORWARD_URL", "http://siem.example.com/collector".into());
    let err = load(Mode::Serve, None, &env).unwrap_err();
    assert_eq!(named(&err), ["CHATWARDEN_HISTORY_SECRET", "CHATWARDEN_FORWARD_SECRET"]);
    env.insert("CHATWARDEN_HISTORY_SECRET", "short".into());
    env.insert("CHATWARDEN_FORWARD_SECRET", "forward-secret-0123456789".into());
    let err = load(Mode::Serve, None, &env).unwrap_err();
    assert_eq!(named(&err), ["CHATWARDEN_HISTORY_SECRET", "CHATWARDEN_FORWARD_URL"], "a short secret, and plain http off loopback");
    env.insert("CHATWARDEN_HISTORY_SECRET", "history-secret-0123456789".into());
    env.insert("CHATWARDEN_FORWARD_URL", "https://siem.example.com/collector".into());
    let config = load(Mode::Serve, None, &env).unwrap();
    assert_eq!(config.history.retention, Some(Duration::from_secs(400 * 86_400)));
    assert_eq!(config.history.forward.as_ref().unwrap().url.as_str(), "https://siem.example.com/collector");
    let shown = config.redacted();
    assert!(shown.contains("CHATWARDEN_FORWARD_SECRET") && !shown.contains("forward-secret-0123456789"), "{shown}");
    assert!(!shown.contains("history-secret-0123456789"), "{shown}");
    env.insert("CHATWARDEN_FORWARD_URL", "http://127.0.0.1:8088/services/collector".into());
    assert!(load(Mode::Serve, None, &env).is_ok(), "http is fine on loopback");
    env.remove("CHATWARDEN_FORWARD_URL");
    let err = load(Mode::Serve, None, &env).unwrap_err();
    assert_eq!(named(&err), ["CHATWARDEN_FORWARD_SECRET"]);
    env.insert("CHATWARDEN_HISTORY_RETENTION_DAYS", "forever".into());
    env.insert("CHATWARDEN_FORWARD_URL", "https://siem.example.com/collector".into());
    let err = load(Mode::Serve, None, &env).unwrap_err();
    assert_eq!(named(&err), ["CHATWARDEN_HISTORY_RETENTION_DAYS"]);
}

#[test]
fn reminders_default_to_two_hours_before_expiry_and_escalation_needs_object_ids_or_groups_and_a_reminder() {
    let mut env = serve_env();
    let config = load(Mode::Serve, None, &env).unwrap();
    assert_eq!(config.reminder_before, Some(Duration::from_secs(7200)));
    assert!(config.escalation_admins.is_empty());
    env.insert("CHATWARDEN_ESCALATION_ADMINS", "E5CA1A7E-5555-4D4E-8F90-1A2B3C4D5E6F".into());
    let config = load(Mode::Serve, None, &env).unwrap();
    assert_eq!(config.escalation_admins, ["e5ca1a7e-5555-4d4e-8f90-1a2b3c4d5e6f"]);
    env.insert("CHATWARDEN_REMINDER_MINUTES", "0".into());
    assert_eq!(named(&load(Mode::Serve, None, &env).unwrap_err()), ["CHATWARDEN_ESCALATION_ADMINS"]);
    env.insert("CHATWARDEN_REMINDER_MINUTES", "1440".into());
    assert_eq!(named(&load(Mode::Serve, None, &env).unwrap_err()), ["CHATWARDEN_REMINDER_MINUTES"], "not shorter than the 24 h TTL");
    env.insert("CHATWARDEN_REMINDER_MINUTES", "30".into());
    env.insert("CHATWARDEN_ESCALATION_ADMINS", "group:6F1C2D3E-0000-4000-8000-000000000001, e5ca1a7e-5555-4d4e-8f90-1a2b3c4d5e6f".into());
    let config = load(Mode::Serve, None, &env).unwrap();
    assert_eq!(config.escalation_groups, ["6f1c2d3e-0000-4000-8000-000000000001"]);
    assert_eq!(config.escalation_admins, ["e5ca1a7e-5555-4d4e-8f90-1a2b3c4d5e6f"]);
    env.insert("CHATWARDEN_ESCALATION_ADMINS", "group:not-a-guid".into());
    assert_eq!(named(&load(Mode::Serve, None, &env).unwrap_err()), ["CHATWARDEN_ESCALATION_ADMINS"]);
    let local = HashMap::from([("CHATWARDEN_ESCALATION_ADMINS", "group:6f1c2d3e-0000-4000-8000-000000000001".to_owned())]);
    assert_eq!(named(&load(Mode::Dev, None, &local).unwrap_err()), ["CHATWARDEN_ESCALATION_ADMINS"], "groups need the registration");
    env.insert("CHATWARDEN_ESCALATION_ADMINS", "not-a-guid".into());
    assert_eq!(named(&load(Mode::Serve, None, &env).unwrap_err()), ["CHATWARDEN_ESCALATION_ADMINS"]);
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
fn bulk_progress_updates_default_to_every_5_seconds_within_what_teams_allows() {
    let config = load(Mode::Serve, None, &serve_env()).unwrap();
    assert_eq!(config.execution.progress_interval, Duration::from_secs(5));
    let mut env = serve_env();
    env.insert("CHATWARDEN_PROGRESS_SECONDS", "12".into());
    assert_eq!(load(Mode::Serve, None, &env).unwrap().execution.progress_interval, Duration::from_secs(12));
    for bad in ["1", "301", "often"] {
        env.insert("CHATWARDEN_PROGRESS_SECONDS", bad.into());
        let text = load(Mode::Serve, None, &env).unwrap_err().to_string();
        assert!(text.contains("CHATWARDEN_PROGRESS_SECONDS: `"), "{bad}: {text}");
        assert!(text.contains("from 2 to 300"), "{bad}: {text}");
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
fn redacted_prints_every_setting_in_table_order_with_its_hint_when_unset() {
    let config = load(Mode::Dev, None, &HashMap::new()).unwrap();
    let text = config.redacted();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), SETTINGS.len() + 1, "{text}");
    assert_eq!(lines[0], "mode                            = Dev");
    for (line, setting) in lines[1..].iter().zip(SETTINGS) {
        assert!(line.starts_with(&format!("{} ", setting.env)), "{line}");
    }
    for expected in [
        "CHATWARDEN_BIND                 = 127.0.0.1:3978",
        "MICROSOFT_APP_ID                = (unset: inbound auth OFF)",
        "MICROSOFT_APP_PASSWORD          = (unset)",
        "CHATWARDEN_SERVICE_URL          = (learned from traffic)",
        "CHATWARDEN_DATABASE_URL         = [redacted]",
        "CHATWARDEN_ALERT_SECRET         = (unset)",
        "CHATWARDEN_REQUIRE_SECOND_APPROVER = false",
    ] {
        assert!(lines.contains(&expected), "{expected} missing from:\n{text}");
    }
}

#[test]
fn every_setting_the_code_reads_is_declared_and_documented() {
    let sources = [
        include_str!("mod.rs"),
        include_str!("settings.rs"),
        include_str!("parse.rs"),
        include_str!("validate.rs"),
        include_str!("redact.rs"),
    ];
    let readme = include_str!("../../README.md");
    let mut names: Vec<&str> = Vec::new();
    for source in sources {
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

#[test]
fn change_notifications_need_a_safe_url_a_certificate_with_its_own_key_and_a_client_state() {
    use crate::notifications::NotificationCertificate;
    let dir = std::env::temp_dir().join(format!("chatwarden-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, cert_pem, key_pem) = NotificationCertificate::generate("config test").unwrap();
    let (_, other_cert_pem, other_key_pem) = NotificationCertificate::generate("next").unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (cert_file, key_file, other_key_file) = (write("c.pem", &cert_pem), write("k.pem", &key_pem), write("o.pem", &other_key_pem));

    let mut env = serve_env();
    assert!(load(Mode::Serve, None, &env).unwrap().notifications.is_none(), "off by default");
    env.insert("CHATWARDEN_NOTIFICATION_MODEL", "A".into());
    assert_eq!(named(&load(Mode::Serve, None, &env).unwrap_err()), ["CHATWARDEN_NOTIFICATION_MODEL"], "set without the URL");
    env.insert("CHATWARDEN_NOTIFICATION_URL", "http://chatwarden.example.com/api/notifications".into());
    assert_eq!(
        named(&load(Mode::Serve, None, &env).unwrap_err()),
        ["CHATWARDEN_NOTIFICATION_URL", "CHATWARDEN_NOTIFICATION_CERT", "CHATWARDEN_NOTIFICATION_CLIENT_STATE"]
    );
    env.insert("CHATWARDEN_NOTIFICATION_URL", "https://chatwarden.example.com/api/notifications".into());
    env.insert("CHATWARDEN_NOTIFICATION_CERT", cert_file.clone());
    env.insert("CHATWARDEN_NOTIFICATION_KEY", other_key_file);
    env.insert("CHATWARDEN_NOTIFICATION_CLIENT_STATE", "short".into());
    env.insert("CHATWARDEN_NOTIFICATION_MODEL", "c".into());
    let err = load(Mode::Serve, None, &env).unwrap_err();
    assert_eq!(named(&err), ["CHATWARDEN_NOTIFICATION_CERT", "CHATWARDEN_NOTIFICATION_CLIENT_STATE", "CHATWARDEN_NOTIFICATION_MODEL"]);
    assert!(err.problems[0].problem.contains("does not belong"), "{:?}", err.problems[0]);

    env.insert("CHATWARDEN_NOTIFICATION_KEY", key_file);
    env.insert("CHATWARDEN_NOTIFICATION_CLIENT_STATE", "client-state-0123456789".into());
    env.insert("CHATWARDEN_NOTIFICATION_MODEL", "b".into());
    env.insert("CHATWARDEN_NOTIFICATION_NEXT_CERT", other_cert_pem);
    let err = load(Mode::Serve, None, &env).unwrap_err();
    assert_eq!(named(&err), ["CHATWARDEN_NOTIFICATION_NEXT_KEY"], "the next certificate needs its key");
    env.insert("CHATWARDEN_NOTIFICATION_NEXT_KEY", other_key_pem.clone());
    let config = load(Mode::Serve, None, &env).unwrap();
    let notifications = config.notifications.as_ref().unwrap();
    assert_eq!(notifications.model.as_deref(), Some("B"));
    assert!(notifications.certificates.knows(cert.id()));
    assert_ne!(notifications.certificates.newest().id(), cert.id(), "the next certificate is the newest");
    let shown = config.redacted();
    assert!(shown.contains(&cert_file), "the certificate's path is shown: {shown}");
    assert!(!shown.contains("client-state-0123456789") && !shown.contains(other_key_pem.lines().nth(1).unwrap()), "{shown}");

    let mut local = HashMap::new();
    local.insert("CHATWARDEN_DEFENDER_POLL_MINUTES", "5".into());
    assert_eq!(named(&load(Mode::Dev, None, &local).unwrap_err()), ["CHATWARDEN_DEFENDER_POLL_MINUTES"], "needs the registration");
    env.insert("CHATWARDEN_DEFENDER_POLL_MINUTES", "5".into());
    assert_eq!(load(Mode::Serve, None, &env).unwrap().defender_poll, Some(Duration::from_secs(300)));
    std::fs::remove_dir_all(&dir).ok();
}
