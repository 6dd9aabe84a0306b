//! Command-line interface: `serve`, `dev`, `check-config`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Mode};
use crate::startup::Application;
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
}

/// The default configuration file, used when present.
pub const DEFAULT_CONFIG_FILE: &str = "chatwarden.toml";

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

async fn serve(config: Config) -> ExitCode {
    let dev = config.mode == Mode::Dev;
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "could not start");
            return ExitCode::FAILURE;
        }
    };
    if dev {
        let port = app.port();
        let _ = writeln!(
            std::io::stdout(),
            "chatwarden dev: LOCAL MODE, listening on http://127.0.0.1:{port}/api/messages (loopback only, inbound auth OFF).\n\
             Connect Microsoft's local Teams client:\n  \
             npx @microsoft/m365agentsplayground -e http://127.0.0.1:{port}/api/messages -c msteams"
        );
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
