//! Product values and page cursors, parsed before anything reaches SQL.

use chassis::error::Violations;
use chassis::money::{CURRENCY, Money};

pub const SKU_MAX: usize = 64;
pub const NAME_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 2000;
pub const STOCK_MAX: i64 = 1_000_000;
pub const QUERY_MAX: usize = 200;

/// A stock keeping unit: 1 to 64 of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > SKU_MAX {
            return Err(format!("must be 1 to {SKU_MAX} characters"));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err("may contain only letters, digits, '.', '_' and '-'".to_owned());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stock level: 0 to 1,000,000 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock(i64);

impl Stock {
    pub fn parse(raw: i64) -> Result<Self, String> {
        if (0..=STOCK_MAX).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(format!("must be between 0 and {STOCK_MAX}"))
        }
    }

    pub fn units(self) -> i64 {
        self.0
    }
}

fn bounded_text(raw: &str, min: usize, max: usize) -> Result<String, String> {
    let n = raw.chars().count();
    if n < min || n > max {
        Err(format!("must be {min} to {max} characters"))
    } else {
        Ok(raw.to_owned())
    }
}

/// A validated product to create.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub stock: Stock,
}

impl NewProduct {
    pub fn parse(
        sku: &str,
        name: &str,
        description: &str,
        price_cents: i64,
        currency: &str,
        stock: i64,
    ) -> Result<Self, chassis::Problem> {
        let mut v = Violations::new();
        let sku = v.check("sku", Sku::parse(sku));
        let name = v.check("name", bounded_text(name, 1, NAME_MAX));
        let description = v.check("description", bounded_text(description, 0, DESCRIPTION_MAX));
        let price = v.check("price_cents", Money::parse(price_cents));
        if currency != CURRENCY {
            v.push("currency", format!("must be {CURRENCY}"));
        }
        let stock = v.check("stock", Stock::parse(stock));
        v.finish()?;
        match (sku, name, description, price, stock) {
            (Some(sku), Some(name), Some(description), Some(price), Some(stock)) => Ok(Self {
                sku,
                name,
                description,
                price,
                stock,
            }),
            // finish() returned Ok, so every check passed.
            _ => Err(chassis::Problem::validation(Vec::new())),
        }
    }

    /// What search matches against.
    pub fn search_text(&self) -> String {
        search_text(&self.name, &self.description)
    }
}

pub fn search_text(name: &str, description: &str) -> String {
    format!("{}\n{}", name.to_lowercase(), description.to_lowercase())
}

/// A `LIKE` pattern matching `q` anywhere, with `%`, `_` and `\` escaped (the SQL
/// uses `ESCAPE '\'`).
pub fn like_pattern(q: &str) -> String {
    let mut pattern = String::with_capacity(q.len() + 2);
    pattern.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus() {
        assert!(Sku::parse("BZ-00001").is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("has space").is_err());
        assert!(Sku::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn new_product_collects_every_violation() {
        let err = NewProduct::parse("bad sku", "", "", -1, "EUR", -5).unwrap_err();
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["sku", "name", "price_cents", "currency", "stock"]);
        assert!(NewProduct::parse("S-1", "Mug", "", 999, "USD", 3).is_ok());
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_Off\\"), "%50\\%\\_off\\\\%");
    }
}
