//! Serde types for Bot Framework activities as Teams sends them, and for the bot's own messages.
//!
//! Parsing is tolerant of unknown fields (Teams adds them over time) and strict about the few
//! fields the bot relies on: `type` is required, every other field is optional here and checked
//! where it is used.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An inbound activity (message, invoke, conversationUpdate, ...).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// `message`, `invoke`, `conversationUpdate`, `installationUpdate`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Activity id (used for replies and for dedupe).
    #[serde(default)]
    pub id: Option<String>,
    /// Invoke name (`adaptiveCard/action`, `signin/verifyState`, ...).
    #[serde(default)]
    pub name: Option<String>,
    /// ISO 8601 timestamp.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Bot Connector endpoint for replies to this conversation.
    #[serde(default)]
    pub service_url: Option<String>,
    /// Channel id (`msteams`).
    #[serde(default)]
    pub channel_id: Option<String>,
    /// Sender.
    #[serde(default)]
    pub from: Option<ChannelAccount>,
    /// Conversation the activity belongs to.
    #[serde(default)]
    pub conversation: Option<ConversationAccount>,
    /// The bot.
    #[serde(default)]
    pub recipient: Option<ChannelAccount>,
    /// Message text (may contain `<at>..</at>` mentions and HTML entities).
    #[serde(default)]
    pub text: Option<String>,
    /// `plain`, `markdown` or `xml`.
    #[serde(default)]
    pub text_format: Option<String>,
    /// Entities (mentions, client info).
    #[serde(default)]
    pub entities: Vec<Entity>,
    /// Id of the activity this one replies to (the card for card actions).
    #[serde(default)]
    pub reply_to_id: Option<String>,
    /// Card action data (Action.Submit) or invoke value.
    #[serde(default)]
    pub value: Option<Value>,
    /// Teams-specific data: tenant, team, channel, event type.
    #[serde(default)]
    pub channel_data: Option<TeamsChannelData>,
    /// Members added (conversationUpdate).
    #[serde(default)]
    pub members_added: Vec<ChannelAccount>,
}

/// A user or bot.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelAccount {
    /// Channel-specific id (`29:...` for users, `28:...` for bots).
    #[serde(default)]
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Entra object id of a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad_object_id: Option<String>,
}

/// The conversation of an activity.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConversationAccount {
    /// Conversation id (`19:...@thread.tacv2;messageid=...` in a channel thread).
    #[serde(default)]
    pub id: String,
    /// `personal`, `groupChat` or `channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_type: Option<String>,
    /// Tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Whether it has more than two members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_group: Option<bool>,
}

/// An entity attached to an activity; only mentions are interpreted.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    /// `mention`, `clientInfo`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// For mentions: the `<at>Name</at>` text as it appears in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// For mentions: who is mentioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentioned: Option<ChannelAccount>,
}

/// An id holder (`{"id": ...}`) as Teams nests them in `channelData`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdRef {
    /// The id.
    #[serde(default)]
    pub id: String,
    /// Display name, when Teams sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Teams `channelData`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TeamsChannelData {
    /// Tenant of the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<IdRef>,
    /// Team (team conversations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<IdRef>,
    /// Channel (team conversations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<IdRef>,
    /// Event type of a conversationUpdate (`teamMemberAdded`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
}

impl Activity {
    /// The message text with every mention of the bot removed, HTML entities decoded and
    /// whitespace trimmed. Mentions are found through the `entities` array (never by guessing
    /// from display text); a stray leading `<at>..</at>` left by a client is removed too.
    pub fn text_without_bot_mention(&self) -> String {
        let mut text = self.text.clone().unwrap_or_default();
        let bot_id = self.recipient.as_ref().map(|r| r.id.as_str());
        for entity in &self.entities {
            let mentions_bot = entity.kind == "mention" && entity.mentioned.as_ref().map(|m| m.id.as_str()) == bot_id && bot_id.is_some();
            if let (true, Some(mention)) = (mentions_bot, entity.text.as_deref()) {
                if !mention.is_empty() {
                    text = text.replacen(mention, " ", 1);
                }
            }
        }
        let text = decode_html_entities(&text);
        let trimmed = text.trim();
        let trimmed = strip_leading_at_tag(trimmed);
        trimmed.trim().to_owned()
    }

