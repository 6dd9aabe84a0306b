//! Test harness: the real application on a random port, with wiremock fakes for the Bot
//! Framework OpenID metadata/JWKS, Entra ID (bot token) and the Bot Connector, and a helper that
//! signs test tokens with the RSA keys in `tests/fixtures`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatwarden::cases::{Case, TargetStatus};
use chatwarden::config::{Config, Mode};
use chatwarden::execution::{CaseExecutor, PendingTargets, ProgressSink, TargetResult};
use chatwarden::startup::{Application, Overrides};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const APP_ID: &str = "9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3";
pub const TENANT_ID: &str = "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e";
pub const ADMIN_OID: &str = "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d";
pub const SECOND_ADMIN_OID: &str = "7d6c5b4a-4444-4c3d-9e8f-0a1b2c3d4e5f";
pub const APP_PASSWORD: &str = "test-app-password-never-logged";
pub const BOT_TOKEN: &str = "bot-token-from-fake-entra";
pub const CONVERSATION_ID: &str = "19:c0ffee@thread.tacv2;messageid=1719900000123";
pub const ACTIVITY_ID: &str = "1719900000123";
pub const METADATA_PATH: &str = "/v1/.well-known/openidconfiguration";
pub const JWKS_PATH: &str = "/v1/.well-known/keys";

/// Kid of the key endorsed for msteams.
pub const TEAMS_KID: &str = "teams-key";
/// Kid of a key endorsed for another channel only.
pub const WEBCHAT_KID: &str = "webchat-key";

pub const TEAMS_KEY_PEM: &str = include_str!("../fixtures/test-key-1.pem");
pub const OTHER_KEY_PEM: &str = include_str!("../fixtures/test-key-2.pem");

fn public_keys() -> Value {
    serde_json::from_str(include_str!("../fixtures/test-keys-public.json")).unwrap()
}

/// A JWK for fixture key `name` (`test-key-1` or `test-key-2`).
pub fn jwk(kid: &str, name: &str, endorsements: &[&str]) -> Value {
    let keys = public_keys();
    json!({"kty": "RSA", "use": "sig", "kid": kid, "n": keys[name]["n"], "e": keys[name]["e"], "endorsements": endorsements})
}

