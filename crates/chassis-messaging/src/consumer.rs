//! The consuming side of at-least-once delivery.
//!
//! A [`Consumer`] applies one delivery with its inbox: the event id is recorded in
//! the same transaction as the handler's effect, so a redelivered event has no second
//! effect. A handler that keeps failing is retried with backoff, then dead-lettered
//! ([`dead_letters`](crate::dead_letters)). Whatever bus delivers (in process, or
//! JetStream), it delivers through a consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chassis_core::events::{DecodeError, Envelope};
use sqlx::{AnyConnection, AnyPool};
use tracing::Instrument;

use crate::outbox::OutboxError;

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (a dependency was down, a lock timed out).
    #[error("transient failure: {0}")]
    Transient(String),
    /// Will never succeed (undecodable, violates an invariant): dead-letter at once.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        HandlerError::Transient(e.to_string())
    }
}

impl From<DecodeError> for HandlerError {
    fn from(e: DecodeError) -> Self {
        HandlerError::Permanent(e.to_string())
    }
}

impl From<OutboxError> for HandlerError {
    fn from(e: OutboxError) -> Self {
        HandlerError::Transient(e.to_string())
    }
}

/// A module's reaction to events. `handle` runs inside the inbox transaction: write
/// the effect through `tx` and it commits together with the inbox record.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, tx: &mut AnyConnection, event: &Envelope) -> Result<(), HandlerError>;

    /// Whether several events may be applied in one transaction
    /// ([`Consumer::deliver_batch`]). A handler that does slow work outside the
    /// database (sending mail) says no: in a batch, its transaction, and with it the
    /// database's write lock, would stay open across every event's work.
    fn batchable(&self) -> bool {
        true
    }
}

/// Retries before an event is dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
        }
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Applied,
    /// Already in the inbox: redelivery, no effect.
    Duplicate,
    DeadLettered,
    /// Still failing transiently after the local retries, and the bus will deliver it
    /// again later (JetStream's redelivery): neither applied nor dead-lettered.
    Deferred,
}

/// One consuming module: its name (the inbox scope), the topics it wants, its handler
/// and its store.
pub struct Consumer {
    name: &'static str,
    topics: Vec<String>,
    pool: AnyPool,
    handler: Arc<dyn Handler>,
    policy: RetryPolicy,
    /// Deliveries in progress (the monolith's "ack pending").
    in_flight: AtomicU64,
    /// Deliveries of events this consumer had received before, since start.
    redeliveries: AtomicU64,
}

/// Counts a delivery in progress for as long as it lives.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn start(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

chassis_core::debug_fields!(Consumer { name, topics });

