//! Where relays publish: the [`Bus`], and the monolith's [`InProcBus`] (NATS
//! JetStream's is [`NatsBus`](crate::nats::NatsBus)).

use std::sync::{Arc, RwLock};

use chassis_core::events::Envelope;
use tokio::sync::{mpsc, oneshot};

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

    /// Whether publishes may overlap: the relay then sends the next batch before the
    /// last is accepted, and a later batch may be accepted first (a consumer that is
    /// behind on an earlier one). Stamps stay per batch, so a crash redelivers what was
    /// not yet accepted; consumers already tolerate order changes (JetStream's never
    /// promised order either). By default one publish at a time.
    fn pipelined(&self) -> bool {
        false
    }
}

/// The monolith's bus: a publish is handed to every interested consumer in this
/// process and returns when all have applied (or dead-lettered) it. Until then the
/// relay keeps the outbox row unsent, so a crash mid-delivery redelivers on restart.
///
/// Each consumer applies in its own lane (a task taking the batches meant for it in
/// the order they were published), so publishes may overlap
/// ([`pipelined`](Bus::pipelined)): a consumer that is slow (notifications fsyncs each
/// email) falls behind on its own lane while a fast one (the cart, waiting for
/// `OrderConfirmed`) keeps up, as JetStream's durable consumers do in the split.
#[derive(Default)]
pub struct InProcBus {
    lanes: RwLock<Vec<Lane>>,
}

chassis_core::debug_fields!(InProcBus {});

/// One consumer's lane: where its batches queue.
#[derive(Clone)]
struct Lane {
    consumer: Arc<Consumer>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// A batch for one lane: `wanted` are the indices of its events in `envelopes`.
struct Job {
    envelopes: Arc<[Envelope]>,
    wanted: Vec<usize>,
    /// The deliveries of `wanted`, in order, or why the consumer's store failed.
    done: oneshot::Sender<Result<Vec<Delivery>, String>>,
}

/// Events a lane that is behind takes as one batch, at most (a relay batch's size).
const LANE_BATCH: usize = 100;

impl InProcBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `consumer`'s lane: a task on the current Tokio runtime that lives as
    /// long as the bus (it ends when the bus is dropped and its queue is empty).
    pub fn subscribe(&self, consumer: Arc<Consumer>) {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let worker = Arc::clone(&consumer);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                // A lane that is behind takes what has queued up as one batch (one
                // transaction for a batchable consumer), as the relay's batches grow
                // when the bus is slow: under load, fewer and larger commits rather
                // than one per relay pass contending for the database's write lock.
                let mut events = first.wanted.len();
                let mut taken = vec![first];
                while events < LANE_BATCH {
                    let Ok(job) = queue.try_recv() else { break };
                    events += job.wanted.len();
                    taken.push(job);
                }
                let mine: Vec<&Envelope> = taken
                    .iter()
                    .flat_map(|job| job.wanted.iter().map(|&i| &job.envelopes[i]))
                    .collect();
                let outcome = worker.deliver_batch(&mine).await;
                worker.count_queued(mine.len(), false);
                // A publisher may have stopped waiting (shutdown); the outcome is in
                // the consumer's store either way.
                match outcome {
                    Ok(deliveries) => {
                        let mut deliveries = deliveries.into_iter();
                        for job in taken {
                            let share = deliveries.by_ref().take(job.wanted.len()).collect();
                            let _ = job.done.send(Ok(share));
                        }
                    }
                    Err(e) => {
                        let e = e.to_string();
                        for job in taken {
                            let _ = job.done.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        let lane = Lane { consumer, jobs };
        match self.lanes.write() {
            Ok(mut lanes) => lanes.push(lane),
            Err(poisoned) => poisoned.into_inner().push(lane),
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
    /// [`Consumer::deliver_batch`]), on its own lane; all or none are accepted (a
    /// consumer's store failing fails the batch, and the relay publishes it again:
    /// what the other consumers applied, their inboxes absorb).
    async fn publish_batch(&self, envelopes: &[Envelope]) -> Published {
        let topics: Vec<String> = envelopes.iter().map(Envelope::topic).collect();
        // Clone the lanes out so no lock is held across an await.
        let lanes: Vec<Lane> = match self.lanes.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let shared: Arc<[Envelope]> = envelopes.into();
        let mut waiting = Vec::new();
        for lane in lanes {
            let wanted: Vec<usize> = (0..envelopes.len())
                .filter(|&i| lane.consumer.wants(&topics[i]))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let (done, outcome) = oneshot::channel();
            lane.consumer.count_queued(wanted.len(), true);
            let job = Job {
                envelopes: Arc::clone(&shared),
                wanted: wanted.clone(),
                done,
            };
            if lane.jobs.send(job).is_err() {
                lane.consumer.count_queued(wanted.len(), false);
                return refused(BusError::Unavailable(format!(
                    "{}'s lane has stopped",
                    lane.consumer.name()
                )));
            }
            waiting.push((lane.consumer, wanted, outcome));
        }
        for (consumer, wanted, outcome) in waiting {
            let deliveries = match outcome.await {
                Ok(Ok(deliveries)) => deliveries,
                Ok(Err(e)) => return refused(BusError::Consumer(e)),
                Err(_) => {
                    return refused(BusError::Unavailable(format!(
                        "{}'s lane has stopped",
                        consumer.name()
                    )));
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

    fn pipelined(&self) -> bool {
        true
    }
}

/// Nothing of the batch accepted.
fn refused(failure: BusError) -> Published {
    Published {
        accepted: 0,
        failure: Some(failure),
    }
}
