//! Local mode's built-in stand-ins for Microsoft's cloud, served by the bot itself under
//! `/_local/` on loopback, and only in `chatwarden dev`:
//!
//! - **token service**: every local admin is signed in (`GetToken` and `exchange` always answer a
//!   stand-in token);
//! - **Graph**: `removeAllAccessForUser`, `revokeSignInSessions`, user lookup and `$batch` answer
//!   like Graph and record what they were asked (`GET /_local/graph/calls`);
//! - **audit source**: a few realistic external-chat records seeded into the audit index, and
//!   `POST /_local/audit/replay` to push them through detection as alerts;
//! - **Graph change notifications** (`notifications`): the subscription calls, the chat's
//!   members, the identity platform's keys, and `POST /_local/notifications/member-added`, which
//!   delivers an encrypted member-added notification to `/api/notifications`.
//!
//! Every stand-in answer is logged with `stand_in = ...` so nobody mistakes it for the real thing.

use std::sync::{Arc, Mutex};

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use crate::alerts::AuditIngest;
use crate::audit::record::AuditRecord;
use crate::cases::now_ms;
use crate::store::Store;

mod notifications;

pub(crate) use notifications::{LOCAL_APP_ID, LocalNotifier};

/// Tenant id Microsoft's local Teams client (the Agents Playground) uses.
pub(crate) const PLAYGROUND_TENANT: &str = "00000000-0000-0000-0000-0000000000001";
/// The playground's default user.
pub(crate) const PLAYGROUND_USER_UPN: &str = "alexw@example.com";
/// The playground's default user's object id.
pub(crate) const PLAYGROUND_USER_OID: &str = "00000000-0000-0000-0000-0000000000020";
/// The external tenant of the seeded records.
pub(crate) const SEED_EXTERNAL_TENANT: &str = "9f3a1c2e-5b7d-4e8f-a1b2-c3d4e5f6a7b8";
/// The chat of the seeded records.
pub(crate) const SEED_CHAT: &str = "19:5b1f0c2a-7d9e-4c3b-8a6f-0e1d2c3b4a59_00000000-0000-0000-0000-0000000000020@unq.gbl.spaces";

/// One call the Graph stand-in answered.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct GraphCall {
    /// HTTP method.
    pub method: String,
    /// Path below the Graph root (`/v1.0/chats/.../removeAllAccessForUser`).
    pub path: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// What the stand-in answered.
    pub status: u16,
}

/// The stand-ins' shared state.
#[derive(Default)]
pub(crate) struct StandIns {
    graph_calls: Mutex<Vec<GraphCall>>,
    notifier: Option<Arc<LocalNotifier>>,
}

impl StandIns {
    /// Stand-ins that also deliver local change notifications through `notifier`.
    pub(crate) fn with_notifier(notifier: Arc<LocalNotifier>) -> Self {
        Self { graph_calls: Mutex::default(), notifier: Some(notifier) }
    }

    fn record(&self, call: GraphCall) {
        tracing::info!(stand_in = "graph", method = %call.method, path = %call.path, status = call.status, "STAND-IN Graph answered (nothing left this machine)");
        self.graph_calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
    }

