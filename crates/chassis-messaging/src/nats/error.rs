//! What can go wrong setting up the JetStream side.

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
