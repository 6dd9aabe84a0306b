//! The workflow's rules with its outside services replaced by fakes behind their seams
//! (`ThreadReplies`, `ApproverTokens`, `Directory`) and a real SQLite store: no HTTP at all.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::json;

use super::authorise::Denied;
use super::card_actions::CardIntent;
use super::*;
use crate::botframework::activity::Activity;
use crate::botframework::connector::{ConnectorError, ResourceResponse};
use crate::botframework::invoke_request::SignInProof;
use crate::botframework::service_url::{AllowedServiceUrl, HostAllowlist};
use crate::cases::{Actor, Case, CaseKind, CaseSource, CaseState, Decision, NewCase, NewTarget, TargetStatus, now_ms};
use crate::commands::{Command, RevokeTarget};
use crate::execution::{CaseExecutor, TargetResult};
use crate::graph::{GraphFailure, GraphUser};
use crate::store::Created;
use crate::tokens::{SignInResource, SignInState, TokenError};

const ADMIN: &str = "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d";
const SECOND: &str = "7d6c5b4a-4444-4c3d-9e8f-0a1b2c3d4e5f";
const STRANGER: &str = "99999999-aaaa-4bbb-8ccc-dddddddddddd";

#[derive(Default)]
struct RecordedReplies(Mutex<Vec<String>>);

#[async_trait]
impl ThreadReplies for RecordedReplies {
    async fn reply_to_activity(
        &self,
        _: &AllowedServiceUrl,
        _: &str,
        _: &str,
        activity: &OutgoingActivity,
    ) -> Result<ResourceResponse, ConnectorError> {
        self.0.lock().unwrap().push(activity.text.clone().unwrap_or_default());
        Ok(ResourceResponse { id: Some("card-1".into()) })
    }

    async fn team_member_account(&self, _: &AllowedServiceUrl, _: &str, oid: &str) -> Result<Option<(String, String)>, ConnectorError> {
        Ok(Some((format!("29:{oid}"), oid.to_owned())))
    }

    async fn send_privately(
        &self,
        _: &AllowedServiceUrl,
        _: &crate::botframework::activity::Activity,
        activity: &OutgoingActivity,
    ) -> Result<crate::botframework::private::PrivateRoute, ConnectorError> {
        self.0.lock().unwrap().push(format!("(private) {}", activity.text.clone().unwrap_or_default()));
        Ok(crate::botframework::private::PrivateRoute::Targeted)
    }
}

/// Tokens that belong to someone else: the token service handed back another user's token.
struct SomeoneElsesTokens;

#[async_trait]
impl ApproverTokens for SomeoneElsesTokens {
    fn connection(&self) -> &str {
        "graph"
    }
    async fn token_for(&self, _: &Actor) -> Result<Option<SecretString>, TokenError> {
        Err(TokenError::NotTheApprover)
    }
    async fn redeem_code(&self, _: &Actor, _: &str) -> Result<Option<SecretString>, TokenError> {
        Err(TokenError::NotTheApprover)
    }
    async fn exchange_sso(&self, _: &Actor, _: &SecretString) -> Result<Option<SecretString>, TokenError> {
        Err(TokenError::NotTheApprover)
    }
    async fn sign_in_resource(&self, _: &SignInState<'_>) -> Result<SignInResource, TokenError> {
        Err(TokenError::Invalid)
    }
}

/// Tokens of admins who are all signed in.
struct SignedIn;

#[async_trait]
impl ApproverTokens for SignedIn {
    fn connection(&self) -> &str {
        "graph"
    }
    async fn token_for(&self, admin: &Actor) -> Result<Option<SecretString>, TokenError> {
        Ok(Some(SecretString::from(format!("token-of-{}", admin.oid))))
    }
    async fn redeem_code(&self, admin: &Actor, _: &str) -> Result<Option<SecretString>, TokenError> {
        self.token_for(admin).await
    }
    async fn exchange_sso(&self, admin: &Actor, _: &SecretString) -> Result<Option<SecretString>, TokenError> {
        self.token_for(admin).await
    }
    async fn sign_in_resource(&self, _: &SignInState<'_>) -> Result<SignInResource, TokenError> {
        Err(TokenError::Invalid)
    }
}

