//! The contracts between bazaar's modules: for each bounded context, the trait other
//! modules may call, its request/response types, its errors and its events.
//!
//! No logic lives here. A module depends on another module only through this crate,
//! so reaching into another module's internals does not compile.

pub mod cart;
pub mod catalog;
pub mod identity;
pub mod orders;
pub mod payments;

/// Implements [`chassis_core::events::DomainEvent`] for a contract event.
macro_rules! event {
    ($ty:ty, $source:literal, $name:literal, v $version:literal, |$e:ident| $aggregate:expr) => {
        impl chassis_core::events::DomainEvent for $ty {
            const TYPE: &'static str = $name;
            const VERSION: u32 = $version;
            const SOURCE: &'static str = $source;
            fn aggregate_id(&self) -> String {
                let $e = self;
                $aggregate.clone()
            }
        }
    };
}
pub(crate) use event;
