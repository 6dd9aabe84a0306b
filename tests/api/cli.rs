//! The binary's command line: `check-config` and `--version`.

use std::process::Command;

use crate::helpers::*;

fn chatwarden() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatwarden"));
    cmd.env_clear().current_dir(std::env::temp_dir());
    cmd
}

#[test]
fn check_config_names_every_missing_setting_and_exits_non_zero() {
    let output = chatwarden().arg("check-config").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    for name in [
        "MICROSOFT_APP_ID",
        "MICROSOFT_APP_PASSWORD",
        "MICROSOFT_APP_TENANT_ID",
        "CHATWARDEN_SECURITY_TEAM_ID",
        "CHATWARDEN_SECURITY_CHANNEL_ID",
        "CHATWARDEN_ADMINS",
    ] {
        assert!(stderr.contains(&format!("{name}: is required")), "{name} missing from: {stderr}");
    }
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let output = chatwarden()
        .arg("check-config")
        .envs([
            ("MICROSOFT_APP_ID", APP_ID),
            ("MICROSOFT_APP_PASSWORD", APP_PASSWORD),
            ("MICROSOFT_APP_TENANT_ID", TENANT_ID),
            ("CHATWARDEN_SECURITY_TEAM_ID", "19:team@thread.tacv2"),
            ("CHATWARDEN_SECURITY_CHANNEL_ID", "19:c0ffee@thread.tacv2"),
            ("CHATWARDEN_ADMINS", ADMIN_OID),
            ("CHATWARDEN_ALERT_SECRET", "alert-secret-abcdefghijkl"),
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains(&format!("MICROSOFT_APP_ID                = {APP_ID}")), "{stdout}");
    assert!(stdout.contains("CHATWARDEN_ALERT_SECRET         = [redacted]"), "{stdout}");
    assert!(!stdout.contains(APP_PASSWORD));
    assert!(!stdout.contains("alert-secret-abcdefghijkl"));
}

#[test]
fn check_config_reads_the_file_given_with_config() {
    let dir = std::env::temp_dir().join(format!("chatwarden-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("chatwarden.toml");
    std::fs::write(&file, "bind = \"127.0.0.1:4555\"\nservice_url_allowlist = [\"smba.trafficmanager.net\"]\n").unwrap();
    let output = chatwarden().args(["--config", file.to_str().unwrap(), "check-config", "--dev"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8(output.stdout).unwrap().contains("CHATWARDEN_BIND                 = 127.0.0.1:4555"));
    let missing = chatwarden().args(["--config", "/nonexistent/chatwarden.toml", "check-config"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8(missing.stderr).unwrap().contains("--config: cannot read /nonexistent/chatwarden.toml"));
}

#[test]
fn version_is_printed() {
    let output = chatwarden().arg("--version").output().unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap().trim(), format!("chatwarden {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_example_configuration_file_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/chatwarden.example.toml");
    let output = chatwarden().args(["--config", example, "check-config"]).env("MICROSOFT_APP_PASSWORD", APP_PASSWORD).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn history_prints_the_cases_and_one_case_with_its_events() {
    use chatwarden::cases::{Actor, CaseKind, CaseSource, NewCase, NewTarget, now_ms};
    let url = sqlite_url();
    let store = chatwarden::store::Store::connect(&url).await.unwrap();
    let new = NewCase {
        kind: CaseKind::RevokeSessions,
        source: CaseSource::Command,
        tenant_id: TENANT_ID.into(),
        requester: Actor { oid: ADMIN_OID.into(), name: "Dana Admin".into(), user_id: "29:dana".into() },
        reason: Some("compromised".into()),
        targets: vec![NewTarget {
            thread_id: None,
            user_ref: "bob@contoso.com".into(),
            user_oid: None,
            user_tenant_id: TENANT_ID.into(),
            display_name: None,
        }],
        evidence: vec![],
        no_evidence: true,
        ttl_ms: 60_000,
    };
    let chatwarden::store::Created::New(case) = store.create_case(&new, None, now_ms()).await.unwrap() else { panic!() };
    store.close().await;

    let output = chatwarden().args(["history", "-n", "5"]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains(&format!("{}  proposed   Revoke sign-in sessions  asked by Dana Admin ({ADMIN_OID})", case.id)), "{text}");
    assert!(text.contains("    bob@contoso.com: pending"), "{text}");

    let output = chatwarden().args(["history", "--case", &case.id.to_lowercase()]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("Dana Admin  requested  Revoke sign-in sessions (1 target(s)) without audit evidence; reason: compromised"),
        "{text}"
    );

    let missing = chatwarden().args(["history", "--case", "CW-00000"]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn manifest_builds_the_teams_app_package_from_the_configuration() {
    let out = std::env::temp_dir().join(format!("chatwarden-{}.zip", std::process::id()));
    let output = chatwarden()
        .args(["manifest", "--out", out.to_str().unwrap()])
        // The app id and the public host, never the secret or the tenant.
        .envs([("MICROSOFT_APP_ID", APP_ID), ("CHATWARDEN_PUBLIC_HOST", "chatwarden.contoso.com")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    assert_eq!(names, ["manifest.json", "color.png", "outline.png"]);
    let manifest: serde_json::Value = serde_json::from_reader(zip.by_name("manifest.json").unwrap()).unwrap();
    assert_eq!(manifest["id"], APP_ID);
    assert!(manifest["validDomains"].as_array().unwrap().contains(&serde_json::json!("chatwarden.contoso.com")));

    let missing = chatwarden().args(["manifest", "--out", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert!(stderr.contains("MICROSOFT_APP_ID: is required") && stderr.contains("CHATWARDEN_PUBLIC_HOST: is required"), "{stderr}");

    let bad = chatwarden()
        .args(["manifest", "--out", out.to_str().unwrap()])
        .envs([("MICROSOFT_APP_ID", "not-a-guid"), ("CHATWARDEN_PUBLIC_HOST", "https://chatwarden.contoso.com/")])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(
        stderr.contains("MICROSOFT_APP_ID: `not-a-guid` is not a GUID") && stderr.contains("CHATWARDEN_PUBLIC_HOST: `https://"),
        "{stderr}"
    );
}
