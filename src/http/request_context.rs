//! The request context of each HTTP request: what every log line written while serving it
//! carries ([`RequestContext`]: method, path without the query string, socket peer, request id),
//! the `x-request-id` header that gives the id to the caller, and the `debug` line with the outcome
//! (status, error text) when the response is ready.
//!
//! The context is set once when the request arrives and nothing is added to it later. It replaced
//! a tracing span per request (BENCHMARKS.md, "the request span"), which the service paid for on
//! every request at `RUST_LOG=info` even when nothing inside it logged.

use std::future::Future;

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};

use crate::telemetry::RequestContext;

/// Serves `request` with `service` inside its request context (used with `App::wrap_fn`).
pub(crate) fn in_request_context<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    let context = RequestContext::new(request.method().clone(), request.uri().clone(), request.peer_addr());
    let id = context.id();
    let call = context.clone().sync_scope(|| service.call(request));
    context.scope(async move {
        let outcome = call.await;
        log_outcome(&outcome);
        let mut response = outcome?;
        let mut text = uuid::Uuid::encode_buffer();
        if let Ok(value) = HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)) {
            response.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
        }
        Ok(response)
    })
}

/// The `request finished` line (`debug`): status and, for an error, its plain-words text.
fn log_outcome<B>(outcome: &Result<ServiceResponse<B>, Error>) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let (status, error) = match outcome {
        Ok(response) => (response.status(), response.response().error()),
        Err(error) => (error.as_response_error().status_code(), Some(error)),
    };
    tracing::debug!(http.status_code = status.as_u16(), error.message = error.map(tracing::field::display), "request finished");
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use actix_web::{App, HttpResponse, test, web};

    use super::in_request_context;

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

    /// Serves one request under `serve`'s JSON log at `level`; returns the status, the
    /// `x-request-id` header and the log lines.
    async fn serve(uri: &str, level: tracing::Level) -> (u16, String, Vec<serde_json::Value>) {
        let capture = Capture::default();
        let writer = capture.clone();
        let filter = tracing_subscriber::EnvFilter::new(level.as_str().to_ascii_lowercase());
        let subscriber = crate::telemetry::json_subscriber(filter, move || writer.clone());
        let (status, id) = serve_under(subscriber, uri).await;
        (status, id, capture.lines())
    }

    /// Serves one request under `subscriber`; returns the status and the `x-request-id` header.
    async fn serve_under(subscriber: impl tracing::Subscriber + Send + Sync + 'static, uri: &str) -> (u16, String) {
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap_fn(in_request_context)
                .route(
                    "/work",
                    web::post().to(|| async {
                        tracing::info!("working");
                        // Work handed to another task is not part of the request.
                        tokio::spawn(async { tracing::info!("spawned") }).await.ok();
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
        let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        drop(response);
        tracing::info!("after the request");
        (status, id)
    }

    #[actix_web::test]
    async fn log_lines_carry_the_request_but_never_its_query_string() {
        let (status, id, lines) = serve("/work?code=auth-code-never-logged", tracing::Level::DEBUG).await;
        assert_eq!(status, 200);
        let text = lines.iter().map(|l| l.to_string()).collect::<String>();
        assert!(!text.contains("auth-code-never-logged"), "{text}");
        let event = lines.iter().find(|l| l["message"] == "working").expect("the handler's log line");
        let span = &event["span"];
        assert_eq!(span["http.method"], "POST");
        assert_eq!(span["url.path"], "/work");
        assert_eq!(span["client.address"], "192.0.2.7:4242");
        assert_eq!(span["name"], "HTTP request");
        assert_eq!(span["request_id"].as_str().map(str::len), Some(36), "{span}");
        assert_eq!(span["request_id"], id.as_str(), "the id the caller was given");
        assert_eq!(event["level"], "INFO");
        assert!(event["target"].as_str().is_some_and(|t| t.starts_with("chatwarden")), "{event}");
        // Neither work handed to another task nor a line after the request carries it.
        for message in ["spawned", "after the request"] {
            let line = lines.iter().find(|l| l["message"] == message).expect(message);
            assert!(line.get("span").is_none(), "{line}");
        }
        let (_, other, _) = serve("/work", tracing::Level::INFO).await;
        assert_ne!(other, id);
    }

    #[actix_web::test]
    async fn local_mode_text_lines_end_with_the_request() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = crate::telemetry::text_subscriber(tracing_subscriber::EnvFilter::new("info"), move || writer.clone());
        let (status, id) = serve_under(subscriber, "/work?code=auth-code-never-logged").await;
        assert_eq!(status, 200);
        let bytes = capture.0.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("auth-code-never-logged"), "{text}");
        let line = |message: &str| text.lines().find(|l| l.contains(message)).unwrap_or_else(|| panic!("{message}: {text}")).to_owned();
        assert!(
            line("working").ends_with(&format!("http.method=POST url.path=/work client.address=192.0.2.7:4242 request_id={id}")),
            "{text}"
        );
        assert!(!line("after the request").contains("request_id"), "{text}");
        assert!(!line("spawned").contains("request_id"), "{text}");
    }

    #[actix_web::test]
    async fn the_outcome_is_a_debug_line_with_the_status_and_the_error_text() {
        let (status, _, lines) = serve("/fail", tracing::Level::DEBUG).await;
        assert_eq!(status, 403);
        let finished = lines.iter().find(|l| l["message"] == "request finished").expect("the outcome line");
        assert_eq!(finished["http.status_code"], 403);
        assert_eq!(finished["error.message"], "not on the allowlist");
        assert_eq!(finished["span"]["url.path"], "/fail");
        let (_, _, lines) = serve("/work", tracing::Level::DEBUG).await;
        let finished = lines.iter().find(|l| l["message"] == "request finished").expect("the outcome line");
        assert_eq!(finished["http.status_code"], 200);
        assert!(finished.get("error.message").is_none(), "{finished}");
        // At the default level there is no outcome line, and the handler's line still has its span.
        let (_, _, lines) = serve("/fail", tracing::Level::INFO).await;
        assert!(lines.iter().all(|l| l["message"] != "request finished"), "{lines:?}");
        let (_, _, lines) = serve("/work", tracing::Level::INFO).await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["span"]["url.path"], "/work");
    }
}