/// A directory whose every group has `members` users.
struct GroupsOf {
    members: usize,
}

#[async_trait]
impl Directory for GroupsOf {
    async fn user(&self, _: &SecretString, upn: &str) -> Result<Option<GraphUser>, GraphFailure> {
        Ok(Some(GraphUser { id: format!("oid-{upn}"), user_principal_name: Some(upn.to_owned()), display_name: None }))
    }
    async fn group_users(&self, _: &SecretString, _: &str, _: usize) -> Result<Option<Vec<GraphUser>>, GraphFailure> {
        Ok(Some(
            (0..self.members)
                .map(|i| GraphUser { id: format!("oid-{i}"), user_principal_name: Some(format!("u{i}@contoso.com")), display_name: None })
                .collect(),
        ))
    }
}

struct Nobody;

#[async_trait]
impl CaseObserver for Nobody {
    async fn case_changed(&self, _: &Case) {}
}

struct Fixture {
    workflow: CaseWorkflow,
    store: Store,
    replies: Arc<RecordedReplies>,
}

async fn fixture(tokens: Arc<dyn ApproverTokens>, directory: Arc<dyn Directory>, revoke_ceiling: usize) -> Fixture {
    let path = std::env::temp_dir().join(format!("chatwarden-workflow-{:016x}.db", fastrand::u64(..)));
    let store = Store::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let runner = Arc::new(CaseRunner::new(
        store.clone(),
        Arc::new(UnavailableExecutor),
        Arc::new(Nobody),
        "test-runner".into(),
        Duration::from_secs(60),
        Duration::from_secs(5),
        Arc::clone(&metrics),
    ));
    let replies = Arc::new(RecordedReplies::default());
    let policy = Policy {
        admins: Some(HashSet::from([ADMIN.to_owned(), SECOND.to_owned()])),
        require_second_approver: true,
        escalation_admins: Default::default(),
    };
    let approvers = Arc::new(crate::approvers::ApproverViews::new(replies.clone(), policy.clone(), None, false));
    let services = WorkflowServices {
        store: store.clone(),
        replies: replies.clone(),
        runner,
        updater: Arc::new(Nobody),
        tokens,
        directory,
        endpoint: Arc::new(ChannelEndpoint::new(None, store.clone(), HostAllowlist::loopback_only())),
        approvers,
        metrics,
    };
    let settings = WorkflowSettings {
        scope: Scope::default(),
        policy,
        case_ttl: Duration::from_secs(3600),
        require_reason: false,
        app_id: None,
        revoke_ceiling,
        refusals_per_minute: 1,
    };
    Fixture { workflow: CaseWorkflow::new(services, settings), store, replies }
}

fn activity(id: &str, oid: &str) -> VerifiedActivity {
    let activity: Activity = serde_json::from_value(json!({
        "type": "message", "id": id, "serviceUrl": "http://127.0.0.1:1/", "channelId": "msteams",
        "from": {"id": format!("29:{oid}"), "name": "Someone", "aadObjectId": oid},
        "conversation": {"id": "19:security@thread.tacv2;messageid=1", "conversationType": "channel"},
        "text": "/help",
    }))
    .unwrap();
    let url = HostAllowlist::loopback_only().check("http://127.0.0.1:1/").unwrap();
    VerifiedActivity::trusted_for_tests(activity, url)
}

fn actor(oid: &str) -> Actor {
    Actor { oid: oid.into(), name: "Someone".into(), user_id: format!("29:{oid}") }
}

