//! payments' rules, pure: no I/O, no clock, no randomness (ids are passed in).
//!
//! - what a valid charge or refund is ([`Charge::parse`], [`Refund::parse`]);
//! - the idempotency decision: what the record of a key means for a request under it
//!   ([`on_claim`]: go ahead, replay the stored answer, refuse a different request
//!   under the same key, or say the first is still running);
//! - what the provider's answer becomes ([`on_provider`]: a capture, a decline that
//!   captures nothing, or no result at all);
//! - the refund arithmetic ([`Balance`]: a refund never exceeds what is captured and
//!   not yet refunded) and the ledger's entries and totals.
//!
//! `service` performs the I/O around these decisions; `store` writes what they say.

use chassis::idempotency::{self, Begin};
use contracts::payments::{
    ChargeRequest, Payment, PaymentCaptured, PaymentDeclined, PaymentError, PaymentRefunded,
    PaymentStatus, RefundRequest,
};

use crate::provider::ProviderError;

/// The answer to a charge or refund: what callers get, and what is stored under the
/// request's idempotency key for repeats.
pub type Outcome = Result<Payment, PaymentError>;

/// Idempotency keys are scoped per operation: a charge and a refund may share a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Charge,
    Refund,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Charge => "charge",
            Scope::Refund => "refund",
        }
    }
}

/// The status codes stored with an answer: what an HTTP API would have answered.
pub const STATUS_OK: u16 = 200;
pub const STATUS_DECLINED: u16 = 402;

/// The longest idempotency key accepted, in bytes.
pub const KEY_MAX: usize = 255;

fn invalid(message: impl Into<String>) -> PaymentError {
    PaymentError::Invalid(message.into())
}

/// A store failure as callers see it: transient, retry with the same key.
pub fn unavailable(e: impl std::fmt::Display) -> PaymentError {
    PaymentError::Unavailable(format!("payments store: {e}"))
}

/// Money moved by one charge or refund: a positive number of cents.
///
/// Not chassis's `Money`: that bounds one price at `MAX_CENTS`, and a charge is an
/// order's total, up to 100 lines of 100 units at such prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    pub fn parse(cents: i64) -> Result<Self, PaymentError> {
        if cents > 0 {
            Ok(Self(cents))
        } else {
            Err(invalid("amount_cents must be positive"))
        }
    }

    pub fn cents(self) -> i64 {
        self.0
    }
}

