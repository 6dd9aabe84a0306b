//! Graph's encrypted resource data: the data key is RSA-OAEP (SHA-1) to our certificate, the
//! data is AES-256-CBC with PKCS#7 padding and the key's first 16 bytes as IV, and
//! `dataSignature` is HMAC-SHA256 of the encrypted bytes under the same key. The signature is
//! checked before anything is decrypted. [`encrypt`] does what Graph does, for the local
//! stand-in and tests.

use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, PublicEncryptingKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::certificate::CertificateSet;

/// Largest decrypted resource accepted (a chat member is a few hundred bytes).
const MAX_PLAINTEXT: usize = 64 * 1024;

/// `encryptedContent` of a change notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedContent {
    /// Base64 AES-CBC ciphertext.
    pub data: String,
    /// Base64 HMAC-SHA256 of the ciphertext.
    #[serde(default)]
    pub data_signature: String,
    /// Base64 RSA-OAEP ciphertext of the symmetric key.
    pub data_key: String,
    /// The `encryptionCertificateId` of the subscription.
    #[serde(default)]
    pub encryption_certificate_id: Option<String>,
    /// SHA-1 thumbprint of the certificate (hex).
    #[serde(default)]
    pub encryption_certificate_thumbprint: Option<String>,
}

/// Why encrypted content was refused (each a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContentRejection {
    /// It names no configured certificate.
    #[error("encrypted for a certificate that is not configured")]
    UnknownCertificate,
    /// Not base64, or the key does not decrypt to 32 bytes.
    #[error("the data key does not decrypt")]
    BadKey,
    /// `dataSignature` does not match.
    #[error("the data signature does not match")]
    BadSignature,
    /// The data does not decrypt, or is too large.
    #[error("the data does not decrypt")]
    BadData,
}

impl ContentRejection {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownCertificate => "unknown_certificate",
            Self::BadKey => "bad_data_key",
            Self::BadSignature => "bad_data_signature",
            Self::BadData => "bad_data",
        }
    }
}

/// Checks the signature, then decrypts the resource data.
pub fn decrypt(certificates: &CertificateSet, content: &EncryptedContent) -> Result<Vec<u8>, ContentRejection> {
    let certificate = certificates
        .find(content.encryption_certificate_id.as_deref(), content.encryption_certificate_thumbprint.as_deref())
        .ok_or(ContentRejection::UnknownCertificate)?;
    let wrapped = STANDARD.decode(content.data_key.as_bytes()).map_err(|_| ContentRejection::BadKey)?;
    let key = certificate.decrypt_key(&wrapped).filter(|k| k.len() == 32).ok_or(ContentRejection::BadKey)?;
    let ciphertext = STANDARD.decode(content.data.as_bytes()).map_err(|_| ContentRejection::BadData)?;
    let signature = STANDARD.decode(content.data_signature.as_bytes()).map_err(|_| ContentRejection::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| ContentRejection::BadKey)?;
    mac.update(&ciphertext);
    mac.verify_slice(&signature).map_err(|_| ContentRejection::BadSignature)?;
    if ciphertext.len() > MAX_PLAINTEXT + 16 {
        return Err(ContentRejection::BadData);
    }
    let cipher_key = UnboundCipherKey::new(&AES_256, &key).map_err(|_| ContentRejection::BadKey)?;
    let decrypting = PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key).map_err(|_| ContentRejection::BadKey)?;
    let iv: [u8; 16] = key[..16].try_into().map_err(|_| ContentRejection::BadKey)?;
    let mut buffer = ciphertext;
    let plain = decrypting.decrypt(&mut buffer, DecryptionContext::Iv128(iv.into())).map_err(|_| ContentRejection::BadData)?;
    Ok(plain.to_vec())
}

/// Why [`encrypt`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot encrypt to this certificate")]
pub struct EncryptError;

