//! The span each HTTP request runs in: what every log line written while serving it carries.
//!
//! It names the method, the path (never the query string, where a client could put a code or a
//! token), the socket peer (not `X-Forwarded-For`, which any client can write), the request id
//! (echoed as `x-request-id`), the activity type once known, and at the end the status and, for
//! errors, the error's message. Seven fields, all cheap: the stock span of `tracing-actix-web`
//! formats fourteen, reads the forwarding headers and builds two strings per request.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage as _};
use tracing::Span;
use tracing::field::Empty;
use tracing_actix_web::{RequestId, RootSpanBuilder};

/// Builds and completes the request span (used as `TracingLogger::<RequestSpan>`).
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request.extensions().get::<RequestId>().copied();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            url.path = request.path(),
            client.address = request.peer_addr().map(tracing::field::display),
            request_id = request_id.map(tracing::field::display),
            "activity.type" = Empty,
            http.status_code = Empty,
            error.message = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, error) = match outcome {
            Ok(response) => (response.status(), response.response().error()),
            Err(error) => (error.as_response_error().status_code(), Some(error)),
        };
        span.record("http.status_code", status.as_u16());
        if let Some(error) = error {
            span.record("error.message", tracing::field::display(error));
        }
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

    /// Serves one request under a subscriber that writes each log line, and each span as it
    /// closes, as JSON; returns the lines.
    async fn serve(uri: &str) -> (u16, Vec<serde_json::Value>) {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(TracingLogger::<RequestSpan>::new())
                .route(
                    "/work",
                    web::post().to(|| async {
                        tracing::Span::current().record("activity.type", "message");
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
        // The span lives as long as the response body (it covers the streaming too).
        drop(response);
        (status, capture.lines())
    }

    #[actix_web::test]
    async fn log_lines_carry_the_request_but_never_its_query_string() {
        let (status, lines) = serve("/work?code=auth-code-never-logged").await;
        assert_eq!(status, 200);
        let text = lines.iter().map(|l| l.to_string()).collect::<String>();
        assert!(!text.contains("auth-code-never-logged"), "{text}");
        let event = lines.iter().find(|l| l["fields"]["message"] == "working").expect("the handler's log line");
        let span = &event["span"];
        assert_eq!(span["http.method"], "POST");
        assert_eq!(span["url.path"], "/work");
        assert_eq!(span["client.address"], "192.0.2.7:4242");
        assert_eq!(span["activity.type"], "message");
        assert_eq!(span["request_id"].as_str().map(str::len), Some(36), "{span}");
    }

    #[actix_web::test]
    async fn the_span_ends_with_the_status_and_the_error_message() {
        let (status, lines) = serve("/fail").await;
        assert_eq!(status, 403);
        let closed = lines.iter().find(|l| l["fields"]["message"] == "close").expect("the span's close line");
        assert_eq!(closed["span"]["http.status_code"], 403);
        assert_eq!(closed["span"]["error.message"], "not on the allowlist");
        let (_, lines) = serve("/work").await;
        let closed = lines.iter().find(|l| l["fields"]["message"] == "close").expect("the span's close line");
        assert_eq!(closed["span"]["http.status_code"], 200);
        assert!(closed["span"].get("error.message").is_none(), "{closed}");
    }
}
