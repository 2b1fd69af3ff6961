//! Pure parts of the aggregates: minute buckets and per-product sums.

use std::collections::BTreeMap;

use contracts::orders::OrderLine;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const MICROS_PER_MINUTE: i64 = 60_000_000;

/// Minutes the sales report shows, ending with the current one.
pub const WINDOW_MINUTES: i64 = 60;

/// Start of the minute `micros` falls in (also before 1970).
pub fn minute_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_MINUTE) * MICROS_PER_MINUTE
}

/// Start of the minute of an RFC 3339 time, in microseconds; `None` if unparsable.
pub fn minute_of_rfc3339(text: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let micros = i64::try_from(at.unix_timestamp_nanos() / 1_000).ok()?;
    Some(minute_of(micros))
}

/// Units and revenue per product of an order's lines, duplicates merged, sorted by
/// product id (every transaction then touches rows in the same order: no deadlock
/// between concurrent consumers on PostgreSQL).
pub fn per_product(lines: &[OrderLine]) -> Vec<(String, i64, i64)> {
    let mut merged: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for line in lines {
        let units = i64::from(line.quantity);
        let entry = merged.entry(line.product_id.as_str()).or_default();
        entry.0 = entry.0.saturating_add(units);
        entry.1 = entry
            .1
            .saturating_add(line.price_cents.saturating_mul(units));
    }
    merged
        .into_iter()
        .map(|(id, (units, revenue))| (id.to_owned(), units, revenue))
        .collect()
}

/// One minute of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteBucket {
    pub minute: i64,
    pub orders: i64,
    pub revenue_cents: i64,
}

/// The `WINDOW_MINUTES` minutes ending with the one `now` is in, oldest first, each
/// present (zero when nothing happened), filled from the stored `buckets`.
pub fn window(now_micros: i64, buckets: &[MinuteBucket]) -> Vec<MinuteBucket> {
    let last = minute_of(now_micros);
    let first = last - (WINDOW_MINUTES - 1) * MICROS_PER_MINUTE;
    let stored: BTreeMap<i64, &MinuteBucket> = buckets.iter().map(|b| (b.minute, b)).collect();
    (0..WINDOW_MINUTES)
        .map(|i| {
            let minute = first + i * MICROS_PER_MINUTE;
            stored.get(&minute).map_or(
                MinuteBucket {
                    minute,
                    orders: 0,
                    revenue_cents: 0,
                },
                |b| **b,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = MICROS_PER_MINUTE;

    #[test]
    fn minutes_truncate_down() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999_999), 0);
        assert_eq!(minute_of(60_000_000), MIN);
        assert_eq!(minute_of(-1), -MIN);
        assert_eq!(
            minute_of_rfc3339("2026-01-01T12:34:56.789Z"),
            minute_of_rfc3339("2026-01-01T12:34:00Z")
        );
        assert_eq!(
            minute_of_rfc3339("2026-01-01T12:34:56+02:00"),
            minute_of_rfc3339("2026-01-01T10:34:00Z")
        );
        assert_eq!(minute_of_rfc3339("1970-01-01T00:01:30Z"), Some(MIN));
        assert_eq!(minute_of_rfc3339("yesterday"), None);
    }

    #[test]
    fn lines_merge_per_product_sorted() {
        let line = |p: &str, q: u32, c: i64| OrderLine {
            product_id: p.into(),
            quantity: q,
            price_cents: c,
            name: format!("Product {p}"),
        };
        let merged = per_product(&[line("b", 2, 500), line("a", 1, 100), line("b", 1, 500)]);
        assert_eq!(
            merged,
            vec![("a".to_owned(), 1, 100), ("b".to_owned(), 3, 1500)]
        );
    }

    #[test]
    fn window_is_sixty_dense_minutes_ending_now() {
        let now = 1_000 * MIN + 30_000_000;
        let buckets = [
            MinuteBucket {
                minute: 1_000 * MIN,
                orders: 2,
                revenue_cents: 300,
            },
            MinuteBucket {
                minute: 950 * MIN,
                orders: 1,
                revenue_cents: 100,
            },
            // too old to show
            MinuteBucket {
                minute: 900 * MIN,
                orders: 9,
                revenue_cents: 900,
            },
        ];
        let w = window(now, &buckets);
        assert_eq!(w.len(), 60);
        assert_eq!(w[0].minute, 941 * MIN);
        assert_eq!(w[59].minute, 1_000 * MIN);
        assert_eq!(w[59].orders, 2);
        assert_eq!(w[9].minute, 950 * MIN);
        assert_eq!(w[9].revenue_cents, 100);
        assert_eq!(w.iter().map(|b| b.orders).sum::<i64>(), 3);
    }
}
