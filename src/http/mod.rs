//! The HTTP edge: the actix-web app, its routes, request ids and the one error table. Handlers
//! live beside it: `messages` (Teams), `alerts` (signed audit pushes), `notifications` (Graph
//! change notifications), `health` (health, readiness, metrics).

mod alerts;
mod error;
mod health;
mod messages;
mod notifications;
mod request_context;

use std::sync::Arc;

use actix_web::{HttpResponse, web};

use crate::alerts::AuditIngest;
use crate::bot::Bot;
use crate::botframework::inbound::InboundGate;
use crate::metrics::Metrics;
use crate::standins::StandIns;
use crate::store::Store;

pub(crate) use alerts::AlertIntake;
pub use error::ApiError;
pub(crate) use notifications::NotificationEndpoint;

/// Shared state of the running service (cheap to clone: every field is shared).
#[derive(Clone)]
pub(crate) struct AppState {
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
    /// Graph change notifications.
    pub notifications: web::Data<NotificationEndpoint>,
    /// Local mode's stand-ins for the cloud (`None` outside `chatwarden dev`).
    pub standins: Option<(web::Data<StandIns>, web::Data<Arc<AuditIngest>>)>,
}

/// Registers every route on an actix-web app (the same function in production and tests).
pub(crate) fn configure(state: &AppState) -> impl Fn(&mut web::ServiceConfig) + Clone + 'static {
    let gate = state.gate.clone();
    let bot = state.bot.clone();
    let metrics = web::Data::from(Arc::clone(&state.metrics));
    let store = state.store.clone();
    let alerts = state.alerts.clone();
    let notifications = state.notifications.clone();
    let standins = state.standins.clone();
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(gate.clone())
            .app_data(bot.clone())
            .app_data(metrics.clone())
            .app_data(store.clone())
            .app_data(alerts.clone())
            .app_data(notifications.clone())
            .service(
                web::resource("/api/notifications")
                    .route(web::post().to(notifications::notifications))
                    .default_service(web::to(|| async { not_allowed("POST") })),
            )
            .service(
                web::resource("/api/notifications/lifecycle")
                    .route(web::post().to(notifications::lifecycle))
                    .default_service(web::to(|| async { not_allowed("POST") })),
            )
            .service(
                web::resource("/api/alerts")
                    .route(web::post().to(alerts::alerts_endpoint))
                    .default_service(web::to(|| async { not_allowed("POST") })),
            )
            .service(
                web::resource("/api/messages")
                    .route(web::post().to(messages::messages))
                    .default_service(web::to(|| async { not_allowed("POST") })),
            )
            .service(
                web::resource("/healthz").route(web::get().to(health::healthz)).default_service(web::to(|| async { not_allowed("GET") })),
            )
            .service(
                web::resource("/readyz").route(web::get().to(health::readyz)).default_service(web::to(|| async { not_allowed("GET") })),
            )
            .service(
                web::resource("/metrics")
                    .route(web::get().to(health::metrics_text))
                    .default_service(web::to(|| async { not_allowed("GET") })),
            );
        if let Some((state, ingest)) = &standins {
            crate::standins::configure(cfg, state.clone(), ingest.clone());
        }
        cfg.default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::NotFound) }));
    }
}

fn not_allowed(allowed: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(allowed))
}

/// Builds the complete app: tracing with a request id (echoed as `x-request-id`) and the routes.
pub(crate) fn build_app(
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
    actix_web::App::new().wrap_fn(request_context::in_request_context).configure(configure(&state))
}
