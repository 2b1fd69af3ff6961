//! The split topology's bus: NATS JetStream, with the same delivery model as
//! [`InProcBus`](crate::bus::InProcBus).
//!
//! - **Publishing** ([`NatsBus`]): an envelope goes to subject `<prefix>.<source>.<type>`
//!   (`bazaar.orders.OrderConfirmed`) with `Nats-Msg-Id` = the envelope id (JetStream
//!   drops a second copy within the stream's duplicate window) and the W3C
//!   `traceparent`. [`Bus::publish`] returns only once JetStream acknowledged the
//!   message, so the relay keeps an outbox row unsent until it is stored.
//! - **Streams**: one per publishing module, `<PREFIX>_<SOURCE>` on `<prefix>.<source>.>`,
//!   file storage, created (or brought up to date) idempotently by
//!   [`JetStream::ensure_stream`].
//! - **Consuming** ([`spawn_consumer`]): one durable pull consumer per (consuming module,
//!   source stream), named after the module. Each message is applied through
//!   [`Consumer::deliver`] (inbox and effect in one transaction, local retries, dead
//!   letters in the module's store) and acknowledged only after that returned; when the
//!   store itself fails the message is nak'ed with a delay and JetStream redelivers it,
//!   at most `max_deliver` times. A message that cannot be decoded, or that is still
//!   failing on its last delivery, is copied to `<prefix>.deadletter.<consumer>` (stream
//!   `<PREFIX>_DEADLETTER`) before it is acknowledged, so nothing disappears silently.
//!
//! Delivery is at-least-once and unordered across redeliveries and in-flight
//! concurrency; the inbox makes the effects exactly-once.
//!
//! Production runs streams with three replicas ([`NatsSettings::replicas`]) on servers
//! configured with `jetstream { sync_interval: always }` (fsync before every ack):
//! that is server configuration, not something a client can ask for, and
//! nats-server 2.9 does not know the option; see `docs/operations.md`.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self as js, AckKind};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::{Bus, BusError, Consumer, Delivery};
use crate::events::Envelope;

/// The pseudo-source whose stream holds dead letters: no module may be called this.
pub const DEAD_LETTER_SOURCE: &str = "deadletter";

/// Consecutive missed heartbeats / failed pull requests before a consume loop drops its
/// message stream and starts over.
const MAX_SOFT_ERRORS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("JetStream consumer {consumer} on stream {stream}: {message}")]
    Consumer {
        consumer: String,
        stream: String,
        message: String,
    },
}

/// Names and limits of the JetStream side.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// First subject token and stream-name prefix: `bazaar` in production; tests use a
    /// unique one so they collide neither with each other nor with real streams.
    pub prefix: String,
    /// Stream replicas: 1 on a single server, 3 in production.
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a republished copy.
    pub duplicate_window: Duration,
    /// How long a stream keeps messages (every consumer must have read them by then).
    pub max_age: Duration,
    /// How long a publish waits for JetStream's acknowledgement.
    pub publish_timeout: Duration,
    /// How long a JetStream API request (stream/consumer info, create) may take.
    pub request_timeout: Duration,
    /// Upper bound of the client's wait between reconnect attempts.
    pub reconnect_max_delay: Duration,
    pub consumer: ConsumerSettings,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            prefix: "bazaar".to_owned(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            publish_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
            consumer: ConsumerSettings::default(),
        }
    }
}

/// How durable consumers are configured and driven.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// How long JetStream waits for an ack before redelivering. Kept alive with
    /// "in progress" acks while a delivery is being applied.
    pub ack_wait: Duration,
    /// Further waits for later redeliveries of unacknowledged messages. JetStream uses
    /// `[ack_wait, backoff...]` (its first backoff step replaces the ack wait).
    pub backoff: Vec<Duration>,
    /// Deliveries before JetStream gives a message up (it is dead-lettered on the last).
    pub max_deliver: i64,
    /// Messages being applied at once per (consumer, stream).
    pub max_in_flight: usize,
    /// Nak delay after the consumer's store failed: full-jitter backoff on the
    /// delivery count between these bounds.
    pub nak_delay_base: Duration,
    pub nak_delay_cap: Duration,
    /// Idle heartbeat of pull requests: how soon a dead connection is noticed.
    pub heartbeat: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            backoff: vec![
                Duration::from_secs(60),
                Duration::from_secs(120),
                Duration::from_secs(300),
            ],
            max_deliver: 10,
            max_in_flight: 16,
            nak_delay_base: Duration::from_millis(500),
            nak_delay_cap: Duration::from_secs(60),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// A JetStream connection with bazaar's naming and settings.