/// The JWKS served by default.
pub fn default_jwks() -> Value {
    json!({"keys": [jwk(TEAMS_KID, "test-key-1", &["msteams", "skype"]), jwk(WEBCHAT_KID, "test-key-2", &["webchat"])]})
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims of a valid channel token for `service_url`.
pub fn valid_claims(service_url: &str) -> Value {
    json!({
        "iss": "https://api.botframework.com",
        "aud": APP_ID,
        "exp": now() + 3600,
        "nbf": now() - 10,
        "serviceurl": service_url,
    })
}

/// Signs `claims` with RS256 and the given PEM under `kid`.
pub fn sign(kid: &str, pem: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
}

/// A valid token for `service_url`.
pub fn valid_token(service_url: &str) -> String {
    sign(TEAMS_KID, TEAMS_KEY_PEM, &valid_claims(service_url))
}

/// A channel message from the admin to the bot in the security channel.
pub fn message(service_url: &str, text: &str) -> Value {
    json!({
        "type": "message",
        "id": ACTIVITY_ID,
        "timestamp": "2026-05-04T09:12:33.120Z",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": "29:1AbCdEfGh-admin", "name": "Dana Admin", "aadObjectId": ADMIN_OID},
        "conversation": {"isGroup": true, "conversationType": "channel", "tenantId": TENANT_ID, "id": CONVERSATION_ID},
        "recipient": {"id": format!("28:{APP_ID}"), "name": "chatwarden"},
        "textFormat": "plain",
        "text": format!("<at>chatwarden</at> {text}"),
        "entities": [{"type": "mention", "text": "<at>chatwarden</at>", "mentioned": {"id": format!("28:{APP_ID}"), "name": "chatwarden"}}],
        "channelData": {
            "teamsChannelId": "19:c0ffee@thread.tacv2", "teamsTeamId": "19:team@thread.tacv2",
            "channel": {"id": "19:c0ffee@thread.tacv2"}, "team": {"id": "19:team@thread.tacv2"},
            "tenant": {"id": TENANT_ID}
        }
    })
}

/// Percent-encodes like `encodeURIComponent` (what the Connector paths must look like).
pub fn encode(text: &str) -> String {
    chatwarden::botframework::service_url::encode_component(text)
}

/// Path of a reply to the default activity.
pub fn reply_path() -> String {
    format!("/v3/conversations/{}/activities/{ACTIVITY_ID}", encode(CONVERSATION_ID))
}

/// An executor that records what it was asked to do and reports every target done (204).
#[derive(Default)]
pub struct RecordingExecutor {
    pub calls: std::sync::Mutex<Vec<String>>,
    /// Delay before answering (to hold a case in `executing`).
    pub delay: std::sync::Mutex<Duration>,
}

#[async_trait::async_trait]
impl CaseExecutor for RecordingExecutor {
    async fn execute(&self, case: &Case, targets: &dyn PendingTargets, _progress: &dyn ProgressSink) -> Vec<TargetResult> {
        self.calls.lock().unwrap().push(case.id.clone());
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        targets
            .after(None, usize::MAX)
            .await
            .unwrap()
            .iter()
            .map(|t| TargetResult {
                position: t.position,
                status: TargetStatus::Done,
                graph_status: Some(204),
                detail: "removed".into(),
                user_oid: None,
                graph_code: None,
                receipt: None,
            })
            .collect()
    }
}

/// A target's outcome as an executor reports it, with no Graph receipt.
pub fn target_result(position: i64, status: TargetStatus, graph_status: Option<i64>, detail: &str, user_oid: Option<&str>) -> TargetResult {
    TargetResult {
        position,
        status,
        graph_status,
        detail: detail.into(),
        user_oid: user_oid.map(str::to_owned),
        graph_code: None,
        receipt: None,
    }
}

impl RecordingExecutor {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

/// A `/remove-chat` case for (`thread`, `user`) requested by the first admin ("29:dana") and
/// approved by the second ("29:sam"), written straight to `store` as an admin's click leaves it.
pub async fn approved_removal(store: &chatwarden::store::Store, thread: &str, user: &str) -> Case {
    approved_case(store, chatwarden::cases::CaseKind::RemoveChat, vec![internal_target(thread, user)]).await
}

/// A target in our tenant: `user` (its object id too) in `thread`.
pub fn internal_target(thread: &str, user: &str) -> chatwarden::cases::NewTarget {
    chatwarden::cases::NewTarget {
        thread_id: Some(thread.into()),
        user_ref: user.into(),
        user_oid: Some(user.into()),
        user_tenant_id: TENANT_ID.into(),
        display_name: None,
    }
}

/// `n` targets, each its own chat and user (`19:bulk-<i>@thread.v2`, `user-<i>`).
pub fn bulk_targets(n: usize) -> Vec<chatwarden::cases::NewTarget> {
    (0..n).map(|i| internal_target(&format!("19:bulk-{i}@thread.v2"), &format!("user-{i}"))).collect()
}

/// A case of `kind` over `targets` that Dana asked for and Sam approved, as left by his click.
pub async fn approved_case(
    store: &chatwarden::store::Store,
    kind: chatwarden::cases::CaseKind,
    targets: Vec<chatwarden::cases::NewTarget>,
) -> Case {
    use chatwarden::cases::{Actor, CaseSource, Decision, NewCase, Policy, now_ms};
    let new = NewCase {
        kind,
        source: CaseSource::Command,
        tenant_id: TENANT_ID.into(),
        requester: Actor { oid: ADMIN_OID.into(), name: "Dana".into(), user_id: "29:dana".into() },
        reason: None,
        targets,
        evidence: vec![],
        no_evidence: true,
        ttl_ms: 60_000,
    };
    let chatwarden::store::Created::New(case) = store.create_case(&new, None, now_ms()).await.unwrap() else { panic!("case not created") };
    let approver = Actor { oid: SECOND_ADMIN_OID.into(), name: "Sam".into(), user_id: "29:sam".into() };
    let policy = Policy { admins: None, require_second_approver: true, escalation_admins: Default::default() };
    store.decide(&case.id, &approver, Decision::Approve, None, &policy, now_ms()).await.unwrap();
    *case
}

/// A fresh SQLite database file.
pub fn sqlite_url() -> String {
    let dir = std::env::temp_dir().join("chatwarden-tests");
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}/cw-{:016x}.db", dir.display(), fastrand::u64(..))
}

/// The PostgreSQL server the tests use (this machine's, trust auth).
pub fn postgres_base_url() -> String {
    std::env::var("CHATWARDEN_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL database on the test server.
pub async fn postgres_url() -> String {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let base = postgres_base_url();
    let name = format!("cw_test_{:016x}", fastrand::u64(..));
    let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {base} ({e}); start it or set CHATWARDEN_TEST_POSTGRES_URL (see README)")
    });
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    match base.rfind('/') {
        Some(pos) => format!("{}/{name}", &base[..pos]),
        None => panic!("bad CHATWARDEN_TEST_POSTGRES_URL"),
    }
}

pub struct TestApp {
    pub address: String,
    pub executor: Arc<RecordingExecutor>,
    pub database_url: String,
    pub metadata: MockServer,
    pub login: MockServer,
    pub connector: MockServer,
    pub token_service: MockServer,
    pub graph: MockServer,
    pub client: reqwest::Client,
    pub metrics: std::sync::Arc<chatwarden::metrics::Metrics>,
}

/// How the fakes behave at start.
pub struct Fakes {
    pub metadata_up: bool,
    pub jwks: Value,
    /// Database to use (default: a fresh SQLite file).
    pub database_url: Option<String>,
    /// Every admin already signed in at the fake token service.
    pub signed_in: bool,
    /// Run approved cases through the real Graph executor (against the fake Graph) instead of
    /// the recording executor.
    pub real_graph: bool,
}

impl Default for Fakes {
    fn default() -> Self {
        Self { metadata_up: true, jwks: default_jwks(), database_url: None, signed_in: true, real_graph: false }
    }
}

/// The delegated token the fake token service hands out for a Teams user id.
/// A Teams SSO token (a JWT, unsigned: the token service or Entra ID verifies it, not us) for
/// the user with object id `oid`.
pub fn sso_token_for(oid: &str) -> String {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}.sig", e.encode(r#"{"alg":"RS256","typ":"JWT"}"#), e.encode(format!(r#"{{"oid":"{oid}","scp":"access_as_user"}}"#)))
}

