//! Sign-ins an approval needs first: the approver's delegated token (token service, magic code,
//! Teams SSO), the OAuth card that asks for it, and resuming the approval that waited for it.

use secrecy::ExposeSecret as _;
use serde_json::Value;

use crate::botframework::activity::{Activity, OutgoingActivity};
use crate::botframework::auth::unverified_upn;
use crate::botframework::inbound::VerifiedActivity;
use crate::botframework::invoke_request::SignInProof;
use crate::cases::{Actor, now_ms};
use crate::store::StoreError;
use crate::tokens::{SignInState, TokenError};

use super::CaseWorkflow;
use super::authorise::activity_key;
use super::card_actions::ActionReply;
use crate::botframework::invoke;

/// The answer to a `signin/verifyState` or `signin/tokenExchange` invoke: HTTP status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInReply {
    /// HTTP status (200, 404 when no token came back, 412 for a failed exchange).
    pub status: u16,
    /// Body.
    pub body: Value,
}

pub(super) enum TokenCheck {
    /// The approver's token is at hand; the UPN it names, when it is a JWT that names one.
    Ready(Option<String>),
    NeedSignIn,
    ExchangeRefused,
    BadCode,
    /// The token offered or obtained belongs to someone else: the approval is refused.
    NotTheApprover,
    Unavailable,
}

/// What an approver is told when the token is someone else's.
pub(super) const NOT_THE_APPROVER_TEXT: &str = "The sign-in offered with this approval belongs to another account than yours, so nothing was changed. Sign in as yourself and approve again.";

/// How long an approval waits for its approver to finish signing in.
const PENDING_SIGNIN_MS: i64 = 15 * 60 * 1000;

impl CaseWorkflow {
    pub(super) async fn ask_sign_in(&self, incoming: &VerifiedActivity, text: &str) {
        let activity = incoming.activity();
        let mut reply = OutgoingActivity::reply_text(activity, text);
        if let Some(oauth) = self.oauth_card(activity).await {
            reply.attachments.push(crate::botframework::activity::Attachment { content_type: invoke::OAUTH_CARD.into(), content: oauth });
        }
        self.answer_privately(incoming, reply).await;
    }

    pub(super) async fn check_token(&self, actor: &Actor, proof: &SignInProof) -> TokenCheck {
        let result = match proof {
            SignInProof::SsoToken(token) => match self.tokens.exchange_sso(actor, token).await {
                Ok(Some(token)) => return TokenCheck::Ready(unverified_upn(token.expose_secret())),
                Ok(None) => return TokenCheck::ExchangeRefused,
                Err(err) => Err(err),
            },
            SignInProof::MagicCode(code) => match self.tokens.redeem_code(actor, code).await {
                Ok(Some(token)) => return TokenCheck::Ready(unverified_upn(token.expose_secret())),
                Ok(None) => return TokenCheck::BadCode,
                Err(err) => Err(err),
            },
            SignInProof::None => self.tokens.token_for(actor).await,
        };
        match result {
            Ok(Some(token)) => TokenCheck::Ready(unverified_upn(token.expose_secret())),
            Ok(None) => TokenCheck::NeedSignIn,
            Err(TokenError::NotTheApprover) => TokenCheck::NotTheApprover,
            Err(err) => {
                tracing::error!(error = %err, "could not get the approver's token");
                TokenCheck::Unavailable
            }
        }
    }

    /// The OAuth card asking the admin to sign in (SSO exchange resource included when offered).
    pub(super) async fn oauth_card(&self, activity: &Activity) -> Option<Value> {
        let state =
            SignInState { connection: self.tokens.connection(), app_id: self.settings.app_id.as_deref().unwrap_or_default(), activity };
        match self.tokens.sign_in_resource(&state).await {
            Ok(resource) => Some(invoke::oauth_card(
                "Sign in so that chatwarden can act with your own permissions.",
                self.tokens.connection(),
                &resource.sign_in_link,
                resource.token_exchange_resource,
            )),
            Err(err) => {
                tracing::error!(error = %err, "could not get a sign-in link");
                None
            }
        }
    }

    /// `signin/verifyState` and `signin/tokenExchange`: completes a sign-in and resumes the
    /// approval that was waiting for it.
    pub async fn on_sign_in(&self, incoming: &VerifiedActivity, exchange_id: &str, proof: SignInProof) -> Result<SignInReply, StoreError> {
        let activity = incoming.activity();
        let failure =
            |detail: &str| SignInReply { status: 412, body: invoke::token_exchange_failure(exchange_id, self.tokens.connection(), detail) };
        let actor = match self.authorise_decider(activity) {
            Ok(actor) => actor,
            Err(denied) => {
                self.refuse(activity, denied).await;
                return Ok(SignInReply { status: 200, body: invoke::acknowledged() });
            }
        };
        if let SignInProof::SsoToken(_) = proof {
            // Several Teams clients may send the same exchange: handle it once.
            let conversation = activity.conversation.as_ref().map(|c| c.id.as_str()).unwrap_or_default();
            if !exchange_id.is_empty() && !self.store.claim_key(&format!("exchange|{conversation}|{exchange_id}"), now_ms()).await? {
                return Ok(SignInReply { status: 200, body: invoke::acknowledged() });
            }
        }
        let upn = match self.check_token(&actor, &proof).await {
            TokenCheck::Ready(upn) => upn,
            TokenCheck::ExchangeRefused => return Ok(failure("The token could not be exchanged; consent or sign-in is needed.")),
            TokenCheck::BadCode | TokenCheck::NeedSignIn => return Ok(SignInReply { status: 404, body: invoke::acknowledged() }),
            TokenCheck::NotTheApprover => return Ok(failure(NOT_THE_APPROVER_TEXT)),
            TokenCheck::Unavailable => return Ok(failure("The sign-in service could not be reached.")),
        };
        if let Some((case_id, decision, reason)) = self.store.take_pending_signin(&actor.oid, PENDING_SIGNIN_MS, now_ms()).await? {
            tracing::info!(case.id = %case_id, "sign-in completed; resuming the pending approval");
            let note = crate::cases::DecisionNote { reason, approver_upn: upn };
            let reply = self.apply_decision(activity_key(activity).as_deref(), &actor, &case_id, decision, note).await?;
            if let ActionReply::Message(text) = reply {
                self.reply_text(incoming, text).await;
            }
        }
        Ok(SignInReply { status: 200, body: invoke::acknowledged() })
    }
}
