//! Command-line interface: `serve`, `dev`, `check-config`, `manifest`, `history`, `export`,
//! `verify-export`.

mod audit_trail;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use secrecy::ExposeSecret as _;

use crate::cards;
use crate::cases::Case;
use crate::config::{Config, Mode, PackageSettings};
use crate::history::ExportFormat;
use crate::startup::Application;
use crate::store::Store;
use crate::telemetry::{self, LogFormat};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "chatwarden", version, about = "Remove malicious external Teams chats, on an admin's approval")]
pub struct Cli {
    /// TOML configuration file (default: ./chatwarden.toml if it exists). Environment variables win.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the service (production: every setting required, authentication always on).
    Serve,
    /// Run locally with no cloud: auth off, loopback only; for Microsoft's local Teams client.
    Dev,
    /// Print the effective configuration (secrets redacted); exit non-zero naming each problem.
    CheckConfig {
        /// Check the configuration for `dev` instead of `serve`.
        #[arg(long)]
        dev: bool,
    },
    /// Build the Teams app package (needs MICROSOFT_APP_ID and CHATWARDEN_PUBLIC_HOST).
    Manifest {
        /// Where to write the zip.
        #[arg(long, value_name = "FILE", default_value = "chatwarden.zip")]
        out: PathBuf,
    },
    /// Print the case history from the database (the same history as `/history` and `/status`).
    History {
        /// How many cases, newest first.
        #[arg(short = 'n', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Show one case with all its events instead.
        #[arg(long, value_name = "CASE_ID")]
        case: Option<String>,
        /// Walk the whole hash chain instead and name the first event that does not match.
        #[arg(long, conflicts_with = "case")]
        verify: bool,
    },
    /// Write the history (every event with its hash) as JSON Lines or CSV, streamed.
    Export {
        /// Events at or after: a date (2026-11-01), an RFC 3339 time or an age (90m, 24h, 30d).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Events before: a date, an RFC 3339 time or an age.
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// File format (JSONL is the one `verify-export` checks).
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Only this case's events.
        #[arg(long, value_name = "CASE_ID")]
        case: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a JSONL export offline: every event against its hash, and the links between them.
    VerifyExport {
        /// The JSONL file `chatwarden export` wrote.
        file: PathBuf,
    },
}

/// The default configuration file, used when present.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "chatwarden.toml";

fn config_file(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_owned()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    }
}

fn load(mode: Mode, explicit: Option<&Path>) -> Result<Config, ExitCode> {
    Config::load(mode, config_file(explicit).as_deref()).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(2)
    })
}

/// Runs the CLI and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        CliCommand::CheckConfig { dev } => {
            let mode = if dev { Mode::Dev } else { Mode::Serve };
            match load(mode, cli.config.as_deref()) {
                Ok(config) => {
                    let _ = writeln!(std::io::stdout(), "{}", config.redacted());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        CliCommand::Manifest { out } => build_manifest(cli.config.as_deref(), &out),
        CliCommand::History { verify: true, .. } => match load(Mode::Dev, cli.config.as_deref()) {
            Ok(config) => audit_trail::verify(&config).await,
            Err(code) => code,
        },
        CliCommand::History { limit, case, verify: false } => match load(Mode::Dev, cli.config.as_deref()) {
            Ok(config) => history(&config, limit, case.as_deref()).await,
            Err(code) => code,
        },
        CliCommand::Export { since, until, format, case, out } => match load(Mode::Dev, cli.config.as_deref()) {
            Ok(config) => audit_trail::export(&config, since.as_deref(), until.as_deref(), format, case.as_deref(), out.as_deref()).await,
            Err(code) => code,
        },
        CliCommand::VerifyExport { file } => audit_trail::verify_export(&file),
        CliCommand::Serve => match load(Mode::Serve, cli.config.as_deref()) {
            Ok(config) => {
                telemetry::init(LogFormat::Json);
                serve(config).await
            }
            Err(code) => code,
        },
        CliCommand::Dev => match load(Mode::Dev, cli.config.as_deref()) {
            Ok(config) => {
                telemetry::init(LogFormat::Text);
                serve(config).await
            }
            Err(code) => code,
        },
    }
}

