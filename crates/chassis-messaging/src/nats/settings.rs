//! Names and limits of the JetStream side, and how its durable consumers are driven.

use std::time::Duration;

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

impl ConsumerSettings {
    /// Whether the `delivered`-th delivery of a message is its last: JetStream will
    /// not deliver it again.
    pub fn is_last(&self, delivered: i64) -> bool {
        self.max_deliver > 0 && delivered >= self.max_deliver
    }

    /// How long JetStream waits before the next delivery of a message nak'ed on its
    /// `delivered`-th: full-jitter backoff between the nak delay bounds.
    pub fn nak_delay(&self, delivered: i64) -> Duration {
        chassis_core::retry::backoff(
            u32::try_from(delivered).unwrap_or(u32::MAX),
            self.nak_delay_base,
            self.nak_delay_cap,
        )
    }
}
