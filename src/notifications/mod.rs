//! Near-real-time detection from Microsoft Graph change notifications for chat membership
//! (docs/notifications.md): the subscription and its lifecycle, the endpoint's checks, the
//! decryption of resource data and the membership rules that open the same cases as audit
//! records.
//!
//! The path of one notification: `/api/notifications` checks `clientState` and the validation
//! tokens and queues it ([`NotificationIntake`]), Graph gets its 202, and
//! [`NotificationProcessor`] checks `dataSignature`, decrypts the member, reads the chat's
//! members with the app token and hands what the rules flag to the case rules, which keep one
//! open case per pair across replicas.

mod certificate;
mod crypto;
mod intake;
mod membership;
mod payload;
mod processor;
mod subscriptions;
mod validation_tokens;

use secrecy::SecretString;
use url::Url;

pub use certificate::{CertificateError, CertificateSet, NotificationCertificate};
pub use crypto::{ContentRejection, EncryptError, EncryptedContent, decrypt, encrypt};
pub use intake::{Accepted, IntakeError, NotificationIntake, QUEUE_CAPACITY};
pub use payload::{ChangeNotification, ChatMember, NotificationBatch};
pub use processor::{NotificationProcessor, Processed};
pub use subscriptions::{
    LIFETIME, MEMBERSHIP_RESOURCE, RENEW_BEFORE, SubscriptionAction, SubscriptionError, SubscriptionManager, SubscriptionSettings,
    SubscriptionState,
};
pub use validation_tokens::{GRAPH_CHANGE_TRACKING_APP_ID, TokenRejection, ValidationTokens};

/// Change notifications as configured (`CHATWARDEN_NOTIFICATION_*`).
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// The public https URL of `/api/notifications`.
    pub url: Url,
    /// The certificate Graph encrypts to, and the next one during a rotation.
    pub certificates: CertificateSet,
    /// The secret each notification carries.
    pub client_state: SecretString,
    /// Licensing model (`A` or `B`); none = evaluation.
    pub model: Option<String>,
}
