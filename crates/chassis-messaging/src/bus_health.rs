//! How backed up one process's event plumbing is, and its database pools: sampled into
//! gauges every few seconds by [`BusHealth::spawn_sampler`], and served to admins as
//! `GET /api/v1/admin/bus` (chassis's `admin::bus`).
//!
//! **Consumer lag** means the same in both topologies: events published for a
//! consumer that it has not applied yet (those being applied included).
//! - JetStream: the consumer's durables (one per source stream) summed: `num_pending`
//!   (not yet delivered) plus `num_ack_pending` (delivered, not yet acknowledged), the
//!   latter being `consumer_ack_pending`.
//! - In process (the monolith): a relay hands an event to every interested consumer
//!   before it marks the outbox row sent, so the unsent outbox rows on a consumer's
//!   topics are the events it has not applied yet (rows are marked a batch at a time,
//!   so within one relay pass the figure can run a little ahead);
//!   `consumer_ack_pending` is its deliveries in progress.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use chassis_core::events::source_of;
use chassis_store::store::Store;

use crate::consumer::Consumer;
use crate::nats::{JetStream, NatsError};
use crate::outbox::{Backlog, Outbox};

/// How often the gauges are refreshed.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Longest a JetStream sample may take before it is given up (NATS down).
const JETSTREAM_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The consumers', outboxes' and pools' state of one process.
#[derive(Clone)]
pub struct BusHealth(Arc<Inner>);

struct Inner {
    /// The `process` this reports for (`bazaar`, `orders`).
    process: &'static str,
    stores: Vec<Store>,
    outboxes: Vec<Outbox>,
    consumers: Vec<Arc<Consumer>>,
    /// Split topology: where consumer lag is read (set when the workers start).
    jetstream: OnceLock<JetStream>,
    /// The last JetStream lag sample per consumer.
    sampled: Mutex<BTreeMap<&'static str, Lag>>,
}

impl std::fmt::Debug for BusHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusHealth")
            .field("process", &self.0.process)
            .finish_non_exhaustive()
    }
}

/// A consumer's lag at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Lag {
    waiting: u64,
    in_progress: u64,
    at_micros: i64,
}

#[allow(clippy::cast_precision_loss)]
fn gauge_value(n: u64) -> f64 {
    n as f64
}

