//! payments' use cases over the SQL adapter on SQLite, with a scripted provider:
//! idempotent charges, declines, provider failures, and refunds that never exceed
//! the capture, also when they race.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chassis::outbox::Outbox;
use chassis::store::Store;
use contracts::payments::{ChargeRequest, PaymentError, PaymentStatus, PaymentsApi, RefundRequest};
use payments::PaymentsService;
use payments::provider::{PaymentProvider, ProviderError};
use payments::store::SqlPayments;
use testkit::delivery::TestStore;

/// Answers charges from a script (then captures), and records every call's key.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Result<(), ProviderError>>>,
    hang: bool,
    charges: Mutex<Vec<String>>,
    refunds: Mutex<Vec<String>>,
}

impl Scripted {
    fn answering(answers: Vec<Result<(), ProviderError>>) -> Self {
        Self {
            answers: Mutex::new(answers.into()),
            ..Self::default()
        }
    }

    fn charges(&self) -> Vec<String> {
        self.charges.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl PaymentProvider for Scripted {
    async fn charge(
        &self,
        _token: &str,
        _amount_cents: i64,
        _currency: &str,
        idempotency_key: &str,
    ) -> Result<String, ProviderError> {
        self.charges
            .lock()
            .unwrap()
            .push(idempotency_key.to_owned());
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let next = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
        next.map(|()| format!("ch_{idempotency_key}"))
    }

    async fn refund(
        &self,
        _reference: &str,
        _amount_cents: i64,
        idempotency_key: &str,
    ) -> Result<(), ProviderError> {
        self.refunds
            .lock()
            .unwrap()
            .push(idempotency_key.to_owned());
        Ok(())
    }
}

struct Setup {
    store: TestStore,
    service: PaymentsService,
}

async fn setup(provider: Arc<Scripted>) -> Setup {
    let store = TestStore::sqlite_with(payments::MODULE, 4).await;
    store.migrate(&payments::MIGRATOR).await.unwrap();
    let outbox = Outbox::new(payments::MODULE, store.pool().clone());
    let service = PaymentsService::new(
        Arc::new(SqlPayments::new((*store).clone(), outbox)),
        provider,
        Duration::from_millis(200),
    );
    Setup { store, service }
}

fn charge(key: &str, amount_cents: i64) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.into(),
        order_id: "o1".into(),
        amount_cents,
        currency: "USD".into(),
        payment_token: "tok_visa".into(),
    }
}

fn refund(payment_id: &str, key: &str, amount_cents: i64) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
        amount_cents,
    }
}

/// The outbox's topics, oldest first.
async fn events(store: &Store) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT topic FROM outbox ORDER BY created_at, id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.into_iter().map(|(t,)| t).collect()
}

#[tokio::test]
async fn one_key_captures_once_and_replays_the_payment() {
    let provider = Arc::new(Scripted::default());
    let app = setup(Arc::clone(&provider)).await;
    let first = app.service.charge(charge("k1", 1250)).await.unwrap();
    assert_eq!(first.amount_cents, 1250);
    assert_eq!(first.status, PaymentStatus::Captured);
    let again = app.service.charge(charge("k1", 1250)).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(provider.charges(), ["k1"], "the replay asked the provider");
    let totals = app.service.totals().await.unwrap();
    assert_eq!((totals.captured_cents, totals.refunded_cents), (1250, 0));
    assert_eq!(events(&app.store).await, ["payments.PaymentCaptured"]);
    assert_eq!(app.service.get(first.id.clone()).await.unwrap(), first);
    assert_eq!(
        app.service.find_by_order("o1".into()).await.unwrap(),
        Some(first)
    );
    // The same key for another request is refused, and captures nothing.
    assert_eq!(
        app.service.charge(charge("k1", 999)).await,
        Err(PaymentError::KeyMismatch)
    );
    assert_eq!(app.service.totals().await.unwrap().captured_cents, 1250);
}

#[tokio::test]
async fn a_declined_charge_captures_nothing_and_stays_declined() {
    let provider = Arc::new(Scripted::answering(vec![Err(ProviderError::Declined(
        "card_declined".into(),
    ))]));
    let app = setup(Arc::clone(&provider)).await;
    let declined = Err(PaymentError::Declined("card_declined".into()));
    assert_eq!(app.service.charge(charge("k1", 500)).await, declined);
    // The provider would capture now; the key's answer stays the decline.
    assert_eq!(app.service.charge(charge("k1", 500)).await, declined);
    assert_eq!(provider.charges(), ["k1"]);
    assert_eq!(app.service.totals().await.unwrap().captured_cents, 0);
    assert_eq!(app.service.find_by_order("o1".into()).await.unwrap(), None);
    assert_eq!(events(&app.store).await, ["payments.PaymentDeclined"]);
}