fn build_manifest(explicit: Option<&Path>, out: &Path) -> ExitCode {
    let text = match config_file(explicit).map(|path| std::fs::read_to_string(&path).map_err(|e| (path, e))).transpose() {
        Ok(text) => text,
        Err((path, err)) => {
            eprintln!("--config: cannot read {}: {err}", path.display());
            return ExitCode::from(2);
        }
    };
    let settings = match PackageSettings::from_sources(text.as_deref(), |name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    match crate::manifest::write_package(out, &settings.app_id, &settings.public_host, env!("CARGO_PKG_VERSION")) {
        Ok(()) => {
            let _ = writeln!(std::io::stdout(), "wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn print_case(out: &mut impl Write, case: &Case) -> std::io::Result<()> {
    let decided = case.approver.as_ref().map(|a| format!(" decided by {} ({})", a.name, a.oid)).unwrap_or_default();
    writeln!(
        out,
        "{}  {}  {:<9}  {}  asked by {} ({}){decided}",
        cards::timestamp(case.created_at),
        case.id,
        case.state.as_str(),
        case.kind.describe(),
        case.requester.name,
        case.requester.oid
    )?;
    for target in &case.targets {
        let chat = target.thread_id.as_deref().map(|t| format!(" in {t}")).unwrap_or_default();
        let graph = target.graph_status.map(|s| format!(" HTTP {s}")).unwrap_or_default();
        let detail = target.detail.as_deref().map(|d| format!(" {d}")).unwrap_or_default();
        writeln!(out, "    {}{chat}: {}{graph}{detail}", target.user_ref, target.status.as_str())?;
        if let Some(receipt) = cards::graph_receipt_line(target) {
            writeln!(out, "      {receipt}")?;
        }
    }
    Ok(())
}

async fn history(config: &Config, limit: u32, case_id: Option<&str>) -> ExitCode {
    let store = match Store::connect(config.database_url.expose_secret()).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!("cannot open the database: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let result: Result<ExitCode, Box<dyn std::error::Error>> = async {
        match case_id {
            Some(id) => {
                let Some(case) = store.case(&id.to_ascii_uppercase()).await? else {
                    eprintln!("no case {id}");
                    return Ok(ExitCode::from(1));
                };
                print_case(&mut out, &case)?;
                for event in store.events(&case.id).await? {
                    let who = event.actor_name.unwrap_or_else(|| "chatwarden".into());
                    writeln!(out, "  {}  {who}  {}  {}", cards::timestamp(event.at), event.kind, event.detail.unwrap_or_default())?;
                }
            }
            None => {
                for case in store.history(limit).await? {
                    print_case(&mut out, &case)?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    store.close().await;
    result.unwrap_or_else(|err| {
        eprintln!("cannot read the history: {err}");
        ExitCode::FAILURE
    })
}

/// What `chatwarden dev` prints at start: what is really on (`{port}` is filled in once bound).
pub(crate) fn dev_banner(config: &Config) -> String {
    match &config.app {
        None => "chatwarden dev: LOCAL MODE, listening on http://127.0.0.1:{port}/api/messages (loopback only, inbound auth OFF, \
                 local stand-ins for the token service, Graph and the audit source).\n\
                 Connect Microsoft's local Teams client:\n  \
                 npx @microsoft/m365agentsplayground -e http://127.0.0.1:{port}/api/messages -c msteams"
            .to_owned(),
        Some(app) => format!(
            "chatwarden dev: listening on http://127.0.0.1:{{port}}/api/messages (loopback only) with app registration {}: \
             inbound auth ON, Microsoft's cloud services (no stand-ins), {} admin(s), security channel {}, second approver {}.",
            app.app_id,
            config.security.admins.len(),
            config.security.channel_id.as_deref().unwrap_or("(unset)"),
            if config.require_second_approver { "required" } else { "NOT required" },
        ),
    }
}

async fn serve(config: Config) -> ExitCode {
    let banner = (config.mode == Mode::Dev).then(|| dev_banner(&config));
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "could not start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(banner) = banner {
        let port = app.port();
        let _ = writeln!(std::io::stdout(), "{}", banner.replace("{port}", &port.to_string()));
    } else {
        tracing::info!(port = app.port(), "chatwarden listening");
    }
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_banner_says_what_is_really_on() {
        let local = Config::from_sources(Mode::Dev, None, |_| None).unwrap();
        let text = dev_banner(&local);
        assert!(text.contains("inbound auth OFF") && text.contains("stand-ins"), "{text}");
        let env = [
            ("MICROSOFT_APP_ID", "9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3"),
            ("MICROSOFT_APP_PASSWORD", "s3cret-password-value"),
            ("MICROSOFT_APP_TENANT_ID", "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e"),
            ("CHATWARDEN_SECURITY_TEAM_ID", "19:team@thread.tacv2"),
            ("CHATWARDEN_SECURITY_CHANNEL_ID", "19:chan@thread.tacv2"),
            ("CHATWARDEN_ADMINS", "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d"),
        ];
        let registered =
            Config::from_sources(Mode::Dev, None, |k| env.iter().find(|(name, _)| *name == k).map(|(_, v)| (*v).to_owned())).unwrap();
        let text = dev_banner(&registered);
        assert!(text.contains("inbound auth ON") && text.contains("1 admin(s)") && text.contains("second approver required"), "{text}");
        assert!(!text.contains("OFF") && !text.contains("s3cret"), "{text}");
    }
}
