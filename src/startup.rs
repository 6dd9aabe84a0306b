//! Builds the running service from a [`Config`]: clients, key store, bot, listener.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{HttpServer, web};
use anyhow::Context as _;

use std::collections::HashSet;

use secrecy::ExposeSecret as _;

use crate::bot::Bot;
use crate::botframework::auth::ChannelAuthenticator;
use crate::botframework::connector::ConnectorClient;
use crate::botframework::inbound::{InboundAuth, InboundGate};
use crate::botframework::keys::KeyStore;
use crate::botframework::service_url::HostAllowlist;
use crate::cases::Policy;
use crate::config::{Config, Mode};
use crate::entra::app_token::AppTokenProvider;
use crate::entra::token_url as entra_token_url;
use crate::workflow::{CaseWorkflow, Scope, WorkflowServices, WorkflowSettings};
use std::time::Duration;

use url::Url;

use crate::alerts::{AlertSettings, AuditIngest, ChannelEndpoint};
use crate::approvers::ApproverViews;
use crate::audit::poller::{ManagementPoller, PollSettings};
use crate::botframework::connector::ThreadReplies;
use crate::cases::EscalationAdmins;
use crate::config::{RetryPolicy, TokenMode};
use crate::defender::DefenderPoller;
use crate::escalation::EscalationGroups;
use crate::execution::{CardUpdater, CaseExecutor, CaseRunner, GraphExecutor, ReminderSettings, Reminders};
use crate::graph::GraphClient;
use crate::history::{ForwardSettings, Forwarder, HistoryRetention};
use crate::http::{AlertIntake, AppState, NotificationEndpoint, build_app};
use crate::metrics::Metrics;
use crate::notifications::{
    NotificationIntake, NotificationProcessor, NotificationSettings, QUEUE_CAPACITY, SubscriptionManager, SubscriptionSettings,
    ValidationTokens,
};
use crate::outbound::ClientSetupError;
use crate::ratelimit::RateLimiter;
use crate::standins::{LOCAL_APP_ID, LocalNotifier, PLAYGROUND_TENANT, StandIns};
use crate::store::Store;
use crate::tokens::{DelegatedTokens, TokenSource};

/// Scope of the app token for the Office 365 Management Activity API.
pub const MANAGEMENT_SCOPE: &str = "https://manage.office.com/.default";

/// Parts that tests (and later integrations) may replace.
#[derive(Default)]
pub struct Overrides {
    /// Executes approved cases (default: Graph is not available, every target fails clearly).
    pub executor: Option<Arc<dyn CaseExecutor>>,
    /// Identity of this process as a case runner (default: random).
    pub runner_id: Option<String>,
}

/// A built, bound, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    background: Vec<tokio::task::JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

/// Local mode never listens beyond loopback: keep the port, force the address.
pub(crate) fn effective_bind(config: &Config) -> SocketAddr {
    if config.mode == Mode::Dev && !config.bind.ip().is_loopback() {
        tracing::warn!(requested = %config.bind, "local mode listens on loopback only");
        return SocketAddr::from((Ipv4Addr::LOCALHOST, config.bind.port()));
    }
    config.bind
}

/// Who may do what, from the configuration: in `serve` the configured tenant, team, channel and
/// admins; in local mode whatever is configured, and anyone on loopback otherwise.
pub(crate) fn workflow_settings(config: &Config) -> WorkflowSettings {
    let admins = (!config.security.admins.is_empty() || config.mode == Mode::Serve || config.app.is_some())
        .then(|| config.security.admins.iter().map(|a| a.to_ascii_lowercase()).collect::<HashSet<_>>());
    WorkflowSettings {
        scope: Scope {
            tenant_id: config.app.as_ref().map(|a| a.tenant_id.clone()),
            team_id: config.security.team_id.clone(),
            channel_id: config.security.channel_id.clone(),
        },
        policy: Policy {
            admins,
            require_second_approver: config.require_second_approver,
            escalation_admins: EscalationAdmins::of(config.escalation_admins.iter().cloned()),
        },
        case_ttl: config.case_ttl,
        app_id: config.app.as_ref().map(|a| a.app_id.clone()),
        revoke_ceiling: config.revoke_ceiling,
        refusals_per_minute: config.refusals_per_minute,
        require_reason: config.require_reason,
    }
}

