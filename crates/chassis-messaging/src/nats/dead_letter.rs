//! The undeliverable: copied to `<prefix>.deadletter.<consumer>` (stream
//! `<PREFIX>_DEADLETTER`) before they are acknowledged, so nothing disappears silently.

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self as js, AckKind};

use super::headers;
use super::jetstream::{DEAD_LETTER_SOURCE, JetStream};
use super::settle::ack;
use crate::consumer::Consumer;

/// Copies `message` to the consumer's dead-letter subject, then acks it; if the copy
/// cannot be stored, naks it so the next delivery tries again.
pub(super) async fn dead_letter(
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
            let settings = &js.settings().consumer;
            if settings.is_last(delivered) {
                tracing::error!(error = %e, "cannot dead-letter the last delivery of a message: JetStream will not redeliver it; replay it from its stream");
            } else {
                tracing::warn!(error = %e, "cannot dead-letter; redelivery requested");
            }
            ack(message, AckKind::Nak(Some(settings.nak_delay(delivered)))).await;
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
    let error_line = headers::one_line(error);
    let copy = PublishMessage::build()
        .payload(message.payload.clone())
        .message_id(format!("{}:{stream}:{stream_seq}", consumer.name()))
        .header(headers::ORIGINAL_SUBJECT, message.subject.as_str())
        .header(headers::ORIGINAL_STREAM, stream.as_str())
        .header(headers::ORIGINAL_SEQUENCE, stream_seq.to_string().as_str())
        .header(headers::ERROR, error_line.as_str());
    js.context()
        .send_publish(js.dead_letter_subject(consumer.name()), copy)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