impl Consumer {
    pub fn new(
        name: &'static str,
        topics: Vec<String>,
        pool: AnyPool,
        handler: Arc<dyn Handler>,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            name,
            topics,
            pool,
            handler,
            policy,
            in_flight: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
        }
    }

    /// Deliveries being applied right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Redeliveries counted since start (see [`count_redelivery`](Self::count_redelivery)).
    pub fn redeliveries(&self) -> u64 {
        self.redeliveries.load(Ordering::Relaxed)
    }

    /// Counts an event of `topic` delivered to this consumer again
    /// (`consumer_redeliveries_total`).
    pub fn count_redelivery(&self, topic: &str) {
        self.redeliveries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("consumer_redeliveries_total", "consumer" => self.name, "topic" => topic.to_owned())
            .increment(1);
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    pub fn wants(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }

    /// Applies `envelope` once: retried on transient failure, dead-lettered when it
    /// cannot be applied. `Err` only when the store cannot record either outcome; the
    /// publisher then keeps the event and delivers it again later.
    pub async fn deliver(&self, envelope: &Envelope) -> Result<Delivery, sqlx::Error> {
        let _busy = InFlight::start(&self.in_flight);
        self.deliver_traced(envelope, true).await
    }

    /// Like [`deliver`](Self::deliver), for a bus that redelivers by itself: when the
    /// local retries of a transient failure run out, the event is left for the next
    /// delivery ([`Delivery::Deferred`]) instead of dead-lettered. Only a permanent
    /// failure dead-letters. (An event that needs another module's earlier event, such
    /// as an order email needing its buyer's registration, may wait longer than local
    /// retries last, e.g. while that event sits out a consumer restart.)
    pub async fn deliver_or_defer(&self, envelope: &Envelope) -> Result<Delivery, sqlx::Error> {
        let _busy = InFlight::start(&self.in_flight);
        self.deliver_traced(envelope, false).await
    }

    async fn deliver_traced(
        &self,
        envelope: &Envelope,
        last_chance: bool,
    ) -> Result<Delivery, sqlx::Error> {
        let (span, unsampled) = self.span(envelope);
        let work = self.deliver_inner(envelope, last_chance).instrument(span);
        match unsampled {
            Some(mark) => chassis_telemetry::sampling::scope(mark, work).await,
            None => work.await,
        }
    }

    /// The span one event's handling runs in, and its mark when the producer's trace
    /// is not sampled (run the handling under it: `chassis_telemetry::sampling::scope`).
    fn span(
        &self,
        envelope: &Envelope,
    ) -> (
        tracing::Span,
        Option<chassis_telemetry::sampling::Unsampled>,
    ) {
        let make = || {
            tracing::info_span!(
                "event",
                otel.name = %format_args!("{} {}", self.name, envelope.kind),
                otel.kind = "consumer",
                service = self.name,
                consumer = self.name,
                event_type = %envelope.kind,
                event_id = %envelope.id,
            )
        };
        // The consumer's span continues the producer's trace (its context travelled
        // in the envelope, through the outbox and the bus), sampled or not as the
        // producer's was. Under a NATS message span that already did so, it is simply
        // that span's child.
        match envelope.trace_context.as_deref() {
            Some(traceparent)
                if chassis_telemetry::trace_id(&tracing::Span::current())
                    != chassis_telemetry::trace_id_from_traceparent(traceparent) =>
            {
                chassis_telemetry::root_span(Some(traceparent), None, make)
            }
            _ => (make(), None),
        }
    }

    /// Applies several events, in order, in one transaction (one commit for the lot,
    /// each still recorded in the inbox with its effect), each under a savepoint. When
    /// a handler fails, the events before it commit and it and the ones after it are
    /// delivered on their own, with [`deliver`](Self::deliver)'s retries and dead
    /// letters: no event is handled again once its effect has committed. Unless the
    /// handler is not [`batchable`](Handler::batchable): then each event is delivered
    /// on its own.
    pub async fn deliver_batch(
        &self,
        envelopes: &[&Envelope],
    ) -> Result<Vec<Delivery>, sqlx::Error> {
        if envelopes.len() == 1 || !self.handler.batchable() {
            let mut deliveries = Vec::with_capacity(envelopes.len());
            for envelope in envelopes {
                deliveries.push(self.deliver(envelope).await?);
            }
            return Ok(deliveries);
        }
        let _busy = envelopes
            .iter()
            .map(|_| InFlight::start(&self.in_flight))
            .collect::<Vec<_>>();
        let (mut deliveries, rest) = match self.try_batch(envelopes).await {
            Ok((committed, failed_at)) => {
                for (envelope, delivery) in envelopes.iter().zip(&committed) {
                    self.count(&envelope.topic(), *delivery);
                }
                (committed, failed_at)
            }
            Err(e) => {
                tracing::debug!(consumer = self.name, error = %e, "a batch failed to commit; delivering its events one by one");
                (Vec::with_capacity(envelopes.len()), Some(0))
            }
        };
        for envelope in rest.map_or(&[][..], |from| &envelopes[from..]) {
            deliveries.push(self.deliver_traced(envelope, true).await?);
        }
        Ok(deliveries)
    }

    /// The batch in one transaction, each event under a savepoint: the deliveries
    /// committed and, if a handler failed, the index of its event (rolled back to its
    /// savepoint; the events before it committed).
    async fn try_batch(
        &self,
        envelopes: &[&Envelope],
    ) -> Result<(Vec<Delivery>, Option<usize>), HandlerError> {
        use sqlx::Connection as _;
        let mut tx = self.pool.begin().await?;
        let mut deliveries = Vec::with_capacity(envelopes.len());
        let mut failed_at = None;
        for (index, envelope) in envelopes.iter().enumerate() {
            let started = Instant::now();
            let mut savepoint = (*tx).begin().await?;
            let (span, unsampled) = self.span(envelope);
            let work = self.apply(&mut savepoint, envelope).instrument(span);
            let outcome = match unsampled {
                Some(mark) => chassis_telemetry::sampling::scope(mark, work).await,
                None => work.await,
            };
            metrics::histogram!("consumer_handler_duration_seconds", "consumer" => self.name, "topic" => envelope.topic())
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(delivery) => {
                    savepoint.commit().await?;
                    deliveries.push(delivery);
                }
                Err(e) => {
                    savepoint.rollback().await?;
                    tracing::debug!(consumer = self.name, error = %e, "an event of a batch failed; the rest go one by one");
                    failed_at = Some(index);
                    break;
                }
            }
        }
        tx.commit().await?;
        Ok((deliveries, failed_at))
    }

    fn count(&self, topic: &str, delivery: Delivery) {
        let label = if delivery == Delivery::Applied {
            "applied"
        } else {
            "duplicate"
        };
        metrics::counter!("consumer_events_total", "consumer" => self.name, "topic" => topic.to_owned(), "outcome" => label)
            .increment(1);
        tracing::debug!(outcome = label, "event handled");
    }

    async fn deliver_inner(
        &self,
        envelope: &Envelope,
        last_chance: bool,
    ) -> Result<Delivery, sqlx::Error> {
        let topic = envelope.topic();
        let mut last_error = String::new();
        let mut attempts = 0;
        let mut permanent = false;
        while attempts < self.policy.attempts {
            attempts += 1;
            let started = Instant::now();
            let outcome = self.try_once(envelope).await;
            metrics::histogram!("consumer_handler_duration_seconds", "consumer" => self.name, "topic" => topic.clone())
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(delivery) => {
                    self.count(&topic, delivery);
                    return Ok(delivery);
                }
                Err(HandlerError::Permanent(e)) => {
                    last_error = e;
                    permanent = true;
                    break;
                }
                Err(HandlerError::Transient(e)) => {
                    metrics::counter!("consumer_retries_total", "consumer" => self.name, "topic" => topic.clone())
                        .increment(1);
                    tracing::warn!(attempt = attempts, error = %e, "handler failed; retrying");
                    last_error = e;
                    if attempts < self.policy.attempts {
                        tokio::time::sleep(chassis_core::retry::backoff(
                            attempts,
                            self.policy.base,
                            self.policy.cap,
                        ))
                        .await;
                    }
                }
            }
        }
        if !permanent && !last_chance {
            metrics::counter!("consumer_events_total", "consumer" => self.name, "topic" => topic, "outcome" => "deferred")
                .increment(1);
            tracing::warn!(attempts, error = %last_error, "still failing; left for redelivery");
            return Ok(Delivery::Deferred);
        }
        self.dead_letter(envelope, &last_error, attempts).await?;
        Ok(Delivery::DeadLettered)
    }

    async fn try_once(&self, envelope: &Envelope) -> Result<Delivery, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let delivery = self.apply(&mut tx, envelope).await?;
        if delivery == Delivery::Duplicate {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(delivery)
    }

    /// The inbox record and, unless it was there already, the handler's effect, in
    /// the caller's transaction.
    async fn apply(
        &self,
        tx: &mut AnyConnection,
        envelope: &Envelope,
    ) -> Result<Delivery, HandlerError> {
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(self.name)
        .bind(&envelope.id)
        .bind(chassis_core::time::now_micros())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(Delivery::Duplicate);
        }
        self.handler.handle(tx, envelope).await?;
        Ok(Delivery::Applied)
    }

    async fn dead_letter(
        &self,
        envelope: &Envelope,
        error: &str,
        attempts: u32,
    ) -> Result<(), sqlx::Error> {
        tracing::error!(error = %error, attempts, "event dead-lettered");
        metrics::counter!("dead_letters_total", "consumer" => self.name).increment(1);
        let mut tx = self.pool.begin().await?;
        crate::dead_letters::record(&mut tx, self.name, envelope, error, attempts).await?;
        tx.commit().await
    }
}
