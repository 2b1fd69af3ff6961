//! notifications on the bus: one email per event, whatever the redeliveries; order
//! events for unknown users are retried then dead-lettered; the admin route.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use chassis::auth::{Role, Tokens};
use chassis::bus::{Consumer, Delivery, RetryPolicy};
use chassis::events::Envelope;
use chassis::store::Store;
use contracts::identity::UserRegistered;
use contracts::orders::{OrderCancelled, OrderConfirmed, OrderFailed, OrderLine};
use notifications::events::{CONSUMER, topics};
use notifications::{
    Email, Kind, MailTransport, MaildirTransport, NotificationsService, TransportError,
};
use testkit::delivery::TestStore;
use testkit::http::get;

struct Setup {
    mail: PathBuf,
    store: TestStore,
    service: NotificationsService,
    consumer: Consumer,
}

async fn setup_with(transport: impl FnOnce(PathBuf) -> Arc<dyn MailTransport>) -> Setup {
    setup_on(TestStore::sqlite(notifications::MODULE).await, transport).await
}

async fn setup_on(
    store: TestStore,
    transport: impl FnOnce(PathBuf) -> Arc<dyn MailTransport>,
) -> Setup {
    store.migrate(&notifications::MIGRATOR).await.unwrap();
    let mail = store.dir().join("mail");
    let service = NotificationsService::new(store.pool().clone(), transport(mail.clone()))
        .with_sender("bazaar shop <shop@bazaar.test>")
        .unwrap();
    let consumer = store.consumer(CONSUMER, topics(), Arc::new(service.events()));
    Setup {
        mail,
        store,
        service,
        consumer,
    }
}

async fn setup() -> Setup {
    setup_with(|mail| Arc::new(MaildirTransport::new(mail))).await
}

fn eml_files(mail: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(mail) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn rows(store: &Store) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM notifications")
        .fetch_one(store.pool())
        .await
        .unwrap();
    n
}

fn registered(user_id: &str) -> Envelope {
    Envelope::wrap(&UserRegistered {
        user_id: user_id.into(),
        email: format!("{user_id}@example.com"),
        name: "Ada Lovelace".into(),
    })
    .unwrap()
}

fn confirmed(user_id: &str, order_id: &str) -> Envelope {
    Envelope::wrap(&OrderConfirmed {
        order_id: order_id.into(),
        user_id: user_id.into(),
        lines: vec![OrderLine {
            product_id: "p1".into(),
            quantity: 2,
            price_cents: 1299,
            name: "Blue Teapot".into(),
        }],
        total_cents: 2598,
        currency: "USD".into(),
        payment_id: "pay-1".into(),
    })
    .unwrap()
}

#[tokio::test]
async fn one_email_per_event_even_when_redelivered() {
    one_email_per_event(setup().await).await;
}

/// The same on PostgreSQL (the split topology's store), in a schema of its own, when
/// `BAZAAR_TEST_DATABASE_URL` names a database.
#[tokio::test]
async fn one_email_per_event_on_postgres() {
    let test = "one_email_per_event_on_postgres";
    let Some(store) = TestStore::postgres(test, notifications::MODULE).await else {
        return;
    };
    let s = setup_on(store, |mail| Arc::new(MaildirTransport::new(mail))).await;
    one_email_per_event(s).await;
}

