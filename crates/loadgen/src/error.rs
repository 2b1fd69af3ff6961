//! What can stop `bazaar loadgen`: bad flags, a target it cannot prepare, a report it
//! cannot write. Each variant's message is what the user reads; the cause follows as
//! its source.

use std::path::PathBuf;

use reqwest::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("--target {target:?}")]
    TargetUrl {
        target: String,
        #[source]
        source: url::ParseError,
    },
    #[error("--target must be an http:// URL, not {scheme}://")]
    TargetScheme { scheme: String },
    #[error("--target {target:?} has no host")]
    TargetHost { target: String },
    #[error(
        "--target {target} is not a loopback address: load goes to loopback unless \
         --allow-remote names the target as intended"
    )]
    TargetRemote { target: String },
    #[error("--duration must be more than zero")]
    ZeroDuration,
    #[error("--duration plus --warmup, and --settle, must be at most {max_secs}s")]
    TooLong { max_secs: u64 },
    #[error("--rate must be in (0, 1000000]")]
    Rate,
    #[error("--users, --max-in-flight and --max-requests must be at least 1")]
    Counts,
    #[error("cannot set up the latency histograms")]
    Histogram(#[source] hdrhistogram::CreationError),
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("cannot reach {base}")]
    Reach {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {base}/api/v1/products answered {status}")]
    ListingStatus { base: String, status: StatusCode },
    #[error("the product listing is not a bazaar product list")]
    Listing(#[source] reqwest::Error),
    #[error("{base} has no products (run `bazaar seed`)")]
    NoProducts { base: String },
    #[error("cannot register {email}")]
    Register {
        email: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registering {email} answered {status}: {body}")]
    RegisterStatus {
        email: String,
        status: StatusCode,
        body: String,
    },
    #[error("registering {email}: the answer is not a registration")]
    RegisterAnswer {
        email: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registering {email}: still throttled after {attempts} attempts")]
    Throttled { email: String, attempts: u32 },
    #[error("a registration task did not finish")]
    RegisterTask(#[source] tokio::task::JoinError),
    #[error("cannot encode the report as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
