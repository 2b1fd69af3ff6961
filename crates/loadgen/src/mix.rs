//! The operations a shopper performs and the weighted mixes of them.
//!
//! The default `shop` mix follows the shopper of the widely used microservices-demo
//! load generator: home/listing 1, product view 10, add to cart 2, view cart 3,
//! checkout 1. The `web` mix is the same shopper on the storefront's HTML pages, the
//! checkout being the checkout form (no order is placed).

use rand::Rng;

/// One kind of request (or, for a checkout on an empty cart, an add-to-cart first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Operation {
    /// `GET /api/v1/products?limit=20`
    Listing,
    /// `GET /api/v1/products/{id}`
    ProductView,
    /// `POST /api/v1/cart/items`
    AddToCart,
    /// `GET /api/v1/cart`
    ViewCart,
    /// `POST /api/v1/orders` (from the cart, with an `Idempotency-Key`)
    Checkout,
    /// `GET /` (the shop's home page: a page of products)
    WebHome,
    /// `GET /products/{id}`
    WebProduct,
    /// `POST /cart/items` (a form with the CSRF token; answered 303 to the cart)
    WebAddToCart,
    /// `GET /cart`
    WebCart,
    /// `GET /checkout` (the form, with the cart priced)
    WebCheckoutForm,
}

impl Operation {
    pub(crate) const ALL: [Operation; 10] = [
        Operation::Listing,
        Operation::ProductView,
        Operation::AddToCart,
        Operation::ViewCart,
        Operation::Checkout,
        Operation::WebHome,
        Operation::WebProduct,
        Operation::WebAddToCart,
        Operation::WebCart,
        Operation::WebCheckoutForm,
    ];

    /// The name in the table and the JSON report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Operation::Listing => "listing",
            Operation::ProductView => "product_view",
            Operation::AddToCart => "add_to_cart",
            Operation::ViewCart => "view_cart",
            Operation::Checkout => "checkout",
            Operation::WebHome => "web_home",
            Operation::WebProduct => "web_product",
            Operation::WebAddToCart => "web_add_to_cart",
            Operation::WebCart => "web_cart",
            Operation::WebCheckoutForm => "web_checkout_form",
        }
    }
}

/// The workload: which operations, in what proportions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mix {
    /// listing 1, product view 10, add to cart 2, view cart 3, checkout 1.
    Shop,
    /// listing 1, product view 10 (anonymous reads only).
    Browse,
    /// product view only: the cached read path, comparable with the bare baseline.
    Product,
    /// add to cart 1, checkout 1.
    Checkout,
    /// The shop mix on the storefront's HTML pages: home 1, product 10, add to cart
    /// 2, cart 3, checkout form 1.
    Web,
}

impl Mix {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mix::Shop => "shop",
            Mix::Browse => "browse",
            Mix::Product => "product",
            Mix::Checkout => "checkout",
            Mix::Web => "web",
        }
    }

    /// The operations of this mix with their weights.
    pub(crate) fn weights(self) -> &'static [(Operation, u32)] {
        match self {
            Mix::Shop => &[
                (Operation::Listing, 1),
                (Operation::ProductView, 10),
                (Operation::AddToCart, 2),
                (Operation::ViewCart, 3),
                (Operation::Checkout, 1),
            ],
            Mix::Browse => &[(Operation::Listing, 1), (Operation::ProductView, 10)],
            Mix::Product => &[(Operation::ProductView, 1)],
            Mix::Checkout => &[(Operation::AddToCart, 1), (Operation::Checkout, 1)],
            Mix::Web => &[
                (Operation::WebHome, 1),
                (Operation::WebProduct, 10),
                (Operation::WebAddToCart, 2),
                (Operation::WebCart, 3),
                (Operation::WebCheckoutForm, 1),
            ],
        }
    }

    /// Whether the mix needs signed-in users (and so registers the user pool).
    pub(crate) fn needs_users(self) -> bool {
        self.weights().iter().any(|(op, _)| {
            matches!(
                op,
                Operation::AddToCart
                    | Operation::ViewCart
                    | Operation::Checkout
                    | Operation::WebAddToCart
                    | Operation::WebCart
                    | Operation::WebCheckoutForm
            )
        })
    }
}

/// Draws operations in proportion to their weights.
#[derive(Clone, Debug)]
pub(crate) struct Sampler {
    /// Cumulative weights: operation i is drawn for `x < cumulative[i].1`.
    cumulative: Vec<(Operation, u32)>,
    total: u32,
}

impl Sampler {
    pub(crate) fn new(weights: &[(Operation, u32)]) -> Self {
        let mut total = 0;
        let cumulative = weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|&(op, w)| {
                total += w;
                (op, total)
            })
            .collect();
        Self { cumulative, total }
    }

    pub(crate) fn sample(&self, rng: &mut impl Rng) -> Operation {
        if self.total == 0 {
            return Operation::Listing;
        }
        let x = rng.gen_range(0..self.total);
        self.cumulative
            .iter()
            .find(|(_, upto)| x < *upto)
            .map_or(Operation::Listing, |(op, _)| *op)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn every_mix_is_drawn_in_proportion_to_its_weights() {
        const DRAWS: u32 = 200_000;
        for mix in [
            Mix::Shop,
            Mix::Browse,
            Mix::Product,
            Mix::Checkout,
            Mix::Web,
        ] {
            let sampler = Sampler::new(mix.weights());
            let mut rng = StdRng::seed_from_u64(7);
            let mut counts: HashMap<Operation, u32> = HashMap::new();
            for _ in 0..DRAWS {
                *counts.entry(sampler.sample(&mut rng)).or_default() += 1;
            }
            let total: u32 = mix.weights().iter().map(|(_, w)| w).sum();
            for &(op, weight) in mix.weights() {
                let expected = f64::from(weight) / f64::from(total);
                let seen = f64::from(counts.get(&op).copied().unwrap_or(0)) / f64::from(DRAWS);
                // 200k draws: the standard error of a share is below 0.12 points, so 1
                // point (absolute) is far outside chance yet catches any wrong weight.
                assert!(
                    (seen - expected).abs() < 0.01,
                    "{mix:?} {op:?}: expected {expected:.3}, saw {seen:.3}"
                );
            }
            assert_eq!(counts.len(), mix.weights().len(), "{mix:?}: {counts:?}");
        }
    }

    #[test]
    fn only_the_read_mixes_run_without_users() {
        assert!(Mix::Shop.needs_users());
        assert!(Mix::Checkout.needs_users());
        assert!(Mix::Web.needs_users());
        assert!(!Mix::Browse.needs_users());
        assert!(!Mix::Product.needs_users());
    }

    #[test]
    fn zero_weights_are_never_drawn() {
        let sampler = Sampler::new(&[(Operation::Listing, 0), (Operation::Checkout, 3)]);
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..1000).all(|_| sampler.sample(&mut rng) == Operation::Checkout));
    }
}
