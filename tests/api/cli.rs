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

/// A database with a finished case, a refusal with text a spreadsheet would run, and their chain.
async fn database_with_history() -> String {
    use chatwarden::cases::{Actor, now_ms};
    let url = sqlite_url();
    let store = chatwarden::store::Store::connect(&url).await.unwrap();
    let case = approved_removal(&store, "19:chat@thread.v2", "victim-oid").await;
    store.claim_for_execution(&case.id, "runner", 60_000, now_ms()).await.unwrap().unwrap();
    let done = target_result(0, chatwarden::cases::TargetStatus::Done, Some(204), "removed", Some("victim-oid"));
    store.record_target(&case.id, &done, now_ms()).await.unwrap();
    store.finish(&case.id, "runner", chatwarden::cases::CaseState::Done, now_ms()).await.unwrap();
    let eve = Actor { oid: "eve-oid".into(), name: "=cmd|' /C calc'!A0".into(), user_id: "29:eve".into() };
    store.record_event(None, Some(&eve), "refused", Some("not an admin, \"quoted\"\nand multi-line"), now_ms()).await.unwrap();
    store.close().await;
    url
}

fn out_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("chatwarden-export-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn python_verifier(file: &std::path::Path) -> std::process::Output {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify-history-export.py");
    Command::new("python3").arg(script).arg(file).output().expect("python3 runs the offline verifier")
}

#[tokio::test]
async fn an_export_verifies_offline_with_chatwarden_and_with_python_and_a_changed_line_does_not() {
    let url = database_with_history().await;
    let file = out_file("history.jsonl");
    let output = chatwarden()
        .args(["export", "--since", "1d", "--format", "jsonl", "--out", file.to_str().unwrap()])
        .env("CHATWARDEN_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("exported 6 events"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 6);

    let verified = chatwarden().args(["verify-export", file.to_str().unwrap()]).output().unwrap();
    assert!(verified.status.success());
    assert!(String::from_utf8_lossy(&verified.stdout).contains("export verified: 6 events, one unbroken stretch"));
    let python = python_verifier(&file);
    assert_eq!(python.status.code(), Some(0), "{}", String::from_utf8_lossy(&python.stdout));

    std::fs::write(&file, text.replacen("victim-oid", "someone-else", 1)).unwrap();
    let refused = chatwarden().args(["verify-export", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("was altered"), "{}", String::from_utf8_lossy(&refused.stdout));
    assert_eq!(python_verifier(&file).status.code(), Some(1));

    // A window that takes nothing, and a bound that is no time at all.
    let empty = chatwarden().args(["export", "--until", "2001-01-01"]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    assert!(empty.status.success() && empty.stdout.is_empty());
    let bad = chatwarden().args(["export", "--since", "last tuesday"]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("--since: `last tuesday` is not a date"));
}

#[tokio::test]
async fn a_csv_export_of_one_case_quotes_properly_and_defuses_formulas() {
    let url = database_with_history().await;
    let output = chatwarden().args(["export", "--format", "csv"]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    assert!(output.status.success());
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 6);
    let refusal = rows.last().unwrap();
    assert_eq!(&refusal[5], "'=cmd|' /C calc'!A0");
    assert_eq!(&refusal[7], "not an admin, \"quoted\"\nand multi-line");

    let case_id = rows[0][3].to_owned();
    let one = chatwarden().args(["export", "--format", "jsonl", "--case", &case_id]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    let kinds: Vec<String> = String::from_utf8(one.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["requested", "approved", "executing", "target_done", "done"]);
}

#[tokio::test]
async fn history_verify_exits_0_on_an_intact_chain_and_1_naming_the_first_altered_event() {
    let url = database_with_history().await;
    let intact = chatwarden().args(["history", "--verify"]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    assert_eq!(intact.status.code(), Some(0), "{}", String::from_utf8_lossy(&intact.stderr));
    assert!(String::from_utf8_lossy(&intact.stdout).contains("history verified: 6 events from its first event to event 6"));

    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query("UPDATE events SET actor_name = 'Nobody' WHERE seq = 2").execute(&mut conn).await.unwrap();
    let altered = chatwarden().args(["history", "--verify"]).env("CHATWARDEN_DATABASE_URL", &url).output().unwrap();
    assert_eq!(altered.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&altered.stdout).trim(),
        "history does NOT verify: event 2 was altered: its content does not match its hash"
    );
}
