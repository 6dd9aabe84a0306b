//! What the bot does with a verified activity: route it to help, the case workflow, or nothing.

use std::sync::Arc;

use serde_json::Value;

use crate::botframework::activity::OutgoingActivity;
use crate::botframework::inbound::VerifiedActivity;
use crate::botframework::invoke;
use crate::botframework::invoke_request::{Invoke, InvokeError, SignInProof};
use crate::commands::{self, ParseError};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::workflow::{ActionPath, ActionReply, CardAction, CaseWorkflow};

/// The HTTP answer to an activity.
#[derive(Debug, Clone, PartialEq)]
pub enum BotResponse {
    /// 200 with an empty body (messages, conversation updates, ...).
    Ack,
    /// 200 with an invoke response body.
    Invoke(Value),
    /// An invoke answered with its own HTTP status (sign-in invokes).
    InvokeStatus(u16, Value),
    /// 500: the activity could not be processed (the database failed); Teams may retry it, and
    /// the dedupe keys make the retry safe.
    Failed,
}

/// The bot: turns activities into commands, cases and replies.
pub struct Bot {
    workflow: CaseWorkflow,
    metrics: Arc<Metrics>,
    commands: RateLimiter,
}

impl Bot {
    /// A bot that handles cases through `workflow`, allowing each admin `commands_per_minute` commands.
    pub fn new(workflow: CaseWorkflow, metrics: Arc<Metrics>, commands_per_minute: u32) -> Self {
        Self { workflow, metrics, commands: RateLimiter::new(commands_per_minute) }
    }

    /// Handles one activity and returns the HTTP answer.
    pub async fn handle(&self, incoming: &VerifiedActivity) -> BotResponse {
        let activity = incoming.activity();
        let kind = activity_kind(&activity.kind);
        let response = match kind {
            "message" => self.on_message(incoming).await,
            "invoke" => self.on_invoke(incoming).await,
            _ => BotResponse::Ack,
        };
        let result = match &response {
            BotResponse::Failed => "error",
            _ => "ok",
        };
        self.metrics.inc("chatwarden_activities_total", &[("type", kind), ("result", result)]);
        response
    }

    async fn on_message(&self, incoming: &VerifiedActivity) -> BotResponse {
        let activity = incoming.activity();
        let text = activity.text_without_bot_mention();
        if text.is_empty() {
            // Action.Submit from one of our cards arrives as a message whose `value` is the data.
            if let Some(action) = activity.value.as_ref().and_then(CardAction::from_data) {
                return match self.workflow.on_card_action(incoming, action, SignInProof::None, ActionPath::Submit).await {
                    Ok(reply) => {
                        match reply {
                            ActionReply::Message(text) | ActionReply::PreconditionFailed(text) => {
                                self.workflow.answer_text_privately(incoming, text).await
                            }
                            ActionReply::LoginRequest(oauth) => {
                                let mut reply =
                                    OutgoingActivity::reply_text(activity, "Please sign in: the approval completes as soon as you have.");
                                reply.attachments.push(crate::botframework::activity::Attachment {
                                    content_type: invoke::OAUTH_CARD.into(),
                                    content: oauth,
                                });
                                self.workflow.answer_privately(incoming, reply).await;
                            }
                            ActionReply::Card(_) | ActionReply::IncorrectAuthCode | ActionReply::Silent => {}
                        }
                        BotResponse::Ack
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "card submission failed");
                        BotResponse::Failed
                    }
                };
            }
            if activity.value.is_some() {
                return BotResponse::Ack;
            }
        }
        let actor = match self.workflow.authorise(activity) {
            Ok(actor) => actor,
            Err(denied) => {
                if let Some(refusal) = self.workflow.refuse(activity, denied).await {
                    self.workflow.answer_text_privately(incoming, refusal.to_owned()).await;
                }
                return BotResponse::Ack;
            }
        };
        if let Err(wait) = self.commands.check(&actor.oid) {
            self.metrics.inc("chatwarden_rate_limited_total", &[("what", "command")]);
            tracing::warn!("an admin is sending commands too fast");
            let text = format!("You are sending commands too fast; nothing was done. Try again in {} s.", wait.as_secs().max(1));
            self.workflow.answer_text_privately(incoming, text).await;
            return BotResponse::Ack;
        }
        match commands::parse(&text) {
            Ok(command) => match self.workflow.with_typing(incoming, self.workflow.on_command(incoming, actor, command)).await {
                Ok(()) => BotResponse::Ack,
                Err(err) => {
                    tracing::error!(error = %err, "command failed");
                    self.workflow
                        .reply_text(incoming, "Sorry, that failed on our side; nothing was changed. Please try again.".into())
                        .await;
                    BotResponse::Failed
                }
            },
            Err(err @ (ParseError::Unknown(_) | ParseError::Empty)) => {
                self.workflow.reply_text(incoming, format!("{err}\n\n{}", commands::help_text())).await;
                BotResponse::Ack
            }
            Err(err) => {
                self.workflow.reply_text(incoming, err.to_string()).await;
                BotResponse::Ack
            }
        }
    }

    async fn on_invoke(&self, incoming: &VerifiedActivity) -> BotResponse {
        let invoke = match Invoke::read(incoming.activity()) {
            Ok(invoke) => invoke,
            Err(err @ InvokeError::MissingValue) => return BotResponse::Invoke(invoke::error(400, "BadRequest", &err.to_string())),
            Err(err @ InvokeError::NotExecute) => return BotResponse::Invoke(invoke::error(400, "NotSupported", &err.to_string())),
        };
        match invoke {
            Invoke::CardAction { action, proof } => {
                let Some(action) = CardAction::from_execute(&action) else {
                    return BotResponse::Invoke(invoke::error(400, "NotSupported", "This card action is not supported."));
                };
                match self.workflow.on_card_action(incoming, action, proof, ActionPath::Invoke).await {
                    Ok(reply) => BotResponse::Invoke(reply.invoke_body()),
                    Err(err) => {
                        tracing::error!(error = %err, "card action failed");
                        BotResponse::Invoke(invoke::error(500, "InternalError", "Sorry, that failed on our side; nothing was changed."))
                    }
                }
            }
            Invoke::SignIn { exchange_id, proof } => match self.workflow.on_sign_in(incoming, &exchange_id, proof).await {
                Ok(reply) => BotResponse::InvokeStatus(reply.status, reply.body),
                Err(err) => {
                    tracing::error!(error = %err, "sign-in completion failed");
                    BotResponse::Failed
                }
            },
            Invoke::SignInFailure { code } => {
                tracing::warn!(code = %crate::cards::plain(&code), "Teams reported a sign-in failure");
                BotResponse::Invoke(invoke::acknowledged())
            }
            Invoke::Other => BotResponse::Invoke(invoke::acknowledged()),
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