async fn one_email_per_event(s: Setup) {
    let welcome = registered("u1");
    assert_eq!(
        s.consumer.deliver(&welcome).await.unwrap(),
        Delivery::Applied
    );
    let order = confirmed("u1", "o1");
    assert_eq!(s.consumer.deliver(&order).await.unwrap(), Delivery::Applied);
    // The relay died before marking the event sent: the same envelope again, twice.
    assert_eq!(
        s.consumer.deliver(&order).await.unwrap(),
        Delivery::Duplicate
    );
    assert_eq!(
        s.consumer.deliver(&welcome).await.unwrap(),
        Delivery::Duplicate
    );

    assert_eq!(
        eml_files(&s.mail),
        [format!("{}.eml", welcome.id), format!("{}.eml", order.id)]
    );
    assert_eq!(rows(&s.store).await, 2);
    let per_order = s.service.confirmed_emails_per_order().await.unwrap();
    assert_eq!(per_order.len(), 1);
    assert_eq!(per_order["o1"], 1);

    let text = std::fs::read_to_string(s.mail.join(format!("{}.eml", order.id))).unwrap();
    assert!(text.contains("From: bazaar shop <shop@bazaar.test>\r\n"));
    assert!(text.contains("To: Ada Lovelace <u1@example.com>\r\n"));
    assert!(text.contains("Subject: Your bazaar order o1 is confirmed\r\n"));
    assert!(text.contains(&format!("Message-ID: <{}@bazaar.invalid>\r\n", order.id)));
    // The email names what was bought, not its id.
    assert!(
        text.contains("2 x Blue Teapot at $12.99 = $25.98\r\n"),
        "{text}"
    );
    assert!(text.contains("Total: $25.98 USD"));
}

#[tokio::test]
async fn failed_and_cancelled_orders_get_their_own_email() {
    let s = setup().await;
    s.consumer.deliver(&registered("u1")).await.unwrap();
    s.consumer.deliver(&confirmed("u1", "o1")).await.unwrap();
    let failed = Envelope::wrap(&OrderFailed {
        order_id: "o2".into(),
        user_id: "u1".into(),
        reason: "payment_declined".into(),
    })
    .unwrap();
    let cancelled = Envelope::wrap(&OrderCancelled {
        order_id: "o1".into(),
        user_id: "u1".into(),
        lines: vec![],
        refunded_cents: 2598,
        currency: "USD".into(),
    })
    .unwrap();
    assert_eq!(
        s.consumer.deliver(&failed).await.unwrap(),
        Delivery::Applied
    );
    assert_eq!(
        s.consumer.deliver(&cancelled).await.unwrap(),
        Delivery::Applied
    );
    let counts = s.service.count_by_kind().await.unwrap();
    assert_eq!(counts[&Kind::Welcome], 1);
    assert_eq!(counts[&Kind::OrderConfirmed], 1);
    assert_eq!(counts[&Kind::OrderFailed], 1);
    assert_eq!(counts[&Kind::OrderCancelled], 1);
    let failed_text = std::fs::read_to_string(s.mail.join(format!("{}.eml", failed.id))).unwrap();
    assert!(failed_text.contains("your payment was declined"));
    let cancelled_text =
        std::fs::read_to_string(s.mail.join(format!("{}.eml", cancelled.id))).unwrap();
    assert!(cancelled_text.contains("refunded $25.98 USD"));

    // Newest first, paged, and filtered by order.
    let first = s.service.list(None, Some(3), None).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.items[0].id, cancelled.id);
    assert_eq!(first.items[0].kind, Kind::OrderCancelled);
    let rest = s
        .service
        .list(None, Some(3), first.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].kind, Kind::Welcome);
    assert!(rest.items[0].order_id.is_none());
    assert!(rest.next_cursor.is_none());
    let o1 = s.service.list(Some("o1"), None, None).await.unwrap();
    let kinds: Vec<Kind> = o1.items.iter().map(|n| n.kind).collect();
    assert_eq!(kinds, [Kind::OrderCancelled, Kind::OrderConfirmed]);
}

#[tokio::test]
async fn order_events_for_unknown_users_are_retried_then_dead_lettered() {
    let s = setup().await;
    let orphan = confirmed("nobody", "o9");
    assert_eq!(
        s.consumer.deliver(&orphan).await.unwrap(),
        Delivery::DeadLettered
    );
    assert!(eml_files(&s.mail).is_empty());
    assert_eq!(rows(&s.store).await, 0);
    let letters = chassis::bus::dead_letters(s.store.pool()).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, orphan.id);
    assert_eq!(letters[0].attempts, 3);
    assert!(letters[0].error.contains("no recipient"));
    // A dead letter redelivered is not run again.
    assert_eq!(
        s.consumer.deliver(&orphan).await.unwrap(),
        Delivery::Duplicate
    );
}

