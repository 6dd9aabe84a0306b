//! Directory look-ups: a user by UPN or object id, a group's users (paged, bounded), and the
//! `Directory` seam the workflow is tested through.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

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
        let mut users = Vec::new();
        let mut next = Some(url);
        while let Some(page) = next.take() {
            let body = match self.send("list_group_users", token, || self.http.get(page.clone())).await {
                Ok((_, Some(body))) => body,
                Ok((_, None)) => return Err(GraphFailure::unreadable("empty group page")),
                Err(GraphFailure { status: 404, .. }) if users.is_empty() => return Ok(None),
                Err(failure) => return Err(failure),
            };
            let members: Vec<GraphUser> = body
                .get("value")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| GraphFailure::unreadable("invalid group page"))?;
            users.extend(members);
            if users.len() > max_users {
                break;
            }
            next = match body.get("@odata.nextLink").and_then(Value::as_str) {
                Some(link) => {
                    let link = Url::parse(link).map_err(|_| GraphFailure::unreadable("invalid next link"))?;
                    if link.origin() != self.base.origin() {
                        return Err(GraphFailure::unreadable("next link outside Graph"));
                    }
                    Some(link)
                }
                None => None,
            };
        }
        Ok(Some(users))
    }
}
