//! argon2id hashing. Both hashing and verifying are deliberately slow (tens of milliseconds of
//! CPU and 19+ MiB each), so they run on tokio's blocking pool, never on the async threads.
//! Unknown e-mails are verified against a dummy hash so they cost the same time as a wrong
//! password.

use crate::error::AuthError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;

/// Hashes and verifies passwords with fixed argon2id parameters.
#[derive(Clone)]
pub struct Passwords {
    argon2: Arc<Argon2<'static>>,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("params", self.argon2.params())
            .finish()
    }
}

impl Passwords {
    /// Sets up argon2id with `memory_kib` KiB and `iterations` passes over one lane, and makes
    /// the dummy hash (one hash's worth of work, at start-up).
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, AuthError> {
        let params =
            Params::new(memory_kib, iterations, 1, None).map_err(AuthError::Argon2Parameters)?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let dummy_hash = hash_with(&argon2, "dummy password for unknown accounts")?;
        Ok(Self {
            argon2,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=...`) for `password`, with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || hash_with(&argon2, &password)).await?
    }

    /// Whether `password` matches `stored` (a PHC string). With `stored = None` (no such
    /// account) it verifies against the dummy hash and answers `false`, taking the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, AuthError> {
        let argon2 = self.argon2.clone();
        let is_real = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matched = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| AuthError::PasswordHash("a stored hash is unreadable", e))?;
            Ok::<_, AuthError>(argon2.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await??;
        Ok(matched && is_real)
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::PasswordHash("hashing a password", e))
}

#[cfg(test)]
mod tests {
    use super::Passwords;
    use crate::config::{ARGON2_MIN_ITERATIONS, ARGON2_MIN_MEMORY_KIB};

    #[tokio::test]
    async fn hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let passwords = Passwords::new(ARGON2_MIN_MEMORY_KIB, ARGON2_MIN_ITERATIONS).unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        let again = passwords.hash("correct horse".into()).await.unwrap();
        assert_ne!(hash, again, "every hash has its own salt");
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let passwords = Passwords::new(ARGON2_MIN_MEMORY_KIB, ARGON2_MIN_ITERATIONS).unwrap();
        assert!(
            !passwords
                .verify("dummy password for unknown accounts".into(), None)
                .await
                .unwrap()
        );
    }
}
