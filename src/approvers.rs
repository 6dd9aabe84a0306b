//! Who can act on a case's card, and what each viewer sees (Universal Actions user-specific
//! views). A proposed case's card is posted as a read-only status for everyone, with a `refresh`
//! naming the Teams accounts of the admins who may decide it; when one of them looks at it,
//! Teams asks for their view (`refresh` invoke) and gets the buttons. The requester, when a
//! second approver is required, and everyone else see the status only.
//!
//! The card stays universal (buttons for everyone; the server decides who may press them, as on
//! every decision anyway) in local mode, without a security team, with more eligible admins than
//! the 60 accounts Teams allows, or when no account could be resolved: nobody is ever locked out
//! by a lookup that failed. A refresh invoke is still answered per caller (buttons only for who
//! may decide). Accounts are the admins' own (learned from their activities) or
//! resolved from their Entra object ids through the Connector, and cached for an hour.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::botframework::connector::ThreadReplies;
use crate::botframework::service_url::AllowedServiceUrl;
use crate::cards;
use crate::cases::{Actor, Case, CaseState, Policy};

/// Most accounts a card's `refresh.userIds` may name (a Teams limit).
pub(crate) const MAX_REFRESH_USERS: usize = 60;

/// Builds the card each viewer of a case sees.
pub struct ApproverViews {
    members: Arc<dyn ThreadReplies>,
    policy: Policy,
    team_id: Option<String>,
    require_reason: bool,
    accounts: moka::future::Cache<String, Option<(String, String)>>,
}

impl ApproverViews {
    /// Views for cases decided under `policy` in `team_id`, accounts looked up through `members`.
    pub fn new(members: Arc<dyn ThreadReplies>, policy: Policy, team_id: Option<String>, require_reason: bool) -> Self {
        let accounts = moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(3600)).build();
        Self { members, policy, team_id, require_reason, accounts }
    }

    /// Remembers the Teams account an admin's own activity came from.
    pub async fn learn(&self, actor: &Actor) {
        let known = self.policy.is_admin(&actor.oid) || self.policy.is_escalation_admin(&actor.oid);
        if actor.user_id.starts_with("29:") && known {
            self.accounts.insert(actor.oid.to_ascii_lowercase(), Some((actor.user_id.clone(), actor.name.clone()))).await;
        }
    }

    /// Whether `actor` may decide `case` (an admin, and not its requester under four-eyes).
    fn may_decide(&self, case: &Case, actor: &Actor) -> bool {
        self.policy.is_admin(&actor.oid) && !(self.policy.require_second_approver && case.requester.oid.eq_ignore_ascii_case(&actor.oid))
    }

    /// The Teams account and name of each of `oids` that can be found (cached, else looked up).
    async fn accounts_of(&self, oids: &[&String], service_url: &AllowedServiceUrl) -> Vec<(String, String)> {
        let Some(team) = &self.team_id else { return Vec::new() };
        let lookups = oids.iter().map(|oid| async move {
            let key = oid.to_ascii_lowercase();
            if let Some(known) = self.accounts.get(&key).await {
                return known;
            }
            match self.members.team_member_account(service_url, team, oid).await {
                Ok(account) => {
                    self.accounts.insert(key, account.clone()).await;
                    account
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not look up an admin's Teams account");
                    None
                }
            }
        });
        let mut accounts: Vec<(String, String)> = futures_util::future::join_all(lookups).await.into_iter().flatten().collect();
        accounts.sort();
        accounts.dedup_by(|a, b| a.0 == b.0);
        accounts
    }

    /// The Teams accounts (and names) of the admins who may decide `case`, or `None` when its
    /// card must stay universal (see the module's documentation).
    pub(crate) async fn approver_accounts(&self, case: &Case, service_url: &AllowedServiceUrl) -> Option<Vec<(String, String)>> {
        let (Some(admins), Some(_)) = (&self.policy.admins, &self.team_id) else { return None };
        let eligible: Vec<&String> =
            admins.iter().filter(|oid| !(self.policy.require_second_approver && case.requester.oid.eq_ignore_ascii_case(oid))).collect();
        if eligible.is_empty() || eligible.len() > MAX_REFRESH_USERS {
            return None;
        }
        let accounts = self.accounts_of(&eligible, service_url).await;
        (!accounts.is_empty()).then_some(accounts)
    }

    /// The Teams accounts (and names) of the escalation admins that can be found, at most
    /// [`MAX_REFRESH_USERS`] of them (a large group is escalated to, not mentioned whole).
    pub(crate) async fn escalation_accounts(&self, service_url: &AllowedServiceUrl) -> Vec<(String, String)> {
        let all = self.policy.escalation_admins.snapshot();
        let oids: Vec<&String> = all.iter().take(MAX_REFRESH_USERS).collect();
        self.accounts_of(&oids, service_url).await
    }

    async fn refresh_accounts(&self, case: &Case, service_url: &AllowedServiceUrl) -> Option<Vec<String>> {
        self.approver_accounts(case, service_url).await.map(|accounts| accounts.into_iter().map(|(id, _)| id).collect())
    }

    /// The card posted for `case`: while it is proposed, the status for everyone with a refresh
    /// for its approvers (or the universal approval card); once decided, its result.
    pub async fn posted_card(&self, case: &Case, service_url: &AllowedServiceUrl) -> Value {
        if case.state != CaseState::Proposed {
            return cards::result_card(case);
        }
        match self.refresh_accounts(case, service_url).await {
            Some(accounts) => cards::with_refresh(cards::waiting_card(case, None), &case.id, &accounts),
            None => cards::approval_card(case, self.require_reason),
        }
    }

    /// The card `viewer` sees when Teams refreshes `case`'s card for them (`None`: a member of
    /// the channel who is not an admin). The server still checks every decision.
    pub async fn view_for(&self, case: &Case, viewer: Option<&Actor>, service_url: &AllowedServiceUrl) -> Value {
        if case.state != CaseState::Proposed {
            return cards::result_card(case);
        }
        // Whoever asks gets what they may do, also when the posted card is universal (a refresh
        // then comes from a client or a caller that was not asked to refresh).
        let card = match viewer {
            Some(actor) if self.may_decide(case, actor) => cards::approval_card(case, self.require_reason),
            Some(actor) if self.policy.is_admin(&actor.oid) => {
                cards::waiting_card(case, Some("You asked for this case: another admin must approve it."))
            }
            _ => cards::waiting_card(case, None),
        };
        match self.refresh_accounts(case, service_url).await {
            Some(accounts) => cards::with_refresh(card, &case.id, &accounts),
            None => card,
        }
    }
}
