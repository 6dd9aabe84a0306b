//! Builds the running service from a [`Config`]: clients, key store, bot, listener.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{HttpServer, web};
use anyhow::Context as _;

use crate::bot::Bot;
use crate::botframework::auth::ChannelAuthenticator;
use crate::botframework::bot_token::BotTokenProvider;
use crate::botframework::connector::ConnectorClient;
use crate::botframework::inbound::{InboundAuth, InboundGate};
use crate::botframework::keys::KeyStore;
use crate::botframework::service_url::HostAllowlist;
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::server::{AppState, build_app};

/// A built, bound, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    background: Vec<tokio::task::JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

/// Local mode never listens beyond loopback: keep the port, force the address.
pub fn effective_bind(config: &Config) -> SocketAddr {
    if config.mode == Mode::Dev && !config.bind.ip().is_loopback() {
        tracing::warn!(requested = %config.bind, "local mode listens on loopback only");
        return SocketAddr::from((Ipv4Addr::LOCALHOST, config.bind.port()));
    }
    config.bind
}

impl Application {
    /// Wires every component and binds the listener (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let mut background = Vec::new();
        let (auth, tokens, allowlist) = match &config.app {
            Some(app) => {
                let keys = Arc::new(KeyStore::new(config.endpoints.openid_metadata.clone(), config.key_refresh, Arc::clone(&metrics)));
                background.push(keys.spawn_maintenance());
                let tokens = BotTokenProvider::client_credentials(app, &config.endpoints.login, config.retry, Arc::clone(&metrics));
                (InboundAuth::Channel(Box::new(ChannelAuthenticator::new(&app.app_id, keys))), tokens, config.service_url_allowlist.clone())
            }
            None => {
                tracing::warn!(
                    "INBOUND AUTHENTICATION IS OFF: no MICROSOFT_APP_ID is configured (local mode). \
                     Requests are accepted without a token and replies go to loopback hosts only."
                );
                (InboundAuth::Disabled, BotTokenProvider::anonymous(), HostAllowlist::loopback_only())
            }
        };
        let gate = web::Data::new(InboundGate { auth, allowlist, max_body_bytes: config.max_body_bytes, metrics: Arc::clone(&metrics) });
        let connector = ConnectorClient::new(tokens, config.retry, Arc::clone(&metrics));
        let bot = web::Data::new(Bot::new(connector, Arc::clone(&metrics)));
        let state = AppState { gate, bot, metrics: Arc::clone(&metrics) };

        let bind = effective_bind(&config);
        let listener = TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
        let port = listener.local_addr().context("listener has no local address")?.port();
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