#[derive(Clone)]
pub struct JetStream {
    client: async_nats::Client,
    context: js::Context,
    settings: Arc<NatsSettings>,
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl JetStream {
    /// Connects to `url` (comma-separated for a cluster). The client reconnects by
    /// itself, forever, waiting at most `settings.reconnect_max_delay` between tries.
    pub async fn connect(
        url: &str,
        client_name: &str,
        settings: NatsSettings,
    ) -> Result<Self, NatsError> {
        let max_delay = settings.reconnect_max_delay;
        let client = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(settings.request_timeout)
            .reconnect_delay_callback(move |attempts| {
                let step = u32::try_from(attempts.min(16)).unwrap_or(16);
                Duration::from_millis(50)
                    .saturating_mul(1_u32 << step)
                    .min(max_delay)
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    // Our own shutdown closes the connection: nothing to warn about.
                    async_nats::Event::Closed => tracing::info!("NATS connection closed"),
                    async_nats::Event::SlowConsumer(_) => {
                        tracing::warn!(event = %event, "NATS slow consumer");
                    }
                    other => tracing::warn!(event = %other, "NATS connection event"),
                }
            })
            .connect(url)
            .await
            .map_err(|e| NatsError::Connect {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self::new(client, settings))
    }

    pub fn new(client: async_nats::Client, settings: NatsSettings) -> Self {
        let context = js::ContextBuilder::new()
            .timeout(settings.request_timeout)
            .ack_timeout(settings.publish_timeout)
            .build(client.clone());
        Self {
            client,
            context,
            settings: Arc::new(settings),
        }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn context(&self) -> &js::Context {
        &self.context
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    /// `<prefix>.<topic>`, e.g. `bazaar.orders.OrderConfirmed`.
    pub fn subject(&self, topic: &str) -> String {
        format!("{}.{topic}", self.settings.prefix)
    }

    /// `<PREFIX>_<SOURCE>`, e.g. `BAZAAR_ORDERS`.
    pub fn stream_name(&self, source: &str) -> String {
        format!("{}_{source}", self.settings.prefix)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// Where a consumer's undecodable or undeliverable messages are copied.
    pub fn dead_letter_subject(&self, consumer: &str) -> String {
        format!("{}.{DEAD_LETTER_SOURCE}.{consumer}", self.settings.prefix)
    }

    /// The stream a module publishes to.
    pub fn stream_config(&self, source: &str) -> stream::Config {
        stream::Config {
            name: self.stream_name(source),
            description: Some(format!("bazaar events published by {source}")),
            subjects: vec![format!("{}.{source}.>", self.settings.prefix)],
            storage: StorageType::File,
            num_replicas: self.settings.replicas,
            duplicate_window: self.settings.duplicate_window,
            max_age: self.settings.max_age,
            ..Default::default()
        }
    }

    /// Creates `source`'s stream, or updates it when the settings it is given differ
    /// from the ones it has (storage type cannot change: that is only logged).
    pub async fn ensure_stream(&self, source: &str) -> Result<stream::Stream, NatsError> {
        let wanted = self.stream_config(source);
        let error = |message: String| NatsError::Stream {
            stream: wanted.name.clone(),
            message,
        };
        let stream = self
            .context
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| error(e.to_string()))?;
        let have = &stream.cached_info().config;
        if have.storage != wanted.storage {
            tracing::warn!(stream = %wanted.name, "stream is not file-backed; recreate it to change storage");
        }
        let mut have_subjects = have.subjects.clone();
        have_subjects.sort();
        if have_subjects != wanted.subjects
            || have.num_replicas != wanted.num_replicas
            || have.duplicate_window != wanted.duplicate_window
            || have.max_age != wanted.max_age
        {
            tracing::info!(stream = %wanted.name, "updating stream configuration");
            let mut update = have.clone();
            update.subjects.clone_from(&wanted.subjects);
            update.num_replicas = wanted.num_replicas;
            update.duplicate_window = wanted.duplicate_window;
            update.max_age = wanted.max_age;
            self.context
                .update_stream(update)
                .await
                .map_err(|e| error(e.to_string()))?;
            return self
                .context
                .get_stream(&wanted.name)
                .await
                .map_err(|e| error(e.to_string()));
        }
        Ok(stream)
    }

    /// Deletes `source`'s stream with its messages and consumers; `false` when there
    /// was none. For tests and operators, never called by the service itself.
    pub async fn delete_stream(&self, source: &str) -> Result<bool, NatsError> {
        let name = self.stream_name(source);
        match self.context.delete_stream(&name).await {
            Ok(status) => Ok(status.success),
            Err(e)
                if matches!(e.kind(), js::context::DeleteStreamErrorKind::JetStream(ref err)
                    if err.error_code() == js::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(false)
            }
            Err(e) => Err(NatsError::Stream {
                stream: name,
                message: e.to_string(),
            }),
        }
    }

    /// The durable pull consumer `consumer` has on `source`'s stream.
    ///
    /// It is filtered to the consumer's topics of that source: one subject as
    /// `filter_subject`; several as `filter_subjects` on NATS ≥ 2.10, while older
    /// servers get no filter (the whole stream) and the consume loop acknowledges and
    /// skips what the consumer does not want.
    pub fn consumer_config(&self, consumer: &Consumer, source: &str) -> pull::Config {
        let subjects: Vec<String> = consumer
            .topics()
            .iter()
            .filter(|topic| source_of(topic) == source)
            .map(|topic| self.subject(topic))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (filter_subject, filter_subjects) = match subjects.as_slice() {
            [one] => (one.clone(), Vec::new()),
            _ if server_supports_filter_subjects(&self.client) => (String::new(), subjects),
            _ => (String::new(), Vec::new()),
        };
        let settings = &self.settings.consumer;
        let max_deliver = settings.max_deliver;
        let backoff: Vec<Duration> = if settings.backoff.is_empty() {
            Vec::new()
        } else {
            // JetStream wants fewer backoff steps than deliveries.
            let limit = usize::try_from(max_deliver.saturating_sub(1)).unwrap_or(usize::MAX);
            std::iter::once(settings.ack_wait)
                .chain(settings.backoff.iter().copied())
                .take(if max_deliver > 0 { limit } else { usize::MAX })
                .collect()
        };
        pull::Config {
            durable_name: Some(consumer.name().to_owned()),
            description: Some(format!("{} consuming {source}", consumer.name())),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_deliver,
            backoff,
            filter_subject,
            filter_subjects,
            ..Default::default()
        }
    }

    /// Creates (or updates) `consumer`'s durable on `source`'s stream, creating the
    /// stream first if the publisher has not yet.
    pub async fn ensure_consumer(
        &self,
        consumer: &Consumer,
        source: &str,
    ) -> Result<PullConsumer, NatsError> {
        let stream = self.ensure_stream(source).await?;
        let config = self.consumer_config(consumer, source);
        self.context
            .create_consumer_on_stream(config, stream.cached_info().config.name.as_str())
            .await
            .map_err(|e| NatsError::Consumer {
                consumer: consumer.name().to_owned(),
                stream: self.stream_name(source),
                message: e.to_string(),
            })
    }
}

impl JetStream {
    /// `consumer`'s durable on `source`'s stream: messages not yet delivered
    /// (`num_pending`) and delivered but not yet acknowledged (`num_ack_pending`).
    pub async fn consumer_pending(
        &self,
        consumer: &str,
        source: &str,
    ) -> Result<(u64, u64), NatsError> {
        let stream = self.stream_name(source);
        let error = |message: String| NatsError::Consumer {
            consumer: consumer.to_owned(),
            stream: stream.clone(),
            message,
        };
        let info = self
            .context
            .get_stream_no_info(&stream)
            .await
            .map_err(|e| error(e.to_string()))?
            .consumer_info(consumer)
            .await
            .map_err(|e| error(e.to_string()))?;
        Ok((
            info.num_pending,
            u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
        ))
    }
}

/// The module a topic (`<source>.<type>`) is published by.
fn source_of(topic: &str) -> &str {
    topic.split_once('.').map_or(topic, |(source, _)| source)
}

/// `filter_subjects` (several filters on one consumer) came with NATS 2.10.
fn server_supports_filter_subjects(client: &async_nats::Client) -> bool {
    let version = client.server_info().version;
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (2, 10)
}

/// Publishes envelopes to JetStream; see the module docs.
pub struct NatsBus {
    js: JetStream,
    /// Sources whose stream is known to exist.
    ensured: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("js", &self.js)
            .finish_non_exhaustive()
    }
}

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
            message = message.header("traceparent", traceparent);
        }
        let acked = match self
            .js
            .context
            .send_publish(self.js.subject(&topic), message)
            .await
        {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
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

/// Consumes `consumer`'s topics from JetStream until `shutdown`: one durable per
/// source stream, each in its own loop that outlives NATS restarts (the client
/// reconnects; the loop re-creates its consumer and message stream with backoff when
/// they fail). On shutdown it stops pulling and waits for the deliveries in flight.
pub fn spawn_consumer(
    js: JetStream,
    consumer: Arc<Consumer>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let sources: BTreeSet<String> = consumer
        .topics()
        .iter()
        .map(|topic| source_of(topic).to_owned())
        .collect();
    tokio::spawn(async move {
        let mut loops = JoinSet::new();
        for source in sources {
            loops.spawn(consume_source(
                js.clone(),
                Arc::clone(&consumer),
                source,
                shutdown.clone(),
            ));
        }
        while loops.join_next().await.is_some() {}
    })
}

async fn consume_source(
    js: JetStream,
    consumer: Arc<Consumer>,
    source: String,
    shutdown: CancellationToken,
) {
    let stream = js.stream_name(&source);
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        match consume_until_error(&js, &consumer, &source, &shutdown, &mut failures).await {
            Ok(()) => break,
            Err(error) => {
                failures = failures.saturating_add(1);
                metrics::counter!("nats_consumer_restarts_total", "consumer" => consumer.name())
                    .increment(1);
                tracing::warn!(consumer = consumer.name(), stream = %stream, error = %error, failures, "consume loop failed; starting over");
                let wait = crate::retry::backoff(
                    failures,
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    tracing::info!(consumer = consumer.name(), stream = %stream, "consume loop stopped");
}

/// One life of a consume loop: returns `Ok` on shutdown, `Err` when the consumer or
/// its message stream must be set up again. Waits for its deliveries in flight either
/// way.
async fn consume_until_error(
    js: &JetStream,
    consumer: &Arc<Consumer>,
    source: &str,
    shutdown: &CancellationToken,
    failures: &mut u32,
) -> Result<(), String> {
    let settings = &js.settings.consumer;
    let pull = js
        .ensure_consumer(consumer, source)
        .await
        .map_err(|e| e.to_string())?;
    let max_in_flight = settings.max_in_flight.max(1);
    let mut messages = pull
        .stream()
        .max_messages_per_batch(max_in_flight)
        .heartbeat(settings.heartbeat)
        .messages()
        .await
        .map_err(|e| format!("cannot pull: {e}"))?;
    tracing::info!(consumer = consumer.name(), stream = %js.stream_name(source), "consuming");

    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut in_flight = JoinSet::new();
    let mut soft_errors: u32 = 0;
    let outcome = loop {
        while in_flight.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break Ok(()),
            },
        };
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                // Healthy again: the next failure starts its backoff from the bottom.
                *failures = 0;
                soft_errors = 0;
                in_flight.spawn(handle_message(
                    js.clone(),
                    Arc::clone(consumer),
                    message,
                    permit,
                ));
            }
            // A heartbeat missed while all permits were busy, or a pull request lost
            // to a reconnect: the message stream re-pulls by itself after a
            // reconnect. Only a run of them means it is stuck.
            Some(Err(e))
                if matches!(
                    e.kind(),
                    MessagesErrorKind::MissingHeartbeat | MessagesErrorKind::Pull
                ) =>
            {
                soft_errors += 1;
                tracing::debug!(consumer = consumer.name(), error = %e, soft_errors, "pull hiccup");
                if soft_errors >= MAX_SOFT_ERRORS {
                    break Err(format!("{soft_errors} pull errors in a row, last: {e}"));
                }
            }
            Some(Err(e)) => break Err(e.to_string()),
            None => break Err("message stream ended".to_owned()),
        }
    };
    // Stop pulling. Messages already delivered to us but not started go back at once
    // (nak): left alone, JetStream would hold them for ack_wait before redelivering,
    // and an event others wait on (a registration before its order emails) with them.
    if shutdown.is_cancelled() {
        let mut returned = 0_u32;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(20), messages.next()).await
        {
            ack(&message, AckKind::Nak(None)).await;
            returned += 1;
        }
        if returned > 0 {
            tracing::info!(
                consumer = consumer.name(),
                returned,
                "handed back unstarted messages"
            );
        }
    }
    drop(messages);
    while in_flight.join_next().await.is_some() {}
    // Acks and naks are only queued on the connection: make sure they reach the
    // server before it closes, or the messages wait out ack_wait after all.
    if let Err(e) = js.client().flush().await {
        tracing::warn!(consumer = consumer.name(), error = %e, "cannot flush acknowledgements");
    }
    outcome
}

