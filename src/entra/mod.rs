//! Entra ID, the identity platform: chatwarden's own app tokens (client credentials) and the
//! on-behalf-of exchange of an admin's Teams SSO token, both at one token URL.

pub mod app_token;
pub(crate) mod on_behalf_of;

use url::Url;

use crate::outbound::ClientSetupError;

/// Entra ID's v2 token endpoint of `tenant`: `{login}/{tenant}/oauth2/v2.0/token`, the tenant
/// percent-encoded (client credentials and on-behalf-of both post there).
pub(crate) fn token_url(login: &Url, tenant: &str) -> Result<Url, ClientSetupError> {
    let text = format!(
        "{}/{}/oauth2/v2.0/token",
        login.as_str().trim_end_matches('/'),
        crate::botframework::service_url::encode_component(tenant)
    );
    Url::parse(&text).map_err(|_| ClientSetupError::Url(text))
}
