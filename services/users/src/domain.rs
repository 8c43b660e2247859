//! Validated user fields: nothing invalid exists past the edge.

use std::fmt;

/// A normalised email address (trimmed, lowercase), so that uniqueness is
/// case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

/// Why an email address was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmailError {
    /// Nothing given.
    #[error("is required")]
    Empty,
    /// Longer than RFC 5321 allows.
    #[error("must be at most 254 characters")]
    TooLong,
    /// Not of the form local@domain.
    #[error("is not a valid email address")]
    Invalid,
}

impl Email {
    /// Validates and normalises `raw`.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(EmailError::Empty);
        }
        if email.len() > 254 {
            return Err(EmailError::TooLong);
        }
        if fleet_proto::rules::is_email(&email) {
            Ok(Self(email))
        } else {
            Err(EmailError::Invalid)
        }
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1 to 64 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Why a display name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DisplayNameError {
    /// Empty after trimming.
    #[error("is required")]
    Empty,
    /// Over the limit.
    #[error("must be at most {} characters", DisplayName::MAX_CHARS)]
    TooLong,
    /// Has control characters.
    #[error("must not contain control characters")]
    ControlCharacters,
}

impl DisplayName {
    /// The longest display name, in characters.
    pub const MAX_CHARS: usize = 64;

    /// Validates `raw`.
    pub fn parse(raw: &str) -> Result<Self, DisplayNameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(DisplayNameError::Empty);
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(DisplayNameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(DisplayNameError::ControlCharacters);
        }
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A regular user.
    User,
    /// An administrator.
    Admin,
}

impl Role {
    /// Parses "user" or "admin".
    pub fn parse(raw: &str) -> Result<Self, UnknownValue> {
        match raw {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            _ => Err(UnknownValue("user, admin")),
        }
    }

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// Whether an account may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Usable.
    Active,
    /// Locked out by an administrator.
    Disabled,
}

impl Status {
    /// Parses "active" or "disabled".
    pub fn parse(raw: &str) -> Result<Self, UnknownValue> {
        match raw {
            "active" => Ok(Status::Active),
            "disabled" => Ok(Status::Disabled),
            _ => Err(UnknownValue("active, disabled")),
        }
    }

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disabled => "disabled",
        }
    }
}

/// A value outside an enumeration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be one of: {0}")]
pub struct UnknownValue(&'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_validated() {
        assert_eq!(Email::parse("  Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
        assert_eq!(
            Email::parse("o'brien+x@mail.example.org").unwrap().as_str(),
            "o'brien+x@mail.example.org"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "a b@example.com",
            "a..b@example.com",
            "ada@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            Email::parse(&format!("{}@example.com", "a".repeat(250))),
            Err(EmailError::TooLong)
        );
    }

    #[test]
    fn the_contract_refuses_what_the_domain_refuses() {
        let samples = [
            "Ada",
            " Ada ",
            "",
            " ",
            "\t",
            "A\u{7}da",
            "A\u{85}",
            &"x".repeat(64),
            &"x".repeat(65),
            "\u{2003}",
            "Zoë",
        ];
        for name in samples {
            let contract = fleet_proto::rules::check_text("fleet.users.v1.UpdateMeRequest.display_name", name);
            if contract.is_none() {
                assert!(DisplayName::parse(name).is_ok(), "{name:?}");
            }
            let register = fleet_proto::rules::check_text("fleet.auth.v1.RegisterRequest.display_name", name);
            assert_eq!(
                register,
                fleet_proto::rules::check_text("fleet.users.v1.CreateUserRequest.display_name", name)
            );
        }
        for email in [
            "ada@example.com",
            "Ada.L+x@Mail.Example.com",
            "nope",
            "a@b",
            "ada@@example.com",
        ] {
            let contract = fleet_proto::rules::check_text("fleet.auth.v1.RegisterRequest.email", email);
            assert_eq!(contract.is_none(), Email::parse(email).is_ok(), "{email}");
        }
    }

    #[test]
    fn display_names_are_bounded() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert_eq!(DisplayName::parse("   "), Err(DisplayNameError::Empty));
        assert_eq!(
            DisplayName::parse(&"é".repeat(64)).unwrap().as_str().chars().count(),
            64
        );
        assert_eq!(DisplayName::parse(&"é".repeat(65)), Err(DisplayNameError::TooLong));
        assert_eq!(DisplayName::parse("a\u{0}b"), Err(DisplayNameError::ControlCharacters));
    }

    #[test]
    fn roles_and_statuses_parse_only_known_values() {
        assert_eq!(Role::parse("admin"), Ok(Role::Admin));
        assert!(Role::parse("root").is_err());
        assert_eq!(Status::parse("disabled"), Ok(Status::Disabled));
        assert!(Status::parse("gone").is_err());
    }
}