pub fn delegated_token(user_id: &str) -> String {
    format!("delegated-token-of-{user_id}")
}

/// Token service `GetToken` that knows every user: 200 with `delegated_token(userId)`, valid 1 h.
pub struct SignedInTokenService;

impl wiremock::Respond for SignedInTokenService {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let user = request.url.query_pairs().find(|(k, _)| k == "userId").map(|(_, v)| v.into_owned()).unwrap_or_default();
        let expiration = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let expiration = expiration.format(&time::format_description::well_known::Rfc3339).unwrap();
        ResponseTemplate::new(200).set_body_json(
            json!({"channelId": "msteams", "connectionName": "graph", "token": delegated_token(&user), "expiration": expiration}),
        )
    }
}

pub async fn mount_signed_in(token_service: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(SignedInTokenService)
        .named("GetToken")
        .mount(token_service)
        .await;
}

/// Serve-mode configuration pointing at the fakes.
pub fn serve_config(metadata: &MockServer, login: &MockServer) -> Config {
    let env = |name: &str| -> Option<String> {
        Some(match name {
            "CHATWARDEN_BIND" => "127.0.0.1:0".into(),
            "MICROSOFT_APP_ID" => APP_ID.into(),
            "MICROSOFT_APP_PASSWORD" => APP_PASSWORD.into(),
            "MICROSOFT_APP_TENANT_ID" => TENANT_ID.into(),
            "CHATWARDEN_OPENID_METADATA_URL" => format!("{}{METADATA_PATH}", metadata.uri()),
            "CHATWARDEN_LOGIN_URL" => login.uri(),
            "CHATWARDEN_SERVICE_URL_ALLOWLIST" => "127.0.0.1".into(),
            "CHATWARDEN_SECURITY_TEAM_ID" => "19:team@thread.tacv2".into(),
            "CHATWARDEN_SECURITY_CHANNEL_ID" => "19:c0ffee@thread.tacv2".into(),
            "CHATWARDEN_ADMINS" => format!("{ADMIN_OID},{SECOND_ADMIN_OID}"),
            "CHATWARDEN_DATABASE_URL" => sqlite_url(),
            "CHATWARDEN_TOKEN_SERVICE_URL" => "http://127.0.0.1:9".into(),
            "CHATWARDEN_GRAPH_URL" => "http://127.0.0.1:9".into(),
            _ => return None,
        })
    };
    let mut config = Config::from_sources(Mode::Serve, None, env).unwrap();
    config.key_refresh.retry_interval = Duration::from_millis(50);
    config.retry.base_delay = Duration::from_millis(5);
    config.retry.max_delay = Duration::from_millis(200);
    config.retry.request_timeout = Duration::from_secs(2);
    config.execution.sweep_interval = Duration::from_millis(100);
    config.execution.lease = Duration::from_secs(3);
    config
}

