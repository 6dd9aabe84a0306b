//! Local mode's change notifications: chatwarden's own certificate and `clientState`, a stand-in
//! of the Microsoft identity platform's keys (`/_local/login/...`) that signs validation tokens,
//! and `POST /_local/notifications/member-added`, which encrypts a chat member to the
//! certificate exactly as Graph does and delivers it to `/api/notifications`, so the whole path
//! (validation, decryption, the members read, the rules, the card) can be tried offline.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use url::Url;

use super::{PLAYGROUND_TENANT, SEED_CHAT, SEED_EXTERNAL_TENANT};
use crate::notifications::{CertificateSet, GRAPH_CHANGE_TRACKING_APP_ID, NotificationCertificate, NotificationSettings, encrypt};

/// The app id validation tokens are issued for in local mode.
pub(crate) const LOCAL_APP_ID: &str = "chatwarden-local";
const KID: &str = "local-identity-platform";

/// The outsider who joins the seeded chat unless a request names someone else.
pub(crate) fn stand_in_outsider() -> Value {
    json!({"userId": "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "tenantId": SEED_EXTERNAL_TENANT, "displayName": "IT Support",
           "email": "it-support@contoso-helpdesk.example", "roles": []})
}

/// Generates and holds what local change notifications need.
pub(crate) struct LocalNotifier {
    certificate_der: Vec<u8>,
    certificate_id: String,
    client_state: SecretString,
    signing: jsonwebtoken::EncodingKey,
    jwk: Value,
    base: String,
    http: reqwest::Client,
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    if aws_lc_rs::rand::fill(&mut buffer).is_err() {
        buffer.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    hex::encode(buffer)
}

fn jwk_of(key: &rcgen::KeyPair) -> anyhow::Result<Value> {
    use rcgen::PublicKeyData as _;
    use x509_parser::prelude::FromDer as _;
    let spki = key.subject_public_key_info();
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).map_err(|_| anyhow::anyhow!("unreadable public key"))?;
    let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = info.parsed() else { anyhow::bail!("not an RSA key") };
    let trim = |bytes: &[u8]| {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        URL_SAFE_NO_PAD.encode(&bytes[start..])
    };
    Ok(json!({"kty": "RSA", "use": "sig", "kid": KID, "alg": "RS256", "n": trim(rsa.modulus), "e": trim(rsa.exponent)}))
}

impl LocalNotifier {
    /// A certificate, a `clientState` and a signing key for the server at `port`, with the
    /// settings that make the server use them.
    pub(crate) fn generate(port: u16) -> anyhow::Result<(Self, NotificationSettings)> {
        let base = format!("http://127.0.0.1:{port}");
        let (certificate, _, _) = NotificationCertificate::generate("chatwarden local notifications")?;
        let (certificate_der, certificate_id) = (certificate.der().to_vec(), certificate.id().to_owned());
        let client_state = SecretString::from(random_hex(24));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let signing = jsonwebtoken::EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())?;
        let jwk = jwk_of(&key)?;
        let settings = NotificationSettings {
            url: Url::parse(&format!("{base}/api/notifications"))?,
            certificates: CertificateSet::new(certificate, None),
            client_state: client_state.clone(),
            model: None,
        };
        let http = crate::outbound::build_client(std::time::Duration::from_secs(10))?;
        Ok((Self { certificate_der, certificate_id, client_state, signing, jwk, base, http }, settings))
    }

    /// The identity platform's login URL in local mode.
    pub(crate) fn login_url(&self) -> anyhow::Result<Url> {
        Ok(Url::parse(&format!("{}/_local/login", self.base))?)
    }

    fn validation_token(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(KID.to_owned());
        let claims = json!({
            "aud": LOCAL_APP_ID, "iss": format!("https://sts.windows.net/{PLAYGROUND_TENANT}/"), "appid": GRAPH_CHANGE_TRACKING_APP_ID,
            "tid": PLAYGROUND_TENANT, "iat": now, "nbf": now, "exp": now + 3600, "ver": "1.0",
        });
        jsonwebtoken::encode(&header, &claims, &self.signing)
    }

    /// Delivers "`member` joined `chat`" to `/api/notifications` as Graph would; what it answered.
    pub(crate) async fn member_added(&self, chat: &str, member: &Value) -> anyhow::Result<(u16, Value)> {
        let content = encrypt(&self.certificate_der, &self.certificate_id, member.to_string().as_bytes())?;
        let member_id = format!("local-{}", random_hex(8));
        let body = json!({
            "value": [{
                "subscriptionId": "local-subscription", "changeType": "created", "tenantId": PLAYGROUND_TENANT,
                "clientState": self.client_state.expose_secret(),
                "resource": format!("chats('{chat}')/members('{member_id}')"),
                "resourceData": {"id": member_id, "@odata.type": "#microsoft.graph.aadUserConversationMember"},
                "encryptedContent": content,
            }],
            "validationTokens": [self.validation_token()?],
        });
        let response = self.http.post(format!("{}/api/notifications", self.base)).json(&body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

async fn openid_configuration(notifier: web::Data<Arc<LocalNotifier>>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "issuer": format!("https://login.microsoftonline.com/{PLAYGROUND_TENANT}/v2.0"),
        "jwks_uri": format!("{}/_local/login/common/discovery/v2.0/keys", notifier.base),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn keys(notifier: web::Data<Arc<LocalNotifier>>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"keys": [notifier.jwk.clone()]}))
}

/// `POST /_local/notifications/member-added`, body optional: `{"chat": "19:...", "member": {...}}`
/// (default: an outsider joins the seeded chat with the playground's user).
async fn member_added(body: web::Bytes, notifier: web::Data<Arc<LocalNotifier>>) -> HttpResponse {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let chat = request.get("chat").and_then(Value::as_str).unwrap_or(SEED_CHAT).to_owned();
    let member = request.get("member").cloned().unwrap_or_else(stand_in_outsider);
    tracing::info!(stand_in = "graph_notifications", chat = %chat, "STAND-IN Graph: delivering an encrypted member-added notification");
    match notifier.member_added(&chat, &member).await {
        Ok((status, answer)) => HttpResponse::Ok().json(json!({"delivered_to": "/api/notifications", "status": status, "answer": answer})),
        Err(err) => {
            tracing::error!(error = %err, "the local notification could not be delivered");
            HttpResponse::InternalServerError().json(json!({"error": "the local notification could not be delivered"}))
        }
    }
}

/// The routes, under `/_local`.
pub(crate) fn configure(scope: actix_web::Scope, notifier: web::Data<Arc<LocalNotifier>>) -> actix_web::Scope {
    scope
        .app_data(notifier)
        .route("/login/common/v2.0/.well-known/openid-configuration", web::get().to(openid_configuration))
        .route("/login/common/discovery/v2.0/keys", web::get().to(keys))
        .route("/notifications/member-added", web::post().to(member_added))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_validation_tokens_verify_against_the_published_key() {
        let (notifier, _) = LocalNotifier::generate(3978).unwrap();
        let token = notifier.validation_token().unwrap();
        let key = jsonwebtoken::DecodingKey::from_rsa_components(notifier.jwk["n"].as_str().unwrap(), notifier.jwk["e"].as_str().unwrap())
            .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[LOCAL_APP_ID]);
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["appid"], GRAPH_CHANGE_TRACKING_APP_ID);
        assert_eq!(data.claims["tid"], PLAYGROUND_TENANT);
    }
}
