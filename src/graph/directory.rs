//! Directory look-ups: a user by UPN or object id, a group's users (paged, bounded), and the
//! `Directory` seam the workflow is tested through.

use secrecy::SecretString;
use serde::Deserialize;

use super::{GraphClient, GraphFailure};
use crate::botframework::service_url::encode_component;

/// A directory user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    /// Entra object id.
    pub id: String,
    /// User principal name, when Graph returned one.
    #[serde(default)]
    pub user_principal_name: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// Directory look-ups the case workflow makes with the requester's token. A seam, so the
/// workflow's rules can be tested without Graph.
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    /// A user by UPN or object id; `None` when there is none.
    async fn user(&self, token: &SecretString, upn_or_id: &str) -> Result<Option<GraphUser>, GraphFailure>;
    /// Every transitive user member of a group, up to `max_users`; `None` when there is no such group.
    async fn group_users(&self, token: &SecretString, group_id: &str, max_users: usize) -> Result<Option<Vec<GraphUser>>, GraphFailure>;
}

#[async_trait::async_trait]
impl Directory for GraphClient {
    async fn user(&self, token: &SecretString, upn_or_id: &str) -> Result<Option<GraphUser>, GraphFailure> {
        GraphClient::user(self, token, upn_or_id).await
    }

    async fn group_users(&self, token: &SecretString, group_id: &str, max_users: usize) -> Result<Option<Vec<GraphUser>>, GraphFailure> {
        GraphClient::group_users(self, token, group_id, max_users).await
    }
}

impl GraphClient {
    /// `GET /v1.0/users/{upn}?$select=id,userPrincipalName,displayName`; `None` when not found.
    pub async fn user(&self, token: &SecretString, upn_or_id: &str) -> Result<Option<GraphUser>, GraphFailure> {
        let mut url = self.url("v1.0", &format!("/users/{}", encode_component(upn_or_id)))?;
        url.query_pairs_mut().append_pair("$select", "id,userPrincipalName,displayName");
        match self.send("get_user", token, || self.http.get(url.clone())).await {
            Ok((_, Some(body))) => serde_json::from_value(body).map(Some).map_err(|_| GraphFailure::unreadable("invalid user body")),
            Ok((_, None)) => Err(GraphFailure::unreadable("empty user body")),
            Err(GraphFailure { status: 404, .. }) => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    /// Every transitive user member of a group, following `@odata.nextLink` (on the Graph host
    /// only), up to `max_users` users; `None` when the group does not exist.
    pub async fn group_users(
        &self,
        token: &SecretString,
        group_id: &str,
        max_users: usize,
    ) -> Result<Option<Vec<GraphUser>>, GraphFailure> {
        let mut url = self.url("v1.0", &format!("/groups/{}/transitiveMembers/microsoft.graph.user", encode_component(group_id)))?;
        url.query_pairs_mut().append_pair("$select", "id,userPrincipalName,displayName").append_pair("$top", "999");
        self.list_pages("list_group_users", token, url, max_users).await
    }
}
