//! Opaque list cursors: `{items, next_cursor}` pagination over UUIDv7 ids.
//!
//! A cursor is the last id of the previous page, versioned and base64url-encoded so
//! clients treat it as opaque and the format can change.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

const PREFIX: &str = "p1:";

impl Cursor {
    pub fn after(id: &str) -> Self {
        Self(id.to_owned())
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{PREFIX}{}", self.0))
    }

    /// `None` for anything this API did not produce.
    pub fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let id = text.strip_prefix(PREFIX)?;
        crate::id::is_uuid(id).then(|| Self(id.to_owned()))
    }

    pub fn last_id(&self) -> &str {
        &self.0
    }
}

/// Page size bounds shared by every list route.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// The page size asked for (the default when absent), or why it is out of range.
pub fn limit(requested: Option<u32>) -> Result<u32, String> {
    let limit = requested.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!("must be between 1 and {MAX_LIMIT}"))
    }
}

/// The `next_cursor` of a page: after its last item when more follow.
pub fn next_cursor<T>(items: &[T], has_more: bool, id: impl Fn(&T) -> &str) -> Option<String> {
    has_more
        .then(|| items.last())
        .flatten()
        .map(|last| Cursor::after(id(last)).encode())
}

/// A `cursor` this API did not issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignCursor;

/// Decodes an optional `cursor` query parameter.
pub fn cursor(raw: Option<&str>) -> Result<Option<Cursor>, ForeignCursor> {
    raw.map(|raw| Cursor::decode(raw).ok_or(ForeignCursor))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let id = crate::id::new_id();
        let c = Cursor::after(&id);
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert!(Cursor::decode("not-a-cursor").is_none());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("p1:not-a-uuid")).is_none());
        assert_eq!(cursor(Some("not-a-cursor")), Err(ForeignCursor));
        assert_eq!(cursor(None), Ok(None));
    }

    #[test]
    fn next_cursor_follows_the_last_item_only_when_more_follow() {
        let ids = [crate::id::new_id(), crate::id::new_id()];
        let next = next_cursor(&ids, true, String::as_str).unwrap();
        assert_eq!(Cursor::decode(&next), Some(Cursor::after(&ids[1])));
        assert_eq!(next_cursor(&ids, false, String::as_str), None);
        assert_eq!(next_cursor(&[] as &[String], true, String::as_str), None);
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(limit(Some(MAX_LIMIT)), Ok(MAX_LIMIT));
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
    }
}
