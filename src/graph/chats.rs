//! A chat's members, read with chatwarden's app token (`ChatMember.Read.All`) when a membership
//! notification alone does not say who else is in the chat.

use secrecy::SecretString;
use url::Url;

use super::{GraphClient, GraphFailure};
use crate::botframework::service_url::encode_component;
use crate::notifications::ChatMember;

/// Most members read of one chat (a group chat holds at most 250 people).
const MAX_MEMBERS: usize = 1_000;

impl GraphClient {
    /// `GET /v1.0/chats/{id}/members` (paged); `None` when the chat does not exist.
    pub async fn chat_members(&self, token: &SecretString, chat_id: &str) -> Result<Option<Vec<ChatMember>>, GraphFailure> {
        let url: Url = self.url("v1.0", &format!("/chats/{}/members", encode_component(chat_id)))?;
        self.list_pages("list_chat_members", token, url, MAX_MEMBERS).await
    }
}
