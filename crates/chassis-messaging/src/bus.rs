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

impl Published {
    /// A batch of one, from that one publish's outcome.
    pub fn one(outcome: Result<(), BusError>) -> Self {
        match outcome {
            Ok(()) => Self {
                accepted: 1,
                failure: None,
            },
            Err(e) => Self {
                accepted: 0,
                failure: Some(e),
            },
        }
    }

    /// The outcome of a batch of one.
    pub fn into_one(self) -> Result<(), BusError> {
        self.failure.map_or(Ok(()), Err)
    }
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
        self.publish_batch(std::slice::from_ref(envelope))
            .await
            .into_one()
    }

    /// Each consumer applies the events it wants in one transaction (see
    /// [`Consumer::deliver_batch`]), the consumers side by side; all or none are
    /// accepted (a consumer's store failing fails the batch, and the relay publishes
    /// it again: what the other consumers applied, their inboxes absorb).
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Published {
        let topics: Vec<String> = envelopes.iter().map(Envelope::topic).collect();
        // Clone the consumers out so no lock is held across an await.
        let consumers: Vec<Arc<Consumer>> = match self.consumers.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let targets: Vec<(Arc<Consumer>, Vec<usize>)> = consumers
            .into_iter()
            .filter_map(|c| {
                let wanted: Vec<usize> = (0..envelopes.len())
                    .filter(|&i| c.wants(&topics[i]))
                    .collect();
                (!wanted.is_empty()).then_some((c, wanted))
            })
            .collect();
        let results = futures::future::join_all(targets.iter().map(|(c, wanted)| {
            let mine: Vec<&Envelope> = wanted.iter().map(|&i| &envelopes[i]).collect();
            async move { c.deliver_batch(&mine).await }
        }))
        .await;
        for ((consumer, wanted), result) in targets.iter().zip(results) {
            let deliveries = match result {
                Ok(deliveries) => deliveries,
                Err(e) => {
                    return Published {
                        accepted: 0,
                        failure: Some(BusError::Consumer(e.to_string())),
                    };
                }
            };
            for (&i, delivery) in wanted.iter().zip(deliveries) {
                // Already in its inbox: the relay published this event before (a
                // batch cut short, a crash before the row was marked sent).
                if delivery == Delivery::Duplicate {
                    consumer.count_redelivery(&topics[i]);
                }
            }
        }
        for topic in topics {
            metrics::counter!("bus_published_total", "topic" => topic).increment(1);
        }
        Published {
            accepted: envelopes.len(),
            failure: None,
        }
    }
}
