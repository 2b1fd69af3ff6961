//! Event envelopes: what travels on the bus, whatever the bus is.
//!
//! `{id, type, version, occurred_at, aggregate_id, trace_context, payload}`; typed
//! events (in `contracts`) implement [`DomainEvent`] and are wrapped here. Versions are
//! explicit; consumers decode leniently (unknown fields are ignored).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A typed event of some module's contract.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The event's type name, e.g. `OrderConfirmed`.
    const TYPE: &'static str;
    /// Its schema version; bumped on incompatible change.
    const VERSION: u32;
    /// The module that publishes it (its stream).
    const SOURCE: &'static str;
    /// The entity it is about (an order id, a user id).
    fn aggregate_id(&self) -> String;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
    pub occurred_at: String,
    pub aggregate_id: String,
    /// Publishing module.
    pub source: String,
    /// W3C `traceparent` of the span that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<String>,
    pub payload: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("expected a {expected} event, got {actual}")]
    WrongType {
        expected: &'static str,
        actual: String,
    },
    #[error("{kind} version {version} is newer than this consumer understands ({known})")]
    UnknownVersion {
        kind: String,
        version: u32,
        known: u32,
    },
    #[error("malformed {kind} payload: {source}")]
    Payload {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Envelope {
    /// Wraps `event`, stamping a fresh id and the time; no trace context (see
    /// [`with_trace_context`](Self::with_trace_context)).
    pub fn wrap<E: DomainEvent>(event: &E) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id: crate::id::new_id(),
            kind: E::TYPE.to_owned(),
            version: E::VERSION,
            occurred_at: crate::time::now_rfc3339(),
            aggregate_id: event.aggregate_id(),
            source: E::SOURCE.to_owned(),
            trace_context: None,
            payload: serde_json::to_value(event)?,
        })
    }

    /// The envelope carrying `traceparent`, the W3C trace context of the span that
    /// produced the event (the outbox passes the current one), so consumers continue
    /// the producer's trace. Given by the caller: nothing here reads telemetry.
    #[must_use]
    pub fn with_trace_context(mut self, traceparent: Option<String>) -> Self {
        self.trace_context = traceparent;
        self
    }

    /// The bus topic: `<source>.<type>`.
    pub fn topic(&self) -> String {
        format!("{}.{}", self.source, self.kind)
    }

    pub fn is<E: DomainEvent>(&self) -> bool {
        self.kind == E::TYPE && self.source == E::SOURCE
    }

    /// Decodes the payload as `E`, refusing other types and newer major versions.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, DecodeError> {
        if !self.is::<E>() {
            return Err(DecodeError::WrongType {
                expected: E::TYPE,
                actual: self.kind.clone(),
            });
        }
        if self.version > E::VERSION {
            return Err(DecodeError::UnknownVersion {
                kind: self.kind.clone(),
                version: self.version,
                known: E::VERSION,
            });
        }
        serde_json::from_value(self.payload.clone()).map_err(|source| DecodeError::Payload {
            kind: self.kind.clone(),
            source,
        })
    }
}

/// The topic a typed event is published on.
pub fn topic_of<E: DomainEvent>() -> String {
    format!("{}.{}", E::SOURCE, E::TYPE)
}

/// The module a topic (`<source>.<type>`) is published by.
pub fn source_of(topic: &str) -> &str {
    topic.split_once('.').map_or(topic, |(source, _)| source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Thing {
        id: String,
    }

    impl DomainEvent for Thing {
        const TYPE: &'static str = "ThingHappened";
        const VERSION: u32 = 1;
        const SOURCE: &'static str = "things";
        fn aggregate_id(&self) -> String {
            self.id.clone()
        }
    }

    #[test]
    fn wrap_and_decode_tolerates_unknown_fields() {
        let mut env = Envelope::wrap(&Thing { id: "t1".into() }).unwrap();
        assert_eq!(env.trace_context, None);
        assert_eq!(env.topic(), "things.ThingHappened");
        assert_eq!(source_of(&env.topic()), "things");
        assert_eq!(env.aggregate_id, "t1");
        env.payload["added_later"] = serde_json::json!(true);
        assert_eq!(env.decode::<Thing>().unwrap(), Thing { id: "t1".into() });
        env.version = 2;
        assert!(env.decode::<Thing>().is_err());
    }
}
