//! chatwarden binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    chatwarden::cli::run(chatwarden::cli::Cli::parse()).await
}