#[tokio::test]
async fn no_answer_releases_the_key_and_the_retry_captures_once() {
    let provider = Arc::new(Scripted::answering(vec![Err(ProviderError::Unavailable(
        "down".into(),
    ))]));
    let app = setup(Arc::clone(&provider)).await;
    assert_eq!(
        app.service.charge(charge("k1", 500)).await,
        Err(PaymentError::Unavailable("down".into()))
    );
    assert!(events(&app.store).await.is_empty());
    let payment = app.service.charge(charge("k1", 500)).await.unwrap();
    // Asked again under the same key: a real provider answers the first charge.
    assert_eq!(provider.charges(), ["k1", "k1"]);
    assert_eq!(app.service.totals().await.unwrap().captured_cents, 500);
    assert_eq!(app.service.charge(charge("k1", 500)).await, Ok(payment));
}

#[tokio::test]
async fn a_provider_that_never_answers_is_unavailable_within_the_timeout() {
    let provider = Arc::new(Scripted {
        hang: true,
        ..Scripted::default()
    });
    let app = setup(provider).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        app.service.charge(charge("k1", 500)),
    )
    .await
    .expect("the charge gives up at its timeout");
    assert_eq!(
        answer,
        Err(PaymentError::Unavailable("no answer within 200 ms".into()))
    );
    assert_eq!(app.service.totals().await.unwrap().captured_cents, 0);
}

#[tokio::test]
async fn invalid_requests_touch_nothing() {
    let provider = Arc::new(Scripted::default());
    let app = setup(Arc::clone(&provider)).await;
    for request in [charge("", 500), charge("k", 0), charge("k", -5)] {
        assert!(matches!(
            app.service.charge(request).await,
            Err(PaymentError::Invalid(_))
        ));
    }
    assert!(provider.charges().is_empty());
    assert!(matches!(
        app.service.refund(refund("p", "r", 0)).await,
        Err(PaymentError::Invalid(_))
    ));
    assert_eq!(
        app.service.refund(refund("p", "r", 10)).await,
        Err(PaymentError::NotFound("p".into()))
    );
    assert_eq!(
        app.service.get("p".into()).await,
        Err(PaymentError::NotFound("p".into()))
    );
}

#[tokio::test]
async fn partial_and_repeated_refunds_never_exceed_the_capture() {
    let app = setup(Arc::new(Scripted::default())).await;
    let payment = app.service.charge(charge("k1", 1000)).await.unwrap();
    let part = app
        .service
        .refund(refund(&payment.id, "r1", 300))
        .await
        .unwrap();
    assert_eq!(part.refunded_cents, 300);
    assert_eq!(part.status, PaymentStatus::PartiallyRefunded);
    // A repeat is the same answer, not a second refund.
    assert_eq!(
        app.service.refund(refund(&payment.id, "r1", 300)).await,
        Ok(part)
    );
    assert!(matches!(
        app.service.refund(refund(&payment.id, "r2", 701)).await,
        Err(PaymentError::Invalid(_))
    ));
    let rest = app
        .service
        .refund(refund(&payment.id, "r2", 700))
        .await
        .unwrap();
    assert_eq!(rest.refunded_cents, 1000);
    assert_eq!(rest.status, PaymentStatus::Refunded);
    assert!(matches!(
        app.service.refund(refund(&payment.id, "r3", 1)).await,
        Err(PaymentError::Invalid(_))
    ));
    let totals = app.service.totals().await.unwrap();
    assert_eq!((totals.captured_cents, totals.refunded_cents), (1000, 1000));
    assert_eq!(
        app.service.net_by_order().await.unwrap(),
        [("o1".to_owned(), 1000, 1000)]
    );
    assert_eq!(app.service.get(payment.id).await.unwrap(), rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_refunds_never_overdraw() {
    let app = setup(Arc::new(Scripted::default())).await;
    let payment = app.service.charge(charge("k1", 1000)).await.unwrap();
    let service = Arc::new(app.service.clone());
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let service = Arc::clone(&service);
            let id = payment.id.clone();
            tokio::spawn(async move { service.refund(refund(&id, &format!("r{i}"), 200)).await })
        })
        .collect();
    let mut refunded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => refunded += 200,
            Err(PaymentError::Invalid(_) | PaymentError::Unavailable(_)) => {}
            Err(other) => panic!("unexpected: {other:?}"),
        }
    }
    assert!(refunded <= 1000, "refunded {refunded} of 1000");
    let totals = app.service.totals().await.unwrap();
    assert_eq!(totals.refunded_cents, refunded);
    assert_eq!(
        app.service.get(payment.id).await.unwrap().refunded_cents,
        refunded
    );
}
