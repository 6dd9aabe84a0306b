//! What the bot does with a verified activity: commands in, replies out.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::botframework::activity::{Activity, OutgoingActivity};
use crate::botframework::connector::ConnectorClient;
use crate::botframework::inbound::VerifiedActivity;
use crate::commands::{self, Command, ParseError};
use crate::metrics::Metrics;

/// The HTTP answer to an activity.
#[derive(Debug, Clone, PartialEq)]
pub enum BotResponse {
    /// 200 with an empty body (messages, conversation updates, ...).
    Ack,
    /// 200 with an invoke response body.
    Invoke(Value),
}

/// The bot: turns activities into replies through the Bot Connector.
pub struct Bot {
    connector: ConnectorClient,
    metrics: Arc<Metrics>,
}

impl Bot {
    /// A bot that replies through `connector`.
    pub fn new(connector: ConnectorClient, metrics: Arc<Metrics>) -> Self {
        Self { connector, metrics }
    }

    /// Handles one activity and returns the HTTP answer.
    pub async fn handle(&self, incoming: &VerifiedActivity) -> BotResponse {
        let activity = incoming.activity();
        let kind = activity_kind(&activity.kind);
        let response = match kind {
            "message" => {
                self.on_message(incoming).await;
                BotResponse::Ack
            }
            "invoke" => on_invoke(activity),
            _ => BotResponse::Ack,
        };
        self.metrics.inc("chatwarden_activities_total", &[("type", kind)]);
        response
    }

    async fn on_message(&self, incoming: &VerifiedActivity) {
        let activity = incoming.activity();
        let text = activity.text_without_bot_mention();
        if text.is_empty() && activity.value.is_some() {
            // Card submissions carry their data in `value`; they are handled with cases.
            return;
        }
        let reply = match commands::parse(&text) {
            Ok(Command::Help) => commands::help_text(),
            Ok(_) => "This command is recognised, but case handling is not enabled on this instance.".to_owned(),
            Err(err @ (ParseError::Unknown(_) | ParseError::Empty)) => format!("{err}\n\n{}", commands::help_text()),
            Err(err) => err.to_string(),
        };
        self.reply(incoming, reply).await;
    }

    async fn reply(&self, incoming: &VerifiedActivity, text: String) {
        let activity = incoming.activity();
        let (Some(conversation), Some(activity_id)) = (activity.conversation.as_ref(), activity.id.as_deref()) else {
            tracing::warn!("message without conversation or id; no reply sent");
            return;
        };
        let reply = OutgoingActivity::reply_text(activity, text);
        if let Err(err) = self.connector.reply_to_activity(incoming.service_url(), &conversation.id, activity_id, &reply).await {
            tracing::error!(error = %err, "could not send the reply");
        }
    }
}

/// Known activity types, as static labels (unknown ones are counted as `other`).
fn activity_kind(kind: &str) -> &'static str {
    match kind {
        "message" => "message",
        "invoke" => "invoke",
        "conversationUpdate" => "conversationUpdate",
        "installationUpdate" => "installationUpdate",
        "messageReaction" => "messageReaction",
        "event" => "event",
        _ => "other",
    }
}

fn on_invoke(activity: &Activity) -> BotResponse {
    match activity.name.as_deref() {
        Some("adaptiveCard/action") => BotResponse::Invoke(json!({
            "statusCode": 400,
            "type": "application/vnd.microsoft.error",
            "value": {"code": "NotSupported", "message": "This card action is not supported."}
        })),
        _ => BotResponse::Invoke(json!({})),
    }
}