#[tokio::test]
async fn a_group_larger_than_the_ceiling_opens_nothing_and_says_why() {
    let fx = fixture(Arc::new(SignedIn), Arc::new(GroupsOf { members: 3 }), 2).await;
    let command = Command::RevokeSessions { target: RevokeTarget::Group("g-1".into()), reason: None };
    fx.workflow.on_command(&activity("a-1", ADMIN), actor(ADMIN), command).await.unwrap();
    let replies = fx.replies.0.lock().unwrap().clone();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].contains("3 users") && replies[0].contains("CHATWARDEN_REVOKE_CEILING"), "{replies:?}");
    assert!(fx.store.history(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_group_within_the_ceiling_opens_one_case_for_all_its_users() {
    let fx = fixture(Arc::new(SignedIn), Arc::new(GroupsOf { members: 2 }), 2).await;
    let command = Command::RevokeSessions { target: RevokeTarget::Group("g-1".into()), reason: None };
    fx.workflow.on_command(&activity("a-1", ADMIN), actor(ADMIN), command).await.unwrap();
    let cases = fx.store.history(10).await.unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].kind, CaseKind::RevokeSessions);
    assert_eq!(cases[0].targets.iter().map(|t| t.user_oid.clone().unwrap()).collect::<Vec<_>>(), ["oid-0", "oid-1"]);
}

#[tokio::test]
async fn an_approval_with_someone_elses_token_is_refused_and_changes_nothing() {
    let fx = fixture(Arc::new(SomeoneElsesTokens), Arc::new(GroupsOf { members: 0 }), 10).await;
    let new = NewCase {
        kind: CaseKind::RemoveChat,
        source: CaseSource::Command,
        tenant_id: "tenant".into(),
        requester: actor(ADMIN),
        reason: None,
        targets: vec![NewTarget {
            thread_id: Some("19:x@thread.v2".into()),
            user_ref: "victim@contoso.com".into(),
            user_oid: None,
            user_tenant_id: "tenant".into(),
            display_name: None,
        }],
        evidence: Vec::new(),
        no_evidence: true,
        ttl_ms: 3_600_000,
    };
    let Created::New(case) = fx.store.create_case(&new, None, now_ms()).await.unwrap() else { panic!("not created") };
    let action =
        CardAction { case_id: crate::cases::CaseId::parse(&case.id).unwrap(), intent: CardIntent::Decide(Decision::Approve), reason: None };
    let reply = fx.workflow.on_card_action(&activity("a-2", SECOND), action, SignInProof::None, ActionPath::Invoke).await.unwrap();
    assert!(matches!(&reply, ActionReply::Message(text) if text.contains("belongs to another account")), "{reply:?}");
    let after = fx.store.case(&case.id).await.unwrap().unwrap();
    assert_eq!(after.state, CaseState::Proposed);
    assert!(fx.store.events(&case.id).await.unwrap().iter().any(|e| e.kind == "refused"));
}

#[tokio::test]
async fn a_stranger_is_answered_within_the_refusal_limit_only() {
    let fx = fixture(Arc::new(SignedIn), Arc::new(GroupsOf { members: 0 }), 10).await;
    let first = activity("s-1", STRANGER);
    let denied = fx.workflow.authorise(first.activity()).unwrap_err();
    assert_eq!(denied, Denied::NotAdmin);
    assert_eq!(fx.workflow.refuse(first.activity(), denied).await, Some(REFUSAL_TEXT));
    for id in ["s-2", "s-3", "s-4"] {
        assert_eq!(fx.workflow.refuse(activity(id, STRANGER).activity(), Denied::NotAdmin).await, None);
    }
    // The first refusal and one line about the rest.
    assert_eq!(fx.store.refusals(10).await.unwrap().len(), 2);
}

/// An executor that fails every target: the tests here are about the rules before execution.
struct UnavailableExecutor;

#[async_trait]
impl CaseExecutor for UnavailableExecutor {
    async fn execute(
        &self,
        _case: &Case,
        targets: &dyn crate::execution::PendingTargets,
        _progress: &dyn crate::execution::ProgressSink,
    ) -> Vec<TargetResult> {
        targets
            .after(None, usize::MAX)
            .await
            .unwrap_or_default()
            .iter()
            .map(|t| TargetResult {
                position: t.position,
                status: TargetStatus::Failed,
                graph_status: None,
                detail: "Graph execution is not available on this instance".into(),
                user_oid: None,
                graph_code: None,
                receipt: None,
            })
            .collect()
    }
}
