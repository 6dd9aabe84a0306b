//! Escalation groups: their members, read with the app token, become escalation admins beside
//! the configured object ids; a failed read keeps the last good set.

use std::sync::Arc;

use chatwarden::cases::EscalationAdmins;
use chatwarden::config::RetryPolicy;
use chatwarden::entra::app_token::AppTokenProvider;
use chatwarden::escalation::EscalationGroups;
use chatwarden::graph::GraphClient;
use chatwarden::metrics::Metrics;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const GROUP: &str = "6f1c2d3e-0000-4000-8000-000000000001";
const FIXED: &str = "e5ca1a7e-5555-4d4e-8f90-1a2b3c4d5e6f";

#[tokio::test]
async fn group_members_join_the_escalation_admins_and_a_failed_read_keeps_them() {
    let graph = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/groups/{GROUP}/transitiveMembers/microsoft.graph.user")))
        .and(query_param("$select", "id,userPrincipalName,displayName"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": "A1B2C3D4-0000-4000-8000-00000000000A", "userPrincipalName": "on.call@contoso.com"},
            {"id": FIXED, "userPrincipalName": "lead@contoso.com"}
        ]})))
        .up_to_n_times(1)
        .mount(&graph)
        .await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(500)).mount(&graph).await;
    let metrics = Arc::new(Metrics::default());
    let retry = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
    let client = Arc::new(GraphClient::new(url::Url::parse(&graph.uri()).unwrap(), retry, Arc::clone(&metrics)).unwrap());
    let admins = EscalationAdmins::of([FIXED.to_owned()]);
    let shared = admins.clone();
    let groups =
        EscalationGroups::new(client, AppTokenProvider::anonymous(), vec![FIXED.into()], vec![GROUP.into()], admins, Arc::clone(&metrics));

    assert!(!shared.contains("a1b2c3d4-0000-4000-8000-00000000000a"));
    assert_eq!(groups.refresh_once().await.unwrap(), 2, "the fixed admin is also a member: counted once");
    assert!(shared.contains("a1b2c3d4-0000-4000-8000-00000000000a"), "a clone sees the group's member (any case)");
    assert!(shared.contains(FIXED));

    assert_eq!(groups.refresh_once().await.unwrap_err().status, 500);
    assert_eq!(shared.snapshot().len(), 2, "Graph failing takes nobody out");
    assert_eq!(metrics.get("chatwarden_escalation_refreshes_total", &[("result", "failed")]), 1);
}