/// A caller's idempotency key: 1 to [`KEY_MAX`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: String) -> Result<Self, PaymentError> {
        if raw.is_empty() || raw.len() > KEY_MAX {
            return Err(invalid(format!(
                "idempotency_key must be 1 to {KEY_MAX} characters"
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A valid charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    key: IdempotencyKey,
    order_id: String,
    amount: Amount,
    currency: String,
    token: String,
}

impl Charge {
    /// Checks the key, then the amount, the currency and the token; the first fault
    /// is the answer.
    pub fn parse(request: ChargeRequest) -> Result<Self, PaymentError> {
        let key = IdempotencyKey::parse(request.idempotency_key)?;
        let amount = Amount::parse(request.amount_cents)?;
        if request.currency != chassis::money::CURRENCY {
            return Err(invalid(format!(
                "currency must be {}",
                chassis::money::CURRENCY
            )));
        }
        if request.payment_token.is_empty() {
            return Err(invalid("payment_token is required"));
        }
        Ok(Self {
            key,
            order_id: request.order_id,
            amount,
            currency: request.currency,
            token: request.payment_token,
        })
    }

    pub fn key(&self) -> &str {
        self.key.as_str()
    }

    pub fn order_id(&self) -> &str {
        &self.order_id
    }

    pub fn amount(&self) -> Amount {
        self.amount
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// What a repeat under the same key must match to be the same request.
    pub fn fingerprint(&self) -> String {
        let amount = self.amount.cents().to_string();
        idempotency::fingerprint(&[&self.order_id, &amount, &self.currency, &self.token])
    }
}

/// A valid refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    key: IdempotencyKey,
    payment_id: String,
    amount: Amount,
}

impl Refund {
    /// Checks the amount, then the key.
    pub fn parse(request: RefundRequest) -> Result<Self, PaymentError> {
        let amount = Amount::parse(request.amount_cents)?;
        let key = IdempotencyKey::parse(request.idempotency_key)?;
        Ok(Self {
            key,
            payment_id: request.payment_id,
            amount,
        })
    }

    pub fn key(&self) -> &str {
        self.key.as_str()
    }

    pub fn payment_id(&self) -> &str {
        &self.payment_id
    }

    pub fn amount(&self) -> Amount {
        self.amount
    }

    pub fn fingerprint(&self) -> String {
        let amount = self.amount.cents().to_string();
        idempotency::fingerprint(&[&self.payment_id, &amount])
    }
}

/// What the record of a request's key says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use (or a takeover of an abandoned claim): perform the request.
    Proceed,
    /// The key was used before: this is the answer, and nothing is performed again.
    Answer(Outcome),
}

/// The idempotency decision: a key done before replays its stored answer (a replayed
/// charge never reaches the provider or the ledger again), the same key with other
/// parameters is refused, and a key whose first request still runs is refused as in
/// progress.
pub fn on_claim(record: Begin) -> Claim {
    match record {
        Begin::Proceed => Claim::Proceed,
        Begin::Replay { status, body } => Claim::Answer(replay(status, &body)),
        Begin::Mismatch => Claim::Answer(Err(PaymentError::KeyMismatch)),
        Begin::InProgress => Claim::Answer(Err(PaymentError::InProgress)),
    }
}

fn replay(status: u16, body: &str) -> Outcome {
    match serde_json::from_str::<Outcome>(body) {
        Ok(outcome) => outcome,
        Err(_) if status == STATUS_DECLINED => Err(PaymentError::Declined("declined".into())),
        Err(e) => Err(unavailable(e)),
    }
}

/// An answer as stored under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: String,
}

/// The stored form of a final answer (a payment, or a decline).
pub fn stored(outcome: &Outcome) -> Result<StoredAnswer, PaymentError> {
    let status = match outcome {
        Err(PaymentError::Declined(_)) => STATUS_DECLINED,
        _ => STATUS_OK,
    };
    let body = serde_json::to_string(outcome).map_err(unavailable)?;
    Ok(StoredAnswer { status, body })
}

/// The kinds of money movement the ledger records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Capture,
    Refund,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Capture => "capture",
            EntryKind::Refund => "refund",
        }
    }
}

/// One money movement. The ledger is append-only and each entry's key is unique, so a
/// charge key captures at most once and a refund key refunds at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub payment_id: String,
    pub order_id: String,
    pub kind: EntryKind,
    pub amount: Amount,
    /// The charge's key, or `refund:` and the refund's key.
    pub key: String,
}

/// Money in and out, from the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LedgerTotals {
    pub captured_cents: i64,
    pub refunded_cents: i64,
}

impl LedgerTotals {
    #[must_use]
    pub fn with(mut self, entry: &LedgerEntry) -> Self {
        let cents = entry.amount.cents();
        match entry.kind {
            EntryKind::Capture => self.captured_cents = self.captured_cents.saturating_add(cents),
            EntryKind::Refund => self.refunded_cents = self.refunded_cents.saturating_add(cents),
        }
        self
    }

    /// Captured minus refunded.
    pub fn net_cents(&self) -> i64 {
        self.captured_cents - self.refunded_cents
    }
}

/// A charge the provider captured: the payment, its ledger entry, its event and the
/// answer stored under the charge key, all recorded together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub payment: Payment,
    pub key: String,
    pub provider_ref: String,
    pub entry: LedgerEntry,
    pub event: PaymentCaptured,
    pub answer: StoredAnswer,
}

/// A charge the provider declined: final for its key, and nothing is captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    pub key: String,
    pub reason: String,
    pub event: PaymentDeclined,
    pub answer: StoredAnswer,
}

/// What the provider's answer to a charge becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    Captured(Box<Capture>),
    Declined(Decline),
    /// No result (the provider failed or did not answer): the key is released so a
    /// retry asks the provider again, under the same key, so it cannot charge twice.
    NoResult {
        reason: String,
    },
}

