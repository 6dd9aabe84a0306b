//! Answers only one person sees. In a channel or group chat, a targeted message (Teams shows it
//! in the conversation to that one member, tagged "Only you can see this message"; in public
//! developer preview); where Teams refuses one, a message in the bot's one-to-one chat with them.
//! In a personal chat every answer is private already.

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::activity::{Activity, ChannelAccount, ConversationAccount, OutgoingActivity};
use super::connector::{ConnectorClient, ConnectorError, ConversationResourceResponse, ResourceResponse};
use super::service_url::AllowedServiceUrl;

/// How a private answer reached its person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateRoute {
    /// A targeted message in the conversation the person wrote in.
    Targeted,
    /// A message in the bot's one-to-one chat with the person.
    Personal,
}

impl PrivateRoute {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PrivateRoute::Targeted => "targeted",
            PrivateRoute::Personal => "personal",
        }
    }
}

/// `POST /v3/conversations` for a one-to-one chat between the bot and one member.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NewPersonalChat<'a> {
    is_group: bool,
    bot: &'a ChannelAccount,
    members: [&'a ChannelAccount; 1],
    tenant_id: &'a str,
    channel_data: Value,
}

/// Whether `activity` came from a conversation other people see (a channel or a group chat).
pub(crate) fn is_shared(activity: &Activity) -> bool {
    activity.conversation.as_ref().and_then(|c| c.conversation_type.as_deref()).is_some_and(|kind| kind != "personal")
}

impl ConnectorClient {
    /// Sends a targeted message: `activity` (its `recipient` the one member) in `conversation_id`.
    pub async fn send_targeted(
        &self,
        service_url: &AllowedServiceUrl,
        conversation_id: &str,
        activity: &OutgoingActivity,
    ) -> Result<ResourceResponse, ConnectorError> {
        let mut url = service_url.join(&["v3", "conversations", conversation_id, "activities"]);
        url.set_query(Some("isTargetedActivity=true"));
        self.call("send_targeted", Method::POST, url, Some(activity)).await
    }

    /// Opens (or finds) the bot's one-to-one chat with `member` and sends `text` there.
    async fn send_personal(
        &self,
        service_url: &AllowedServiceUrl,
        to: &Activity,
        member: &ChannelAccount,
        activity: &OutgoingActivity,
    ) -> Result<ResourceResponse, ConnectorError> {
        let bot = to.recipient.clone().unwrap_or_default();
        let tenant = to.tenant_id().unwrap_or_default();
        let chat = NewPersonalChat {
            is_group: false,
            bot: &bot,
            members: [member],
            tenant_id: tenant,
            channel_data: serde_json::json!({"tenant": {"id": tenant}}),
        };
        let url = service_url.join(&["v3", "conversations"]);
        let created: ConversationResourceResponse = self.call("create_personal_chat", Method::POST, url, Some(&chat)).await?;
        let Some(chat_id) = created.id.filter(|id| !id.is_empty()) else {
            return Err(ConnectorError::Status { status: 502, code: "no conversation id".into() });
        };
        let mut message = activity.clone();
        message.reply_to_id = None;
        message.conversation = Some(ConversationAccount { id: chat_id.clone(), ..ConversationAccount::default() });
        self.send_to_conversation(service_url, &chat_id, &message).await
    }

    /// Sends `activity` (an answer to `to`) so only `to`'s sender sees it: targeted where the
    /// conversation is shared, else (or when Teams refuses the targeted message) in their
    /// one-to-one chat with the bot.
    pub async fn send_privately(
        &self,
        service_url: &AllowedServiceUrl,
        to: &Activity,
        activity: &OutgoingActivity,
    ) -> Result<PrivateRoute, ConnectorError> {
        let (Some(member), Some(conversation)) = (to.from.as_ref(), to.conversation.as_ref()) else {
            return Err(ConnectorError::Status { status: 400, code: "no sender or conversation".into() });
        };
        if is_shared(to) {
            let mut targeted = activity.clone();
            targeted.recipient = Some(member.clone());
            match self.send_targeted(service_url, &conversation.id, &targeted).await {
                Ok(_) => return Ok(PrivateRoute::Targeted),
                Err(err) => tracing::info!(error = %err, "Teams refused a targeted message; answering in the personal chat"),
            }
        }
        self.send_personal(service_url, to, member, activity).await?;
        Ok(PrivateRoute::Personal)
    }
}
