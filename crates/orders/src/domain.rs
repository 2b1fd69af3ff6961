//! The order aggregate, event-sourced and pure: `decide(state, command) -> events`,
//! `apply(state, event) -> state`, and `next_step(state)` telling the saga what to do
//! next. No I/O here; the saga performs the steps and records their outcomes as
//! commands.

use serde::{Deserialize, Serialize};

/// Payment attempts (timeouts, provider down) before the saga gives up and
/// compensates. Each retry uses the same idempotency key.
pub const MAX_CHARGE_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Confirmed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Status::Pending,
            "confirmed" => Status::Confirmed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
}

/// One line of an order: a snapshot of the product as it was sold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub quantity: u32,
    /// Unit price when the order was placed.
    pub price_cents: i64,
    /// The product's name when the order was placed (for emails and receipts);
    /// empty in orders stored before names were kept.
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// Why an order failed.
pub mod reason {
    pub const OUT_OF_STOCK: &str = "out_of_stock";
    pub const PRODUCT_UNAVAILABLE: &str = "product_unavailable";
    pub const PAYMENT_DECLINED: &str = "payment_declined";
    pub const PAYMENT_UNAVAILABLE: &str = "payment_unavailable";
    pub const RESERVATION_EXPIRED: &str = "reservation_expired";
}

/// Everything that can happen to an order. Stored as `{type, data}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    OrderPlaced {
        user_id: String,
        lines: Vec<Line>,
        total_cents: i64,
        currency: String,
        shipping_address: Address,
        payment_token: String,
    },
    StockReserved,
    ReservationFailed {
        reason: String,
        product_id: String,
    },
    PaymentAttemptFailed {
        attempt: u32,
        error: String,
    },
    PaymentAbandoned {
        attempts: u32,
    },
    PaymentCaptured {
        payment_id: String,
        amount_cents: i64,
    },
    PaymentDeclined {
        reason: String,
    },
    StockReleased,
    ReservationLost,
    PaymentRefunded {
        payment_id: String,
        amount_cents: i64,
    },
    StockCommitted,
    OrderConfirmed,
    OrderFailed {
        reason: String,
    },
    CancellationRequested,
    StockRestocked,
    OrderCancelled {
        refunded_cents: i64,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::OrderPlaced { .. } => "OrderPlaced",
            Event::StockReserved => "StockReserved",
            Event::ReservationFailed { .. } => "ReservationFailed",
            Event::PaymentAttemptFailed { .. } => "PaymentAttemptFailed",
            Event::PaymentAbandoned { .. } => "PaymentAbandoned",
            Event::PaymentCaptured { .. } => "PaymentCaptured",
            Event::PaymentDeclined { .. } => "PaymentDeclined",
            Event::StockReleased => "StockReleased",
            Event::ReservationLost => "ReservationLost",
            Event::PaymentRefunded { .. } => "PaymentRefunded",
            Event::StockCommitted => "StockCommitted",
            Event::OrderConfirmed => "OrderConfirmed",
            Event::OrderFailed { .. } => "OrderFailed",
            Event::CancellationRequested => "CancellationRequested",
            Event::StockRestocked => "StockRestocked",
            Event::OrderCancelled { .. } => "OrderCancelled",
        }
    }
}

/// An order as its events left it.
// One flag per fact the events recorded; a state enum would have to encode their
// combinations (reserved and refunded and cancel requested ...) instead.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Order {
    pub id: String,
    /// Events applied so far; the next event gets `version + 1`.
    pub version: u64,
    pub placed: Option<Placed>,
    pub status: Option<Status>,
    pub reserved: bool,
    pub reservation_lost: bool,
    pub released: bool,
    pub committed: bool,
    pub restocked: bool,
    pub charge_failures: u32,
    pub payment_abandoned: bool,
    pub declined: Option<String>,
    pub payment_id: Option<String>,
    pub refunded: bool,
    pub refunded_cents: i64,
    pub cancel_requested: bool,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub user_id: String,
    pub lines: Vec<Line>,
    pub total_cents: i64,
    pub currency: String,
    pub shipping_address: Address,
    pub payment_token: String,
}

impl Order {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }

    pub fn status(&self) -> Status {
        self.status.unwrap_or(Status::Pending)
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.status(), Status::Failed | Status::Cancelled)
            || (self.status() == Status::Confirmed && !self.cancel_requested)
    }

    /// The saga still has work to do.
    pub fn saga_open(&self) -> bool {
        next_step(self).is_some()
    }
}