    /// Every Graph call answered so far.
    pub fn graph_calls(&self) -> Vec<GraphCall> {
        self.graph_calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Realistic external-chat records for the playground's tenant and user (shapes as in
/// Microsoft's published Teams audit records).
pub fn seed_records() -> Vec<Value> {
    vec![
        json!({
            "CreationTime": "2026-11-20T09:12:03", "Id": "5d7c3b1e-0a4f-4e61-9b2d-7f8e9a0b1c2d", "Operation": "ChatCreated",
            "OrganizationId": PLAYGROUND_TENANT, "RecordType": 25, "UserKey": "b7e6d5c4-3b2a-4190-8f7e-6d5c4b3a2910", "UserType": 0, "Version": 1,
            "Workload": "MicrosoftTeams", "UserId": "it-support@contoso-helpdesk.example", "ChatThreadId": SEED_CHAT, "CommunicationType": "OneOnOne",
            "Members": [
                {"OrganizationId": SEED_EXTERNAL_TENANT, "DisplayName": "IT Support", "UPN": "it-support@contoso-helpdesk.example"},
                {"OrganizationId": PLAYGROUND_TENANT, "DisplayName": "Alex Wilber", "UPN": PLAYGROUND_USER_UPN, "UserObjectId": PLAYGROUND_USER_OID}
            ],
            "ParticipantInfo": {"HasForeignTenantUsers": true, "HasGuestUsers": false, "HasOtherGuestUsers": false, "HasUnauthenticatedUsers": false,
                "ParticipatingDomains": ["contoso-helpdesk.example", "example.com"],
                "ParticipatingSIPDomains": [{"DomainName": "contoso-helpdesk.example", "TenantId": SEED_EXTERNAL_TENANT}, {"DomainName": "example.com", "TenantId": PLAYGROUND_TENANT}],
                "ParticipatingTenantIds": [PLAYGROUND_TENANT, SEED_EXTERNAL_TENANT]}
        }),
        json!({
            "CreationTime": "2026-11-20T09:13:41", "Id": "8e2f4a6c-1b3d-4f5a-9c7e-0d2f4a6c8e01", "Operation": "MessageCreatedHasLink",
            "OrganizationId": PLAYGROUND_TENANT, "RecordType": 25, "UserKey": "b7e6d5c4-3b2a-4190-8f7e-6d5c4b3a2910", "UserType": 0, "Version": 1,
            "Workload": "MicrosoftTeams", "UserId": "it-support@contoso-helpdesk.example", "ChatThreadId": SEED_CHAT, "CommunicationType": "OneOnOne",
            "MessageURLs": ["https://contoso-helpdesk.example/reset-password"],
            "Members": [{"UPN": "it-support@contoso-helpdesk.example", "Role": 1}, {"UPN": PLAYGROUND_USER_UPN, "Role": 0}]
        }),
        json!({
            "CreationTime": "2026-11-20T10:02:17", "Id": "0c9b8a7f-6e5d-4c3b-2a19-0f8e7d6c5b4a", "Operation": "MemberAdded",
            "OrganizationId": PLAYGROUND_TENANT, "RecordType": 25, "UserKey": "b7e6d5c4-3b2a-4190-8f7e-6d5c4b3a2910", "UserType": 0, "Version": 1,
            "Workload": "MicrosoftTeams", "UserId": "it-support@contoso-helpdesk.example",
            "ChatThreadId": "19:e1d2c3b4a5f60718293a4b5c6d7e8f90@thread.v2", "CommunicationType": "GroupChat",
            "Members": [{"DisplayName": "Megan Bowen", "UPN": "meganb@example.com", "Role": 1, "OrganizationId": PLAYGROUND_TENANT, "UserObjectId": "00000000-0000-0000-0000-0000000000021"}],
            "ParticipantInfo": {"HasForeignTenantUsers": true, "ParticipatingSIPDomains": [{"DomainName": "contoso-helpdesk.example", "TenantId": SEED_EXTERNAL_TENANT}]}
        }),
    ]
}

/// Stores the seed records in the audit index (without raising alerts).
pub async fn seed_audit_index(store: &Store) {
    for value in seed_records() {
        match AuditRecord::parse(value) {
            Ok(record) => {
                if let Err(err) = store.insert_audit(&record, now_ms()).await {
                    tracing::warn!(error = %err, "could not seed the audit index");
                }
            }
            Err(err) => tracing::warn!(error = %err, "a seed record does not parse"),
        }
    }
    tracing::info!(
        stand_in = "audit",
        records = seed_records().len(),
        "STAND-IN audit source: seeded the audit index with example external-chat records"
    );
}

/// A stable, GUID-shaped object id for a UPN the stand-in directory does not know.
fn stand_in_oid(upn: &str) -> String {
    if upn.eq_ignore_ascii_case(PLAYGROUND_USER_UPN) {
        return PLAYGROUND_USER_OID.to_owned();
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in upn.to_ascii_lowercase().bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let hex = format!("{hash:016x}{:016x}", hash.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15);
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// Answers one Graph request like Graph would (and records it).
fn graph_answer(state: &StandIns, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, answer) = match (method, segments.as_slice()) {
        ("POST", [_, "chats", _, "removeAllAccessForUser"]) => {
            let user = body.as_ref().and_then(|b| b.get("user"));
            let valid = user.is_some_and(|u| u.get("id").and_then(Value::as_str).is_some_and(|id| !id.is_empty()))
                && user.and_then(|u| u.get("@odata.type")).and_then(Value::as_str) == Some("microsoft.graph.teamworkUserIdentity");
            if valid { (204, Value::Null) } else { (400, json!({"error": {"code": "BadRequest", "message": "user identity missing"}})) }
        }
        ("POST", ["v1.0", "users", _, "revokeSignInSessions"]) => (200, json!({"value": true})),
        ("GET", ["v1.0", "users", upn]) => {
            let upn = percent_encoding::percent_decode_str(upn).decode_utf8_lossy().split('?').next().unwrap_or_default().to_owned();
            (200, json!({"id": stand_in_oid(&upn), "userPrincipalName": upn, "displayName": upn.split('@').next().unwrap_or_default()}))
        }
        ("POST", ["v1.0", "subscriptions"]) => {
            let expiration = body.as_ref().and_then(|b| b.get("expirationDateTime")).cloned().unwrap_or(Value::Null);
            (
                201,
                json!({"id": "local-subscription", "resource": body.as_ref().and_then(|b| b.get("resource")), "expirationDateTime": expiration}),
            )
        }
        ("PATCH", ["v1.0", "subscriptions", id]) => (200, json!({"id": id})),
        ("POST", ["v1.0", "subscriptions", _, "reauthorize"]) | ("DELETE", ["v1.0", "subscriptions", _]) => (204, Value::Null),
        ("GET", ["v1.0", "chats", _, "members"]) => (
            200,
            json!({"value": [
                {"@odata.type": "#microsoft.graph.aadUserConversationMember", "userId": PLAYGROUND_USER_OID, "tenantId": PLAYGROUND_TENANT,
                 "displayName": "Alex Wilber", "email": PLAYGROUND_USER_UPN, "roles": ["owner"]},
                notifications::stand_in_outsider(),
            ]}),
        ),
        ("GET", ["v1.0", "security", "alerts_v2"]) => (200, json!({"value": []})),
        _ => (404, json!({"error": {"code": "NotFound", "message": "the Graph stand-in does not implement this call"}})),
    };
    state.record(GraphCall { method: method.to_owned(), path: path.to_owned(), body, status });
    (status, answer)
}

async fn graph(req: actix_web::HttpRequest, body: web::Bytes, state: web::Data<StandIns>) -> HttpResponse {
    let path = req.match_info().get("tail").map(|t| format!("/{t}")).unwrap_or_default();
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    if req.method() == actix_web::http::Method::POST && path.ends_with("/$batch") {
        let version = path.trim_start_matches('/').split('/').next().unwrap_or("v1.0").to_owned();
        let requests = body.as_ref().and_then(|b| b.get("requests")).and_then(Value::as_array).cloned().unwrap_or_default();
        let responses: Vec<Value> = requests
            .iter()
            .map(|item| {
                let id = item.get("id").cloned().unwrap_or(Value::Null);
                let method = item.get("method").and_then(Value::as_str).unwrap_or("GET");
                let url = item.get("url").and_then(Value::as_str).unwrap_or_default();
                let (status, answer) = graph_answer(&state, method, &format!("/{version}{url}"), item.get("body").cloned());
                json!({"id": id, "status": status, "body": answer})
            })
            .collect();
        return HttpResponse::Ok().json(json!({"responses": responses}));
    }
    let (status, answer) = graph_answer(&state, req.method().as_str(), &path, body);
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    if answer.is_null() { HttpResponse::build(status).finish() } else { HttpResponse::build(status).json(answer) }
}

async fn token(query: web::Query<std::collections::HashMap<String, String>>) -> HttpResponse {
    let user = query.get("userId").cloned().unwrap_or_default();
    tracing::info!(stand_in = "token_service", "STAND-IN token service: every local admin is signed in");
    let expiration = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let expiration = expiration.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "channelId": "msteams", "connectionName": query.get("connectionName").cloned().unwrap_or_default(),
        "token": format!("local-stand-in-token:{user}"), "expiration": expiration,
    }))
}

