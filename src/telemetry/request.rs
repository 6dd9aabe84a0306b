//! The request a log line was written in: kept in a task-local while the request is served, and
//! written into each line logged inside it (the JSON line's `span` object; the end of a text line).
//!
//! A tracing span per request did this before, and cost every request whether or not anything
//! inside it logged: the span registered, its four fields formatted to JSON text, entered and left
//! on every poll of the handler and of the response body, then torn down (BENCHMARKS.md has the
//! measurements). The context here is four plain values moved into the request's task; it is
//! turned into text only for a line that is written. Like a span, it does not follow work handed
//! to `tokio::spawn`.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use actix_web::http::{Method, Uri};
use serde::Serialize;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// What every log line written while serving one request carries: method, path (never the query
/// string, where a client could put a code or a token), the socket peer (not `X-Forwarded-For`,
/// which any client can write) and the request id (echoed as `x-request-id`).
#[derive(Debug, Clone)]
pub struct RequestContext {
    method: Method,
    uri: Uri,
    peer: Option<SocketAddr>,
    id: uuid::Uuid,
}

impl RequestContext {
    /// The context of a request that arrived now, with a fresh v4 request id.
    pub fn new(method: Method, uri: Uri, peer: Option<SocketAddr>) -> Self {
        Self { method, uri, peer, id: uuid::Uuid::new_v4() }
    }

    /// The request id.
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// Runs `work` (synchronous) as part of this request.
    pub fn sync_scope<R>(self, work: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, work)
    }

    /// Runs `work` as part of this request: lines it logs carry the request.
    pub(crate) async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// The request as `name=value` pairs, for the end of a text line.
    fn as_text(&self) -> String {
        let peer = self.peer.map(|peer| format!(" client.address={peer}")).unwrap_or_default();
        format!("http.method={} url.path={}{peer} request_id={}", self.method, self.uri.path(), self.id)
    }

    /// The `span` object of a line, with the names the request span used.
    fn as_json(&self) -> serde_json::Result<String> {
        #[derive(Serialize)]
        struct Span<'a> {
            name: &'static str,
            #[serde(rename = "http.method")]
            method: &'a str,
            #[serde(rename = "url.path")]
            path: &'a str,
            #[serde(rename = "client.address", skip_serializing_if = "Option::is_none")]
            peer: Option<String>,
            request_id: String,
        }
        serde_json::to_string(&Span {
            name: "HTTP request",
            method: self.method.as_str(),
            path: self.uri.path(),
            peer: self.peer.map(|peer| peer.to_string()),
            request_id: self.id.to_string(),
        })
    }
}

/// An event format that writes what `inner` writes with the current request, if any, added: as
/// the `span` member of a JSON line, or at the end of a text line.
pub(crate) struct WithRequest<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequest<F> {
    /// Adds the request to `inner`'s JSON lines.
    pub(crate) fn json(inner: F) -> Self {
        Self { inner, json: true }
    }

    /// Adds the request to the end of `inner`'s text lines.
    pub(crate) fn text(inner: F) -> Self {
        Self { inner, json: false }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let in_request = CURRENT.try_with(|request| {
            let mut line = String::with_capacity(256);
            self.inner.format_event(ctx, Writer::new(&mut line), event)?;
            if self.json {
                let span = request.as_json().map_err(|_| fmt::Error)?;
                write_with_member(&mut writer, &line, "span", &span)
            } else {
                write_with_suffix(&mut writer, &line, &request.as_text())
            }
        });
        match in_request {
            Ok(written) => written,
            Err(_outside_any_request) => self.inner.format_event(ctx, writer, event),
        }
    }
}

/// Writes `line` (a JSON object, then a line break) with `"name": value` added as its last
/// member; a line that is not an object is written as it is.
fn write_with_member(out: &mut impl fmt::Write, line: &str, name: &str, value: &str) -> fmt::Result {
    let object = line.trim_end();
    let Some(members) = object.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')) else {
        return out.write_str(line);
    };
    let separator = if members.trim().is_empty() { "" } else { "," };
    write!(out, "{{{members}{separator}\"{name}\":{value}}}{}", &line[object.len()..])
}

/// Writes `line` with ` suffix` added before its line break.
fn write_with_suffix(out: &mut impl fmt::Write, line: &str, suffix: &str) -> fmt::Result {
    let text = line.trim_end_matches(['\r', '\n']);
    write!(out, "{text} {suffix}{}", &line[text.len()..])
}

#[cfg(test)]
mod tests {
    use super::{write_with_member, write_with_suffix};

    fn with_member(line: &str) -> String {
        let mut out = String::new();
        write_with_member(&mut out, line, "span", r#"{"a":1}"#).unwrap();
        out
    }

    #[test]
    fn the_request_is_the_last_member_of_the_line_and_the_line_break_is_kept() {
        assert_eq!(
            with_member("{\"level\":\"INFO\",\"message\":\"x }\"}\n"),
            "{\"level\":\"INFO\",\"message\":\"x }\",\"span\":{\"a\":1}}\n"
        );
        assert_eq!(with_member("{}\n"), "{\"span\":{\"a\":1}}\n");
        assert_eq!(with_member("not an object\n"), "not an object\n");
    }

    #[test]
    fn a_text_line_ends_with_the_request_before_its_line_break() {
        let mut out = String::new();
        write_with_suffix(&mut out, "INFO chatwarden: working\n", "url.path=/work").unwrap();
        assert_eq!(out, "INFO chatwarden: working url.path=/work\n");
    }
}
