//! The certificate Graph encrypts resource data to: the PEM certificate and its RSA private key,
//! checked to belong together, with the id and thumbprint notifications name it by; the next
//! certificate of a rotation beside the current one.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

/// Why a certificate or key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The file could not be read.
    #[error("cannot read {0}")]
    Unreadable(String),
    /// Not PEM, or not the PEM block expected.
    #[error("{0}")]
    NotPem(String),
    /// The certificate is not an X.509 certificate with an RSA key of 2048 to 4096 bits.
    #[error("{0}")]
    Certificate(String),
    /// The key is not an unencrypted PKCS#8 RSA key of 2048 to 4096 bits.
    #[error("{0}")]
    Key(String),
    /// The key is not the certificate's.
    #[error("the private key does not belong to the certificate")]
    Mismatch,
    /// Expired.
    #[error("the certificate expired at {0}")]
    Expired(String),
}

/// One certificate with its private key.
pub struct NotificationCertificate {
    id: String,
    thumbprint: String,
    der: Vec<u8>,
    not_after: i64,
    key: OaepPrivateDecryptingKey,
}

impl fmt::Debug for NotificationCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationCertificate").field("id", &self.id).field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// Reads `value` as inline PEM when it starts with `-----BEGIN`, else as the path of a PEM file.
fn pem_text(value: &str, what: &str) -> Result<String, CertificateError> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.to_owned());
    }
    std::fs::read_to_string(value).map_err(|_| CertificateError::Unreadable(format!("{what} file `{value}`")))
}

fn one_block(text: &str, tag: &str, what: &str) -> Result<Vec<u8>, CertificateError> {
    let blocks = pem::parse_many(text).map_err(|_| CertificateError::NotPem(format!("the {what} is not PEM")))?;
    let mut matching = blocks.into_iter().filter(|b| b.tag() == tag);
    let first = matching.next().ok_or_else(|| match tag {
        "PRIVATE KEY" if text.contains("BEGIN RSA PRIVATE KEY") => {
            CertificateError::Key("the key is PKCS#1 (`BEGIN RSA PRIVATE KEY`); convert it with `openssl pkcs8 -topk8 -nocrypt`".into())
        }
        "PRIVATE KEY" if text.contains("BEGIN ENCRYPTED PRIVATE KEY") => {
            CertificateError::Key("the key is encrypted; give it unencrypted (and protect the file instead)".into())
        }
        _ => CertificateError::NotPem(format!("the {what} has no `BEGIN {tag}` block")),
    })?;
    Ok(first.into_contents())
}

fn hex_upper(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

impl NotificationCertificate {
    /// The certificate and key from PEM (inline, or the path of a file each); checks that the
    /// key is the certificate's, that both are RSA of 2048 to 4096 bits and that the certificate
    /// has not expired at `now_seconds`.
    pub fn from_pem(cert: &str, key: &str, now_seconds: i64) -> Result<Self, CertificateError> {
        let der = one_block(&pem_text(cert, "certificate")?, "CERTIFICATE", "certificate")?;
        let key_der = one_block(&pem_text(key, "key")?, "PRIVATE KEY", "key")?;
        Self::from_der(der, &key_der, now_seconds)
    }

    fn from_der(der: Vec<u8>, key_der: &[u8], now_seconds: i64) -> Result<Self, CertificateError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| CertificateError::Certificate("the certificate is not a DER X.509 certificate".into()))?;
        let spki = parsed.public_key().raw.to_vec();
        let not_after = parsed.validity().not_after.timestamp();
        let private = PrivateDecryptingKey::from_pkcs8(key_der)
            .map_err(|_| CertificateError::Key("the key is not an RSA private key in PKCS#8".into()))?;
        if !(2048..=4096).contains(&private.key_size_bits()) {
            return Err(CertificateError::Key(format!("the key has {} bits; Graph takes 2048 to 4096", private.key_size_bits())));
        }
        let public = private.public_key().as_der().map_err(|_| CertificateError::Key("the key's public half cannot be encoded".into()))?;
        if public.as_ref() != spki.as_slice() {
            return Err(CertificateError::Mismatch);
        }
        if not_after <= now_seconds {
            return Err(CertificateError::Expired(crate::cards::timestamp(not_after * 1000)));
        }
        let key = OaepPrivateDecryptingKey::new(private).map_err(|_| CertificateError::Key("the key cannot decrypt RSA-OAEP".into()))?;
        let id = hex::encode(Sha256::digest(&der));
        let thumbprint = hex_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref());
        Ok(Self { id, thumbprint, der, not_after, key })
    }

    /// A new self-signed certificate and key (RSA 2048), for `chatwarden dev` and tests.
    /// Returns it with its certificate and key as PEM.
    pub fn generate(common_name: &str) -> Result<(Self, String, String), CertificateError> {
        let failed = |what: &str| CertificateError::Certificate(format!("cannot generate a certificate: {what}"));
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|_| failed("RSA key"))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|_| failed("parameters"))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let today = time::OffsetDateTime::now_utc();
        params.not_before = today - time::Duration::days(1);
        params.not_after = today + time::Duration::days(365);
        let cert = params.self_signed(&key_pair).map_err(|_| failed("signature"))?;
        let cert_pem = cert.pem();
        let key_pem = key_pair.serialize_pem();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let parsed = Self::from_der(cert.der().to_vec(), &key_pair.serialize_der(), now)?;
        Ok((parsed, cert_pem, key_pem))
    }

    /// The id given to Graph as `encryptionCertificateId` (SHA-256 of the certificate, hex).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The SHA-1 thumbprint (upper-case hex), as Graph's `encryptionCertificateThumbprint`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The certificate as Graph's `encryptionCertificate` wants it: base64 of the DER.
    pub fn encoded(&self) -> String {
        STANDARD.encode(&self.der)
    }

    /// The DER certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// When it expires (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// RSA-OAEP (SHA-1) decryption of a data key.
    pub(crate) fn decrypt_key(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; self.key.min_output_size()];
        let plain = self.key.decrypt(&aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1, ciphertext, &mut out, None).ok()?;
        Some(plain.to_vec())
    }
}