/// Applies one message and settles it with JetStream. Never returns an error: every
/// outcome ends in an ack, a delayed nak, or (when even that fails) JetStream's own
/// redelivery after `ack_wait`.
async fn handle_message(
    js: JetStream,
    consumer: Arc<Consumer>,
    message: js::Message,
    _permit: OwnedSemaphorePermit,
) {
    let (stream, stream_seq, delivered) = match message.info() {
        Ok(info) => (info.stream.to_owned(), info.stream_sequence, info.delivered),
        Err(e) => {
            tracing::warn!(consumer = consumer.name(), subject = %message.subject, error = %e, "message without JetStream metadata; ignored");
            return;
        }
    };
    let subject = message.subject.to_string();
    let span = tracing::info_span!(
        "nats_message",
        otel.name = %format_args!("{subject} receive"),
        otel.kind = "consumer",
        service = consumer.name(),
        consumer = consumer.name(),
        subject = %subject,
        stream = %stream,
        stream_seq,
        delivered,
    );
    // The producer's context came in the message headers (the envelope's, see publish).
    if let Some(traceparent) = message
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_owned())
    {
        crate::telemetry::set_parent(&span, &traceparent, None);
    }
    async move {
        let prefix = format!("{}.", js.settings.prefix);
        let topic = subject
            .strip_prefix(&prefix)
            .unwrap_or(&subject)
            .to_owned();
        if delivered > 1 {
            consumer.count_redelivery(&topic);
        }
        if !consumer.wants(&topic) {
            // Only on servers without `filter_subjects`: not ours, settle it.
            metrics::counter!("nats_skipped_total", "consumer" => consumer.name()).increment(1);
            ack(&message, AckKind::Ack).await;
            return;
        }
        let envelope = match serde_json::from_slice::<Envelope>(&message.payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                // No redelivery will ever decode it.
                metrics::counter!("nats_undecodable_total", "consumer" => consumer.name())
                    .increment(1);
                tracing::error!(error = %e, "undecodable message");
                dead_letter(&js, &consumer, &message, delivered, &format!("undecodable: {e}"))
                    .await;
                return;
            }
        };
        let settings = &js.settings.consumer;
        let last = settings.max_deliver > 0 && delivered >= settings.max_deliver;
        match deliver_keeping_alive(&consumer, &envelope, &message, settings.ack_wait, last).await {
            Ok(Delivery::Deferred) => {
                // Transient failures outlasted the local retries: JetStream redelivers
                // with backoff; the last delivery dead-letters if it still fails.
                let delay = crate::retry::backoff(
                    u32::try_from(delivered).unwrap_or(u32::MAX),
                    settings.nak_delay_base,
                    settings.nak_delay_cap,
                );
                metrics::counter!("nats_naks_total", "consumer" => consumer.name()).increment(1);
                ack(&message, AckKind::Nak(Some(delay))).await;
            }
            Ok(delivery) => {
                if delivery == Delivery::DeadLettered {
                    tracing::warn!(event_id = %envelope.id, "dead-lettered in the consumer's store");
                }
                ack(&message, AckKind::Ack).await;
                tracing::debug!(event_id = %envelope.id, ?delivery, "settled");
            }
            Err(e) if settings.max_deliver > 0 && delivered >= settings.max_deliver => {
                tracing::error!(error = %e, "consumer store still failing on the last delivery");
                dead_letter(&js, &consumer, &message, delivered, &format!("consumer store failed: {e}"))
                    .await;
            }
            Err(e) => {
                let delay = crate::retry::backoff(
                    u32::try_from(delivered).unwrap_or(u32::MAX),
                    settings.nak_delay_base,
                    settings.nak_delay_cap,
                );
                metrics::counter!("nats_naks_total", "consumer" => consumer.name()).increment(1);
                tracing::warn!(error = %e, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "consumer store failed; redelivery requested");
                ack(&message, AckKind::Nak(Some(delay))).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// [`Consumer::deliver`], telling JetStream "still working" every third of `ack_wait`
/// so a slow transaction is not redelivered to a second worker meanwhile.
async fn deliver_keeping_alive(
    consumer: &Consumer,
    envelope: &Envelope,
    message: &js::Message,
    ack_wait: Duration,
    last: bool,
) -> Result<Delivery, sqlx::Error> {
    let every = (ack_wait / 3).max(Duration::from_millis(50));
    let deliver = async {
        if last {
            consumer.deliver(envelope).await
        } else {
            consumer.deliver_or_defer(envelope).await
        }
    };
    tokio::pin!(deliver);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            outcome = &mut deliver => return outcome,
            _ = ticker.tick() => ack(message, AckKind::Progress).await,
        }
    }
}

