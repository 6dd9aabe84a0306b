//! `POST /api/alerts`: signed Teams audit records pushed by a SIEM; the signature is checked
//! before any limit, and good and failed signatures are limited apart.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use serde_json::value::RawValue;

use super::ApiError;
use crate::alerts::AuditIngest;
use crate::audit::record::AuditRecord;
use crate::audit::signature::{self, SIGNATURE_HEADER};
use crate::botframework::inbound::{read_body, refuse_declared_oversize};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// `/api/alerts`: the HMAC secret and where records go.
pub(crate) struct AlertIntake {
    /// The HMAC key; alerts are disabled (404) without it.
    pub secret: Option<SecretString>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Where records go.
    pub ingest: Arc<AuditIngest>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Correctly signed pushes per source address.
    pub limiter: RateLimiter,
    /// Pushes with a missing or wrong signature per source address, counted apart so that
    /// unsigned traffic behind a shared ingress address cannot use up the signed sender's budget.
    pub failed_limiter: RateLimiter,
}

/// Verifies, limits and ingests one push.
pub(super) async fn alerts_endpoint(
    req: HttpRequest,
    mut payload: web::Payload,
    intake: web::Data<AlertIntake>,
) -> Result<HttpResponse, ApiError> {
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
    if let Some(tenant) = intake.ingest.tenant_id() {
        if let Some(index) = records.iter().position(|r| !r.organization_id.eq_ignore_ascii_case(tenant)) {
            intake.metrics.inc("chatwarden_alert_requests_total", &[("result", "other_tenant")]);
            return Err(ApiError::Unprocessable(format!("record {index} belongs to another tenant; nothing was stored")));
        }
    }
    let report = intake.ingest.ingest(records, "push").await.map_err(|err| {
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