/// Where admins' delegated tokens come from, per `CHATWARDEN_TOKEN_MODE`.
pub(crate) fn token_source(config: &Config) -> Result<TokenSource, ClientSetupError> {
    let base = config.endpoints.token_service.clone();
    let connection = config.oauth_connection.clone();
    Ok(match (config.token_mode, &config.app) {
        (TokenMode::OnBehalfOf, Some(app)) => {
            let token_url = entra_token_url(&config.endpoints.login, &app.tenant_id)?;
            TokenSource::OnBehalfOf { token_url, client_id: app.app_id.clone(), client_secret: app.password.clone(), base, connection }
        }
        _ => TokenSource::TokenService { base, connection },
    })
}

/// How often the retention sweep runs (it also runs at start).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Rows of each kind one retention batch deletes.
const RETENTION_BATCH: i64 = 1_000;

/// Deletes what is older than `retention` now and every [`RETENTION_EVERY`]. Several replicas
/// may sweep at once: each delete is idempotent.
fn spawn_retention(store: Store, retention: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let cutoff = crate::cases::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            match store.prune_before(cutoff, RETENTION_BATCH).await {
                Ok(pruned) if pruned.is_empty() => {}
                Ok(pruned) => tracing::info!(
                    audit_records = pruned.audit_records,
                    dedupe_keys = pruned.dedupe_keys,
                    poll_contents = pruned.poll_contents,
                    "retention sweep pruned old rows"
                ),
                Err(err) => tracing::error!(error = %err, "retention sweep failed; it runs again in an hour"),
            }
            tokio::time::sleep(RETENTION_EVERY).await;
        }
    })
}

/// The app-token scope of the configured Graph (`https://graph.microsoft.com/.default` in the
/// public cloud, the national cloud's host elsewhere).
pub(crate) fn graph_scope(graph: &Url) -> String {
    format!("{}/.default", graph.origin().ascii_serialization())
}

/// The Microsoft identity platform's OpenID metadata, whose keys sign Graph's validation tokens.
pub(crate) fn identity_metadata_url(login: &Url) -> Result<Url, ClientSetupError> {
    let text = format!("{}/common/v2.0/.well-known/openid-configuration", login.as_str().trim_end_matches('/'));
    Url::parse(&text).map_err(|_| ClientSetupError::Url(text))
}

/// How often the membership subscription is checked (renewal is due a day before expiry).
const SUBSCRIPTION_CHECK_EVERY: Duration = Duration::from_secs(600);

/// What change notifications share with the rest of the service.
struct NotificationServices<'a> {
    store: &'a Store,
    graph: &'a Arc<GraphClient>,
    tokens: &'a AppTokenProvider,
    ingest: &'a Arc<AuditIngest>,
    metrics: &'a Arc<Metrics>,
}