/// Sends an ack, nak or progress. A lost ack only means a redelivery, which the inbox
/// absorbs; it is logged, not retried.
async fn ack(message: &js::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot settle message with JetStream; it will be redelivered");
    }
}

/// Copies `message` to the consumer's dead-letter subject, then acks it; if the copy
/// cannot be stored, naks it so the next delivery tries again.
async fn dead_letter(
    js: &JetStream,
    consumer: &Consumer,
    message: &js::Message,
    delivered: i64,
    error: &str,
) {
    let stored = publish_dead_letter(js, consumer, message, error).await;
    match stored {
        Ok(()) => {
            metrics::counter!("nats_dead_letters_total", "consumer" => consumer.name())
                .increment(1);
            tracing::error!(error = %error, dead_letter_subject = %js.dead_letter_subject(consumer.name()), "message dead-lettered on NATS");
            ack(message, AckKind::Ack).await;
        }
        Err(e) => {
            let settings = &js.settings.consumer;
            if settings.max_deliver > 0 && delivered >= settings.max_deliver {
                tracing::error!(error = %e, "cannot dead-letter the last delivery of a message: JetStream will not redeliver it; replay it from its stream");
            } else {
                tracing::warn!(error = %e, "cannot dead-letter; redelivery requested");
            }
            let delay = crate::retry::backoff(
                u32::try_from(delivered).unwrap_or(u32::MAX),
                settings.nak_delay_base,
                settings.nak_delay_cap,
            );
            ack(message, AckKind::Nak(Some(delay))).await;
        }
    }
}

async fn publish_dead_letter(
    js: &JetStream,
    consumer: &Consumer,
    message: &js::Message,
    error: &str,
) -> Result<(), String> {
    js.ensure_stream(DEAD_LETTER_SOURCE)
        .await
        .map_err(|e| e.to_string())?;
    let (stream, stream_seq) = message
        .info()
        .map(|info| (info.stream.to_owned(), info.stream_sequence))
        .map_err(|e| e.to_string())?;
    // Header values are one line.
    let error_line: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
    let copy = PublishMessage::build()
        .payload(message.payload.clone())
        .message_id(format!("{}:{stream}:{stream_seq}", consumer.name()))
        .header("Bazaar-Original-Subject", message.subject.as_str())
        .header("Bazaar-Original-Stream", stream.as_str())
        .header("Bazaar-Original-Sequence", stream_seq.to_string().as_str())
        .header("Bazaar-Error", error_line.as_str());
    js.context
        .send_publish(js.dead_letter_subject(consumer.name()), copy)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
