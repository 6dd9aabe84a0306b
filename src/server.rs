//! The actix-web application: routes, body limits, error bodies, health and metrics.

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::dev::Service as _;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage as _, HttpResponse, ResponseError as _, web};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use serde_json::value::RawValue;
use tracing_actix_web::{RequestId, TracingLogger};

use crate::alerts::AlertDesk;
use crate::audit::record::AuditRecord;
use crate::audit::signature::{self, SIGNATURE_HEADER};
use crate::bot::{Bot, BotResponse};
use crate::botframework::inbound::{InboundAuth, InboundGate, VerifiedActivity};
use crate::botframework::inbound::{read_body, refuse_declared_oversize};
use crate::http_error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::request_span::RequestSpan;
use crate::standins::StandIns;
use crate::store::Store;

/// Shared state of the running service (cheap to clone: every field is shared).
#[derive(Clone)]
pub struct AppState {
    /// Inbound checks.
    pub gate: web::Data<InboundGate>,
    /// The bot.
    pub bot: web::Data<Bot>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The database.
    pub store: web::Data<Store>,
    /// Signed alert intake.
    pub alerts: web::Data<AlertIntake>,
    /// Local mode's stand-ins for the cloud (`None` outside `chatwarden dev`).
    pub standins: Option<(web::Data<StandIns>, web::Data<Arc<AlertDesk>>)>,
}

/// `/api/alerts`: the HMAC secret and where records go.
pub struct AlertIntake {
    /// The HMAC key; alerts are disabled (404) without it.
    pub secret: Option<SecretString>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Where records go.
    pub desk: Arc<AlertDesk>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Correctly signed pushes per source address.
    pub limiter: RateLimiter,
    /// Pushes with a missing or wrong signature per source address, counted apart so that
    /// unsigned traffic behind a shared ingress address cannot use up the signed sender's budget.
    pub failed_limiter: RateLimiter,
}

/// Registers every route on an actix-web app (the same function in production and tests).
pub fn configure(state: &AppState) -> impl Fn(&mut web::ServiceConfig) + Clone + 'static {
    let gate = state.gate.clone();
    let bot = state.bot.clone();
    let metrics = web::Data::from(Arc::clone(&state.metrics));
    let store = state.store.clone();
    let alerts = state.alerts.clone();
    let standins = state.standins.clone();
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(gate.clone())
            .app_data(bot.clone())
            .app_data(metrics.clone())
            .app_data(store.clone())
            .app_data(alerts.clone())
            .service(
                web::resource("/api/alerts")
                    .route(web::post().to(alerts_endpoint))
                    .default_service(web::to(|| async { not_allowed("POST") })),
            )
            .service(
                web::resource("/api/messages").route(web::post().to(messages)).default_service(web::to(|| async { not_allowed("POST") })),
            )
            .service(web::resource("/healthz").route(web::get().to(healthz)).default_service(web::to(|| async { not_allowed("GET") })))
            .service(web::resource("/readyz").route(web::get().to(readyz)).default_service(web::to(|| async { not_allowed("GET") })))
            .service(
                web::resource("/metrics").route(web::get().to(metrics_text)).default_service(web::to(|| async { not_allowed("GET") })),
            );
        if let Some((state, desk)) = &standins {
            crate::standins::configure(cfg, state.clone(), desk.clone());
        }
        cfg.default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::NotFound) }));
    }
}

fn not_allowed(allowed: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(allowed))
}

/// Builds the complete app: tracing with a request id (echoed as `x-request-id`) and the routes.
pub fn build_app(
    state: AppState,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .wrap_fn(|req, srv| {
            let fut = srv.call(req);
            async move {
                let mut res = fut.await?;
                let id = res.request().extensions().get::<RequestId>().map(|id| id.to_string());
                if let Some(value) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                    res.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
                }
                Ok(res)
            }
        })
        .wrap(TracingLogger::<RequestSpan>::new())
        .configure(configure(&state))
}

async fn messages(activity: VerifiedActivity, bot: web::Data<Bot>) -> HttpResponse {
    match bot.handle(&activity).await {
        BotResponse::Ack => HttpResponse::Ok().finish(),
        BotResponse::Invoke(body) => HttpResponse::Ok().json(body),
        BotResponse::InvokeStatus(status, body) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK)).json(body)
        }
        BotResponse::Failed => ApiError::Internal.error_response(),
    }
}

