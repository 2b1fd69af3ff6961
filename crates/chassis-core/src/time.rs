//! Timestamps: stored as integer microseconds since the epoch (portable across SQLite
//! and PostgreSQL), shown as RFC 3339 UTC.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now_micros() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Formats stored microseconds as RFC 3339 UTC.
pub fn micros_to_rfc3339(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch() {
        assert_eq!(micros_to_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(micros_to_rfc3339(1_500_000), "1970-01-01T00:00:01.5Z");
    }
}
