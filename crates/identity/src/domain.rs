//! Account values, parsed once at the edge so the rest of the module never sees an
//! invalid email, password or name.

use std::fmt;

/// A normalised (trimmed, lower-cased) email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must be an email address like name@example.com")]
    Invalid,
    #[error("must be at most 254 characters")]
    TooLong,
}

/// Characters allowed unquoted in the local part (RFC 5322 `atext`, plus `.`).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
}

fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let email = raw.trim().to_ascii_lowercase();
        if email.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = email.rsplit_once('@').ok_or(EmailError::Invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local.chars().all(is_atext)
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2 && labels.iter().all(|l| is_domain_label(l));
        if local_ok && domain_ok {
            Ok(Self(email))
        } else {
            Err(EmailError::Invalid)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const PASSWORD_MIN: usize = 8;
/// Bounded so a megabyte "password" cannot buy a megabyte of hashing.
pub const PASSWORD_MAX: usize = 1024;

/// A password that meets the policy. Never logged: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {PASSWORD_MIN} characters")]
    TooShort,
    #[error("must be at most {PASSWORD_MAX} characters")]
    TooLong,
}

impl Password {
    pub fn parse(raw: &str) -> Result<Self, PasswordError> {
        let n = raw.chars().count();
        if n < PASSWORD_MIN {
            Err(PasswordError::TooShort)
        } else if n > PASSWORD_MAX {
            Err(PasswordError::TooLong)
        } else {
            Ok(Self(raw.to_owned()))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

pub const NAME_MAX: usize = 100;

/// A display name: 1 to 100 characters, not blank, with no control characters and no
/// invisible bidirectional-formatting characters. It ends up in emails and pages, so
/// it cannot carry line breaks or text that reorders what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {NAME_MAX} characters")]
    TooLong,
    #[error("must not contain control or text-direction characters")]
    Control,
}

/// Unicode's explicit bidirectional formatting characters (marks, embeddings,
/// overrides, isolates) and the other zero-width format characters a name has no use
/// for.
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{061C}')
}

impl Name {
    /// Kept as given (not trimmed), so the length the API documents is the length
    /// checked; blank is empty.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let n = raw.chars().count();
        if raw.trim().is_empty() {
            Err(NameError::Empty)
        } else if n > NAME_MAX {
            Err(NameError::TooLong)
        } else if raw.chars().any(|c| c.is_control() || is_format_char(c)) {
            Err(NameError::Control)
        } else {
            Ok(Self(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        assert!(Email::parse("o'neil+tag@mail.example.org").is_ok());
    }

    #[test]
    fn bad_emails_are_rejected() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@exa_mple.com",
            ".ada@example.com",
            "ada..b@example.com",
            "ada@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn password_policy() {
        assert_eq!(Password::parse("short"), Err(PasswordError::TooShort));
        assert!(Password::parse("eight chr").is_ok());
        assert_eq!(
            Password::parse(&"x".repeat(PASSWORD_MAX + 1)),
            Err(PasswordError::TooLong)
        );
        assert_eq!(
            format!("{:?}", Password::parse("secret-password").unwrap()),
            "Password(***)"
        );
    }

    #[test]
    fn names() {
        assert_eq!(Name::parse(""), Err(NameError::Empty));
        assert!(Name::parse("Ada Lovelace").is_ok());
        assert_eq!(Name::parse(&"é".repeat(101)), Err(NameError::TooLong));
        assert!(Name::parse(&"é".repeat(100)).is_ok());
        assert_eq!(Name::parse("   "), Err(NameError::Empty));
        assert_eq!(Name::parse(" Ada ").unwrap().as_str(), " Ada ");
        assert_eq!(
            Name::parse("Zoë O'Neil-Ñúñez 李").unwrap().as_str(),
            "Zoë O'Neil-Ñúñez 李"
        );
        for bad in [
            "Ada\nBcc: x@example.com",
            "Ada\r\nSubject: hi",
            "Ada\tLovelace",
            "Ada\u{7}",
            "Ada\u{0}",
            "Ada\u{85}Lovelace",
            "\u{202e}ecalevoL adA",
            "Ada\u{2066}x",
            "Ada\u{200b}",
        ] {
            assert_eq!(Name::parse(bad), Err(NameError::Control), "{bad:?}");
        }
    }
}
