//! Publishing: an envelope to `<prefix>.<source>.<type>`, deduplicated by its id,
//! acknowledged by JetStream before the relay marks it sent.

use std::collections::HashSet;
use std::sync::Mutex;

use std::future::IntoFuture;

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use chassis_core::events::Envelope;

use super::headers;
use super::jetstream::JetStream;
use crate::bus::{Bus, BusError, Published};

/// How often, and how long times the attempt number, a publish to a stream this call
/// just ensured waits for the cluster to route its subjects (about 1.5 s in all).
const NEW_STREAM_WAITS: u32 = 5;
const NEW_STREAM_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Publishes envelopes to JetStream; see the module docs.
pub struct NatsBus {
    js: JetStream,
    /// Sources whose stream is known to exist.
    ensured: Mutex<HashSet<String>>,
}

chassis_core::debug_fields!(NatsBus { js });

impl NatsBus {
    pub fn new(js: JetStream) -> Self {
        Self {
            js,
            ensured: Mutex::new(HashSet::new()),
        }
    }

    pub fn jetstream(&self) -> &JetStream {
        &self.js
    }

    fn ensured(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        match self.ensured.lock() {
            Ok(set) => set,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl NatsBus {
    /// Counts and logs a failed publish; the error for the relay.
    fn failed(envelope: &Envelope, kind: &'static str, message: String) -> BusError {
        let topic = envelope.topic();
        tracing::warn!(topic = %topic, event_id = %envelope.id, error = %message, "JetStream publish failed");
        metrics::counter!("nats_publish_errors_total", "topic" => topic, "kind" => kind)
            .increment(1);
        BusError::Unavailable(message)
    }

    /// The message for `envelope`: its JSON, `Nats-Msg-Id` = its id, its trace context.
    fn message(envelope: &Envelope) -> Result<PublishMessage, BusError> {
        let payload = serde_json::to_vec(envelope)
            .map_err(|e| Self::failed(envelope, "encode", e.to_string()))?;
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(&envelope.id);
        if let Some(traceparent) = envelope.trace_context.as_deref() {
            message = message.header(headers::TRACEPARENT, traceparent);
        }
        Ok(message)
    }

    /// Sends `message` without waiting for its acknowledgement.
    async fn send(
        &self,
        envelope: &Envelope,
        message: PublishMessage,
    ) -> Result<PublishAckFuture, PublishError> {
        self.js
            .context()
            .send_publish(self.js.subject(&envelope.topic()), message)
            .await
    }

    /// What JetStream answered for `envelope`, counted.
    fn settle(
        &self,
        envelope: &Envelope,
        acked: Result<PublishAck, PublishError>,
    ) -> Result<(), BusError> {
        match acked {
            Ok(ack) => {
                let topic = envelope.topic();
                if ack.duplicate {
                    // Published before, the ack was lost: JetStream kept one copy.
                    metrics::counter!("nats_publish_duplicates_total", "topic" => topic.clone())
                        .increment(1);
                    tracing::debug!(event_id = %envelope.id, "JetStream dropped a duplicate publish");
                }
                metrics::counter!("bus_published_total", "topic" => topic).increment(1);
                Ok(())
            }
            Err(e) => Err(self.refused(envelope, &e)),
        }
    }

    /// JetStream refused `envelope` (or never answered), counted.
    fn refused(&self, envelope: &Envelope, e: &PublishError) -> BusError {
        if e.kind() == PublishErrorKind::StreamNotFound {
            // Deleted under us: create it again on the next try.
            self.ensured().remove(&envelope.source);
        }
        let kind = match e.kind() {
            PublishErrorKind::TimedOut => "timeout",
            PublishErrorKind::StreamNotFound => "no_stream",
            _ => "other",
        };
        Self::failed(envelope, kind, e.to_string())
    }

    /// Publishes `envelopes`, whose streams are known to exist, the way
    /// [`Bus::publish_batch`] says: all sent on the one connection (so JetStream
    /// receives them in order), then their acknowledgements awaited together.
    async fn publish_pipelined(&self, envelopes: &[Envelope]) -> Published {
        let mut pending = Vec::with_capacity(envelopes.len());
        let mut unsent = None;
        for envelope in envelopes {
            let sent = match Self::message(envelope) {
                Ok(message) => self
                    .send(envelope, message)
                    .await
                    .map_err(|e| self.refused(envelope, &e)),
                Err(e) => Err(e),
            };
            match sent {
                Ok(ack) => pending.push(ack.into_future()),
                Err(e) => {
                    unsent = Some(e);
                    break;
                }
            }
        }
        let answers = futures::future::join_all(pending).await;
        let mut accepted = 0;
        let mut refused = None;
        // Every answer is settled (counted, logged), also those after a refusal.
        for (envelope, answer) in envelopes.iter().zip(answers) {
            match self.settle(envelope, answer) {
                Ok(()) if refused.is_none() => accepted += 1,
                Ok(()) => {}
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        Published {
            accepted,
            failure: refused.or(unsent),
        }
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        let known = self.ensured().contains(&envelope.source);
        if !known {
            self.js
                .ensure_stream(&envelope.source)
                .await
                .map_err(|e| Self::failed(envelope, "stream", e.to_string()))?;
            self.ensured().insert(envelope.source.clone());
        }
        let message = Self::message(envelope)?;
        let mut waited = 0;
        let acked = loop {
            // A clone shares the payload's bytes: a retry costs no copy.
            let acked = match self.send(envelope, message.clone()).await {
                Ok(pending) => pending.await,
                Err(e) => Err(e),
            };
            match acked {
                // A stream just created on a cluster: the node this client publishes
                // through may not know its subjects yet ("no responders", reported as
                // no stream). A few short waits, not a failed relay pass; the message
                // id makes a repeat harmless.
                Err(e)
                    if e.kind() == PublishErrorKind::StreamNotFound
                        && !known
                        && waited < NEW_STREAM_WAITS =>
                {
                    waited += 1;
                    tokio::time::sleep(NEW_STREAM_WAIT * waited).await;
                }
                acked => break acked,
            }
        };
        self.settle(envelope, acked)
    }

    async fn publish_batch(&self, envelopes: &[Envelope]) -> Published {
        let mut accepted = 0;
        while accepted < envelopes.len() {
            let rest = &envelopes[accepted..];
            let known = {
                let ensured = self.ensured();
                rest.iter()
                    .take_while(|e| ensured.contains(&e.source))
                    .count()
            };
            // The first event of a source whose stream is not known yet goes alone:
            // `publish` ensures the stream and waits out a new stream's routing.
            let step = if known == 0 {
                Published::one(self.publish(&rest[0]).await)
            } else {
                self.publish_pipelined(&rest[..known]).await
            };
            accepted += step.accepted;
            if step.failure.is_some() {
                return Published {
                    accepted,
                    failure: step.failure,
                };
            }
        }
        Published {
            accepted,
            failure: None,
        }
    }
}
