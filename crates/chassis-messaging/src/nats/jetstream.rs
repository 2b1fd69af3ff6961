//! The JetStream connection with bazaar's naming: one stream per publishing module,
//! one durable pull consumer per (consuming module, source stream).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self as js};
use chassis_core::events::source_of;

use super::error::NatsError;
use super::settings::NatsSettings;
use crate::consumer::Consumer;

/// The pseudo-source whose stream holds dead letters: no module may be called this.
pub const DEAD_LETTER_SOURCE: &str = "deadletter";

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

/// Readiness in the split: a module's process serves from its store and publishes and
/// consumes through its NATS connection, so it is ready only while that connection is
/// up (to any node of the cluster; the client moves to another by itself). Whether the
/// module's peers are up is not asked: one peer's outage must not make every caller
/// unready in turn.
#[async_trait::async_trait]
impl chassis_core::health::Check for JetStream {
    fn name(&self) -> String {
        "nats".to_owned()
    }

    async fn check(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("NATS connection {state}")),
        }
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
            // async-nats parses a string as one URL: a cluster's list goes in as a list.
            .connect(chassis_core::list::comma_separated(url).collect::<Vec<_>>())
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