/// Turns the provider's answer into what to record. `payment_id` names the payment
/// if there is one.
pub fn on_provider(
    charge: &Charge,
    answer: Result<String, ProviderError>,
    payment_id: String,
) -> Result<Charged, PaymentError> {
    Ok(match answer {
        Ok(provider_ref) => {
            let payment = Payment {
                id: payment_id,
                order_id: charge.order_id.clone(),
                amount_cents: charge.amount.cents(),
                refunded_cents: 0,
                currency: charge.currency.clone(),
                status: PaymentStatus::Captured,
            };
            Charged::Captured(Box::new(Capture {
                key: charge.key().to_owned(),
                provider_ref,
                entry: LedgerEntry {
                    payment_id: payment.id.clone(),
                    order_id: payment.order_id.clone(),
                    kind: EntryKind::Capture,
                    amount: charge.amount,
                    key: charge.key().to_owned(),
                },
                event: PaymentCaptured {
                    payment_id: payment.id.clone(),
                    order_id: payment.order_id.clone(),
                    amount_cents: payment.amount_cents,
                    currency: payment.currency.clone(),
                },
                answer: stored(&Ok(payment.clone()))?,
                payment,
            }))
        }
        Err(ProviderError::Declined(reason)) => Charged::Declined(Decline {
            key: charge.key().to_owned(),
            event: PaymentDeclined {
                order_id: charge.order_id.clone(),
                amount_cents: charge.amount.cents(),
                reason: reason.clone(),
            },
            answer: stored(&Err(PaymentError::Declined(reason.clone())))?,
            reason,
        }),
        Err(ProviderError::Unavailable(reason)) => Charged::NoResult { reason },
    })
}

/// A captured payment's money: `0 <= refunded <= captured`, `captured > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    captured: Amount,
    refunded: i64,
}

const EXCEEDS: &str = "refund exceeds the captured amount not yet refunded";

impl Balance {
    /// Nothing refunded yet.
    pub fn captured(amount: Amount) -> Self {
        Self {
            captured: amount,
            refunded: 0,
        }
    }

    /// A stored payment's balance; `None` if the numbers break the invariant.
    pub fn of(payment: &Payment) -> Option<Self> {
        let captured = Amount::parse(payment.amount_cents).ok()?;
        (0..=captured.cents())
            .contains(&payment.refunded_cents)
            .then_some(Self {
                captured,
                refunded: payment.refunded_cents,
            })
    }

    pub fn captured_cents(self) -> i64 {
        self.captured.cents()
    }

    pub fn refunded_cents(self) -> i64 {
        self.refunded
    }

    /// What may still be refunded.
    pub fn refundable_cents(self) -> i64 {
        self.captured.cents() - self.refunded
    }

    pub fn status(self) -> PaymentStatus {
        if self.refunded == 0 {
            PaymentStatus::Captured
        } else if self.refunded == self.captured.cents() {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        }
    }

    /// The balance after refunding `amount`, refused if it exceeds what is left.
    pub fn refund(self, amount: Amount) -> Result<Self, PaymentError> {
        if amount.cents() > self.refundable_cents() {
            return Err(invalid(EXCEEDS));
        }
        Ok(Self {
            captured: self.captured,
            refunded: self.refunded + amount.cents(),
        })
    }
}

/// A refund to record: the payment's balance before (the write happens only if the
/// stored balance still is that) and after, its ledger entry, its event and the
/// answer stored under the refund key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    pub payment: Payment,
    pub refunded_before: i64,
    pub key: String,
    pub entry: LedgerEntry,
    pub event: PaymentRefunded,
    pub answer: StoredAnswer,
}

