//! `chatwarden export`: the history as JSON Lines or CSV, written page by page (memory stays
//! bounded at any size), and the offline check of a JSONL export against its own hashes.
//!
//! Each JSONL line is one event: `seq`, `time` (RFC 3339, UTC, for people), `at` (Unix ms),
//! `case_id`, `actor_oid`, `actor_name`, `kind`, `detail`, `data` (JSON text), `prev_hash`,
//! `hash`. Everything but `time` is what was hashed (see `chain.rs`). CSV has the same columns;
//! a cell that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab, CR first) is
//! prefixed with `'`, so CSV is for reading and JSONL is the form that verifies.

use std::io::{self, BufRead, Write};

use serde::Serialize;

use super::{ChainBreak, HistoryEvent};

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line; verifiable offline.
    Jsonl,
    /// Comma-separated values with a header row, for spreadsheets.
    Csv,
}

/// The columns of both formats, in order.
const COLUMNS: [&str; 11] = ["seq", "time", "at", "case_id", "actor_oid", "actor_name", "kind", "detail", "data", "prev_hash", "hash"];

/// One exported event: the stored event plus a readable time.
#[derive(Serialize)]
pub(crate) struct ExportLine<'a> {
    seq: i64,
    time: String,
    at: i64,
    case_id: Option<&'a str>,
    actor_oid: Option<&'a str>,
    actor_name: Option<&'a str>,
    kind: &'a str,
    detail: Option<&'a str>,
    data: Option<&'a str>,
    prev_hash: &'a str,
    hash: &'a str,
}

impl<'a> ExportLine<'a> {
    /// The export form of `event`.
    pub(crate) fn of(event: &'a HistoryEvent) -> Self {
        Self {
            seq: event.seq,
            time: rfc3339(event.at),
            at: event.at,
            case_id: event.case_id.as_deref(),
            actor_oid: event.actor_oid.as_deref(),
            actor_name: event.actor_name.as_deref(),
            kind: &event.kind,
            detail: event.detail.as_deref(),
            data: event.data.as_deref(),
            prev_hash: &event.prev_hash,
            hash: &event.hash,
        }
    }
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A spreadsheet-safe cell: text that would be read as a formula gets a leading `'`.
fn csv_cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_owned() }
}

/// Writes events in one format, one at a time.
pub(crate) struct ExportWriter<W: Write> {
    inner: Inner<W>,
    written: u64,
}

enum Inner<W: Write> {
    Jsonl(W),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> ExportWriter<W> {
    /// A writer of `format` to `out` (CSV starts with its header row).
    pub fn new(format: ExportFormat, out: W) -> io::Result<Self> {
        let inner = match format {
            ExportFormat::Jsonl => Inner::Jsonl(out),
            ExportFormat::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(COLUMNS).map_err(io::Error::other)?;
                Inner::Csv(Box::new(csv))
            }
        };
        Ok(Self { inner, written: 0 })
    }

    /// Writes one event.
    pub fn write(&mut self, event: &HistoryEvent) -> io::Result<()> {
        match &mut self.inner {
            Inner::Jsonl(out) => {
                serde_json::to_writer(&mut *out, &ExportLine::of(event))?;
                out.write_all(b"\n")?;
            }
            Inner::Csv(csv) => {
                let text = |value: &Option<String>| value.as_deref().map(csv_cell).unwrap_or_default();
                csv.write_record([
                    event.seq.to_string(),
                    rfc3339(event.at),
                    event.at.to_string(),
                    text(&event.case_id),
                    text(&event.actor_oid),
                    text(&event.actor_name),
                    csv_cell(&event.kind),
                    text(&event.detail),
                    text(&event.data),
                    event.prev_hash.clone(),
                    event.hash.clone(),
                ])
                .map_err(io::Error::other)?;
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Flushes what is buffered; returns how many events were written.
    pub fn finish(self) -> io::Result<u64> {
        match self.inner {
            Inner::Jsonl(mut out) => out.flush()?,
            Inner::Csv(mut csv) => csv.flush()?,
        }
        Ok(self.written)
    }
}

/// A `--since` / `--until` bound: a date (`2026-11-01`, midnight UTC), a time
/// (`2026-11-01T09:30:00Z`, RFC 3339) or an age before now (`90m`, `24h`, `30d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeBound(i64);

impl TimeBound {
    /// Reads `text` relative to `now` (Unix ms).
    pub fn parse(text: &str, now: i64) -> Result<Self, String> {
        let text = text.trim();
        let age =
            |unit_ms: i64, digits: &str| digits.parse::<i64>().ok().filter(|n| *n >= 0).map(|n| Self(now - n.saturating_mul(unit_ms)));
        let relative = match text.char_indices().last() {
            Some((i, 'm')) => age(60_000, &text[..i]),
            Some((i, 'h')) => age(3_600_000, &text[..i]),
            Some((i, 'd')) => age(86_400_000, &text[..i]),
            _ => None,
        };
        if let Some(bound) = relative {
            return Ok(bound);
        }
        if let Ok(at) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
            return Ok(Self(i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)));
        }
        let date_format = time::macros::format_description!("[year]-[month]-[day]");
        if let Ok(date) = time::Date::parse(text, &date_format) {
            return Ok(Self(date.midnight().assume_utc().unix_timestamp() * 1000));
        }
        Err(format!("`{text}` is not a date (2026-11-01), an RFC 3339 time (2026-11-01T09:30:00Z) or an age (90m, 24h, 30d)"))
    }

    /// The bound as Unix ms.
    pub(crate) fn unix_ms(self) -> i64 {
        self.0
    }
}

/// What the offline check of a JSONL export found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonlReport {
    /// Events checked.
    pub events: u64,
    /// Places where the export skips part of the chain (a `--case` or time-bounded export of a
    /// busy history has them); linkage is checked within each stretch.
    pub gaps: u64,
    /// The last event's place and hash, to compare with the chain's head.
    pub last: Option<(i64, String)>,
}

