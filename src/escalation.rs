//! Escalation groups (`CHATWARDEN_ESCALATION_ADMINS=group:<id>`): the groups' transitive user
//! members, read with chatwarden's app token (`GroupMember.Read.All`), join the configured
//! escalation admins; refreshed every 15 minutes. A failed refresh keeps the last good set, so
//! Graph being down never takes anyone out, and a group that no longer exists counts as empty.

use std::sync::Arc;
use std::time::Duration;

use crate::cases::EscalationAdmins;
use crate::entra::app_token::AppTokenProvider;
use crate::graph::{GraphClient, GraphFailure};
use crate::metrics::Metrics;

/// Most members read of one group.
const MAX_GROUP_MEMBERS: usize = 1_000;
/// How often the groups are read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(15 * 60);

/// Keeps the escalation admins in step with their groups.
pub struct EscalationGroups {
    graph: Arc<GraphClient>,
    tokens: AppTokenProvider,
    fixed: Vec<String>,
    groups: Vec<String>,
    admins: EscalationAdmins,
    metrics: Arc<Metrics>,
}

impl EscalationGroups {
    /// Resolves `groups` into `admins`, beside the `fixed` object ids.
    pub fn new(
        graph: Arc<GraphClient>,
        tokens: AppTokenProvider,
        fixed: Vec<String>,
        groups: Vec<String>,
        admins: EscalationAdmins,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { graph, tokens, fixed, groups, admins, metrics }
    }

    /// Reads every group once and replaces the set; how many escalation admins there are now.
    pub async fn refresh_once(&self) -> Result<usize, GraphFailure> {
        let token =
            self.tokens.bearer().await.map_err(|err| GraphFailure { status: 0, code: format!("no app token: {err}"), receipt: None })?;
        let mut all = self.fixed.clone();
        for group in &self.groups {
            match self.graph.group_users(&token, group, MAX_GROUP_MEMBERS).await {
                Ok(Some(users)) => all.extend(users.into_iter().take(MAX_GROUP_MEMBERS).map(|u| u.id)),
                Ok(None) => tracing::warn!(group = %group, "an escalation group does not exist; it counts as empty"),
                Err(failure) => {
                    self.metrics.inc("chatwarden_escalation_refreshes_total", &[("result", "failed")]);
                    return Err(failure);
                }
            }
        }
        all.sort();
        all.dedup();
        let count = all.len();
        self.admins.replace(all);
        self.metrics.inc("chatwarden_escalation_refreshes_total", &[("result", "ok")]);
        Ok(count)
    }

    /// Refreshes now and every [`REFRESH_EVERY`].
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.refresh_once().await {
                    Ok(count) => tracing::info!(escalation_admins = count, "escalation groups read"),
                    Err(failure) => {
                        tracing::error!(status = failure.status, code = %failure.code, "escalation groups could not be read; the last set stays")
                    }
                }
                tokio::time::sleep(REFRESH_EVERY).await;
            }
        })
    }
}
