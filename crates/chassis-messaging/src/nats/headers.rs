//! What travels in message headers besides the envelope: the producer's trace context,
//! and on a dead-letter copy where the original came from and why it failed.

use async_nats::jetstream as js;

/// The W3C trace context of the span that produced the event (the envelope's).
pub(super) const TRACEPARENT: &str = "traceparent";
pub(super) const ORIGINAL_SUBJECT: &str = "Bazaar-Original-Subject";
pub(super) const ORIGINAL_STREAM: &str = "Bazaar-Original-Stream";
pub(super) const ORIGINAL_SEQUENCE: &str = "Bazaar-Original-Sequence";
pub(super) const ERROR: &str = "Bazaar-Error";

/// The producer's `traceparent`, if the message carries one.
pub(super) fn traceparent(message: &js::Message) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(TRACEPARENT))
        .map(|v| v.as_str().to_owned())
}

/// `error` as a header value: one line, at most 500 characters.
pub(super) fn one_line(error: &str) -> String {
    error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect()
}
