//! Where relays publish: the [`Bus`], and the monolith's [`InProcBus`] (NATS
//! JetStream's is [`NatsBus`](crate::nats::NatsBus)).

use std::sync::{Arc, RwLock};

use chassis_core::events::Envelope;

use crate::consumer::{Consumer, Delivery};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("a consumer's store failed: {0}")]
    Consumer(String),
    #[error("the bus is unavailable: {0}")]
    Unavailable(String),
}

/// What publishing a batch achieved: how many of its leading envelopes were durably
/// accepted, and the refusal that stopped the rest (`None` when all were).
#[derive(Debug)]
pub struct Published {
    pub accepted: usize,
    pub failure: Option<BusError>,
}

/// Where relays publish.
#[async_trait::async_trait]
pub trait Bus: Send + Sync {
    /// Returns once the event is durably accepted: for the in-process bus, once every
    /// interested consumer has applied it (or dead-lettered it).
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError>;

    /// Publishes `envelopes` in order. `accepted` counts the leading ones durably
    /// accepted; an envelope after the first refused one may have been accepted too
    /// (a bus that sends a batch before it waits for the acknowledgements), so whoever
    /// republishes from the refused one on must be able to absorb repeats (the event id
    /// is the dedup key throughout). By default one publish after another, stopping at
    /// the first refusal.
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Published {
        for (accepted, envelope) in envelopes.iter().enumerate() {
            if let Err(e) = self.publish(envelope).await {
                return Published {
                    accepted,
                    failure: Some(e),
                };
            }
        }
        Published {
            accepted: envelopes.len(),
            failure: None,
        }
    }
}

/// The monolith's bus: a publish is handed to every interested consumer in this
/// process and returns when all have applied (or dead-lettered) it. Until then the
/// relay keeps the outbox row unsent, so a crash mid-delivery redelivers on restart.
#[derive(Default)]
pub struct InProcBus {
    consumers: RwLock<Vec<Arc<Consumer>>>,
}

chassis_core::debug_fields!(InProcBus {});

impl InProcBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn subscribe(&self, consumer: Arc<Consumer>) {
        match self.consumers.write() {
            Ok(mut consumers) => consumers.push(consumer),
            Err(poisoned) => poisoned.into_inner().push(consumer),
        }
    }
}

#[async_trait::async_trait]
impl Bus for InProcBus {
    async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        let topic = envelope.topic();
        // Clone the interested consumers out so no lock is held across an await.
        let targets: Vec<Arc<Consumer>> = {
            let consumers = match self.consumers.read() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            consumers
                .iter()
                .filter(|c| c.wants(&topic))
                .cloned()
                .collect()
        };
        let results = futures::future::join_all(targets.iter().map(|c| c.deliver(envelope))).await;
        for (consumer, result) in targets.iter().zip(results) {
            // Already in its inbox: the relay published this event before (a batch
            // cut short, a crash before the row was marked sent).
            if result.map_err(|e| BusError::Consumer(e.to_string()))? == Delivery::Duplicate {
                consumer.count_redelivery(&topic);
            }
        }
        metrics::counter!("bus_published_total", "topic" => topic).increment(1);
        Ok(())
    }
}