/// Starts change notifications for `app_id` in `tenant_id`: the identity platform's keys, the
/// intake, the processor and the subscription manager. Returns the intake for the endpoint and
/// the background tasks.
fn start_notifications(
    config: &Config,
    settings: &NotificationSettings,
    app_id: &str,
    tenant_id: &str,
    services: NotificationServices<'_>,
) -> anyhow::Result<(Arc<NotificationIntake>, Vec<tokio::task::JoinHandle<()>>)> {
    let NotificationServices { store, graph, tokens: graph_tokens, ingest, metrics } = services;
    let mut tasks = Vec::new();
    let keys = Arc::new(KeyStore::new(identity_metadata_url(&config.endpoints.login)?, config.key_refresh, Arc::clone(metrics))?);
    tasks.push(keys.spawn_maintenance());
    let tokens = Arc::new(ValidationTokens::new(app_id, tenant_id, keys));
    let (queue, queued) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
    let (lifecycle, lifecycle_events) = tokio::sync::mpsc::channel(1_000);
    let intake = Arc::new(NotificationIntake::new(settings.client_state.clone(), tokens, queue, lifecycle, Arc::clone(metrics)));
    let processor = Arc::new(NotificationProcessor::new(
        store.clone(),
        settings.certificates.clone(),
        Arc::clone(graph),
        graph_tokens.clone(),
        Arc::clone(ingest),
        tenant_id.to_owned(),
        Arc::clone(metrics),
    ));
    tasks.push(Arc::clone(&processor).spawn(queued));
    let subscription = SubscriptionSettings {
        notification_url: settings.url.clone(),
        model: settings.model.clone(),
        client_state: settings.client_state.clone(),
    };
    let manager = SubscriptionManager::new(
        Arc::clone(graph),
        graph_tokens.clone(),
        store.clone(),
        settings.certificates.clone(),
        subscription,
        processor,
        Arc::clone(metrics),
    );
    tasks.extend(Arc::new(manager).spawn(SUBSCRIPTION_CHECK_EVERY, lifecycle_events));
    Ok((intake, tasks))
}

