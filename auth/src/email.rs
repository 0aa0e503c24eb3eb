//! The one place that decides what an e-mail address and a password must look like, so
//! registration, login and the admin bootstrap agree.

use crate::error::AuthError;

/// Longest address SMTP can carry (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;
/// Shortest and longest accepted password, in bytes. The upper bound keeps hashing cost bounded.
pub const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=1024;

/// Trims and lower-cases an address and checks its shape: one `@`, a non-empty local part of
/// at most 64 bytes, a dotted domain of letters, digits and hyphens, no spaces or controls.
pub fn normalize_email(raw: &str) -> Result<String, AuthError> {
    let email = raw.trim().to_lowercase();
    let invalid = || AuthError::InvalidArgument("e-mail address is not valid".into());
    if email.is_empty() || email.len() > MAX_EMAIL_LEN {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(invalid())
    }
}

/// Checks a new password's length (in bytes, as hashed).
pub fn check_password(password: &str) -> Result<(), AuthError> {
    if PASSWORD_BYTES.contains(&password.len()) {
        Ok(())
    } else {
        Err(AuthError::InvalidArgument(format!(
            "password must be between {} and {} bytes",
            PASSWORD_BYTES.start(),
            PASSWORD_BYTES.end()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalize_email("  Alice@Example.COM \n").unwrap(),
            "alice@example.com"
        );
        assert_eq!(
            normalize_email("a.b+tag@mail.example.org").unwrap(),
            "a.b+tag@mail.example.org"
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            " ",
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "alice@@example.com",
            "al ice@example.com",
            "alice@exa mple.com",
            ".alice@example.com",
            "alice.@example.com",
            "al..ice@example.com",
            "alice@-example.com",
            "alice@example..com",
            "alice@example.com\0",
            &format!("{}@example.com", "a".repeat(65)),
            &format!("a@{}.com", "b".repeat(250)),
        ] {
            assert!(normalize_email(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn passwords_must_be_8_to_1024_bytes() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
        // Bytes, not characters: 4 two-byte characters are 8 bytes.
        assert!(check_password("éééé").is_ok());
    }
}