/// The current certificate and, during a rotation, the next one.
#[derive(Debug, Clone)]
pub struct CertificateSet {
    current: Arc<NotificationCertificate>,
    next: Option<Arc<NotificationCertificate>>,
}

impl CertificateSet {
    /// The set of `current` and an optional `next`.
    pub fn new(current: NotificationCertificate, next: Option<NotificationCertificate>) -> Self {
        Self { current: Arc::new(current), next: next.map(Arc::new) }
    }

    /// The certificate new subscriptions use: the next one once it is configured.
    pub fn newest(&self) -> &NotificationCertificate {
        self.next.as_deref().unwrap_or(&self.current)
    }

    /// The certificate a notification names, by id or else by thumbprint.
    pub fn find(&self, id: Option<&str>, thumbprint: Option<&str>) -> Option<&NotificationCertificate> {
        let all = std::iter::once(&*self.current).chain(self.next.as_deref());
        let mut all: Vec<&NotificationCertificate> = all.collect();
        if let Some(id) = id.filter(|i| !i.is_empty()) {
            return all.into_iter().find(|c| c.id == id);
        }
        let thumbprint = thumbprint?;
        all.retain(|c| c.thumbprint.eq_ignore_ascii_case(thumbprint));
        all.into_iter().next()
    }

    /// Whether `id` is one of the configured certificates.
    pub fn knows(&self, id: &str) -> bool {
        self.current.id == id || self.next.as_ref().is_some_and(|n| n.id == id)
    }

    /// The earliest expiry of the configured certificates (Unix seconds).
    pub fn earliest_expiry(&self) -> i64 {
        self.next.as_ref().map_or(self.current.not_after, |n| n.not_after.min(self.current.not_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_loads_from_its_pem_and_is_found_by_id_and_thumbprint() {
        let (generated, cert_pem, key_pem) = NotificationCertificate::generate("chatwarden test").unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let loaded = NotificationCertificate::from_pem(&cert_pem, &key_pem, now).unwrap();
        assert_eq!(loaded.id(), generated.id());
        assert_eq!(loaded.id().len(), 64);
        assert_eq!(STANDARD.decode(loaded.encoded()).unwrap(), loaded.der());
        let set = CertificateSet::new(loaded, None);
        assert!(set.find(Some(generated.id()), None).is_some());
        assert!(set.find(None, Some(&generated.thumbprint().to_ascii_lowercase())).is_some());
        assert!(set.find(Some("other"), Some(generated.thumbprint())).is_none(), "an id that names another certificate wins");
    }

    #[test]
    fn a_key_of_another_certificate_an_expired_one_and_pkcs1_are_refused_clearly() {
        let (_, cert_a, _) = NotificationCertificate::generate("a").unwrap();
        let (_, _, key_b) = NotificationCertificate::generate("b").unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert_eq!(NotificationCertificate::from_pem(&cert_a, &key_b, now).unwrap_err(), CertificateError::Mismatch);
        let (_, cert, key) = NotificationCertificate::generate("c").unwrap();
        let far_future = now + 100 * 365 * 24 * 3600;
        assert!(matches!(NotificationCertificate::from_pem(&cert, &key, far_future), Err(CertificateError::Expired(_))));
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(NotificationCertificate::from_pem(&cert, pkcs1, now), Err(CertificateError::Key(m)) if m.contains("pkcs8")));
        assert!(matches!(NotificationCertificate::from_pem("/nonexistent/cert.pem", &key, now), Err(CertificateError::Unreadable(_))));
        assert!(matches!(NotificationCertificate::from_pem(&key, &key, now), Err(CertificateError::NotPem(_))));
    }
}
