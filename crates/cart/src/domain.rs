//! Cart values.

/// Units of one product in a cart line: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(u32);

pub const QUANTITY_MAX: u32 = 100;

/// Distinct products one cart may hold; bounds the catalog lookup per view.
pub const LINES_MAX: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be between 1 and {QUANTITY_MAX}")]
pub struct QuantityError;

impl Quantity {
    pub fn parse(raw: i64) -> Result<Self, QuantityError> {
        u32::try_from(raw)
            .ok()
            .filter(|q| (1..=QUANTITY_MAX).contains(q))
            .map(Self)
            .ok_or(QuantityError)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(101).is_err());
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(100).unwrap().get(), 100);
    }
}