async fn alerts_endpoint(req: HttpRequest, mut payload: web::Payload, intake: web::Data<AlertIntake>) -> Result<HttpResponse, ApiError> {
    let Some(secret) = &intake.secret else { return Err(ApiError::NotFound) };
    let source = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    refuse_declared_oversize(&req, intake.max_body_bytes)?;
    let body = read_body(&mut payload, intake.max_body_bytes).await?;
    // The signature is checked first (the body is bounded and HMAC is cheap); only then does a
    // request count against a limit, and failures against their own.
    let header = req.headers().get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if let Err(err) = signature::verify(secret.expose_secret().as_bytes(), &body, header) {
        intake.metrics.inc("chatwarden_alert_requests_total", &[("result", "bad_signature")]);
        if let Err(wait) = intake.failed_limiter.check(&source) {
            intake.metrics.inc("chatwarden_rate_limited_total", &[("what", "alert_failures")]);
            return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
        }
        tracing::debug!(reason = %err, "refused an alert push");
        return Err(ApiError::Signature(err));
    }
    if let Err(wait) = intake.limiter.check(&source) {
        intake.metrics.inc("chatwarden_rate_limited_total", &[("what", "alerts")]);
        return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
    }
    let records = pushed_records(&body)?;
    if let Some(tenant) = intake.desk.tenant_id() {
        if let Some(index) = records.iter().position(|r| !r.organization_id.eq_ignore_ascii_case(tenant)) {
            intake.metrics.inc("chatwarden_alert_requests_total", &[("result", "other_tenant")]);
            return Err(ApiError::Unprocessable(format!("record {index} belongs to another tenant; nothing was stored")));
        }
    }
    let report = intake.desk.ingest(records, "push").await.map_err(|err| {
        tracing::error!(error = %err, "could not ingest pushed audit records");
        ApiError::Internal
    })?;
    intake.metrics.inc("chatwarden_alert_requests_total", &[("result", "accepted")]);
    Ok(HttpResponse::Accepted().json(json!({"received": report.received, "stored": report.stored, "cases": report.cases})))
}

/// The records of a push body: one audit record (an object) or an array of them, each read from
/// its own text so the stored evidence is what the sender signed.
fn pushed_records(body: &[u8]) -> Result<Vec<AuditRecord>, ApiError> {
    let malformed = |e: serde_json::Error| ApiError::BadJson(format!("malformed JSON at line {} column {}", e.line(), e.column()));
    let whole: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
    let items: Vec<&RawValue> = match whole.get().as_bytes().first() {
        Some(b'[') => serde_json::from_str(whole.get()).map_err(malformed)?,
        Some(b'{') => vec![whole],
        _ => return Err(ApiError::InvalidRecord("the body must be one audit record or an array of them".into())),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| AuditRecord::from_json(item.get()).map_err(|e| ApiError::InvalidRecord(format!("record {index}: {e}"))))
        .collect()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(gate: web::Data<InboundGate>, store: web::Data<Store>) -> HttpResponse {
    let keys = match gate.auth() {
        InboundAuth::Channel(auth) if auth.keys().is_ready() => "ok",
        InboundAuth::Channel(_) => "unavailable",
        InboundAuth::Disabled => "disabled",
    };
    let database = if store.ping().await { "ok" } else { "unavailable" };
    let ready = keys != "unavailable" && database == "ok";
    let body = json!({"status": if ready { "ready" } else { "not_ready" }, "checks": {"signing_keys": keys, "database": database}});
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

async fn metrics_text(metrics: web::Data<Metrics>, store: web::Data<Store>) -> HttpResponse {
    let mut text = metrics.render();
    match store.case_counts().await {
        Ok(counts) => {
            text.push_str("# TYPE chatwarden_cases gauge\n");
            for (state, count) in counts {
                // States come from the code's own state machine, never from a request.
                if crate::cases::CaseState::parse(&state).is_some() {
                    text.push_str(&format!("chatwarden_cases{{state=\"{state}\"}} {count}\n"));
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "could not count cases for /metrics"),
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"Id": "1", "Operation": "MemberAdded", "OrganizationId": "t"}"#;

    #[test]
    fn a_push_body_is_one_record_or_an_array_of_them() {
        let one = pushed_records(format!(" \n{RECORD}\n").as_bytes()).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].raw_json(), RECORD);
        let many = pushed_records(format!("\t[{RECORD}, {}]  ", RECORD.replace("\"1\"", "\"2\"")).as_bytes()).unwrap();
        assert_eq!(many.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert!(pushed_records(b" [] ").unwrap().is_empty());
        assert!(matches!(pushed_records(b"\"text\""), Err(ApiError::InvalidRecord(_))));
        assert!(matches!(pushed_records(b"[1]"), Err(ApiError::InvalidRecord(m)) if m.starts_with("record 0:")));
        assert!(matches!(pushed_records(b"{\"Id\": "), Err(ApiError::BadJson(_))));
    }
}