impl BusHealth {
    /// Registers the series of these consumers and outboxes at zero, so dashboards and
    /// alerts see them before the first event.
    pub fn new(
        process: &'static str,
        stores: Vec<Store>,
        outboxes: Vec<Outbox>,
        consumers: Vec<Arc<Consumer>>,
    ) -> Self {
        drop(chassis_telemetry::metrics::handle());
        for consumer in &consumers {
            let name = consumer.name();
            chassis_telemetry::metrics::zero_counter("dead_letters_total", &[("consumer", name)]);
            metrics::gauge!("dead_letters_present", "consumer" => name).set(0.0);
            metrics::gauge!("consumer_lag", "consumer" => name).set(0.0);
            metrics::gauge!("consumer_ack_pending", "consumer" => name).set(0.0);
            for topic in consumer.topics() {
                let topic = topic.clone();
                metrics::counter!("consumer_redeliveries_total", "consumer" => name, "topic" => topic.clone())
                    .increment(0);
                metrics::counter!("consumer_retries_total", "consumer" => name, "topic" => topic.clone())
                    .increment(0);
                for outcome in ["applied", "duplicate"] {
                    metrics::counter!("consumer_events_total", "consumer" => name, "topic" => topic.clone(), "outcome" => outcome)
                        .increment(0);
                }
            }
        }
        for outbox in &outboxes {
            let module = outbox.module();
            chassis_telemetry::metrics::zero_counter("outbox_relayed_total", &[("module", module)]);
            metrics::gauge!("outbox_backlog", "module" => module).set(0.0);
            metrics::gauge!("outbox_oldest_unsent_age_seconds", "module" => module).set(0.0);
        }
        Self(Arc::new(Inner {
            process,
            stores,
            outboxes,
            consumers,
            jetstream: OnceLock::new(),
            sampled: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Refreshes the gauges every [`SAMPLE_EVERY`] until `shutdown`; with `jetstream`
    /// (split) consumer lag is read from the durables, otherwise from the outboxes.
    pub fn spawn_sampler(
        &self,
        jetstream: Option<JetStream>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        if let Some(js) = jetstream {
            for consumer in &self.0.consumers {
                for name in [
                    "nats_dead_letters_total",
                    "nats_naks_total",
                    "nats_consumer_restarts_total",
                ] {
                    chassis_telemetry::metrics::zero_counter(
                        name,
                        &[("consumer", consumer.name())],
                    );
                }
            }
            let _ = self.0.jetstream.set(js);
        }
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                health.sample().await;
                tokio::select! {
                    () = tokio::time::sleep(SAMPLE_EVERY) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        })
    }

    /// One refresh of every gauge; returns the report the admin route serves.
    pub async fn sample(&self) -> Vec<ModuleBus> {
        let inner = &self.0;
        for store in &inner.stores {
            let pool = store.pool();
            let size = pool.size();
            let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
            let module = store.module();
            metrics::gauge!("db_pool_connections", "module" => module, "state" => "idle")
                .set(f64::from(idle));
            metrics::gauge!("db_pool_connections", "module" => module, "state" => "in_use")
                .set(f64::from(size - idle));
            metrics::gauge!("db_pool_max_connections", "module" => module)
                .set(f64::from(pool.options().get_max_connections()));
        }

        let dead = self.dead_letters().await;
        for consumer in &inner.consumers {
            let present = dead.get(consumer.name()).copied().unwrap_or(0);
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("dead_letters_present", "consumer" => consumer.name())
                .set(present as f64);
        }

        let lags = match inner.jetstream.get() {
            Some(js) => self.jetstream_lag(js).await,
            None => self.in_process_lag().await,
        };
        for (name, lag) in &lags {
            metrics::gauge!("consumer_lag", "consumer" => *name).set(gauge_value(lag.waiting));
            metrics::gauge!("consumer_ack_pending", "consumer" => *name)
                .set(gauge_value(lag.in_progress));
        }

        let mut report = Vec::with_capacity(inner.stores.len());
        for store in &inner.stores {
            let module = store.module();
            let backlog = match inner.outboxes.iter().find(|o| o.module() == module) {
                Some(outbox) => match outbox.backlog().await {
                    Ok(backlog) => backlog,
                    Err(e) => {
                        tracing::warn!(module, error = %e, "cannot read the outbox backlog");
                        Backlog::default()
                    }
                },
                None => Backlog::default(),
            };
            // A consumer is named after its module.
            let consumers = inner
                .consumers
                .iter()
                .filter(|c| c.name() == module)
                .map(|c| {
                    let lag = lags.get(c.name()).copied().unwrap_or_default();
                    ConsumerBus {
                        name: c.name().to_owned(),
                        lag: lag.waiting,
                        ack_pending: lag.in_progress,
                        redeliveries: c.redeliveries(),
                        dead_letters: dead.get(c.name()).copied().unwrap_or(0),
                        sampled_at: (lag.at_micros > 0)
                            .then(|| chassis_core::time::micros_to_rfc3339(lag.at_micros)),
                    }
                })
                .collect();
            #[allow(clippy::cast_precision_loss)]
            report.push(ModuleBus {
                service: module.to_owned(),
                process: inner.process.to_owned(),
                outbox_backlog: backlog.unsent,
                outbox_oldest_unsent_age_seconds: backlog.oldest_age_micros as f64 / 1e6,
                consumers,
            });
        }
        report
    }

    /// Dead letters per consumer, over every store here.
    async fn dead_letters(&self) -> HashMap<String, i64> {
        let mut counts = HashMap::new();
        for store in &self.0.stores {
            let rows: Result<Vec<(String, i64)>, _> =
                sqlx::query_as("SELECT consumer, COUNT(*) FROM dead_letters GROUP BY consumer")
                    .fetch_all(store.pool())
                    .await;
            match rows {
                Ok(rows) => {
                    for (consumer, n) in rows {
                        *counts.entry(consumer).or_insert(0) += n;
                    }
                }
                Err(e) => {
                    tracing::warn!(module = store.module(), error = %e, "cannot count dead letters");
                }
            }
        }
        counts
    }

    /// Monolith: unsent outbox rows on each consumer's topics.
    async fn in_process_lag(&self) -> BTreeMap<&'static str, Lag> {
        let inner = &self.0;
        let mut unsent: HashMap<String, u64> = HashMap::new();
        for outbox in &inner.outboxes {
            let Some(store) = inner.stores.iter().find(|s| s.module() == outbox.module()) else {
                continue;
            };
            let rows: Result<Vec<(String, i64)>, _> = sqlx::query_as(
                "SELECT topic, COUNT(*) FROM outbox WHERE sent_at IS NULL GROUP BY topic",
            )
            .fetch_all(store.pool())
            .await;
            match rows {
                Ok(rows) => {
                    for (topic, n) in rows {
                        *unsent.entry(topic).or_insert(0) += u64::try_from(n).unwrap_or(0);
                    }
                }
                Err(e) => {
                    tracing::warn!(module = outbox.module(), error = %e, "cannot read the outbox for consumer lag");
                }
            }
        }
        let now = chassis_core::time::now_micros();
        inner
            .consumers
            .iter()
            .map(|c| {
                let lag = c
                    .topics()
                    .iter()
                    .map(|t| unsent.get(t).copied().unwrap_or(0))
                    .sum();
                (
                    c.name(),
                    Lag {
                        waiting: lag,
                        in_progress: c.in_flight(),
                        at_micros: now,
                    },
                )
            })
            .collect()
    }

    /// Split: every consumer's durables, one per source stream. A consumer whose
    /// durables cannot be read (NATS down) keeps its previous sample.
    async fn jetstream_lag(&self, js: &JetStream) -> BTreeMap<&'static str, Lag> {
        let inner = &self.0;
        for consumer in &inner.consumers {
            let mut sources: Vec<&str> = consumer.topics().iter().map(|t| source_of(t)).collect();
            sources.sort_unstable();
            sources.dedup();
            let read = async {
                let mut total = Lag::default();
                for source in sources {
                    let (pending, ack_pending) =
                        js.consumer_pending(consumer.name(), source).await?;
                    total.waiting += pending + ack_pending;
                    total.in_progress += ack_pending;
                }
                total.at_micros = chassis_core::time::now_micros();
                Ok::<_, NatsError>(total)
            };
            match tokio::time::timeout(JETSTREAM_SAMPLE_TIMEOUT, read).await {
                Ok(Ok(lag)) => {
                    self.sampled().insert(consumer.name(), lag);
                }
                Ok(Err(e)) => {
                    tracing::debug!(consumer = consumer.name(), error = %e, "cannot sample consumer lag");
                }
                Err(_) => {
                    tracing::debug!(
                        consumer = consumer.name(),
                        "sampling consumer lag timed out"
                    );
                }
            }
        }
        self.sampled().clone()
    }

    fn sampled(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Lag>> {
        match self.0.sampled.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// One module's share of the bus, as `GET /api/v1/admin/bus` lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ModuleBus {
    /// The module.
    pub service: String,
    /// The process it runs in: `bazaar` (the monolith) or the module's own name.
    pub process: String,
    /// Unsent outbox rows (0 for a module that publishes nothing).
    pub outbox_backlog: i64,
    /// How long the oldest unsent row has waited; 0 when none.
    pub outbox_oldest_unsent_age_seconds: f64,
    /// The module's event consumer, if it has one.
    pub consumers: Vec<ConsumerBus>,
}

/// One consumer's state.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ConsumerBus {
    pub name: String,
    /// Events published for it and not applied yet (in progress included).
    pub lag: u64,
    /// Events it is applying right now (JetStream: delivered, not yet acknowledged).
    pub ack_pending: u64,
    /// Deliveries of events it had already received, since this process started.
    pub redeliveries: u64,
    /// Dead letters in its store now.
    pub dead_letters: i64,
    /// When the lag was measured (split: the last sample, every 5 s); null before the
    /// first.
    pub sampled_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sqlx::AnyConnection;

    use chassis_core::events::Envelope;

    use super::BusHealth;
    use crate::consumer::{Consumer, Handler, HandlerError, RetryPolicy};
    use crate::outbox::Outbox;

    struct Ignore;

    #[async_trait::async_trait]
    impl Handler for Ignore {
        async fn handle(&self, _: &mut AnyConnection, _: &Envelope) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    /// In process, a consumer's lag is the unsent outbox rows on its topics; dead
    /// letters are counted from its store.
    #[tokio::test]
    async fn monolith_lag_backlog_and_dead_letters() {
        // The store from the test kit: chassis-store, not this crate, so one type.
        let store = testkit::delivery::TestStore::sqlite("t").await;
        store.migrate_platform().await.unwrap();
        let pool = store.pool();
        let now = chassis_core::time::now_micros();
        for (id, topic, sent) in [
            ("1", "t.Wanted", None),
            ("2", "t.Wanted", None),
            ("3", "t.Wanted", Some(now)),
            ("4", "t.Other", None),
        ] {
            sqlx::query(
                "INSERT INTO outbox (id, topic, envelope, created_at, sent_at) VALUES ($1, $2, '{}', $3, $4)",
            )
            .bind(id)
            .bind(topic)
            .bind(now - 2_000_000)
            .bind(sent)
            .execute(pool)
            .await
            .unwrap();
        }
        for event in ["a", "b"] {
            sqlx::query(
                "INSERT INTO dead_letters (consumer, event_id, topic, envelope, error, attempts, failed_at) \
                 VALUES ('t', $1, 't.Wanted', '{}', 'boom', 5, $2)",
            )
            .bind(event)
            .bind(now)
            .execute(pool)
            .await
            .unwrap();
        }
        let consumer = Arc::new(Consumer::new(
            "t",
            vec!["t.Wanted".to_owned()],
            pool.clone(),
            Arc::new(Ignore),
            RetryPolicy::default(),
        ));
        let health = BusHealth::new(
            "bazaar",
            vec![store.clone()],
            vec![Outbox::new("t", pool.clone())],
            vec![consumer],
        );
        let report = health.sample().await;
        assert_eq!(report.len(), 1);
        let item = &report[0];
        assert_eq!(
            (item.service.as_str(), item.process.as_str()),
            ("t", "bazaar")
        );
        assert_eq!(item.outbox_backlog, 3);
        assert!(item.outbox_oldest_unsent_age_seconds >= 2.0, "{item:?}");
        assert_eq!(item.consumers.len(), 1);
        let c = &item.consumers[0];
        assert_eq!((c.lag, c.ack_pending, c.dead_letters), (2, 0, 2), "{c:?}");
        store.close().await;
    }
}
