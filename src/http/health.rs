//! `/healthz` (process up), `/readyz` (database and signing keys) and `/metrics` (Prometheus).

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::botframework::inbound::{InboundAuth, InboundGate};
use crate::metrics::Metrics;
use crate::store::Store;

/// The process is up.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers and signing keys are loaded (or auth is off).
pub(super) async fn readyz(gate: web::Data<InboundGate>, store: web::Data<Store>) -> HttpResponse {
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

/// Counters and case states in the Prometheus text format.
pub(super) async fn metrics_text(metrics: web::Data<Metrics>, store: web::Data<Store>) -> HttpResponse {
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