/// Serves the OpenID metadata document (pointing at the JWKS on the same server) and `jwks`.
pub async fn mount_metadata(metadata: &MockServer, jwks: Value) {
    Mock::given(method("GET"))
        .and(path(METADATA_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": "https://api.botframework.com",
            "jwks_uri": format!("{}{JWKS_PATH}", metadata.uri()),
            "id_token_signing_alg_values_supported": ["RS256"],
        })))
        .named("openid metadata")
        .mount(metadata)
        .await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks))
        .named("jwks")
        .mount(metadata)
        .await;
}

/// Entra ID answering the bot's client-credentials request.
pub async fn mount_login(login: &MockServer) {
    Mock::given(method("POST"))
        .and(path(format!("/{TENANT_ID}/oauth2/v2.0/token")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": BOT_TOKEN
        })))
        .named("entra token")
        .mount(login)
        .await;
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Fakes::default(), |_| {}).await
}

pub async fn spawn_app_with(fakes: Fakes, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let metadata = MockServer::start().await;
    let login = MockServer::start().await;
    let connector = MockServer::start().await;
    if fakes.metadata_up {
        mount_metadata(&metadata, fakes.jwks).await;
    }
    mount_login(&login).await;
    let mut config = serve_config(&metadata, &login);
    if let Some(url) = fakes.database_url {
        config.database_url = url.into();
    }
    tweak(&mut config);
    let wait_ready = fakes.metadata_up && config.auth_enabled();
    let app = launch_with(config, Servers { metadata, login, connector }, fakes.signed_in, fakes.real_graph).await;
    if wait_ready {
        app.wait_ready().await;
    }
    app
}

pub struct Servers {
    pub metadata: MockServer,
    pub login: MockServer,
    pub connector: MockServer,
}

pub async fn launch(config: Config, metadata: MockServer, login: MockServer, connector: MockServer) -> TestApp {
    launch_with(config, Servers { metadata, login, connector }, true, false).await
}

pub async fn launch_with(mut config: Config, servers: Servers, signed_in: bool, real_graph: bool) -> TestApp {
    let Servers { metadata, login, connector } = servers;
    let token_service = MockServer::start().await;
    let graph = MockServer::start().await;
    if signed_in {
        mount_signed_in(&token_service).await;
    }
    config.endpoints.token_service = url::Url::parse(&token_service.uri()).unwrap();
    config.endpoints.graph = url::Url::parse(&graph.uri()).unwrap();
    let executor = Arc::new(RecordingExecutor::default());
    let database_url = config.database_url.expose_secret().to_owned();
    let chosen = if real_graph { None } else { Some(executor.clone() as Arc<dyn CaseExecutor>) };
    let overrides = Overrides { executor: chosen, runner_id: None };
    let application = Application::build_with(config, overrides).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let metrics = application.metrics();
    tokio::spawn(application.run_until_stopped());
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    TestApp { address, executor, database_url, metadata, login, connector, token_service, graph, client, metrics }
}

impl TestApp {
    /// Waits until the case sweeper has run once from start to end after this call: whatever
    /// the app would still do on its own (expire, resume or run a case) has then been done, so
    /// a test can assert that nothing more happened without a fixed sleep.
    pub async fn wait_for_a_full_sweep(&self) {
        let sweeps = || self.metrics.get("chatwarden_case_sweeps_total", &[("result", "ok")]);
        let start = sweeps();
        for _ in 0..500 {
            // The sweep running at `start` may have begun before the call: wait for the next one.
            if sweeps() >= start + 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the case sweeper did not run within 5 s");
    }

    /// The connector's base URL (allowlisted: 127.0.0.1).
    pub fn service_url(&self) -> String {
        format!("{}/", self.connector.uri())
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.get("/readyz").await.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("app never became ready");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).send().await.unwrap()
    }