impl Application {
    /// Wires every component and binds the listener (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Overrides::default()).await
    }

    /// Like [`Application::build`], with some parts replaced.
    pub async fn build_with(mut config: Config, overrides: Overrides) -> anyhow::Result<Self> {
        let bind = effective_bind(&config);
        let listener = TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
        let port = listener.local_addr().context("listener has no local address")?.port();
        let local = config.mode == Mode::Dev && config.app.is_none();
        let mut local_notifier = None;
        if local {
            let base = format!("http://127.0.0.1:{port}/_local");
            config.endpoints.token_service = Url::parse(&format!("{base}/token")).context("stand-in token service URL")?;
            config.endpoints.graph = Url::parse(&format!("{base}/graph")).context("stand-in Graph URL")?;
            let (notifier, notifications) = LocalNotifier::generate(port).context("local change notifications")?;
            config.endpoints.login = notifier.login_url()?;
            config.notifications = Some(notifications);
            local_notifier = Some(Arc::new(notifier));
            tracing::warn!(
                stand_in = "all",
                "LOCAL STAND-INS: the token service (every admin signed in), Graph (records removals, subscriptions and chat members) \
                 and the identity platform's keys are answered by chatwarden itself under {base}; the audit index is seeded with \
                 example records; POST {base}/notifications/member-added delivers an encrypted change notification. Nothing reaches \
                 Microsoft's cloud."
            );
        }
        let metrics = Arc::new(Metrics::default());
        let mut background = Vec::new();
        let (auth, tokens, allowlist) = match &config.app {
            Some(app) => {
                let keys = Arc::new(KeyStore::new(config.endpoints.openid_metadata.clone(), config.key_refresh, Arc::clone(&metrics))?);
                background.push(keys.spawn_maintenance());
                let tokens = AppTokenProvider::client_credentials(app, &config.endpoints.login, config.retry, Arc::clone(&metrics))?;
                (InboundAuth::Channel(Box::new(ChannelAuthenticator::new(&app.app_id, keys))), tokens, config.service_url_allowlist.clone())
            }
            None => {
                tracing::warn!(
                    "INBOUND AUTHENTICATION IS OFF: no MICROSOFT_APP_ID is configured (local mode). \
                     Requests are accepted without a token and replies go to loopback hosts only."
                );
                (InboundAuth::Disabled, AppTokenProvider::anonymous(), HostAllowlist::loopback_only())
            }
        };
        let store = Store::connect(config.database_url.expose_secret()).await.context("cannot open the database")?;
        tracing::info!(backend = ?store.backend(), "database ready");
        let bot_tokens = Arc::new(tokens);
        let connector = Arc::new(ConnectorClient::new(Arc::clone(&bot_tokens), config.retry, Arc::clone(&metrics))?);
        let updater = Arc::new(CardUpdater::new(Arc::clone(&connector), allowlist.clone(), config.require_reason));
        let delegated = Arc::new(DelegatedTokens::new(token_source(&config)?, bot_tokens, config.retry, Arc::clone(&metrics))?);
        let graph_retry = RetryPolicy {
            max_attempts: config.retry.max_attempts.max(4),
            max_delay: config.retry.max_delay.max(Duration::from_secs(30)),
            ..config.retry
        };
        let graph = Arc::new(
            GraphClient::new(config.endpoints.graph.clone(), graph_retry, Arc::clone(&metrics))?
                .with_removal_version(config.removal_api_version),
        );
        let executor = overrides.executor.unwrap_or_else(|| Arc::new(GraphExecutor::new(Arc::clone(&graph), Arc::clone(&delegated))));
        let runner_id = overrides.runner_id.unwrap_or_else(|| format!("runner-{:016x}", fastrand::u64(..)));
        let runner = Arc::new(CaseRunner::new(
            store.clone(),
            executor,
            updater.clone(),
            runner_id,
            config.execution.lease,
            config.execution.progress_interval,
            Arc::clone(&metrics),
        ));
        background.push(runner.spawn_sweeper(config.execution.sweep_interval));
        if let Some(retention) = config.retention {
            background.push(spawn_retention(store.clone(), retention));
        }
        if let (Some(keep), Some(secret)) = (config.history.retention, &config.history.secret) {
            let retention = HistoryRetention { keep, secret: secret.clone(), forwarding: config.history.forward.is_some() };
            background.push(retention.spawn(store.clone()));
        }
        if let Some(target) = &config.history.forward {
            let settings = ForwardSettings {
                url: target.url.clone(),
                secret: target.secret.clone(),
                timeout: config.retry.request_timeout,
                max_backoff: config.history.forward_max_backoff,
                idle: config.execution.sweep_interval.min(Duration::from_secs(1)),
            };
            background.push(Arc::new(Forwarder::new(store.clone(), settings, Arc::clone(&metrics))?).spawn());
        }
        let endpoint = Arc::new(ChannelEndpoint::new(config.service_url.as_ref().map(Url::to_string), store.clone(), allowlist.clone()));
        let alert_settings = AlertSettings {
            tenant_id: config.app.as_ref().map(|a| a.tenant_id.clone()),
            channel_id: config.security.channel_id.clone(),
            case_ttl: config.case_ttl,
            rules: config.detection.clone(),
            require_reason: config.require_reason,
        };
        let settings = workflow_settings(&config);
        let approvers = Arc::new(ApproverViews::new(
            Arc::clone(&connector) as Arc<dyn ThreadReplies>,
            settings.policy.clone(),
            config.security.team_id.clone(),
            config.require_reason,
        ));
        if let Some(before) = config.reminder_before {
            let settings = ReminderSettings {
                before,
                escalate: !config.escalation_admins.is_empty() || !config.escalation_groups.is_empty(),
                require_reason: config.require_reason,
            };
            let reminders = Reminders::new(
                store.clone(),
                Arc::clone(&connector),
                allowlist.clone(),
                Arc::clone(&approvers),
                settings,
                Arc::clone(&metrics),
            );
            background.push(Arc::new(reminders).spawn(config.execution.sweep_interval));
        }
        let audit_ingest = Arc::new(
            AuditIngest::new(store.clone(), Arc::clone(&connector), Arc::clone(&endpoint), alert_settings, Arc::clone(&metrics))
                .with_approvers(Arc::clone(&approvers)),
        );
        if let (Some(interval), Some(app)) = (config.audit_poll, &config.app) {
            let tokens = AppTokenProvider::client_credentials_for(
                app,
                &config.endpoints.login,
                MANAGEMENT_SCOPE,
                config.retry,
                Arc::clone(&metrics),
            )?;
            let settings = PollSettings {
                base: config.endpoints.management.clone(),
                tenant_id: app.tenant_id.clone(),
                interval,
                lookback: config.audit_lookback,
            };
            let poller = Arc::new(ManagementPoller::new(
                settings,
                tokens,
                store.clone(),
                Arc::clone(&audit_ingest),
                config.retry,
                Arc::clone(&metrics),
            )?);
            background.push(poller.spawn());
        }
        let graph_tokens = match &config.app {
            Some(app) => AppTokenProvider::client_credentials_for(
                app,
                &config.endpoints.login,
                &graph_scope(&config.endpoints.graph),
                config.retry,
                Arc::clone(&metrics),
            )?,
            None => AppTokenProvider::anonymous(),
        };
        // Local mode's notifications are issued for the playground's tenant and a local app id.
        let identity = match &config.app {
            Some(app) => Some((app.app_id.clone(), app.tenant_id.clone())),
            None => local_notifier.as_ref().map(|_| (LOCAL_APP_ID.to_owned(), PLAYGROUND_TENANT.to_owned())),
        };
        let notification_intake = match (&config.notifications, identity) {
            (Some(settings), Some((app_id, tenant_id))) => {
                let services =
                    NotificationServices { store: &store, graph: &graph, tokens: &graph_tokens, ingest: &audit_ingest, metrics: &metrics };
                let (intake, tasks) = start_notifications(&config, settings, &app_id, &tenant_id, services)?;
                background.extend(tasks);
                Some(intake)
            }
            _ => None,
        };
        if !config.escalation_groups.is_empty() {
            let groups = EscalationGroups::new(
                Arc::clone(&graph),
                graph_tokens.clone(),
                config.escalation_admins.clone(),
                config.escalation_groups.clone(),
                settings.policy.escalation_admins.clone(),
                Arc::clone(&metrics),
            );
            background.push(Arc::new(groups).spawn());
        }
        if let (Some(interval), Some(app)) = (config.defender_poll, &config.app) {
            let poller = DefenderPoller::new(
                Arc::clone(&graph),
                graph_tokens.clone(),
                store.clone(),
                Arc::clone(&audit_ingest),
                app.tenant_id.clone(),
                interval,
                Arc::clone(&metrics),
            );
            background.push(Arc::new(poller).spawn());
        }
        let services = WorkflowServices {
            store: store.clone(),
            replies: connector,
            runner,
            updater,
            tokens: delegated,
            directory: graph,
            endpoint,
            approvers,
            metrics: Arc::clone(&metrics),
        };
        let workflow = CaseWorkflow::new(services, settings);
        let gate = web::Data::new(InboundGate::new(auth, allowlist, config.max_body_bytes, Arc::clone(&metrics)));
        let bot = web::Data::new(Bot::new(workflow, Arc::clone(&metrics), config.commands_per_minute));
        let alerts = web::Data::new(AlertIntake {
            secret: config.alert_secret.clone(),
            max_body_bytes: config.max_body_bytes,
            ingest: audit_ingest,
            metrics: Arc::clone(&metrics),
            limiter: RateLimiter::new(config.alerts_per_minute),
            failed_limiter: RateLimiter::new(config.alerts_per_minute),
        });
        let standins = if local {
            crate::standins::seed_audit_index(&store).await;
            let standins = match local_notifier {
                Some(notifier) => StandIns::with_notifier(notifier),
                None => StandIns::default(),
            };
            Some((web::Data::new(standins), web::Data::new(Arc::clone(&alerts.ingest))))
        } else {
            None
        };
        let notifications = web::Data::new(NotificationEndpoint {
            intake: notification_intake,
            max_body_bytes: config.max_body_bytes,
            metrics: Arc::clone(&metrics),
        });
        let state = AppState { gate, bot, metrics: Arc::clone(&metrics), store: web::Data::new(store), alerts, notifications, standins };

        let server = HttpServer::new(move || build_app(state.clone()))
            .listen(listener)
            .context("cannot start the HTTP server")?
            .shutdown_timeout(30)
            .run();
        Ok(Self { port, server, background, metrics })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves until SIGTERM/SIGINT (graceful: in-flight requests finish, up to 30 s).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        for task in self.background {
            task.abort();
        }
        tracing::info!("chatwarden stopped");
        result
    }
}
