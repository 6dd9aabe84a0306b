//! The auditor's commands: `history --verify` (the chain in the database), `export` (the
//! history streamed as JSONL or CSV) and `verify-export` (a JSONL export checked offline).

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use secrecy::ExposeSecret as _;

use crate::cases::now_ms;
use crate::config::Config;
use crate::history::{ExportFormat, ExportWriter, TimeBound, verify_jsonl};
use crate::store::{EventFilter, Store};

/// Events one page of an export reads.
const EXPORT_PAGE: i64 = 1_000;

async fn open(config: &Config) -> Result<Store, ExitCode> {
    Store::connect(config.database_url.expose_secret()).await.map_err(|err| {
        eprintln!("cannot open the database: {err}");
        ExitCode::FAILURE
    })
}

/// `chatwarden history --verify`: 0 when the chain verifies, 1 naming the first break.
pub(super) async fn verify(config: &Config) -> ExitCode {
    let store = match open(config).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let result = store.verify_history(config.history.secret.as_ref()).await;
    store.close().await;
    match result {
        Ok(verified) => {
            let start = match &verified.checkpoint {
                None => "from its first event".to_owned(),
                Some(c) => format!("from the signed checkpoint after event {} ({} events pruned)", c.seq, c.pruned),
            };
            println!("history verified: {} events {start} to event {}, every hash and link matches", verified.events, verified.head_seq);
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("history does NOT verify: {err}");
            ExitCode::from(1)
        }
    }
}

/// `chatwarden export`: every event the filter takes, page by page.
pub(super) async fn export(
    config: &Config,
    since: Option<&str>,
    until: Option<&str>,
    format: ExportFormat,
    case_id: Option<&str>,
    out: Option<&Path>,
) -> ExitCode {
    let now = now_ms();
    let bound = |text: Option<&str>, flag: &str| match text.map(|t| TimeBound::parse(t, now)).transpose() {
        Ok(bound) => Ok(bound.map(TimeBound::unix_ms)),
        Err(err) => {
            eprintln!("{flag}: {err}");
            Err(ExitCode::from(2))
        }
    };
    let filter = match (bound(since, "--since"), bound(until, "--until")) {
        (Ok(since), Ok(until)) => EventFilter { since, until, case_id: case_id.map(str::to_ascii_uppercase) },
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let sink: Box<dyn Write> = match out {
        None => Box::new(std::io::stdout().lock()),
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Box::new(file),
            Err(err) => {
                eprintln!("--out: cannot create {}: {err}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let store = match open(config).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let result: Result<u64, Box<dyn std::error::Error>> = async {
        let mut writer = ExportWriter::new(format, BufWriter::new(sink))?;
        let mut after = i64::MIN;
        loop {
            let page = store.history_page(&filter, after, EXPORT_PAGE).await?;
            for event in &page {
                writer.write(event)?;
            }
            match page.last() {
                Some(last) => after = last.seq,
                None => break,
            }
        }
        Ok(writer.finish()?)
    }
    .await;
    store.close().await;
    match result {
        Ok(events) => {
            eprintln!("exported {events} events");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cannot export the history: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `chatwarden verify-export FILE`: 0 when every event and link in the file verifies.
pub(super) fn verify_export(file: &Path) -> ExitCode {
    let reader = match std::fs::File::open(file) {
        Ok(f) => BufReader::new(f),
        Err(err) => {
            eprintln!("cannot open {}: {err}", file.display());
            return ExitCode::from(2);
        }
    };
    match verify_jsonl(reader) {
        Ok(report) => {
            let last = report.last.map(|(seq, hash)| format!("; last event {seq}, hash {hash}")).unwrap_or_default();
            let gaps = match report.gaps {
                0 => "one unbroken stretch of the chain".to_owned(),
                n => format!("{} stretches of the chain (links checked within each)", n + 1),
            };
            println!("export verified: {} events, {gaps}{last}", report.events);
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("export does NOT verify: {err}");
            ExitCode::from(1)
        }
    }
}
