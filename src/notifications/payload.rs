//! What Graph POSTs: a batch of change notifications (or lifecycle notifications) with its
//! validation tokens, and the chat member a membership notification carries encrypted.

use serde::Deserialize;

use super::crypto::EncryptedContent;

/// A notification batch (`changeNotificationCollection`).
#[derive(Debug, Deserialize)]
pub struct NotificationBatch {
    /// The notifications.
    #[serde(default)]
    pub value: Vec<ChangeNotification>,
    /// One JWT per app and tenant, for batches with resource data.
    #[serde(default, rename = "validationTokens")]
    pub validation_tokens: Vec<String>,
}

/// One change or lifecycle notification. Graph's own examples differ in the case of
/// `encryptedContent` and `changeType`; both spellings are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotification {
    /// Graph's id of the notification, when it gives one.
    #[serde(default)]
    pub id: Option<String>,
    /// The subscription.
    #[serde(default)]
    pub subscription_id: String,
    /// `created`, `updated`, `deleted` (any case).
    #[serde(default)]
    pub change_type: Option<String>,
    /// The secret the subscription was created with.
    #[serde(default)]
    pub client_state: Option<String>,
    /// `chats('19:...')/members('...')`.
    #[serde(default)]
    pub resource: Option<String>,
    /// The tenant it is about.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The resource, encrypted to our certificate.
    #[serde(default, alias = "EncryptedContent")]
    pub encrypted_content: Option<EncryptedContent>,
    /// `reauthorizationRequired`, `subscriptionRemoved` or `missed` (lifecycle notifications).
    #[serde(default)]
    pub lifecycle_event: Option<String>,
}

impl ChangeNotification {
    /// Whether this announces a new member (`changeType` created, any case).
    pub fn is_created(&self) -> bool {
        self.change_type.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("created"))
    }

    /// The chat id of a `chats('...')/members('...')` resource.
    pub fn chat_id(&self) -> Option<&str> {
        let resource = self.resource.as_deref()?.trim_start_matches('/');
        let prefix = resource.get(..7)?;
        if !prefix.eq_ignore_ascii_case("chats('") {
            return None;
        }
        let rest = &resource[7..];
        let end = rest.find("')")?;
        let chat = &rest[..end];
        (chat.starts_with("19:") && chat.len() <= 512 && !chat.contains(['/', '?', '#', '\''])).then_some(chat)
    }
}

/// A chat member, as Graph sends it encrypted and lists it from `/chats/{id}/members`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMember {
    /// `#microsoft.graph.aadUserConversationMember`, `...anonymousGuestConversationMember`, ...
    #[serde(default, rename = "@odata.type")]
    pub odata_type: Option<String>,
    /// The member's Entra object id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The member's home tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_notification_reads_in_both_spellings_and_names_its_chat() {
        let batch: NotificationBatch = serde_json::from_str(
            r#"{"value":[{"subscriptionId":"s","changeType":"Created","clientState":"c",
                "resource":"chats('19:1273a016_976f4b31@unq.gbl.spaces')/members('MCMjMjQz')",
                "EncryptedContent":{"data":"d","dataKey":"k","encryptionCertificateId":"i"},"tenantId":"t"}],
                "validationTokens":["a.b.c"]}"#,
        )
        .unwrap();
        let n = &batch.value[0];
        assert!(n.is_created());
        assert_eq!(n.chat_id(), Some("19:1273a016_976f4b31@unq.gbl.spaces"));
        assert_eq!(n.encrypted_content.as_ref().unwrap().data_signature, "", "a missing signature reads as empty and fails");
        assert_eq!(batch.validation_tokens, ["a.b.c"]);
        let odd = |resource: &str| ChangeNotification { resource: Some(resource.into()), ..n.clone() }.chat_id().map(str::to_owned);
        assert_eq!(odd("/Chats('19:x@thread.v2')/members('m')").as_deref(), Some("19:x@thread.v2"));
        assert_eq!(odd("users('19:x')/members('m')"), None);
        assert_eq!(odd("chats('20:x')/members('m')"), None);
        assert_eq!(odd("chats('19:x/../y')/members('m')"), None);
    }
}
