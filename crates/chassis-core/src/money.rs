//! Money in integer minor units. Floating point never touches a price.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The one currency bazaar sells in today. Multi-currency needs prices per currency
/// and FX rules; until then a second currency would silently mix totals.
pub const CURRENCY: &str = "USD";

/// The largest single amount accepted: $10M, far above any line item, far below
/// where summing a cart could overflow `i64`.
pub const MAX_CENTS: i64 = 1_000_000_000;

/// A non-negative amount in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must not be negative")]
    Negative,
    #[error("must be at most {MAX_CENTS}")]
    TooLarge,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn parse(cents: i64) -> Result<Self, MoneyError> {
        if cents < 0 {
            Err(MoneyError::Negative)
        } else if cents > MAX_CENTS {
            Err(MoneyError::TooLarge)
        } else {
            Ok(Self(cents))
        }
    }

    pub fn cents(self) -> i64 {
        self.0
    }

    /// `self × n`, saturating (a cart line is at most `MAX_CENTS × 100`).
    #[must_use]
    pub fn times(self, n: u32) -> Money {
        Money(self.0.saturating_mul(i64::from(n)))
    }

    #[must_use]
    pub fn plus(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02} {CURRENCY}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bounds() {
        assert_eq!(Money::parse(-1), Err(MoneyError::Negative));
        assert_eq!(Money::parse(MAX_CENTS + 1), Err(MoneyError::TooLarge));
        assert_eq!(Money::parse(1999).unwrap().cents(), 1999);
    }

    #[test]
    fn arithmetic() {
        let m = Money::parse(250).unwrap();
        assert_eq!(m.times(3).plus(Money::ZERO).cents(), 750);
        assert_eq!(m.to_string(), "2.50 USD");
    }
}
