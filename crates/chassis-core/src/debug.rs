//! `Debug` for types holding what has none (trait objects, clients, pools).

/// Implements `Debug` for `$ty` showing the listed fields and eliding the rest
/// (`Name { a: .., b: .., .. }`): services and adapters hold trait objects, pools and
/// clients that do not implement `Debug`, or secrets that must not be printed.
///
/// ```
/// struct Client {
///     url: String,
///     secret: String,
/// }
/// chassis_core::debug_fields!(Client { url });
/// let client = Client { url: "http://x".into(), secret: "s".into() };
/// assert_eq!(format!("{client:?}"), r#"Client { url: "http://x", .. }"#);
/// ```
#[macro_export]
macro_rules! debug_fields {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    struct Opaque;

    struct Nothing {
        _inner: Opaque,
    }
    crate::debug_fields!(Nothing {});

    struct Two {
        a: u32,
        b: &'static str,
        _inner: Opaque,
    }
    crate::debug_fields!(Two { a, b });

    #[test]
    fn shows_the_listed_fields_only() {
        let nothing = Nothing { _inner: Opaque };
        assert_eq!(format!("{nothing:?}"), "Nothing { .. }");
        let two = Two {
            a: 1,
            b: "x",
            _inner: Opaque,
        };
        assert_eq!(format!("{two:?}"), r#"Two { a: 1, b: "x", .. }"#);
    }
}