/// Encrypts `plaintext` to the certificate `cert_der` as Graph does, naming it `certificate_id`.
pub fn encrypt(cert_der: &[u8], certificate_id: &str, plaintext: &[u8]) -> Result<EncryptedContent, EncryptError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert_der).map_err(|_| EncryptError)?;
    let public = PublicEncryptingKey::from_der(parsed.public_key().raw).map_err(|_| EncryptError)?;
    let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| EncryptError)?;
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| EncryptError)?;
    let iv: [u8; 16] = key[..16].try_into().map_err(|_| EncryptError)?;
    let encrypting =
        PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &key).map_err(|_| EncryptError)?).map_err(|_| EncryptError)?;
    let mut data = plaintext.to_vec();
    encrypting.less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv.into())).map_err(|_| EncryptError)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| EncryptError)?;
    mac.update(&data);
    let signature = mac.finalize().into_bytes();
    let mut wrapped = vec![0u8; oaep.ciphertext_size()];
    let wrapped = oaep.encrypt(&OAEP_SHA1_MGF1SHA1, &key, &mut wrapped, None).map_err(|_| EncryptError)?;
    let thumbprint = hex::encode_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der).as_ref());
    Ok(EncryptedContent {
        data: STANDARD.encode(&data),
        data_signature: STANDARD.encode(signature),
        data_key: STANDARD.encode(wrapped),
        encryption_certificate_id: Some(certificate_id.to_owned()),
        encryption_certificate_thumbprint: Some(thumbprint),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifications::certificate::NotificationCertificate;

    fn set() -> (CertificateSet, Vec<u8>, String) {
        let (cert, _, _) = NotificationCertificate::generate("test").unwrap();
        let (der, id) = (cert.der().to_vec(), cert.id().to_owned());
        (CertificateSet::new(cert, None), der, id)
    }

    #[test]
    fn what_graph_encrypts_decrypts_and_any_tampering_is_named() {
        let (certs, der, id) = set();
        let member = br#"{"userId":"u","tenantId":"t","displayName":"Mallory"}"#;
        let content = encrypt(&der, &id, member).unwrap();
        assert_eq!(decrypt(&certs, &content).unwrap(), member);

        let mut tampered = content.clone();
        let mut bytes = STANDARD.decode(&tampered.data).unwrap();
        bytes[0] ^= 1;
        tampered.data = STANDARD.encode(bytes);
        assert_eq!(decrypt(&certs, &tampered), Err(ContentRejection::BadSignature), "a flipped data bit fails the signature");

        let mut resigned = content.clone();
        resigned.data_signature = STANDARD.encode([0u8; 32]);
        assert_eq!(decrypt(&certs, &resigned), Err(ContentRejection::BadSignature));

        let mut other_key = content.clone();
        other_key.data_key = encrypt(&der, &id, member).unwrap().data_key;
        assert_eq!(decrypt(&certs, &other_key), Err(ContentRejection::BadSignature), "another key does not match the signature");

        let mut garbage = content.clone();
        garbage.data_key = STANDARD.encode([7u8; 256]);
        assert_eq!(decrypt(&certs, &garbage), Err(ContentRejection::BadKey));

        let mut unknown = content.clone();
        unknown.encryption_certificate_id = Some("someone-else".into());
        assert_eq!(decrypt(&certs, &unknown), Err(ContentRejection::UnknownCertificate));

        let (other_certs, _, _) = set();
        assert_eq!(decrypt(&other_certs, &content), Err(ContentRejection::UnknownCertificate));
    }

    #[test]
    fn during_a_rotation_both_certificates_decrypt() {
        let (current, _, _) = NotificationCertificate::generate("current").unwrap();
        let (next, _, _) = NotificationCertificate::generate("next").unwrap();
        let (current_der, current_id) = (current.der().to_vec(), current.id().to_owned());
        let (next_der, next_id) = (next.der().to_vec(), next.id().to_owned());
        let set = CertificateSet::new(current, Some(next));
        assert_eq!(set.newest().id(), next_id);
        assert_eq!(decrypt(&set, &encrypt(&current_der, &current_id, b"{}").unwrap()).unwrap(), b"{}");
        assert_eq!(decrypt(&set, &encrypt(&next_der, &next_id, b"[]").unwrap()).unwrap(), b"[]");
    }
}
