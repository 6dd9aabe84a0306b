//! The Office 365 Management Activity API poller: pulls `Audit.General` content, keeps the Teams
//! records and hands them to audit ingestion (`AuditIngest`).
//!
//! Windows are checkpointed in the database only once fully processed, and each content blob is
//! remembered once ingested, so a restart neither loses nor duplicates records (records are also
//! deduplicated by id). Only one replica polls at a time (PostgreSQL advisory lock). The app
//! token (scope `https://manage.office.com/.default`) only goes to the configured host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use super::record::{AuditParseError, AuditRecord};
use crate::alerts::AuditIngest;
use crate::cases::now_ms;
use crate::config::RetryPolicy;
use crate::entra::app_token::AppTokenProvider;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Checkpoint name of this source.
pub const SOURCE: &str = "management_api:Audit.General";
/// The Management API keeps content for 7 days and answers windows of at most 24 hours.
const MAX_WINDOW_MS: i64 = 24 * 3600 * 1000;
const MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000 - 3600 * 1000;

/// Why a poll failed (the checkpoint stays where it was).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The app token could not be obtained.
    #[error("management API token: {0}")]
    Token(String),
    /// The Management API failed or refused.
    #[error("management API answered HTTP {status} for {what}")]
    Status {
        /// What was asked.
        what: &'static str,
        /// HTTP status.
        status: u16,
    },
    /// Transport failure.
    #[error("management API unreachable: {0}")]
    Network(String),
    /// A URL handed out by the API points elsewhere; it is not followed.
    #[error("management API returned a URL outside {0}")]
    ForeignUrl(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Content blobs fetched.
    pub contents: usize,
    /// Teams records handed to audit ingestion (`AuditIngest`).
    pub records: usize,
    /// Cases opened.
    pub cases: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    content_uri: String,
    content_id: String,
}

/// Poller settings.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// Management API base URL.
    pub base: Url,
    /// Our tenant.
    pub tenant_id: String,
    /// Time between polls.
    pub interval: Duration,
    /// How far back the first poll looks.
    pub lookback: Duration,
}

/// Pulls Teams audit records from the Management Activity API.
pub struct ManagementPoller {
    http: reqwest::Client,
    settings: PollSettings,
    tokens: AppTokenProvider,
    store: Store,
    alerts: Arc<AuditIngest>,
    retry: RetryPolicy,
    subscribed: AtomicBool,
    metrics: Arc<Metrics>,
}

fn format_time(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok().and_then(|t| t.format(&format).ok()).unwrap_or_default()
}

