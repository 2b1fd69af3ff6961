//! What a bazaar process tells about itself: logs, traces and metrics.
//!
//! [`init`] installs the tracing subscriber (JSON or pretty logs, spans exported as
//! OpenTelemetry spans and kept in the process's [`traces::TraceBuffer`]);
//! [`propagation`] carries W3C trace context across hops; [`metrics`] owns the
//! process-wide Prometheus recorder. Nothing here serves HTTP: the `/metrics` route,
//! the RED middleware and the admin traces routes are built on this elsewhere.

mod logs;
pub mod metrics;
pub mod propagation;
pub mod sampling;
pub mod subscriber;
pub mod traces;

pub use propagation::{current_traceparent, trace_id, trace_id_from_traceparent};
pub use sampling::root_span;
pub use subscriber::{LogFormat, init, shutdown};