async fn graph_calls(state: web::Data<StandIns>) -> HttpResponse {
    HttpResponse::Ok().json(state.graph_calls())
}

async fn replay_audit(ingest: web::Data<Arc<AuditIngest>>) -> HttpResponse {
    let records: Vec<AuditRecord> = seed_records().into_iter().filter_map(|v| AuditRecord::parse(v).ok()).collect();
    tracing::info!(stand_in = "audit", "STAND-IN audit source: replaying the example records as alerts");
    match ingest.ingest(records, "stand_in").await {
        Ok(report) => HttpResponse::Accepted().json(json!({"received": report.received, "stored": report.stored, "cases": report.cases})),
        Err(err) => {
            tracing::error!(error = %err, "replay failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// Registers the stand-in routes under `/_local/` (local mode only).
pub(crate) fn configure(cfg: &mut web::ServiceConfig, state: web::Data<StandIns>, alerts: web::Data<Arc<AuditIngest>>) {
    let mut scope = web::scope("/_local");
    if let Some(notifier) = &state.notifier {
        scope = notifications::configure(scope, web::Data::new(Arc::clone(notifier)));
    }
    cfg.service(
        scope
            .app_data(state)
            .app_data(alerts)
            .route("/token/api/usertoken/GetToken", web::get().to(token))
            .route("/token/api/usertoken/exchange", web::post().to(token))
            .route("/graph/calls", web::get().to(graph_calls))
            .route("/graph/{tail:.*}", web::route().to(graph))
            .route("/audit/replay", web::post().to(replay_audit)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_records_are_teams_records_of_the_playground_tenant_with_an_external_party() {
        for value in seed_records() {
            let record = AuditRecord::parse(value).unwrap();
            assert_eq!(record.organization_id, PLAYGROUND_TENANT);
            assert!(record.external_parties().any() || record.operation.as_str() == "MessageCreatedHasLink");
        }
    }

    #[test]
    fn the_stand_in_graph_answers_like_graph() {
        let state = StandIns::default();
        let body = json!({"user": {"@odata.type": "microsoft.graph.teamworkUserIdentity", "id": "u", "tenantId": "t"}});
        assert_eq!(graph_answer(&state, "POST", "/v1.0/chats/19:x@thread.v2/removeAllAccessForUser", Some(body)).0, 204);
        assert_eq!(graph_answer(&state, "POST", "/v1.0/chats/19:x@thread.v2/removeAllAccessForUser", Some(json!({}))).0, 400);
        assert_eq!(graph_answer(&state, "POST", "/v1.0/users/u/revokeSignInSessions", None).0, 200);
        let (status, user) = graph_answer(&state, "GET", "/v1.0/users/bob%40example.com", None);
        assert_eq!(status, 200);
        assert_eq!(user["userPrincipalName"], "bob@example.com");
        assert_eq!(user["id"].as_str().unwrap().len(), 36);
        assert_eq!(graph_answer(&state, "DELETE", "/v1.0/users/u", None).0, 404);
        assert_eq!(state.graph_calls().len(), 5);
    }
}