/// Folds one event into the state.
#[must_use]
pub fn apply(mut order: Order, event: &Event) -> Order {
    order.version += 1;
    match event {
        Event::OrderPlaced {
            user_id,
            lines,
            total_cents,
            currency,
            shipping_address,
            payment_token,
        } => {
            order.placed = Some(Placed {
                user_id: user_id.clone(),
                lines: lines.clone(),
                total_cents: *total_cents,
                currency: currency.clone(),
                shipping_address: shipping_address.clone(),
                payment_token: payment_token.clone(),
            });
            order.status = Some(Status::Pending);
        }
        Event::StockReserved => order.reserved = true,
        Event::ReservationFailed { .. } => {}
        Event::PaymentAttemptFailed { .. } => order.charge_failures += 1,
        Event::PaymentAbandoned { .. } => order.payment_abandoned = true,
        Event::PaymentCaptured { payment_id, .. } => order.payment_id = Some(payment_id.clone()),
        Event::PaymentDeclined { reason } => order.declined = Some(reason.clone()),
        Event::StockReleased => order.released = true,
        Event::ReservationLost => order.reservation_lost = true,
        Event::PaymentRefunded { amount_cents, .. } => {
            order.refunded = true;
            order.refunded_cents += amount_cents;
        }
        Event::StockCommitted => order.committed = true,
        Event::OrderConfirmed => order.status = Some(Status::Confirmed),
        Event::OrderFailed { reason } => {
            order.status = Some(Status::Failed);
            order.failure_reason = Some(reason.clone());
        }
        Event::CancellationRequested => order.cancel_requested = true,
        Event::StockRestocked => order.restocked = true,
        Event::OrderCancelled { .. } => order.status = Some(Status::Cancelled),
    }
    order
}

/// Rebuilds an order from its history.
pub fn replay<'a>(id: &str, events: impl IntoIterator<Item = &'a Event>) -> Order {
    events.into_iter().fold(Order::new(id), apply)
}

/// What the saga must do next for this order; `None` when nothing is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Reserve,
    Charge,
    /// Give reserved stock back (the payment failed). If a payment turns out to have
    /// been captured after all, it is recorded instead and the order goes on to
    /// commit and confirm.
    Release,
    Commit,
    Refund,
    Restock,
}

impl Step {
    /// Every step, in the order a saga meets them.
    pub const ALL: [Step; 6] = [
        Step::Reserve,
        Step::Charge,
        Step::Release,
        Step::Commit,
        Step::Refund,
        Step::Restock,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Reserve => "reserve",
            Step::Charge => "charge",
            Step::Release => "release",
            Step::Commit => "commit",
            Step::Refund => "refund",
            Step::Restock => "restock",
        }
    }
}

pub fn next_step(order: &Order) -> Option<Step> {
    order.placed.as_ref()?;
    match order.status() {
        Status::Pending => Some(if !order.reserved {
            Step::Reserve
        } else if order.payment_id.is_none() {
            if order.declined.is_some() || order.payment_abandoned {
                Step::Release
            } else {
                Step::Charge
            }
        } else if order.reservation_lost && !order.refunded {
            Step::Refund
        } else {
            Step::Commit
        }),
        Status::Confirmed if order.cancel_requested => Some(if order.refunded {
            Step::Restock
        } else {
            Step::Refund
        }),
        Status::Confirmed | Status::Failed | Status::Cancelled => None,
    }
}

