//! Endpoint secrets as Standard Webhooks writes them: `whsec_` and the base64 of the key. A
//! secret is shown to its owner once, when it is made; everywhere else it prints redacted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use std::fmt;

/// What every secret's text starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret this service makes (the spec asks for 24 to 64).
pub const GENERATED_SECRET_BYTES: usize = 32;
/// The shortest and longest keys accepted when a secret is read back.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// An endpoint's signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

/// Why a text is not a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret starts with `{SECRET_PREFIX}`")]
    MissingPrefix,
    /// What follows the prefix is not base64.
    #[error("a webhook secret is `{SECRET_PREFIX}` and base64")]
    NotBase64,
    /// The key is too short or too long.
    #[error("a webhook secret's key is 24 to 64 bytes, not {0}")]
    Length(usize),
}

impl SigningSecret {
    /// A new secret of [`GENERATED_SECRET_BYTES`] random bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_SECRET_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Reads a secret back from its text (`whsec_…`).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Self(key))
    }

    /// The secret's text, for its owner and for storing it; every call is a place a secret is
    /// shown on purpose.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0))
    }

    /// The HMAC key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_reads_back_and_never_prints() {
        let secret = SigningSecret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(SigningSecret::parse(&text).unwrap(), secret);
        assert_ne!(SigningSecret::generate(), secret);
        assert_eq!(format!("{secret:?}"), "SigningSecret([redacted])");
    }

    #[test]
    fn texts_that_are_not_secrets_say_why() {
        assert_eq!(
            SigningSecret::parse("c2VjcmV0"),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(
            SigningSecret::parse("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
        let short = format!("whsec_{}", BASE64.encode([7u8; 16]));
        assert_eq!(SigningSecret::parse(&short), Err(SecretError::Length(16)));
    }
}
