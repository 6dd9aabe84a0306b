//! Typed invokes: what an invoke activity's `name` and `value` say, read once at the edge so
//! that nothing past `botframework/` looks into the invoke's JSON (only our own card's `data`
//! travels on, for the workflow to read).

use secrecy::SecretString;
use serde_json::Value;

use super::activity::Activity;

/// Credentials an invoke may carry for a sign-in: a Teams SSO token or a sign-in magic code.
#[derive(Debug, Clone, Default)]
pub enum SignInProof {
    /// Nothing attached.
    #[default]
    None,
    /// A Teams SSO token (`value.authentication.token`, or a `signin/tokenExchange` invoke).
    SsoToken(SecretString),
    /// A sign-in magic code (`value.state`, or a `signin/verifyState` invoke).
    MagicCode(String),
}

impl SignInProof {
    /// Reads the proof from an invoke `value`.
    fn from_value(value: &Value) -> Self {
        let sso = value.get("authentication").and_then(|a| a.get("token")).or_else(|| value.get("token")).and_then(Value::as_str);
        if let Some(token) = sso.filter(|t| !t.is_empty()) {
            return Self::SsoToken(SecretString::from(token.to_owned()));
        }
        match value.get("state").and_then(Value::as_str) {
            Some(code) if !code.is_empty() && code.len() <= 64 => Self::MagicCode(code.to_owned()),
            _ => Self::None,
        }
    }
}

/// The `Action.Execute` of an `adaptiveCard/action` invoke.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteAction {
    /// The button's verb.
    pub verb: String,
    /// The button's `data`, as our card wrote it.
    pub data: Value,
}

/// An invoke activity, typed.
#[derive(Debug, Clone)]
pub enum Invoke {
    /// `adaptiveCard/action`: a Universal Actions button, with any sign-in proof attached.
    CardAction {
        /// The button pressed.
        action: ExecuteAction,
        /// An SSO token or magic code sent with it.
        proof: SignInProof,
    },
    /// `signin/verifyState` or `signin/tokenExchange`: a sign-in to complete.
    SignIn {
        /// The token exchange's id (empty for `verifyState`), to answer a failed exchange with.
        exchange_id: String,
        /// The token or code.
        proof: SignInProof,
    },
    /// `signin/failure`: Teams could not complete a sign-in.
    SignInFailure {
        /// Teams' failure code (untrusted text).
        code: String,
    },
    /// Any other invoke: acknowledged, nothing done.
    Other,
}

/// Why an invoke cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// An `adaptiveCard/action` without a `value`.
    #[error("Missing value property")]
    MissingValue,
    /// An `adaptiveCard/action` that is not an `Action.Execute` with a verb and data.
    #[error("This card action is not supported.")]
    NotExecute,
}

impl Invoke {
    /// Reads the invoke of `activity` (its `name` and `value`).
    pub fn read(activity: &Activity) -> Result<Self, InvokeError> {
        let value = activity.value.as_ref();
        Ok(match activity.name.as_deref() {
            Some("adaptiveCard/action") => {
                let value = value.ok_or(InvokeError::MissingValue)?;
                let action = value.get("action").ok_or(InvokeError::NotExecute)?;
                if action.get("type").and_then(Value::as_str) != Some("Action.Execute") {
                    return Err(InvokeError::NotExecute);
                }
                let verb = action.get("verb").and_then(Value::as_str).ok_or(InvokeError::NotExecute)?.to_owned();
                let data = action.get("data").cloned().ok_or(InvokeError::NotExecute)?;
                Self::CardAction { action: ExecuteAction { verb, data }, proof: SignInProof::from_value(value) }
            }
            Some("signin/verifyState" | "signin/tokenExchange") => Self::SignIn {
                exchange_id: value.and_then(|v| v.get("id")).and_then(Value::as_str).unwrap_or_default().to_owned(),
                proof: value.map(SignInProof::from_value).unwrap_or_default(),
            },
            Some("signin/failure") => {
                Self::SignInFailure { code: value.and_then(|v| v.get("code")).and_then(Value::as_str).unwrap_or("unknown").to_owned() }
            }
            _ => Self::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;
    use serde_json::json;

    use super::*;

    fn invoke(name: &str, value: Option<Value>) -> Activity {
        let mut activity = json!({"type": "invoke", "name": name});
        if let Some(value) = value {
            activity["value"] = value;
        }
        serde_json::from_value(activity).unwrap()
    }

    #[test]
    fn card_actions_are_read_with_their_sign_in_proof() {
        let value = json!({"action": {"type": "Action.Execute", "verb": "approve", "data": {"caseId": "K7QX2M"}}, "authentication": {"token": "sso"}});
        let Ok(Invoke::CardAction { action, proof: SignInProof::SsoToken(token) }) =
            Invoke::read(&invoke("adaptiveCard/action", Some(value)))
        else {
            panic!("not read")
        };
        assert_eq!((action.verb.as_str(), token.expose_secret()), ("approve", "sso"));
        assert_eq!(action.data, json!({"caseId": "K7QX2M"}));
        let code = json!({"action": {"type": "Action.Execute", "verb": "approve", "data": {}}, "state": "123456"});
        assert!(matches!(
            Invoke::read(&invoke("adaptiveCard/action", Some(code))),
            Ok(Invoke::CardAction { proof: SignInProof::MagicCode(c), .. }) if c == "123456"
        ));
    }

    #[test]
    fn what_is_not_an_action_execute_is_refused_with_its_reason() {
        assert_eq!(Invoke::read(&invoke("adaptiveCard/action", None)).unwrap_err(), InvokeError::MissingValue);
        for value in [
            json!({"action": {"type": "Action.Submit", "verb": "approve", "data": {}}}),
            json!({"action": {"type": "Action.Execute", "data": {}}}),
            json!({"action": {"type": "Action.Execute", "verb": "approve"}}),
            json!({"nothing": true}),
        ] {
            assert_eq!(Invoke::read(&invoke("adaptiveCard/action", Some(value.clone()))).unwrap_err(), InvokeError::NotExecute, "{value}");
        }
    }

    #[test]
    fn sign_in_invokes_carry_their_exchange_id_and_proof() {
        let exchange = json!({"id": "exchange-1", "connectionName": "graph", "token": "sso-token"});
        let Ok(Invoke::SignIn { exchange_id, proof: SignInProof::SsoToken(_) }) =
            Invoke::read(&invoke("signin/tokenExchange", Some(exchange)))
        else {
            panic!("not read")
        };
        assert_eq!(exchange_id, "exchange-1");
        let verify = Invoke::read(&invoke("signin/verifyState", Some(json!({"state": "654321"})))).unwrap();
        assert!(matches!(verify, Invoke::SignIn { proof: SignInProof::MagicCode(c), .. } if c == "654321"));
        let too_long = Invoke::read(&invoke("signin/verifyState", Some(json!({"state": "9".repeat(65)})))).unwrap();
        assert!(matches!(too_long, Invoke::SignIn { proof: SignInProof::None, .. }));
        assert!(matches!(Invoke::read(&invoke("signin/failure", None)).unwrap(), Invoke::SignInFailure { code } if code == "unknown"));
        assert!(matches!(Invoke::read(&invoke("composeExtension/query", None)).unwrap(), Invoke::Other));
    }
}
