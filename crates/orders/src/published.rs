//! What other modules hear about an order: the contract events (`contracts::orders`)
//! that the domain events just appended amount to. Pure; the store writes them to the
//! outbox in the transaction that appends the domain events.

use contracts::orders::{OrderCancelled, OrderConfirmed, OrderFailed, OrderLine, OrderPlaced};

use crate::domain::{Event, Line, Order};

/// One contract event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Placed(OrderPlaced),
    Confirmed(OrderConfirmed),
    Failed(OrderFailed),
    Cancelled(OrderCancelled),
}

fn lines(lines: &[Line]) -> Vec<OrderLine> {
    lines
        .iter()
        .map(|l| OrderLine {
            product_id: l.product_id.clone(),
            quantity: l.quantity,
            price_cents: l.price_cents,
            name: l.name.clone(),
        })
        .collect()
}

/// Whether other modules hear about `event`: the one list [`publishes`] and
/// [`published`] both go by, so a wake-up of the relay is never missed.
fn is_published(event: &Event) -> bool {
    matches!(
        event,
        Event::OrderPlaced { .. }
            | Event::OrderConfirmed
            | Event::OrderFailed { .. }
            | Event::OrderCancelled { .. }
    )
}

/// Whether `events` include one that other modules hear about (see [`published`]).
pub fn publishes(events: &[Event]) -> bool {
    events.iter().any(is_published)
}

/// The contract events for `events`, just applied to give `after`. The saga's own
/// steps (reserved, charged, ...) stay inside the module.
pub fn published(after: &Order, events: &[Event]) -> Vec<Published> {
    let Some(placed) = &after.placed else {
        return Vec::new();
    };
    events
        .iter()
        .filter(|event| is_published(event))
        .filter_map(|event| {
            Some(match event {
                Event::OrderPlaced { .. } => Published::Placed(OrderPlaced {
                    order_id: after.id.clone(),
                    user_id: placed.user_id.clone(),
                    lines: lines(&placed.lines),
                    total_cents: placed.total_cents,
                    currency: placed.currency.clone(),
                }),
                Event::OrderConfirmed => Published::Confirmed(OrderConfirmed {
                    order_id: after.id.clone(),
                    user_id: placed.user_id.clone(),
                    lines: lines(&placed.lines),
                    total_cents: placed.total_cents,
                    currency: placed.currency.clone(),
                    payment_id: after.payment_id.clone().unwrap_or_default(),
                }),
                Event::OrderFailed { reason } => Published::Failed(OrderFailed {
                    order_id: after.id.clone(),
                    user_id: placed.user_id.clone(),
                    reason: reason.clone(),
                }),
                Event::OrderCancelled { refunded_cents } => Published::Cancelled(OrderCancelled {
                    order_id: after.id.clone(),
                    user_id: placed.user_id.clone(),
                    lines: lines(&placed.lines),
                    refunded_cents: *refunded_cents,
                    currency: placed.currency.clone(),
                }),
                _ => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, apply, decide, reason};

    fn run(order: Order, command: Command) -> (Order, Vec<Published>) {
        let events = decide(&order, command).unwrap();
        let after = events.iter().fold(order, apply);
        let out = published(&after, &events);
        (after, out)
    }

    fn place() -> (Order, Vec<Published>) {
        run(
            Order::new("o1"),
            Command::Place {
                user_id: "u1".into(),
                lines: vec![Line {
                    product_id: "p1".into(),
                    quantity: 2,
                    price_cents: 500,
                    name: "Teapot".into(),
                }],
                currency: "USD".into(),
                shipping_address: crate::domain::tests::address(),
                payment_token: "tok_visa".into(),
            },
        )
    }

    fn bought() -> Vec<OrderLine> {
        vec![OrderLine {
            product_id: "p1".into(),
            quantity: 2,
            price_cents: 500,
            name: "Teapot".into(),
        }]
    }

    #[test]
    fn placing_confirming_and_cancelling_are_published_with_the_lines() {
        let (order, out) = place();
        assert_eq!(
            out,
            [Published::Placed(OrderPlaced {
                order_id: "o1".into(),
                user_id: "u1".into(),
                lines: bought(),
                total_cents: 1000,
                currency: "USD".into(),
            })]
        );
        // The saga's inner steps are not published.
        let (order, out) = run(order, Command::Reserved);
        assert!(out.is_empty());
        let (order, out) = run(
            order,
            Command::Charged {
                payment_id: "pay1".into(),
                amount_cents: 1000,
            },
        );
        assert!(out.is_empty());
        let (order, out) = run(order, Command::Committed);
        assert_eq!(
            out,
            [Published::Confirmed(OrderConfirmed {
                order_id: "o1".into(),
                user_id: "u1".into(),
                lines: bought(),
                total_cents: 1000,
                currency: "USD".into(),
                payment_id: "pay1".into(),
            })]
        );
        let (order, out) = run(order, Command::Cancel);
        assert!(out.is_empty());
        let (order, _) = run(
            order,
            Command::Refunded {
                payment_id: "pay1".into(),
                amount_cents: 1000,
            },
        );
        let (_, out) = run(order, Command::Restocked);
        assert_eq!(
            out,
            [Published::Cancelled(OrderCancelled {
                order_id: "o1".into(),
                user_id: "u1".into(),
                lines: bought(),
                refunded_cents: 1000,
                currency: "USD".into(),
            })]
        );
    }

    #[test]
    fn a_failure_is_published_with_its_reason() {
        let (order, _) = place();
        let (_, out) = run(
            order,
            Command::ReservationRejected {
                reason: reason::OUT_OF_STOCK.into(),
                product_id: "p1".into(),
            },
        );
        assert_eq!(
            out,
            [Published::Failed(OrderFailed {
                order_id: "o1".into(),
                user_id: "u1".into(),
                reason: "out_of_stock".into(),
            })]
        );
    }

    #[test]
    fn nothing_is_published_for_an_order_never_placed() {
        assert!(published(&Order::new("o1"), &[Event::OrderConfirmed]).is_empty());
    }
}
