//! Calls to another module, guarded the same way in both topologies: a
//! [`Dependency`] per called module implements chassis-core's RPC `Guard` (breaker,
//! bulkhead, timeout, budgeted retries, injected faults; see [`dependency`]), and
//! [`Faults`] inject latency, errors or hangs into calls and routes at will.

pub mod breaker;
pub mod dependency;
pub mod faults;
pub mod policy;
pub mod registry;

pub use breaker::BreakerState;
pub use dependency::{Dependency, DependencyStatus};
pub use faults::{Fault, Faults, inject_route_faults};
pub use policy::{DependencyPolicy, PolicyOverrides};
pub use registry::Registry;
