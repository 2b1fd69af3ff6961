//! Publishing: an envelope to `<prefix>.<source>.<type>`, deduplicated by its id,
//! acknowledged by JetStream before the relay marks it sent.

use std::collections::HashSet;
use std::sync::Mutex;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use chassis_core::events::Envelope;

use super::headers;
use super::jetstream::JetStream;
use crate::bus::{Bus, BusError};

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

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        let topic = envelope.topic();
        let failed = |kind: &'static str, message: String| {
            metrics::counter!("nats_publish_errors_total", "topic" => topic.clone(), "kind" => kind)
                .increment(1);
            tracing::warn!(topic = %topic, event_id = %envelope.id, error = %message, "JetStream publish failed");
            BusError::Unavailable(message)
        };
        let known = self.ensured().contains(&envelope.source);
        if !known {
            self.js
                .ensure_stream(&envelope.source)
                .await
                .map_err(|e| failed("stream", e.to_string()))?;
            self.ensured().insert(envelope.source.clone());
        }
        let payload = serde_json::to_vec(envelope).map_err(|e| failed("encode", e.to_string()))?;
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(&envelope.id);
        if let Some(traceparent) = envelope.trace_context.as_deref() {
            message = message.header(headers::TRACEPARENT, traceparent);
        }
        let mut waited = 0;
        let acked = loop {
            let acked = match self
                .js
                .context()
                // A clone shares the payload's bytes: a retry costs no copy.
                .send_publish(self.js.subject(&topic), message.clone())
                .await
            {
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
        match acked {
            Ok(ack) => {
                metrics::counter!("bus_published_total", "topic" => topic.clone()).increment(1);
                if ack.duplicate {
                    // Published before, the ack was lost: JetStream kept one copy.
                    metrics::counter!("nats_publish_duplicates_total", "topic" => topic.clone())
                        .increment(1);
                    tracing::debug!(event_id = %envelope.id, "JetStream dropped a duplicate publish");
                }
                Ok(())
            }
            Err(e) => {
                if e.kind() == PublishErrorKind::StreamNotFound {
                    // Deleted under us: create it again on the next try.
                    self.ensured().remove(&envelope.source);
                }
                let kind = match e.kind() {
                    PublishErrorKind::TimedOut => "timeout",
                    PublishErrorKind::StreamNotFound => "no_stream",
                    _ => "other",
                };
                Err(failed(kind, e.to_string()))
            }
        }
    }
}