/// Decides a refund of `payment`: refused if it exceeds what is captured and not
/// yet refunded, else the refunded payment and what to record.
pub fn refund(payment: &Payment, refund: &Refund) -> Result<RefundRecord, PaymentError> {
    let before = Balance::of(payment).ok_or_else(|| {
        unavailable(format!(
            "payment {} holds an impossible balance",
            payment.id
        ))
    })?;
    let after = before.refund(refund.amount)?;
    let refunded = Payment {
        refunded_cents: after.refunded_cents(),
        status: after.status(),
        ..payment.clone()
    };
    Ok(RefundRecord {
        refunded_before: before.refunded_cents(),
        key: refund.key().to_owned(),
        entry: LedgerEntry {
            payment_id: payment.id.clone(),
            order_id: payment.order_id.clone(),
            kind: EntryKind::Refund,
            amount: refund.amount,
            key: format!("refund:{}", refund.key()),
        },
        event: PaymentRefunded {
            payment_id: payment.id.clone(),
            order_id: payment.order_id.clone(),
            amount_cents: refund.amount.cents(),
            currency: payment.currency.clone(),
        },
        answer: stored(&Ok(refunded.clone()))?,
        payment: refunded,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn charge_request(key: &str, amount_cents: i64) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: key.into(),
            order_id: "o1".into(),
            amount_cents,
            currency: "USD".into(),
            payment_token: "tok_visa".into(),
        }
    }

    fn charge(key: &str, amount_cents: i64) -> Charge {
        Charge::parse(charge_request(key, amount_cents)).unwrap()
    }

    fn captured(charge: &Charge, id: &str) -> Capture {
        match on_provider(charge, Ok("ch_1".into()), id.into()).unwrap() {
            Charged::Captured(capture) => *capture,
            other => panic!("not a capture: {other:?}"),
        }
    }

    fn refund_of(payment_id: &str, key: &str, amount_cents: i64) -> Refund {
        Refund::parse(RefundRequest {
            idempotency_key: key.into(),
            payment_id: payment_id.into(),
            amount_cents,
        })
        .unwrap()
    }

    fn invalid_message(result: Result<impl std::fmt::Debug, PaymentError>) -> String {
        match result {
            Err(PaymentError::Invalid(message)) => message,
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn amounts_are_positive() {
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(-1).is_err());
        assert!(Amount::parse(i64::MIN).is_err());
        assert_eq!(Amount::parse(1).unwrap().cents(), 1);
        // An order total may exceed one price's bound.
        assert_eq!(
            Amount::parse(chassis::money::MAX_CENTS * 100)
                .unwrap()
                .cents(),
            chassis::money::MAX_CENTS * 100
        );
    }

    #[test]
    fn a_charge_is_checked_key_first_then_amount_currency_and_token() {
        let long = "k".repeat(KEY_MAX + 1);
        assert_eq!(
            invalid_message(Charge::parse(charge_request(&long, 0))),
            "idempotency_key must be 1 to 255 characters"
        );
        assert!(Charge::parse(charge_request(&"k".repeat(KEY_MAX), 1)).is_ok());
        assert_eq!(
            invalid_message(Charge::parse(charge_request("", 5))),
            "idempotency_key must be 1 to 255 characters"
        );
        assert_eq!(
            invalid_message(Charge::parse(charge_request("k", 0))),
            "amount_cents must be positive"
        );
        let mut euro = charge_request("k", 5);
        euro.currency = "EUR".into();
        assert_eq!(invalid_message(Charge::parse(euro)), "currency must be USD");
        let mut tokenless = charge_request("k", 5);
        tokenless.payment_token = String::new();
        assert_eq!(
            invalid_message(Charge::parse(tokenless)),
            "payment_token is required"
        );
    }

    #[test]
    fn a_refund_needs_a_positive_amount_and_a_key() {
        let request = |key: &str, amount_cents| RefundRequest {
            idempotency_key: key.into(),
            payment_id: "p".into(),
            amount_cents,
        };
        assert_eq!(
            invalid_message(Refund::parse(request("k", 0))),
            "amount_cents must be positive"
        );
        assert_eq!(
            invalid_message(Refund::parse(request("", 10))),
            "idempotency_key must be 1 to 255 characters"
        );
        assert_eq!(
            Refund::parse(request("k", 10)).unwrap().amount().cents(),
            10
        );
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let a = charge("k", 500);
        assert_eq!(a.fingerprint(), charge("k", 500).fingerprint());
        assert_ne!(a.fingerprint(), charge("k", 501).fingerprint());
        let mut other_token = charge_request("k", 500);
        other_token.payment_token = "tok_chargeDeclined".into();
        assert_ne!(
            a.fingerprint(),
            Charge::parse(other_token).unwrap().fingerprint()
        );
        assert_ne!(
            refund_of("p", "k", 10).fingerprint(),
            refund_of("p", "k", 11).fingerprint()
        );
    }

    #[test]
    fn a_replayed_charge_answers_the_first_payment_and_captures_nothing_more() {
        let capture = captured(&charge("k", 500), "pay1");
        let replayed = on_claim(Begin::Replay {
            status: capture.answer.status,
            body: capture.answer.body.clone(),
        });
        assert_eq!(replayed, Claim::Answer(Ok(capture.payment.clone())));
        assert_eq!(on_claim(Begin::Proceed), Claim::Proceed);
        assert_eq!(
            on_claim(Begin::Mismatch),
            Claim::Answer(Err(PaymentError::KeyMismatch))
        );
        assert_eq!(
            on_claim(Begin::InProgress),
            Claim::Answer(Err(PaymentError::InProgress))
        );
    }

    #[test]
    fn a_declined_charge_captures_nothing_and_stays_declined() {
        let charged = on_provider(
            &charge("k", 500),
            Err(ProviderError::Declined("card_declined".into())),
            "pay1".into(),
        )
        .unwrap();
        let Charged::Declined(decline) = charged else {
            panic!("not a decline: {charged:?}");
        };
        assert_eq!(decline.reason, "card_declined");
        assert_eq!(decline.event.amount_cents, 500);
        assert_eq!(decline.answer.status, STATUS_DECLINED);
        assert_eq!(
            on_claim(Begin::Replay {
                status: decline.answer.status,
                body: decline.answer.body
            }),
            Claim::Answer(Err(PaymentError::Declined("card_declined".into())))
        );
        // An answer stored in an older form is still a decline.
        assert_eq!(
            on_claim(Begin::Replay {
                status: STATUS_DECLINED,
                body: "?".into()
            }),
            Claim::Answer(Err(PaymentError::Declined("declined".into())))
        );
    }

    #[test]
    fn no_answer_from_the_provider_is_no_result() {
        assert_eq!(
            on_provider(
                &charge("k", 500),
                Err(ProviderError::Unavailable("down".into())),
                "pay1".into()
            )
            .unwrap(),
            Charged::NoResult {
                reason: "down".into()
            }
        );
    }

    #[test]
    fn a_capture_records_the_amount_once_under_the_charge_key() {
        let capture = captured(&charge("order:o1:charge", 1250), "pay1");
        assert_eq!(capture.payment.amount_cents, 1250);
        assert_eq!(capture.payment.refunded_cents, 0);
        assert_eq!(capture.payment.status, PaymentStatus::Captured);
        assert_eq!(capture.entry.kind, EntryKind::Capture);
        assert_eq!(capture.entry.amount.cents(), 1250);
        assert_eq!(capture.entry.key, "order:o1:charge");
        assert_eq!(capture.event.amount_cents, 1250);
        assert_eq!(capture.answer.status, STATUS_OK);
    }

    #[test]
    fn partial_and_repeated_refunds_never_exceed_the_capture() {
        let payment = captured(&charge("k", 1000), "pay1").payment;
        let first = refund(&payment, &refund_of("pay1", "r1", 300)).unwrap();
        assert_eq!(first.payment.refunded_cents, 300);
        assert_eq!(first.payment.status, PaymentStatus::PartiallyRefunded);
        assert_eq!(first.refunded_before, 0);
        assert_eq!(first.entry.key, "refund:r1");
        // More than what is left: refused, whatever was refunded before.
        assert_eq!(
            invalid_message(refund(&first.payment, &refund_of("pay1", "r2", 701))),
            EXCEEDS
        );
        let rest = refund(&first.payment, &refund_of("pay1", "r2", 700)).unwrap();
        assert_eq!(rest.payment.refunded_cents, 1000);
        assert_eq!(rest.payment.status, PaymentStatus::Refunded);
        assert_eq!(rest.refunded_before, 300);
        assert!(refund(&rest.payment, &refund_of("pay1", "r3", 1)).is_err());
        // A stored payment that breaks the invariant is not refunded from.
        let broken = Payment {
            refunded_cents: 1001,
            ..payment
        };
        assert!(matches!(
            refund(&broken, &refund_of("pay1", "r4", 1)),
            Err(PaymentError::Unavailable(_))
        ));
    }

    #[test]
    fn balances_say_their_status() {
        let full = Balance::captured(Amount::parse(10).unwrap());
        assert_eq!(full.status(), PaymentStatus::Captured);
        assert_eq!(full.refundable_cents(), 10);
        let part = full.refund(Amount::parse(4).unwrap()).unwrap();
        assert_eq!(part.status(), PaymentStatus::PartiallyRefunded);
        assert_eq!((part.captured_cents(), part.refunded_cents()), (10, 4));
        let none_left = part.refund(Amount::parse(6).unwrap()).unwrap();
        assert_eq!(none_left.status(), PaymentStatus::Refunded);
        assert_eq!(none_left.refundable_cents(), 0);
    }

    /// A key's record as `chassis::idempotency` keeps it, for the model below.
    struct KeyRecord {
        fingerprint: String,
        answer: Option<StoredAnswer>,
    }

    /// payments as the service drives the domain, with its store held in memory:
    /// charges and refunds under keys, a provider that captures, declines or fails.
    #[derive(Default)]
    struct Model {
        keys: HashMap<(&'static str, String), KeyRecord>,
        payments: HashMap<String, Payment>,
        ledger: Vec<LedgerEntry>,
        next_id: u32,
    }

    #[derive(Debug, Clone, Copy)]
    enum Provider {
        Captures,
        Declines,
        Fails,
    }

    impl Model {
        fn claim(&mut self, scope: Scope, key: &str, fingerprint: String) -> Begin {
            let slot = (scope.as_str(), key.to_owned());
            match self.keys.get(&slot) {
                None => {
                    self.keys.insert(
                        slot,
                        KeyRecord {
                            fingerprint,
                            answer: None,
                        },
                    );
                    Begin::Proceed
                }
                Some(record) if record.fingerprint != fingerprint => Begin::Mismatch,
                Some(KeyRecord {
                    answer: Some(answer),
                    ..
                }) => Begin::Replay {
                    status: answer.status,
                    body: answer.body.clone(),
                },
                Some(_) => Begin::InProgress,
            }
        }

        fn complete(&mut self, scope: Scope, key: &str, answer: &StoredAnswer) {
            if let Some(record) = self.keys.get_mut(&(scope.as_str(), key.to_owned())) {
                record.answer = Some(answer.clone());
            }
        }

        fn release(&mut self, scope: Scope, key: &str) {
            self.keys.remove(&(scope.as_str(), key.to_owned()));
        }

        fn charge(&mut self, request: ChargeRequest, provider: Provider) -> Outcome {
            let charge = Charge::parse(request)?;
            match on_claim(self.claim(Scope::Charge, charge.key(), charge.fingerprint())) {
                Claim::Answer(outcome) => return outcome,
                Claim::Proceed => {}
            }
            let answer = match provider {
                Provider::Captures => Ok(format!("ch_{}", charge.key())),
                Provider::Declines => Err(ProviderError::Declined("card_declined".into())),
                Provider::Fails => Err(ProviderError::Unavailable("down".into())),
            };
            self.next_id += 1;
            match on_provider(&charge, answer, format!("pay{}", self.next_id))? {
                Charged::Captured(capture) => {
                    // The ledger's unique key: a second capture under one key would
                    // fail to commit.
                    assert!(
                        !self.ledger.iter().any(|e| e.key == capture.entry.key),
                        "a second capture under {}",
                        capture.key
                    );
                    self.payments
                        .insert(capture.payment.id.clone(), capture.payment.clone());
                    self.ledger.push(capture.entry.clone());
                    self.complete(Scope::Charge, &capture.key, &capture.answer);
                    Ok(capture.payment)
                }
                Charged::Declined(decline) => {
                    self.complete(Scope::Charge, &decline.key, &decline.answer);
                    Err(PaymentError::Declined(decline.reason))
                }
                Charged::NoResult { reason } => {
                    self.release(Scope::Charge, charge.key());
                    Err(PaymentError::Unavailable(reason))
                }
            }
        }

        fn refund(&mut self, request: RefundRequest) -> Outcome {
            let refund = Refund::parse(request)?;
            match on_claim(self.claim(Scope::Refund, refund.key(), refund.fingerprint())) {
                Claim::Answer(outcome) => return outcome,
                Claim::Proceed => {}
            }
            let decided = self
                .payments
                .get(refund.payment_id())
                .ok_or_else(|| PaymentError::NotFound(refund.payment_id().to_owned()))
                .and_then(|payment| super::refund(payment, &refund));
            match decided {
                Ok(record) => {
                    assert_eq!(
                        self.payments[&record.payment.id].refunded_cents,
                        record.refunded_before
                    );
                    self.payments
                        .insert(record.payment.id.clone(), record.payment.clone());
                    self.ledger.push(record.entry.clone());
                    self.complete(Scope::Refund, &record.key, &record.answer);
                    Ok(record.payment)
                }
                Err(e) => {
                    self.release(Scope::Refund, refund.key());
                    Err(e)
                }
            }
        }

        fn check(&self) {
            let mut totals = LedgerTotals::default();
            for entry in &self.ledger {
                assert!(entry.amount.cents() > 0, "{entry:?}");
                totals = totals.with(entry);
            }
            assert!(totals.refunded_cents <= totals.captured_cents);
            assert!(totals.net_cents() >= 0);
            for payment in self.payments.values() {
                let balance = Balance::of(payment)
                    .unwrap_or_else(|| panic!("a payment broke its balance: {payment:?}"));
                assert_eq!(payment.status, balance.status());
                let of_it = self
                    .ledger
                    .iter()
                    .filter(|e| e.payment_id == payment.id)
                    .fold(LedgerTotals::default(), LedgerTotals::with);
                assert_eq!(of_it.captured_cents, payment.amount_cents, "{payment:?}");
                assert_eq!(of_it.refunded_cents, payment.refunded_cents, "{payment:?}");
                assert_eq!(
                    self.ledger
                        .iter()
                        .filter(|e| e.payment_id == payment.id && e.kind == EntryKind::Capture)
                        .count(),
                    1
                );
            }
            // A key that ended declined captured nothing.
            for ((scope, key), record) in &self.keys {
                if *scope == Scope::Charge.as_str()
                    && record
                        .answer
                        .as_ref()
                        .is_some_and(|a| a.status == STATUS_DECLINED)
                {
                    assert!(!self.ledger.iter().any(|e| &e.key == key), "{key}");
                }
            }
        }
    }

    /// Random sequences of charges (few keys, so repeats, mismatches and retries after
    /// failures are common) and refunds (of any amount, under repeated keys), checking
    /// the money invariants after every step.
    #[test]
    fn money_invariants_hold_over_random_sequences() {
        const KEYS: [&str; 4] = ["k1", "k2", "k3", "k4"];
        const TOKENS: [&str; 2] = ["tok_visa", "tok_other"];
        for seed in 0..500 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut model = Model::default();
            // The first answer each charge key got, and how many captures it made.
            let mut first_capture: HashMap<String, Payment> = HashMap::new();
            for _ in 0..40 {
                let before = model.ledger.len();
                if rng.gen_bool(0.6) {
                    let key = KEYS[rng.gen_range(0..KEYS.len())];
                    let request = ChargeRequest {
                        idempotency_key: key.into(),
                        order_id: format!("o{}", rng.gen_range(0..2)),
                        amount_cents: [-100, 0, 1, 250, 999][rng.gen_range(0..5)],
                        currency: "USD".into(),
                        payment_token: TOKENS[rng.gen_range(0..TOKENS.len())].into(),
                    };
                    let provider = [Provider::Captures, Provider::Declines, Provider::Fails]
                        [rng.gen_range(0..3)];
                    let valid = request.amount_cents > 0;
                    match model.charge(request, provider) {
                        Ok(payment) => {
                            assert!(payment.amount_cents > 0);
                            if let Some(first) = first_capture.get(key) {
                                // A repeat: the first payment again, nothing captured.
                                assert_eq!(&payment.id, &first.id, "seed {seed}");
                                assert_eq!(model.ledger.len(), before, "seed {seed}");
                            } else {
                                assert_eq!(model.ledger.len(), before + 1, "seed {seed}");
                                first_capture.insert(key.to_owned(), payment);
                            }
                        }
                        Err(e) => {
                            assert_eq!(model.ledger.len(), before, "seed {seed}: {e}");
                            assert!(valid || matches!(e, PaymentError::Invalid(_)));
                        }
                    }
                } else {
                    let payment_id = if model.payments.is_empty() || rng.gen_bool(0.1) {
                        "nope".to_owned()
                    } else {
                        let mut ids: Vec<&String> = model.payments.keys().collect();
                        ids.sort();
                        ids[rng.gen_range(0..ids.len())].clone()
                    };
                    let request = RefundRequest {
                        idempotency_key: format!("r{}", rng.gen_range(0..6)),
                        payment_id,
                        amount_cents: rng.gen_range(-10..=1100),
                    };
                    let refundable = model
                        .payments
                        .get(&request.payment_id)
                        .map(|p| p.amount_cents - p.refunded_cents);
                    match model.refund(request.clone()) {
                        Ok(payment) => {
                            assert!(payment.refunded_cents <= payment.amount_cents);
                            assert!(model.ledger.len() <= before + 1);
                        }
                        Err(e) => {
                            assert_eq!(model.ledger.len(), before, "seed {seed}: {e}");
                            if let (PaymentError::Invalid(_), Some(left)) = (&e, refundable) {
                                assert!(
                                    request.amount_cents <= 0
                                        || request.amount_cents > left
                                        || request.idempotency_key.is_empty(),
                                    "seed {seed}: {request:?} refused with {left} left"
                                );
                            }
                        }
                    }
                }
                model.check();
            }
        }
    }
}