/// Why a JSONL export does not verify.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JsonlError {
    /// A line is not an exported event.
    #[error("line {line} is not an exported event: {reason}")]
    Unreadable {
        /// 1-based line number.
        line: u64,
        /// What was wrong.
        reason: String,
    },
    /// The events do not verify.
    #[error("line {line}: {source}")]
    Broken {
        /// 1-based line number.
        line: u64,
        /// Which check failed.
        source: ChainBreak,
    },
    /// The file could not be read.
    #[error("cannot read the export: {0}")]
    Io(#[from] io::Error),
}

/// Checks a JSONL export offline: each event's hash against its content, each event's
/// `prev_hash` against the one before it where places follow each other, and the order.
pub(crate) fn verify_jsonl(reader: impl BufRead) -> Result<JsonlReport, JsonlError> {
    let mut report = JsonlReport { events: 0, gaps: 0, last: None };
    for (index, line) in reader.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: HistoryEvent =
            serde_json::from_str(&line).map_err(|err| JsonlError::Unreadable { line: line_no, reason: err.to_string() })?;
        if let Some((seq, hash)) = &report.last {
            if event.seq <= *seq {
                return Err(JsonlError::Broken { line: line_no, source: ChainBreak::Missing { expected: seq + 1, found: event.seq } });
            }
            if event.seq == seq + 1 && event.prev_hash != *hash {
                return Err(JsonlError::Broken { line: line_no, source: ChainBreak::Unlinked { seq: event.seq } });
            }
            if event.seq > seq + 1 {
                report.gaps += 1;
            }
        }
        if event.expected_hash() != event.hash {
            return Err(JsonlError::Broken { line: line_no, source: ChainBreak::Altered { seq: event.seq } });
        }
        report.events += 1;
        report.last = Some((event.seq, event.hash));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::chain::sample_chain;

    fn events(n: i64) -> Vec<HistoryEvent> {
        let template = HistoryEvent {
            seq: 0,
            at: 1_780_000_000_000,
            case_id: Some("K7QX2M".into()),
            actor_oid: Some("0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d".into()),
            actor_name: Some("=HYPERLINK(\"http://evil\")".into()),
            kind: "approved".into(),
            detail: Some("line one,\n\"two\"".into()),
            data: Some("{\"approver_upn\":\"dana@contoso.com\"}".into()),
            prev_hash: String::new(),
            hash: String::new(),
        };
        sample_chain(&template, n)
    }

    fn export(format: ExportFormat, events: &[HistoryEvent]) -> Vec<u8> {
        let mut writer = ExportWriter::new(format, Vec::new()).unwrap();
        for event in events {
            writer.write(event).unwrap();
        }
        match writer.inner {
            Inner::Jsonl(out) => out,
            Inner::Csv(csv) => csv.into_inner().map_err(|_| ()).unwrap(),
        }
    }

    #[test]
    fn a_jsonl_export_verifies_offline_and_a_changed_line_is_named() {
        let all = events(4);
        let jsonl = export(ExportFormat::Jsonl, &all);
        let report = verify_jsonl(jsonl.as_slice()).unwrap();
        assert_eq!((report.events, report.gaps), (4, 0));
        assert_eq!(report.last, Some((4, all[3].hash.clone())));

        let text = String::from_utf8(jsonl).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["time"], "2026-05-28T20:26:41Z", "{first}");
        let tampered = text.replacen("dana@contoso.com", "mallory@contoso.com", 1);
        let err = verify_jsonl(tampered.as_bytes()).unwrap_err();
        assert!(matches!(err, JsonlError::Broken { line: 1, source: ChainBreak::Altered { seq: 1 } }), "{err}");

        let mut lines: Vec<&str> = text.lines().collect();
        lines.swap(1, 2);
        let err = verify_jsonl(lines.join("\n").as_bytes()).unwrap_err();
        assert!(matches!(err, JsonlError::Broken { line: 3, .. }), "{err}");

        let skipping = [all[0].clone(), all[3].clone()];
        assert_eq!(verify_jsonl(export(ExportFormat::Jsonl, &skipping).as_slice()).unwrap().gaps, 1);
        assert!(matches!(verify_jsonl(&b"{\"seq\":1}\n"[..]), Err(JsonlError::Unreadable { line: 1, .. })));
    }

    #[test]
    fn csv_has_a_header_quotes_properly_and_defuses_formulas() {
        let csv = String::from_utf8(export(ExportFormat::Csv, &events(1))).unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), COLUMNS);
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[5], "'=HYPERLINK(\"http://evil\")");
        assert_eq!(&row[7], "line one,\n\"two\"");
        assert_eq!(&row[0], "1");
    }

    #[test]
    fn bounds_read_dates_times_and_ages() {
        let now = 1_780_000_000_000;
        assert_eq!(TimeBound::parse("2026-11-01", now).unwrap().unix_ms(), 1_793_491_200_000);
        assert_eq!(TimeBound::parse("2026-11-01T09:30:00Z", now).unwrap().unix_ms(), 1_793_525_400_000);
        assert_eq!(TimeBound::parse("90m", now).unwrap().unix_ms(), now - 5_400_000);
        assert_eq!(TimeBound::parse("24h", now).unwrap().unix_ms(), now - 86_400_000);
        assert_eq!(TimeBound::parse("30d", now).unwrap().unix_ms(), now - 30 * 86_400_000);
        for bad in ["yesterday", "-5d", "2026-13-01", "d", ""] {
            assert!(TimeBound::parse(bad, now).is_err(), "{bad}");
        }
    }
}
