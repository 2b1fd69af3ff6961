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
    }
}
