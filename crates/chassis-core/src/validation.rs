//! Field validation: every invalid field of a request named at once.
//!
//! Parsing a request into domain types collects [`FieldError`]s in [`Violations`];
//! [`Invalid`] is the outcome, which the HTTP layer answers as a 422 problem naming
//! each field (chassis-http converts it into its `Problem`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The JSON path or query parameter name of the offending value.
    pub field: String,
    /// What is wrong with it, for humans.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Well-formed input with invalid values: every offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub errors: Vec<FieldError>,
}

impl Invalid {
    /// `field: message; field: message`, for a problem's detail and for logs.
    pub fn detail(&self) -> String {
        self.errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "validation failed: {}", self.detail())
    }
}

impl std::error::Error for Invalid {}

/// Collects field violations while parsing a request into domain types, so one
/// response names every invalid field rather than the first.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldError>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value on success; records the error under `field` otherwise.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(FieldError::new(field, error.to_string()));
                None
            }
        }
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// `Ok` when nothing was recorded, every recorded field otherwise.
    pub fn finish(self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Invalid { errors: self.0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_named() {
        let mut v = Violations::new();
        let _: Option<()> = v.check("email", Err("not an email"));
        v.push("password", "too short");
        let invalid = v.finish().unwrap_err();
        assert_eq!(invalid.errors.len(), 2);
        assert!(invalid.detail().contains("email: not an email"));
        assert!(Violations::new().finish().is_ok());
    }
}
