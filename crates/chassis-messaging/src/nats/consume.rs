//! The consume loop: a consumer's durables pulled until shutdown, each message applied
//! through the consumer's inbox and settled with JetStream.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::{self as js, AckKind};
use chassis_core::events::{Envelope, source_of};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dead_letter::dead_letter;
use super::headers;
use super::jetstream::JetStream;
use super::settle::ack;
use crate::consumer::{Consumer, Delivery};

/// Consecutive missed heartbeats / failed pull requests before a consume loop drops its
/// message stream and starts over.
const MAX_SOFT_ERRORS: u32 = 3;

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
                let wait = chassis_core::retry::backoff(
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
    let settings = &js.settings().consumer;
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
    // The producer's context came in the message headers (the envelope's, see publish).
    let traceparent = headers::traceparent(&message);
    let (span, unsampled) = chassis_telemetry::root_span(traceparent.as_deref(), None, || {
        tracing::info_span!(
            "nats_message",
            otel.name = %format_args!("{subject} receive"),
            otel.kind = "consumer",
            service = consumer.name(),
            consumer = consumer.name(),
            subject = %subject,
            stream = %stream,
            stream_seq,
            delivered,
        )
    });
    let work = async move {
        let prefix = format!("{}.", js.settings().prefix);
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
        let settings = &js.settings().consumer;
        let last = settings.is_last(delivered);
        match deliver_keeping_alive(&consumer, &envelope, &message, settings.ack_wait, last).await {
            Ok(Delivery::Deferred) => {
                // Transient failures outlasted the local retries: JetStream redelivers
                // with backoff; the last delivery dead-letters if it still fails.
                let delay = settings.nak_delay(delivered);
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
            Err(e) if settings.is_last(delivered) => {
                tracing::error!(error = %e, "consumer store still failing on the last delivery");
                dead_letter(&js, &consumer, &message, delivered, &format!("consumer store failed: {e}"))
                    .await;
            }
            Err(e) => {
                let delay = settings.nak_delay(delivered);
                metrics::counter!("nats_naks_total", "consumer" => consumer.name()).increment(1);
                tracing::warn!(error = %e, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "consumer store failed; redelivery requested");
                ack(&message, AckKind::Nak(Some(delay))).await;
            }
        }
    }
    .instrument(span);
    match unsampled {
        Some(mark) => chassis_telemetry::sampling::scope(mark, work).await,
        None => work.await,
    }
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
