//! Logging: JSON lines (production) or compact text (local mode), filtered by `RUST_LOG`.
//!
//! Never log a token, a secret, an `Authorization` header or a request body; see the never-log
//! list in ARCHITECTURE.md.

mod request;

pub use request::RequestContext;
use request::WithRequest;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Installs the global subscriber (call once, from `main`).
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => json_subscriber(filter, std::io::stderr).try_init(),
        LogFormat::Text => text_subscriber(filter, std::io::stderr).try_init(),
    };
    if let Err(err) = result {
        eprintln!("logging already initialised: {err}");
    }
}

/// The JSON log as `serve` writes it: one flat object per event, with the request it was written
/// in (if any) as its `span` ([`RequestContext`]).
pub(crate) fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .map_event_format(WithRequest::json)
        .finish()
}

/// The text log of local mode: compact lines, each ending with the request it was written in (if
/// any).
pub(crate) fn text_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).compact().map_event_format(WithRequest::text).finish()
}