    /// POSTs `body` to /api/messages with `Authorization: Bearer <token>` when a token is given.
    pub async fn post_activity(&self, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/api/messages", self.address)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// POSTs raw bytes with explicit headers.
    pub async fn post_raw(&self, headers: &[(&str, &str)], body: Vec<u8>) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/api/messages", self.address)).body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    }

    /// Requests the fakes received at `path`; typing indicators are left out (they come only when
    /// a command takes a while).
    pub async fn received(server: &MockServer, at: &str) -> Vec<Request> {
        let is_typing = |r: &Request| serde_json::from_slice::<Value>(&r.body).is_ok_and(|body| body["type"] == "typing");
        server.received_requests().await.unwrap_or_default().into_iter().filter(|r| r.url.path() == at && !is_typing(r)).collect()
    }

    pub async fn metadata_fetches(&self) -> usize {
        Self::received(&self.metadata, METADATA_PATH).await.len()
    }

    /// Asserts that neither Entra ID nor the Bot Connector was called.
    pub async fn assert_no_outbound(&self) {
        let login = self.login.received_requests().await.unwrap_or_default();
        let connector = self.connector.received_requests().await.unwrap_or_default();
        assert!(login.is_empty(), "unexpected token requests: {}", login.len());
        assert!(connector.is_empty(), "unexpected connector requests: {}", connector.len());
    }

    /// Mounts a connector reply endpoint that answers 200 with `{"id": "reply-1"}`.
    pub async fn mount_reply(&self) {
        Mock::given(method("POST"))
            .and(path(reply_path()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "reply-1"})))
            .named("connector reply")
            .mount(&self.connector)
            .await;
    }
}

/// Waits (up to 15 s) until `check` holds; panics naming `what` otherwise.
pub async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The real `chatwarden serve` binary on `database_url`, registered with the fake OpenID
/// `metadata` and Entra `login`, plus `extra` settings; its log goes to `log`.
pub fn serve_binary(
    database_url: &str,
    metadata: &MockServer,
    login: &MockServer,
    extra: &[(&str, String)],
    log: &std::path::Path,
) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_chatwarden"))
        .arg("serve")
        .env_clear()
        .current_dir(std::env::temp_dir())
        .envs([
            ("CHATWARDEN_BIND", "127.0.0.1:0".to_owned()),
            ("MICROSOFT_APP_ID", APP_ID.to_owned()),
            ("MICROSOFT_APP_PASSWORD", APP_PASSWORD.to_owned()),
            ("MICROSOFT_APP_TENANT_ID", TENANT_ID.to_owned()),
            ("CHATWARDEN_OPENID_METADATA_URL", format!("{}{METADATA_PATH}", metadata.uri())),
            ("CHATWARDEN_LOGIN_URL", login.uri()),
            ("CHATWARDEN_TOKEN_SERVICE_URL", "http://127.0.0.1:9".to_owned()),
            ("CHATWARDEN_GRAPH_URL", "http://127.0.0.1:9".to_owned()),
            ("CHATWARDEN_SERVICE_URL_ALLOWLIST", "127.0.0.1".to_owned()),
            ("CHATWARDEN_SECURITY_TEAM_ID", "19:team@thread.tacv2".to_owned()),
            ("CHATWARDEN_SECURITY_CHANNEL_ID", "19:c0ffee@thread.tacv2".to_owned()),
            ("CHATWARDEN_ADMINS", format!("{ADMIN_OID},{SECOND_ADMIN_OID}")),
            ("CHATWARDEN_DATABASE_URL", database_url.to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ])
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Alert ingestion on `store` for our tenant with the default rules, posting nowhere (no
/// security channel is known): for sources driven directly by a test.
pub fn offline_ingest(
    store: &chatwarden::store::Store,
    metrics: &Arc<chatwarden::metrics::Metrics>,
    require_reason: bool,
) -> Arc<chatwarden::alerts::AuditIngest> {
    use chatwarden::alerts::{AlertSettings, AuditIngest, ChannelEndpoint};
    let retry = chatwarden::config::RetryPolicy {
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        ..Default::default()
    };
    let tokens = Arc::new(chatwarden::entra::app_token::AppTokenProvider::anonymous());
    let connector = Arc::new(chatwarden::botframework::connector::ConnectorClient::new(tokens, retry, Arc::clone(metrics)).unwrap());
    let endpoint =
        Arc::new(ChannelEndpoint::new(None, store.clone(), chatwarden::botframework::service_url::HostAllowlist::loopback_only()));
    let settings = AlertSettings {
        tenant_id: Some(TENANT_ID.into()),
        channel_id: None,
        case_ttl: Duration::from_secs(3600),
        rules: chatwarden::audit::detection::DetectionRules::default(),
        require_reason,
    };
    Arc::new(AuditIngest::new(store.clone(), connector, endpoint, settings, Arc::clone(metrics)))
}
