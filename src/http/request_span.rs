//! The span each HTTP request runs in: what every log line written while serving it carries.
//!
//! It names the method, the path (never the query string, where a client could put a code or a
//! token), the socket peer (not `X-Forwarded-For`, which any client can write) and the request id
//! (echoed as `x-request-id`): four fields, all known when the request arrives. Nothing is added
//! to the span later: the JSON log format keeps a span's fields as one JSON text, and each field
//! recorded afterwards parses and rewrites that text, which cost a third of the service's
//! throughput at `RUST_LOG=info` (BENCHMARKS.md). The outcome (status, error text) is a
//! `debug` line of its own when the response is ready. The stock span of `tracing-actix-web`
//! formats fourteen fields, reads the forwarding headers and records two more at the end.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage as _};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

/// Builds and completes the request span (used as `TracingLogger::<RequestSpan>`).
pub(crate) struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request.extensions().get::<RequestId>().copied();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            url.path = request.path(),
            client.address = request.peer_addr().map(tracing::field::display),
            request_id = request_id.map(tracing::field::display),
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let (status, error) = match outcome {
            Ok(response) => (response.status(), response.response().error()),
            Err(error) => (error.as_response_error().status_code(), Some(error)),
        };
        tracing::debug!(parent: &span, http.status_code = status.as_u16(), error.message = error.map(tracing::field::display), "request finished");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use actix_web::{App, HttpResponse, test, web};
    use tracing_actix_web::TracingLogger;

    use super::RequestSpan;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
        }
    }

    /// Serves one request under a JSON subscriber at `level`, as `serve` logs; returns the status
    /// and the log lines.
    async fn serve(uri: &str, level: tracing::Level) -> (u16, Vec<serde_json::Value>) {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(TracingLogger::<RequestSpan>::new())
                .route(
                    "/work",
                    web::post().to(|| async {
                        tracing::info!("working");
                        HttpResponse::Ok().finish()
                    }),
                )
                .route(
                    "/fail",
                    web::post().to(|| async { Err::<HttpResponse, _>(actix_web::error::ErrorForbidden("not on the allowlist")) }),
                ),
        )
        .await;
        let response =
            test::call_service(&app, test::TestRequest::post().uri(uri).peer_addr(([192, 0, 2, 7], 4242).into()).to_request()).await;
        let status = response.status().as_u16();
        drop(response);
        (status, capture.lines())
    }

    #[actix_web::test]
    async fn log_lines_carry_the_request_but_never_its_query_string() {
        let (status, lines) = serve("/work?code=auth-code-never-logged", tracing::Level::DEBUG).await;
        assert_eq!(status, 200);
        let text = lines.iter().map(|l| l.to_string()).collect::<String>();
        assert!(!text.contains("auth-code-never-logged"), "{text}");
        let event = lines.iter().find(|l| l["message"] == "working").expect("the handler's log line");
        let span = &event["span"];
        assert_eq!(span["http.method"], "POST");
        assert_eq!(span["url.path"], "/work");
        assert_eq!(span["client.address"], "192.0.2.7:4242");
        assert_eq!(span["request_id"].as_str().map(str::len), Some(36), "{span}");
    }

    #[actix_web::test]
    async fn the_outcome_is_a_debug_line_with_the_status_and_the_error_text() {
        let (status, lines) = serve("/fail", tracing::Level::DEBUG).await;
        assert_eq!(status, 403);
        let finished = lines.iter().find(|l| l["message"] == "request finished").expect("the outcome line");
        assert_eq!(finished["http.status_code"], 403);
        assert_eq!(finished["error.message"], "not on the allowlist");
        assert_eq!(finished["span"]["url.path"], "/fail");
        let (_, lines) = serve("/work", tracing::Level::DEBUG).await;
        let finished = lines.iter().find(|l| l["message"] == "request finished").expect("the outcome line");
        assert_eq!(finished["http.status_code"], 200);
        assert!(finished.get("error.message").is_none(), "{finished}");
        // At the default level there is no outcome line, and the handler's line still has its span.
        let (_, lines) = serve("/fail", tracing::Level::INFO).await;
        assert!(lines.iter().all(|l| l["message"] != "request finished"), "{lines:?}");
        let (_, lines) = serve("/work", tracing::Level::INFO).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["span"]["url.path"], "/work");
    }
}
