//! The JSON of invoke responses and OAuth cards: the Bot Framework's envelopes, so that nothing
//! outside `botframework/` writes them by hand.

use serde_json::{Value, json};

/// Content type of an OAuth (sign-in) card attachment.
pub(crate) const OAUTH_CARD: &str = "application/vnd.microsoft.card.oauth";

/// What an `adaptiveCard/action` invoke answers (Universal Actions response types).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ActionResponse<'a> {
    /// A card that replaces the presser's.
    Card(&'a Value),
    /// A short message shown to the presser.
    Message(&'a str),
    /// The presser must sign in: an OAuth card (`loginRequest`, 401).
    LoginRequest(&'a Value),
    /// The SSO token could not be used (412).
    PreconditionFailed(&'a str),
    /// The magic code entered was wrong (401).
    InvalidAuthCode,
}

impl ActionResponse<'_> {
    /// The invoke response body.
    pub fn body(&self) -> Value {
        match self {
            Self::Card(card) => json!({"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive", "value": card}),
            Self::Message(text) => json!({"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": text}),
            Self::LoginRequest(oauth) => {
                json!({"statusCode": 401, "type": "application/vnd.microsoft.activity.loginRequest", "value": oauth})
            }
            Self::PreconditionFailed(text) => {
                json!({"statusCode": 412, "type": "application/vnd.microsoft.error.preconditionFailed", "value": {"code": "412", "message": text}})
            }
            Self::InvalidAuthCode => json!({"statusCode": 401, "type": "application/vnd.microsoft.error.invalidAuthCode", "value": null}),
        }
    }
}

/// An invoke error response (`application/vnd.microsoft.error`) with an HTTP-like status.
pub fn error(status: u16, code: &str, message: &str) -> Value {
    json!({"statusCode": status, "type": "application/vnd.microsoft.error", "value": {"code": code, "message": message}})
}

/// The empty body that acknowledges an invoke.
pub fn acknowledged() -> Value {
    json!({})
}

/// The body of a failed `signin/tokenExchange` (412): Teams then shows the sign-in card.
pub(crate) fn token_exchange_failure(exchange_id: &str, connection: &str, detail: &str) -> Value {
    json!({"id": exchange_id, "connectionName": connection, "failureDetail": detail})
}

/// An OAuth card: `text`, one sign-in button opening `sign_in_link`, and the SSO token exchange
/// resource when the connection offers one (Teams then tries SSO first).
pub(crate) fn oauth_card(text: &str, connection: &str, sign_in_link: &str, token_exchange_resource: Option<Value>) -> Value {
    let mut card = json!({
        "text": text,
        "connectionName": connection,
        "buttons": [{"type": "signin", "title": "Sign in", "value": sign_in_link}],
    });
    if let Some(exchange) = token_exchange_resource {
        card["tokenExchangeResource"] = exchange;
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_responses_carry_the_status_and_type_teams_expects() {
        let card = json!({"type": "AdaptiveCard"});
        assert_eq!(ActionResponse::Card(&card).body()["type"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(ActionResponse::LoginRequest(&card).body()["statusCode"], 401);
        assert_eq!(ActionResponse::PreconditionFailed("no").body()["value"], json!({"code": "412", "message": "no"}));
        assert_eq!(ActionResponse::InvalidAuthCode.body()["type"], "application/vnd.microsoft.error.invalidAuthCode");
        let oauth = oauth_card("Sign in", "graph", "https://link", Some(json!({"id": "x"})));
        assert_eq!(oauth["buttons"][0]["value"], "https://link");
        assert_eq!(oauth["tokenExchangeResource"]["id"], "x");
        assert!(oauth_card("Sign in", "graph", "https://link", None).get("tokenExchangeResource").is_none());
    }
}