    /// The tenant id from `channelData.tenant.id`, else `conversation.tenantId`.
    pub fn tenant_id(&self) -> Option<&str> {
        self.channel_data
            .as_ref()
            .and_then(|d| d.tenant.as_ref())
            .map(|t| t.id.as_str())
            .or_else(|| self.conversation.as_ref().and_then(|c| c.tenant_id.as_deref()))
            .filter(|t| !t.is_empty())
    }
}

fn strip_leading_at_tag(text: &str) -> &str {
    if let Some(rest) = text.strip_prefix("<at>") {
        if let Some(end) = rest.find("</at>") {
            return &rest[end + "</at>".len()..];
        }
    }
    text
}

/// Decodes the HTML entities Teams puts in message text (`&nbsp;`, `&amp;`, numeric ones).
pub(crate) fn decode_html_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let decoded = tail.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &tail[1..end];
            let ch = match name {
                "nbsp" => Some(' '),
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                    .and_then(char::from_u32),
            };
            ch.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(if c == '\u{a0}' { ' ' } else { c });
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A message the bot sends (reply, proactive post or card update).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingActivity {
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Set when updating an existing activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Text (markdown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `markdown` or `plain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_format: Option<&'static str>,
    /// Cards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// The activity replied to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to_id: Option<String>,
    /// The bot (sender).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<ChannelAccount>,
    /// The conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationAccount>,
    /// The user replied to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<ChannelAccount>,
    /// Mentions (`<at>Name</at>` in the text, each with the account it names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<Value>,
}

/// A card attachment.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `application/vnd.microsoft.card.adaptive`, ...
    pub content_type: String,
    /// The card JSON.
    pub content: Value,
}

impl OutgoingActivity {
    /// The same message mentioning each (Teams account, display name): `<at>name</at>` appended
    /// to its text, and the mention entity Teams needs for each. Names are used as given: the
    /// caller makes untrusted ones plain.
    pub(crate) fn mentioning(mut self, people: &[(String, String)]) -> Self {
        let mut text = self.text.take().unwrap_or_default();
        for (account, name) in people {
            let tag = format!("<at>{name}</at>");
            text.push(' ');
            text.push_str(&tag);
            self.entities.push(serde_json::json!({"type": "mention", "text": tag, "mentioned": {"id": account, "name": name}}));
        }
        self.text = Some(text);
        self
    }

    /// A markdown text reply to `to`, addressed back to its sender in the same conversation.
    pub fn reply_text(to: &Activity, text: impl Into<String>) -> Self {
        Self {
            kind: "message",
            id: None,
            text: Some(text.into()),
            text_format: Some("markdown"),
            attachments: Vec::new(),
            reply_to_id: to.id.clone(),
            from: to.recipient.clone(),
            conversation: to.conversation.clone(),
            recipient: to.from.clone(),
            entities: Vec::new(),
        }
    }

    /// Teams' typing indicator in `to`'s conversation (in a channel: its thread).
    pub(crate) fn typing(to: &Activity) -> Self {
        let mut typing = Self::reply_text(to, String::new());
        typing.kind = "typing";
        typing.text = None;
        typing.text_format = None;
        typing
    }

    /// A reply to `to` that carries one adaptive card.
    pub(crate) fn reply_card(to: &Activity, card: Value) -> Self {
        let mut reply = Self::reply_text(to, String::new());
        reply.text = None;
        reply.text_format = None;
        reply.attachments = vec![Attachment { content_type: "application/vnd.microsoft.card.adaptive".into(), content: card }];
        reply
    }

    /// A full replacement of the card activity `activity_id` in `conversation_id`.
    pub(crate) fn card_update(activity_id: &str, conversation_id: &str, card: Value) -> Self {
        Self {
            kind: "message",
            id: Some(activity_id.to_owned()),
            text: None,
            text_format: None,
            attachments: vec![Attachment { content_type: "application/vnd.microsoft.card.adaptive".into(), content: card }],
            reply_to_id: None,
            from: None,
            conversation: Some(ConversationAccount { id: conversation_id.to_owned(), ..ConversationAccount::default() }),
            recipient: None,
            entities: Vec::new(),
        }
    }

    /// A message that is only a card (the first message of a new thread).
    pub(crate) fn card_message(card: Value) -> Self {
        Self {
            kind: "message",
            id: None,
            text: None,
            text_format: None,
            attachments: vec![Attachment { content_type: "application/vnd.microsoft.card.adaptive".into(), content: card }],
            reply_to_id: None,
            from: None,
            conversation: None,
            recipient: None,
            entities: Vec::new(),
        }
    }

    /// A new markdown message in `conversation_id` (in a channel thread when the id names one).
    pub fn message(conversation_id: &str, text: impl Into<String>) -> Self {
        Self {
            kind: "message",
            id: None,
            text: Some(text.into()),
            text_format: Some("markdown"),
            attachments: Vec::new(),
            reply_to_id: None,
            from: None,
            conversation: Some(ConversationAccount { id: conversation_id.to_owned(), ..ConversationAccount::default() }),
            recipient: None,
            entities: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn channel_message(text: &str) -> Activity {
        serde_json::from_value(json!({
            "type": "message", "id": "1719900000123", "serviceUrl": "https://smba.trafficmanager.net/emea/",
            "channelId": "msteams",
            "from": {"id": "29:admin", "name": "Dana Admin", "aadObjectId": "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d"},
            "conversation": {"isGroup": true, "conversationType": "channel", "tenantId": "t-1",
                              "id": "19:c0ffee@thread.tacv2;messageid=1719900000123"},
            "recipient": {"id": "28:bot", "name": "chatwarden"},
            "text": text,
            "entities": [
                {"type": "mention", "text": "<at>chatwarden</at>", "mentioned": {"id": "28:bot", "name": "chatwarden"}},
                {"type": "clientInfo", "locale": "en-GB"}
            ],
            "channelData": {"tenant": {"id": "t-2"}, "team": {"id": "19:team@thread.tacv2"},
                             "channel": {"id": "19:c0ffee@thread.tacv2"}, "someNewField": 1}
        }))
        .unwrap()
    }

    #[test]
    fn mention_of_the_bot_is_stripped_using_entities() {
        let a = channel_message("<at>chatwarden</at>&nbsp;/help ");
        assert_eq!(a.text_without_bot_mention(), "/help");
    }

    #[test]
    fn mentions_of_other_people_stay_in_the_text() {
        let a = channel_message("<at>chatwarden</at> /remove-chat x <at>Bob</at>");
        assert_eq!(a.text_without_bot_mention(), "/remove-chat x <at>Bob</at>");
    }

    #[test]
    fn html_entities_are_decoded() {
        assert_eq!(decode_html_entities("a&amp;b&lt;c&gt;&#65;&#x42;&unknown;&"), "a&b<c>AB&unknown;&");
    }

    #[test]
    fn tenant_prefers_channel_data() {
        assert_eq!(channel_message("x").tenant_id(), Some("t-2"));
    }

    #[test]
    fn unknown_fields_are_tolerated_and_type_is_required() {
        assert!(serde_json::from_value::<Activity>(json!({"type": "event", "brandNew": {"x": 1}})).is_ok());
        assert!(serde_json::from_value::<Activity>(json!({"id": "1"})).is_err());
    }

    #[test]
    fn reply_is_addressed_back_to_the_sender() {
        let a = channel_message("/help");
        let reply = OutgoingActivity::reply_text(&a, "hello");
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["type"], "message");
        assert_eq!(json["replyToId"], "1719900000123");
        assert_eq!(json["recipient"]["id"], "29:admin");
        assert_eq!(json["from"]["id"], "28:bot");
        assert_eq!(json["textFormat"], "markdown");
    }
}