/// What happened when the saga (or a client) acted on the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Place {
        user_id: String,
        lines: Vec<Line>,
        currency: String,
        shipping_address: Address,
        payment_token: String,
    },
    Reserved,
    ReservationRejected {
        reason: String,
        product_id: String,
    },
    Charged {
        payment_id: String,
        amount_cents: i64,
    },
    ChargeDeclined {
        reason: String,
    },
    ChargeUnavailable {
        error: String,
    },
    /// The reserved stock went back.
    Released,
    Committed,
    CommitRejected,
    Refunded {
        payment_id: String,
        amount_cents: i64,
    },
    Restocked,
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the order already exists")]
    AlreadyPlaced,
    #[error("the order has no lines")]
    Empty,
    #[error("an order in state {0} cannot be cancelled")]
    NotCancellable(&'static str),
    #[error("{0} does not apply to the order's current step")]
    OutOfStep(&'static str),
}

/// Decides which events a command produces, given the current state. Pure.
pub fn decide(order: &Order, command: Command) -> Result<Vec<Event>, Rejection> {
    let step = next_step(order);
    let expect = |wanted: Step, name: &'static str| {
        if step.as_ref() == Some(&wanted) {
            Ok(())
        } else {
            Err(Rejection::OutOfStep(name))
        }
    };
    Ok(match command {
        Command::Place {
            user_id,
            lines,
            currency,
            shipping_address,
            payment_token,
        } => {
            if order.placed.is_some() {
                return Err(Rejection::AlreadyPlaced);
            }
            if lines.is_empty() {
                return Err(Rejection::Empty);
            }
            let total_cents = lines
                .iter()
                .map(|l| l.price_cents.saturating_mul(i64::from(l.quantity)))
                .fold(0_i64, i64::saturating_add);
            vec![Event::OrderPlaced {
                user_id,
                lines,
                total_cents,
                currency,
                shipping_address,
                payment_token,
            }]
        }
        Command::Reserved => {
            expect(Step::Reserve, "Reserved")?;
            vec![Event::StockReserved]
        }
        Command::ReservationRejected { reason, product_id } => {
            expect(Step::Reserve, "ReservationRejected")?;
            vec![
                Event::ReservationFailed {
                    reason: reason.clone(),
                    product_id,
                },
                Event::OrderFailed { reason },
            ]
        }
        Command::Charged {
            payment_id,
            amount_cents,
        } => {
            // A capture can also surface while releasing (found late): record it.
            if !matches!(step, Some(Step::Charge | Step::Release)) {
                return Err(Rejection::OutOfStep("Charged"));
            }
            vec![Event::PaymentCaptured {
                payment_id,
                amount_cents,
            }]
        }
        Command::ChargeDeclined { reason } => {
            expect(Step::Charge, "ChargeDeclined")?;
            vec![Event::PaymentDeclined { reason }]
        }
        Command::ChargeUnavailable { error } => {
            expect(Step::Charge, "ChargeUnavailable")?;
            let attempt = order.charge_failures + 1;
            let mut events = vec![Event::PaymentAttemptFailed { attempt, error }];
            if attempt >= MAX_CHARGE_ATTEMPTS {
                events.push(Event::PaymentAbandoned { attempts: attempt });
            }
            events
        }
        Command::Released => {
            expect(Step::Release, "Released")?;
            let reason = if order.declined.is_some() {
                reason::PAYMENT_DECLINED
            } else {
                reason::PAYMENT_UNAVAILABLE
            };
            vec![
                Event::StockReleased,
                Event::OrderFailed {
                    reason: reason.to_owned(),
                },
            ]
        }
        Command::Committed => {
            expect(Step::Commit, "Committed")?;
            vec![Event::StockCommitted, Event::OrderConfirmed]
        }
        Command::CommitRejected => {
            expect(Step::Commit, "CommitRejected")?;
            vec![Event::ReservationLost]
        }
        Command::Refunded {
            payment_id,
            amount_cents,
        } => {
            expect(Step::Refund, "Refunded")?;
            let mut events = vec![Event::PaymentRefunded {
                payment_id,
                amount_cents,
            }];
            if order.status() == Status::Pending {
                // The stock hold was lost before the sale: the money went back, the
                // order fails.
                events.push(Event::OrderFailed {
                    reason: reason::RESERVATION_EXPIRED.to_owned(),
                });
            }
            events
        }
        Command::Restocked => {
            expect(Step::Restock, "Restocked")?;
            vec![
                Event::StockRestocked,
                Event::OrderCancelled {
                    refunded_cents: order.refunded_cents,
                },
            ]
        }
        Command::Cancel => match order.status() {
            Status::Cancelled => Vec::new(),
            Status::Confirmed if order.cancel_requested => Vec::new(),
            Status::Confirmed => vec![Event::CancellationRequested],
            other => return Err(Rejection::NotCancellable(other.as_str())),
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn address() -> Address {
        Address {
            name: "Ada".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: "US".into(),
        }
    }

    fn run(order: Order, command: Command) -> Order {
        let events = decide(&order, command).unwrap();
        events.iter().fold(order, apply)
    }

    fn placed() -> Order {
        run(
            Order::new("o1"),
            Command::Place {
                user_id: "u1".into(),
                lines: vec![
                    Line {
                        product_id: "p1".into(),
                        quantity: 2,
                        price_cents: 500,
                        name: "Teapot".into(),
                    },
                    Line {
                        product_id: "p2".into(),
                        quantity: 1,
                        price_cents: 250,
                        name: "Cup".into(),
                    },
                ],
                currency: "USD".into(),
                shipping_address: address(),
                payment_token: "tok_visa".into(),
            },
        )
    }

    #[test]
    fn happy_path_confirms() {
        let o = placed();
        assert_eq!(o.placed.as_ref().unwrap().total_cents, 1250);
        assert_eq!(next_step(&o), Some(Step::Reserve));
        let o = run(o, Command::Reserved);
        assert_eq!(next_step(&o), Some(Step::Charge));
        let o = run(
            o,
            Command::Charged {
                payment_id: "pay1".into(),
                amount_cents: 1250,
            },
        );
        assert_eq!(next_step(&o), Some(Step::Commit));
        let o = run(o, Command::Committed);
        assert_eq!(o.status(), Status::Confirmed);
        assert!(o.is_terminal());
        assert_eq!(next_step(&o), None);
        assert_eq!(o.version, 5);
    }

    #[test]
    fn out_of_stock_fails_at_once() {
        let o = run(
            placed(),
            Command::ReservationRejected {
                reason: reason::OUT_OF_STOCK.into(),
                product_id: "p1".into(),
            },
        );
        assert_eq!(o.status(), Status::Failed);
        assert_eq!(o.failure_reason.as_deref(), Some("out_of_stock"));
        assert_eq!(next_step(&o), None);
    }

    #[test]
    fn decline_releases_then_fails() {
        let o = run(
            run(placed(), Command::Reserved),
            Command::ChargeDeclined {
                reason: "card_declined".into(),
            },
        );
        assert_eq!(next_step(&o), Some(Step::Release));
        let o = run(o, Command::Released);
        assert_eq!(o.status(), Status::Failed);
        assert_eq!(o.failure_reason.as_deref(), Some("payment_declined"));
    }

    #[test]
    fn unavailable_payments_are_retried_then_abandoned() {
        let mut o = run(placed(), Command::Reserved);
        for _ in 0..MAX_CHARGE_ATTEMPTS - 1 {
            o = run(
                o,
                Command::ChargeUnavailable {
                    error: "timeout".into(),
                },
            );
            assert_eq!(next_step(&o), Some(Step::Charge));
        }
        o = run(
            o,
            Command::ChargeUnavailable {
                error: "timeout".into(),
            },
        );
        assert!(o.payment_abandoned);
        assert_eq!(next_step(&o), Some(Step::Release));
        // A capture that surfaces late is recorded; the order then commits.
        let late = run(
            o.clone(),
            Command::Charged {
                payment_id: "pay".into(),
                amount_cents: 1250,
            },
        );
        assert_eq!(next_step(&late), Some(Step::Commit));
        let o = run(o, Command::Released);
        assert_eq!(o.failure_reason.as_deref(), Some("payment_unavailable"));
    }

    #[test]
    fn lost_reservation_refunds_then_fails() {
        let o = run(
            run(placed(), Command::Reserved),
            Command::Charged {
                payment_id: "pay".into(),
                amount_cents: 1250,
            },
        );
        let o = run(o, Command::CommitRejected);
        assert_eq!(next_step(&o), Some(Step::Refund));
        let o = run(
            o,
            Command::Refunded {
                payment_id: "pay".into(),
                amount_cents: 1250,
            },
        );
        assert_eq!(o.status(), Status::Failed);
        assert_eq!(o.failure_reason.as_deref(), Some("reservation_expired"));
    }

    #[test]
    fn cancel_refunds_and_restocks_confirmed_orders_only() {
        assert_eq!(
            decide(&placed(), Command::Cancel),
            Err(Rejection::NotCancellable("pending"))
        );
        let o = run(
            run(
                run(placed(), Command::Reserved),
                Command::Charged {
                    payment_id: "pay".into(),
                    amount_cents: 1250,
                },
            ),
            Command::Committed,
        );
        let o = run(o, Command::Cancel);
        assert!(!o.is_terminal());
        assert_eq!(decide(&o, Command::Cancel), Ok(vec![]));
        assert_eq!(next_step(&o), Some(Step::Refund));
        let o = run(
            o,
            Command::Refunded {
                payment_id: "pay".into(),
                amount_cents: 1250,
            },
        );
        assert_eq!(next_step(&o), Some(Step::Restock));
        let o = run(o, Command::Restocked);
        assert_eq!(o.status(), Status::Cancelled);
        assert!(o.is_terminal());
        assert_eq!(decide(&o, Command::Cancel), Ok(vec![]));
    }

    #[test]
    fn out_of_step_commands_are_rejected() {
        assert!(decide(&placed(), Command::Committed).is_err());
        assert!(decide(&Order::new("x"), Command::Reserved).is_err());
        let o = placed();
        assert_eq!(
            decide(
                &o,
                Command::Place {
                    user_id: "u".into(),
                    lines: vec![],
                    currency: "USD".into(),
                    shipping_address: address(),
                    payment_token: "t".into()
                }
            ),
            Err(Rejection::AlreadyPlaced)
        );
    }

    #[test]
    fn events_serialize_as_type_and_data() {
        let json = serde_json::to_value(Event::OrderFailed { reason: "x".into() }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "OrderFailed", "data": {"reason": "x"}})
        );
        let json = serde_json::to_value(Event::StockReserved).unwrap();
        assert_eq!(json, serde_json::json!({"type": "StockReserved"}));
    }
}