#[tokio::test]
async fn registration_arriving_during_retries_lets_the_order_email_through() {
    let s = setup().await;
    // Retries long enough for the registration to land in between.
    let slow = Consumer::new(
        CONSUMER,
        topics(),
        s.store.pool().clone(),
        Arc::new(s.service.events()),
        RetryPolicy {
            attempts: 20,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
        },
    );
    let order = confirmed("late", "o3");
    let (order_outcome, welcome_outcome) = tokio::join!(slow.deliver(&order), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.consumer.deliver(&registered("late")).await
    });
    assert_eq!(order_outcome.unwrap(), Delivery::Applied);
    assert_eq!(welcome_outcome.unwrap(), Delivery::Applied);
    assert_eq!(eml_files(&s.mail).len(), 2);
}

/// Writes the email, then reports a failure the first `fail_first` times: as if the
/// process died between the send and the commit.
struct SendThenFail {
    inner: MaildirTransport,
    fail_first: u32,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl MailTransport for SendThenFail {
    async fn send(&self, email: &Email) -> Result<(), TransportError> {
        self.inner.send(email).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(TransportError::Server("connection lost".into()));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "send-then-fail".into()
    }
}

#[tokio::test]
async fn a_send_whose_commit_is_lost_is_resent_under_the_same_name() {
    let s = setup_with(|mail| {
        Arc::new(SendThenFail {
            inner: MaildirTransport::new(mail),
            fail_first: 2,
            calls: AtomicU32::new(0),
        })
    })
    .await;
    let welcome = registered("u1");
    assert_eq!(
        s.consumer.deliver(&welcome).await.unwrap(),
        Delivery::Applied
    );
    // Three sends, one file, one row.
    assert_eq!(eml_files(&s.mail), [format!("{}.eml", welcome.id)]);
    assert_eq!(rows(&s.store).await, 1);
}

#[tokio::test]
async fn admin_route_lists_sent_emails() {
    let s = setup().await;
    s.consumer.deliver(&registered("u1")).await.unwrap();
    let order = confirmed("u1", "o1");
    s.consumer.deliver(&order).await.unwrap();
    let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef", 60);
    let admin = tokens.issue("admin-1", Role::Admin).unwrap();
    let customer = tokens.issue("u1", Role::Customer).unwrap();
    let app = notifications::router(s.service.clone(), tokens);
    let uri = "/api/v1/admin/notifications";

    assert_eq!(get(&app, uri, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&app, uri, Some(&customer)).await.0,
        StatusCode::FORBIDDEN
    );

    let (status, body) = get(&app, uri, Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], order.id.as_str());
    assert_eq!(items[0]["to"], "u1@example.com");
    assert_eq!(items[0]["kind"], "order_confirmed");
    assert_eq!(items[0]["order_id"], "o1");
    assert!(items[0]["sent_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(items[1]["kind"], "welcome");
    assert!(items[1].get("order_id").is_none());
    assert!(body["next_cursor"].is_null());

    let (status, body) = get(&app, &format!("{uri}?limit=1"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let (status, body) = get(
        &app,
        &format!("{uri}?limit=1&cursor={cursor}"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"][0]["kind"], "welcome");

    let (status, body) = get(&app, &format!("{uri}?order_id=o1"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 1);

    assert_eq!(
        get(&app, &format!("{uri}?limit=0"), Some(&admin)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        get(&app, &format!("{uri}?limit=101"), Some(&admin)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        get(&app, &format!("{uri}?limit=abc"), Some(&admin)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, &format!("{uri}?cursor=garbage"), Some(&admin))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}