impl ManagementPoller {
    /// A poller that authenticates with `tokens` (scope `https://manage.office.com/.default`).
    pub fn new(
        settings: PollSettings,
        tokens: AppTokenProvider,
        store: Store,
        alerts: Arc<AuditIngest>,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::outbound::ClientSetupError> {
        Ok(Self {
            http: crate::outbound::build_client(retry.request_timeout)?,
            settings,
            tokens,
            store,
            alerts,
            retry,
            subscribed: AtomicBool::new(false),
            metrics,
        })
    }

    fn feed_url(&self, tail: &str) -> Result<Url, PollError> {
        let base = self.settings.base.as_str().trim_end_matches('/');
        let tenant = crate::botframework::service_url::encode_component(&self.settings.tenant_id);
        Url::parse(&format!("{base}/api/v1.0/{tenant}/activity/feed/{tail}")).map_err(|_| PollError::ForeignUrl(base.to_owned()))
    }

    /// A URL handed out by the API, followed only if it is on the configured host.
    fn same_host(&self, text: &str) -> Result<Url, PollError> {
        let url = Url::parse(text).map_err(|_| PollError::ForeignUrl(self.settings.base.to_string()))?;
        let base = &self.settings.base;
        if url.scheme() == base.scheme() && url.host_str() == base.host_str() && url.port_or_known_default() == base.port_or_known_default()
        {
            Ok(url)
        } else {
            Err(PollError::ForeignUrl(base.to_string()))
        }
    }

    async fn send(&self, what: &'static str, request: impl Fn(&str) -> reqwest::RequestBuilder) -> Result<reqwest::Response, PollError> {
        let token = self
            .tokens
            .token()
            .await
            .map_err(|e| PollError::Token(e.to_string()))?
            .ok_or_else(|| PollError::Token("no app registration".into()))?;
        let statuses = [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ];
        crate::outbound::send_with_retry(&self.retry, &statuses, true, || request(token.expose_secret())).await.map_err(|e| {
            self.metrics.inc("chatwarden_management_calls_total", &[("call", what), ("result", "network_error")]);
            PollError::Network(e.without_url().to_string())
        })
    }

    async fn ensure_subscription(&self) -> Result<(), PollError> {
        if self.subscribed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut url = self.feed_url("subscriptions/start")?;
        url.query_pairs_mut().append_pair("contentType", "Audit.General");
        let response =
            self.send("start_subscription", |token| self.http.post(url.clone()).bearer_auth(token).header("content-length", "0")).await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        // AF20024: the subscription is already enabled. Starting is idempotent for us.
        if status.is_success() || (status == StatusCode::BAD_REQUEST && body.contains("AF20024")) {
            self.subscribed.store(true, Ordering::Release);
            return Ok(());
        }
        self.metrics.inc("chatwarden_management_calls_total", &[("call", "start_subscription"), ("result", "error")]);
        Err(PollError::Status { what: "subscriptions/start", status: status.as_u16() })
    }

    /// Polls one window (from the checkpoint, at most 24 h) and advances the checkpoint when
    /// every content blob of it was ingested.
    pub async fn poll_once(&self) -> Result<PollReport, PollError> {
        self.ensure_subscription().await?;
        let now = now_ms();
        let start = self.store.checkpoint(SOURCE).await?.unwrap_or(now - self.settings.lookback.as_millis() as i64).max(now - MAX_AGE_MS);
        let end = (start + MAX_WINDOW_MS).min(now);
        let mut report = PollReport::default();
        if end <= start {
            return Ok(report);
        }
        let mut page = self.feed_url("subscriptions/content")?;
        page.query_pairs_mut()
            .append_pair("contentType", "Audit.General")
            .append_pair("startTime", &format_time(start))
            .append_pair("endTime", &format_time(end));
        let mut next = Some(page);
        while let Some(url) = next.take() {
            let response = self.send("list_content", |token| self.http.get(url.clone()).bearer_auth(token)).await?;
            if !response.status().is_success() {
                self.metrics.inc("chatwarden_management_calls_total", &[("call", "list_content"), ("result", "error")]);
                return Err(PollError::Status { what: "subscriptions/content", status: response.status().as_u16() });
            }
            next = match response.headers().get("NextPageUri").and_then(|v| v.to_str().ok()) {
                Some(uri) if !uri.is_empty() => Some(self.same_host(uri)?),
                _ => None,
            };
            let contents: Vec<Content> = response.json().await.map_err(|e| PollError::Network(e.without_url().to_string()))?;
            for content in contents {
                if self.store.content_seen(&content.content_id).await? {
                    continue;
                }
                let blob_url = self.same_host(&content.content_uri)?;
                let response = self.send("fetch_content", |token| self.http.get(blob_url.clone()).bearer_auth(token)).await?;
                if !response.status().is_success() {
                    self.metrics.inc("chatwarden_management_calls_total", &[("call", "fetch_content"), ("result", "error")]);
                    return Err(PollError::Status { what: "content blob", status: response.status().as_u16() });
                }
                let body = response.bytes().await.map_err(|e| PollError::Network(e.without_url().to_string()))?;
                let items: Vec<&RawValue> =
                    serde_json::from_slice(&body).map_err(|e| PollError::Network(format!("content blob is not a JSON array: {e}")))?;
                let records = self.teams_records(items);
                report.records += records.len();
                let ingested = self.alerts.ingest(records, "poll").await?;
                report.cases += ingested.cases.len();
                self.store.mark_content(&content.content_id, now_ms()).await?;
                report.contents += 1;
            }
        }
        self.store.set_checkpoint(SOURCE, end, now_ms()).await?;
        self.metrics.inc("chatwarden_management_calls_total", &[("call", "poll"), ("result", "ok")]);
        Ok(report)
    }

    /// The Teams records of our tenant among a content blob's items (which hold every workload).
    fn teams_records(&self, items: Vec<&RawValue>) -> Vec<AuditRecord> {
        items
            .into_iter()
            .filter_map(|item| match AuditRecord::from_json(item.get()) {
                Ok(record) if record.organization_id.eq_ignore_ascii_case(&self.settings.tenant_id) => Some(record),
                Err(AuditParseError::NotTeams(_)) => None,
                Ok(_) => {
                    tracing::warn!("skipping a polled record of another tenant");
                    None
                }
                Err(err) => {
                    tracing::warn!(error = %err, "skipping a polled record that does not parse");
                    None
                }
            })
            .collect()
    }

    /// Polls every interval; only the replica holding the poll lock works.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let poller = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match poller.store.with_poll_lock(poller.poll_once()).await {
                    Ok(Some(Ok(report))) => {
                        tracing::info!(contents = report.contents, records = report.records, cases = report.cases, "audit poll done")
                    }
                    Ok(Some(Err(err))) => tracing::warn!(error = %err, "audit poll failed; the window will be retried"),
                    Ok(None) => tracing::debug!("another replica is polling"),
                    Err(err) => tracing::warn!(error = %err, "could not take the poll lock"),
                }
                tokio::time::sleep(poller.settings.interval).await;
            }
        })
    }
}
