//! The [`rpc!`](crate::rpc!) declaration.

/// Declares a contract trait once and derives its client, its guarded wrapper and
/// its server handlers; see the [module docs](crate::rpc). Arguments are owned,
/// serialisable values; every method returns `Result<T, E>` with `E:`
/// [`RemoteError`](crate::rpc::RemoteError) and `T: Send`. The calling crate must
/// depend on `serde` (the argument structs derive it).
///
/// ```ignore
/// chassis_core::rpc! {
///     /// What other modules may ask the catalog.
///     pub trait CatalogApi as "catalog" {
///         client CatalogClient;
///         handlers catalog_handlers;
///         async fn get_product(&self, id: String) -> Result<Product, CatalogError>;
///     }
/// }
/// ```
///
/// Every method is retried by the guard on a transient failure, so it must be
/// idempotent; a line `once [method, …];` after `handlers` names those that are not,
/// which the guard tries at most once ([`Guard::call_once`](crate::rpc::Guard::call_once)).
#[macro_export]
macro_rules! rpc {
    (
        $(#[$trait_meta:meta])*
        $vis:vis trait $Trait:ident as $service:literal {
            client $Client:ident;
            handlers $handlers:ident;
            $( once [ $( $once:ident ),* $(,)? ]; )?
            $(
                $(#[$method_meta:meta])*
                async fn $method:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> Result<$ok:ty, $err:ty>;
            )*
        }
    ) => {
        $(#[$trait_meta])*
        #[$crate::rpc::__private::async_trait]
        $vis trait $Trait: Send + Sync {
            $(
                $(#[$method_meta])*
                async fn $method(&self $(, $arg: $ty)*) -> Result<$ok, $err>;
            )*
        }

        #[doc = concat!("[`", stringify!($Trait), "`] over a transport: the `", $service, "` module in another process.")]
        #[derive(Debug, Clone)]
        $vis struct $Client(::std::sync::Arc<dyn $crate::rpc::Transport>);

        impl $Client {
            pub fn new(transport: impl $crate::rpc::Transport + 'static) -> Self {
                Self(::std::sync::Arc::new(transport))
            }

            /// The methods that are not idempotent: a guard tries them once.
            pub const NOT_RETRIED: &'static [&'static str] = &[$( $( stringify!($once) ),* )?];
        }

        impl $crate::rpc::Contract for dyn $Trait {
            const PROVIDER: &'static str = $service;

            fn remote(
                transport: ::std::sync::Arc<dyn $crate::rpc::Transport>,
            ) -> ::std::sync::Arc<Self> {
                ::std::sync::Arc::new($Client(transport))
            }

            fn guarded<G: $crate::rpc::Guard>(
                inner: ::std::sync::Arc<Self>,
                guard: ::std::sync::Arc<G>,
            ) -> ::std::sync::Arc<Self> {
                ::std::sync::Arc::new($crate::rpc::Guarded::new(inner, guard))
            }

            fn handlers(api: ::std::sync::Arc<Self>) -> ::std::vec::Vec<$crate::rpc::Handler> {
                $handlers(api)
            }
        }

        #[$crate::rpc::__private::async_trait]
        impl $Trait for $Client {
            $(
                async fn $method(&self $(, $arg: $ty)*) -> Result<$ok, $err> {
                    #[derive(serde::Serialize)]
                    struct Args<'a> {
                        $( $arg: &'a $ty, )*
                        #[serde(skip)]
                        _borrow: ::std::marker::PhantomData<&'a ()>,
                    }
                    $crate::rpc::call(
                        &*self.0,
                        stringify!($method),
                        &Args { $( $arg: &$arg, )* _borrow: ::std::marker::PhantomData },
                    )
                    .await
                }
            )*
        }

        /// The same calls through a guard (breaker, bulkhead, timeout, budgeted
        /// retries, injected faults), for either topology.
        #[$crate::rpc::__private::async_trait]
        impl<G: $crate::rpc::Guard> $Trait for $crate::rpc::Guarded<dyn $Trait, G> {
            $(
                async fn $method(&self $(, $arg: $ty)*) -> Result<$ok, $err> {
                    let inner = self.inner();
                    let attempt = || {
                        $( let $arg = ::std::clone::Clone::clone(&$arg); )*
                        async move { inner.$method($( $arg ),*).await }
                    };
                    if $Client::NOT_RETRIED.contains(&stringify!($method)) {
                        self.guard().call_once(stringify!($method), attempt).await
                    } else {
                        self.guard().call(stringify!($method), attempt).await
                    }
                }
            )*
        }

        #[doc = concat!("The handlers answering [`", stringify!($Trait), "`] calls, one per method, for a transport to serve.")]
        $vis fn $handlers(api: ::std::sync::Arc<dyn $Trait>) -> ::std::vec::Vec<$crate::rpc::Handler> {
            ::std::vec![
                $(
                    {
                        // Unknown fields are tolerated: a newer caller may send an
                        // argument this version does not know yet.
                        #[derive(serde::Deserialize)]
                        struct Args {
                            $( $arg: $ty, )*
                        }
                        let api = ::std::sync::Arc::clone(&api);
                        $crate::rpc::Handler::new($service, stringify!($method), move |args: Args| {
                            let Args { $( $arg, )* } = args;
                            let api = ::std::sync::Arc::clone(&api);
                            async move { api.$method($( $arg ),*).await }
                        })
                    },
                )*
            ]
        }
    };
}
