//! `$batch`: up to 20 requests in one call, each answered on its own; throttled items come back
//! with their `Retry-After` to be sent again.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GraphClient, GraphFailure, GraphReceipt, MAX_BATCH, RETRY_STATUSES, status_label};

/// One request of a `$batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// Unique id within the batch.
    pub id: String,
    /// `POST`, `GET`, ...
    pub method: &'static str,
    /// URL relative to the version root (`/chats/.../removeAllAccessForUser`).
    pub url: String,
    /// JSON body, if any.
    pub body: Option<Value>,
}

/// The outcome of one batch item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The item id.
    pub id: String,
    /// Its HTTP status.
    pub status: u16,
    /// Graph error code for failures.
    pub code: String,
    /// How long Graph asked to wait before sending it again (throttled items).
    pub retry_after: Option<Duration>,
    /// The receipt of the `$batch` call that carried it.
    pub receipt: Option<GraphReceipt>,
}

impl BatchOutcome {
    /// Whether Graph asked for this item to be sent again later (429, 503, 504).
    pub(crate) fn retryable(&self) -> bool {
        RETRY_STATUSES.iter().any(|s| s.as_u16() == self.status)
    }
}

#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    responses: Vec<BatchItemResponse>,
}

#[derive(Deserialize)]
struct BatchItemResponse {
    id: String,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
}

fn error_code(body: Option<&Value>) -> String {
    body.and_then(|b| b.get("error")).and_then(|e| e.get("code")).and_then(Value::as_str).unwrap_or_default().to_owned()
}

impl GraphClient {
    /// Sends up to `MAX_BATCH` requests as one `$batch`, once: throttled items come back as
    /// outcomes with their `Retry-After`, for the caller to send again when it chooses.
    pub async fn batch_once(&self, token: &SecretString, version: &str, items: &[BatchItem]) -> Result<Vec<BatchOutcome>, GraphFailure> {
        let items = &items[..items.len().min(MAX_BATCH)];
        let url = self.url(version, "/$batch")?;
        let requests: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut request = json!({"id": item.id, "method": item.method, "url": item.url});
                if let Some(body) = &item.body {
                    request["body"] = body.clone();
                    request["headers"] = json!({"Content-Type": "application/json"});
                }
                request
            })
            .collect();
        let payload = json!({"requests": requests});
        let (answer, body) = self.send("batch", token, || self.http.post(url.clone()).json(&payload)).await?;
        let receipt = answer.receipt;
        let parsed: BatchResponse = body
            .and_then(|b| serde_json::from_value(b).ok())
            .ok_or_else(|| GraphFailure::unreadable("invalid batch body").with_receipt(&receipt))?;
        let mut outcomes: HashMap<String, BatchOutcome> = HashMap::new();
        for response in parsed.responses {
            if !items.iter().any(|i| i.id == response.id) {
                continue;
            }
            let retry_after = response
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s).min(self.retry.max_delay));
            let outcome = BatchOutcome {
                id: response.id.clone(),
                status: response.status,
                code: error_code(response.body.as_ref()),
                retry_after,
                receipt: Some(receipt.clone()),
            };
            if !outcome.retryable() {
                self.metrics.inc("chatwarden_graph_batch_items_total", &[("status", status_label(response.status))]);
            } else {
                self.metrics.inc("chatwarden_graph_batch_items_total", &[("status", "throttled")]);
            }
            outcomes.insert(response.id, outcome);
        }
        // Items Graph did not answer at all are reported as failures, not retried blindly.
        Ok(items
            .iter()
            .map(|item| {
                outcomes.remove(&item.id).unwrap_or_else(|| BatchOutcome {
                    id: item.id.clone(),
                    status: 0,
                    code: "missing from batch response".into(),
                    retry_after: None,
                    receipt: Some(receipt.clone()),
                })
            })
            .collect())
    }

    /// Sends up to `MAX_BATCH` requests as one `$batch`, re-sending throttled items (honouring
    /// their `Retry-After`) up to the retry budget. Returns one outcome per item.
    pub async fn batch(&self, token: &SecretString, version: &str, items: &[BatchItem]) -> Result<Vec<BatchOutcome>, GraphFailure> {
        let items = &items[..items.len().min(MAX_BATCH)];
        let mut finished: HashMap<String, BatchOutcome> = HashMap::new();
        let mut pending: Vec<BatchItem> = items.to_vec();
        let mut round = 1;
        while !pending.is_empty() {
            let outcomes = self.batch_once(token, version, &pending).await?;
            let mut wait = Duration::ZERO;
            let mut again = Vec::new();
            for outcome in outcomes {
                if outcome.retryable() && round < self.retry.max_attempts {
                    wait = wait.max(outcome.retry_after.unwrap_or_else(|| crate::outbound::backoff(&self.retry, round)));
                    if let Some(item) = pending.iter().find(|i| i.id == outcome.id) {
                        again.push(item.clone());
                    }
                } else {
                    finished.insert(outcome.id.clone(), outcome);
                }
            }
            if !again.is_empty() {
                tracing::debug!(items = again.len(), wait_ms = wait.as_millis() as u64, "re-sending throttled batch items");
                tokio::time::sleep(wait).await;
            }
            pending = again;
            round += 1;
        }
        Ok(items.iter().filter_map(|item| finished.remove(&item.id)).collect())
    }
}
