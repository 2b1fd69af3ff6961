//! analytics on the bus: exact sums under redelivery and concurrency; poison events
//! are dead-lettered; the admin route.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use analytics::events::{AnalyticsEvents, CONSUMER, topics};
use analytics::{AnalyticsService, SalesReport};
use axum::http::StatusCode;
use chassis::auth::{Role, Tokens};
use chassis::bus::{Consumer, Delivery};
use chassis::events::{DomainEvent, Envelope};
use contracts::orders::{OrderCancelled, OrderConfirmed, OrderFailed, OrderLine};
use contracts::payments::{PaymentCaptured, PaymentDeclined, PaymentRefunded};
use testkit::delivery::TestStore;

struct Setup {
    store: TestStore,
    service: AnalyticsService,
    consumer: Arc<Consumer>,
}

async fn setup() -> Setup {
    setup_on(TestStore::sqlite(analytics::MODULE).await).await
}

async fn setup_on(store: TestStore) -> Setup {
    store.migrate(&analytics::MIGRATOR).await.unwrap();
    let consumer = Arc::new(store.consumer(CONSUMER, topics(), Arc::new(AnalyticsEvents)));
    Setup {
        service: AnalyticsService::new(store.pool().clone()),
        store,
        consumer,
    }
}

fn line(product_id: &str, quantity: u32, price_cents: i64) -> OrderLine {
    OrderLine {
        product_id: product_id.into(),
        quantity,
        price_cents,
        name: format!("Product {product_id}"),
    }
}

fn confirmed(order_id: &str, lines: Vec<OrderLine>) -> OrderConfirmed {
    let total_cents = lines
        .iter()
        .map(|l| l.price_cents * i64::from(l.quantity))
        .sum();
    OrderConfirmed {
        order_id: order_id.into(),
        user_id: "u1".into(),
        lines,
        total_cents,
        currency: "USD".into(),
        payment_id: format!("pay-{order_id}"),
    }
}

fn wrap<E: DomainEvent>(event: &E) -> Envelope {
    Envelope::wrap(event).unwrap()
}

/// Every event once, then every event again: the second round must change nothing.
#[tokio::test]
async fn sums_are_exact_under_redelivery() {
    sums_are_exact(setup().await).await;
}

/// The same on PostgreSQL (the split topology's store), in a schema of its own, when
/// `BAZAAR_TEST_DATABASE_URL` names a database.
#[tokio::test]
async fn sums_are_exact_under_redelivery_on_postgres() {
    let test = "sums_are_exact_under_redelivery_on_postgres";
    let Some(store) = TestStore::postgres(test, analytics::MODULE).await else {
        return;
    };
    sums_are_exact(setup_on(store).await).await;
}

async fn sums_are_exact(s: Setup) {
    let o1 = confirmed(
        "o1",
        vec![
            line("mug", 2, 1299),
            line("tea", 1, 500),
            line("mug", 1, 1299),
        ],
    );
    let o2 = confirmed("o2", vec![line("tea", 4, 500)]);
    let mut old = wrap(&confirmed("o0", vec![line("pen", 1, 100)]));
    old.occurred_at = "2020-01-01T00:00:30Z".into();
    let events = vec![
        wrap(&o1),
        wrap(&o2),
        old,
        wrap(&OrderCancelled {
            order_id: "o2".into(),
            user_id: "u1".into(),
            lines: vec![line("tea", 4, 500)],
            refunded_cents: 2000,
            currency: "USD".into(),
        }),
        wrap(&OrderFailed {
            order_id: "o3".into(),
            user_id: "u1".into(),
            reason: "out_of_stock".into(),
        }),
        wrap(&OrderFailed {
            order_id: "o4".into(),
            user_id: "u1".into(),
            reason: "payment_declined".into(),
        }),
        wrap(&OrderFailed {
            order_id: "o5".into(),
            user_id: "u1".into(),
            reason: "out_of_stock".into(),
        }),
        wrap(&PaymentCaptured {
            payment_id: "pay-o1".into(),
            order_id: "o1".into(),
            amount_cents: o1.total_cents,
            currency: "USD".into(),
        }),
        wrap(&PaymentCaptured {
            payment_id: "pay-o2".into(),
            order_id: "o2".into(),
            amount_cents: o2.total_cents,
            currency: "USD".into(),
        }),
        wrap(&PaymentRefunded {
            payment_id: "pay-o2".into(),
            order_id: "o2".into(),
            amount_cents: 2000,
            currency: "USD".into(),
        }),
        wrap(&PaymentDeclined {
            order_id: "o4".into(),
            amount_cents: 700,
            reason: "card_declined".into(),
        }),
    ];
    for event in &events {
        assert_eq!(
            s.consumer.deliver(event).await.unwrap(),
            Delivery::Applied,
            "{}",
            event.kind
        );
    }
    let check = |r: &SalesReport| {
        assert_eq!(r.orders_confirmed, 3);
        assert_eq!(r.revenue_cents, 4397 + 2000 + 100);
        assert_eq!(r.currency, "USD");
        assert_eq!(r.orders_cancelled, 1);
        assert_eq!(r.refunded_cents, 2000);
        assert_eq!(r.orders_failed.len(), 2);
        assert_eq!(r.orders_failed["out_of_stock"], 2);
        assert_eq!(r.orders_failed["payment_declined"], 1);
        assert_eq!(r.payment_declines, 1);
        assert_eq!(r.payments_captured_cents, 4397 + 2000);
        assert_eq!(r.payments_refunded_cents, 2000);
        let products: Vec<(&str, i64, i64, i64)> = r
            .by_product
            .iter()
            .map(|p| {
                (
                    p.product_id.as_str(),
                    p.units,
                    p.revenue_cents,
                    p.units_cancelled,
                )
            })
            .collect();
        assert_eq!(
            products,
            [("mug", 3, 3897, 0), ("tea", 5, 2500, 4), ("pen", 1, 100, 0)]
        );
        // The 2020 confirmation counts in the totals but not in the last hour.
        assert_eq!(r.by_minute.len(), 60);
        assert_eq!(r.by_minute.iter().map(|m| m.orders).sum::<i64>(), 2);
        assert_eq!(
            r.by_minute.iter().map(|m| m.revenue_cents).sum::<i64>(),
            4397 + 2000
        );
        assert!(r.by_minute.windows(2).all(|w| w[0].minute < w[1].minute));
        assert!(r.by_minute[0].minute.ends_with(":00Z"));
    };
    let before = s.service.sales().await.unwrap();
    check(&before);
    assert_eq!(s.service.orders_confirmed().await.unwrap(), 3);
    assert_eq!(s.service.revenue_cents().await.unwrap(), 6497);

    for event in &events {
        assert_eq!(
            s.consumer.deliver(event).await.unwrap(),
            Delivery::Duplicate
        );
    }
    check(&s.service.sales().await.unwrap());
    assert_eq!(s.service.orders_confirmed().await.unwrap(), 3);
}

#[tokio::test]
async fn occurred_at_picks_the_minute() {
    let s = setup().await;
    let now = chassis::time::now_micros();
    let minute = now.div_euclid(60_000_000) * 60_000_000;
    let mut event = wrap(&confirmed("o1", vec![line("mug", 1, 1000)]));
    // 59.9 s into the minute before the current one.
    event.occurred_at = chassis::time::micros_to_rfc3339(minute - 100_000);
    s.consumer.deliver(&event).await.unwrap();
    let report = s.service.sales_at(now).await.unwrap();
    let last = &report.by_minute[59];
    let previous = &report.by_minute[58];
    assert_eq!(last.minute, chassis::time::micros_to_rfc3339(minute));
    assert_eq!(last.orders, 0);
    assert_eq!(previous.orders, 1);
    assert_eq!(previous.revenue_cents, 1000);
}

#[tokio::test]
async fn concurrent_deliveries_with_duplicates_count_each_event_once() {
    let s = setup().await;
    let events: Vec<Envelope> = (0..40)
        .map(|i| wrap(&confirmed(&format!("o{i}"), vec![line("mug", 1, 250)])))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        for event in &events {
            let consumer = Arc::clone(&s.consumer);
            let event = event.clone();
            tasks.spawn(async move { consumer.deliver(&event).await.unwrap() });
        }
    }
    let mut applied = 0;
    let mut duplicates = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Delivery::Applied => applied += 1,
            Delivery::Duplicate => duplicates += 1,
            other @ (Delivery::DeadLettered | Delivery::Deferred) => {
                panic!("every event applies once, not {other:?}")
            }
        }
    }
    assert_eq!((applied, duplicates), (40, 40));
    let report = s.service.sales().await.unwrap();
    assert_eq!(report.orders_confirmed, 40);
    assert_eq!(report.revenue_cents, 40 * 250);
    assert_eq!(report.by_product[0].units, 40);
}

#[tokio::test]
async fn poison_events_are_dead_lettered_without_effect() {
    let s = setup().await;
    let mut poison = wrap(&confirmed("o1", vec![line("mug", 1, 1000)]));
    poison.payload = serde_json::json!({"order_id": 7});
    assert_eq!(
        s.consumer.deliver(&poison).await.unwrap(),
        Delivery::DeadLettered
    );
    let letters = chassis::bus::dead_letters(s.store.pool()).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(s.service.orders_confirmed().await.unwrap(), 0);
    assert!(s.service.sales().await.unwrap().by_product.is_empty());
}

async fn get(app: &axum::Router, token: Option<&str>) -> (StatusCode, serde_json::Value) {
    testkit::http::get(app, "/api/v1/admin/analytics/sales", token).await
}

#[tokio::test]
async fn admin_route_reports_sales() {
    let s = setup().await;
    s.consumer
        .deliver(&wrap(&confirmed("o1", vec![line("mug", 2, 1299)])))
        .await
        .unwrap();
    let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef", 60);
    let admin = tokens.issue("admin-1", Role::Admin).unwrap();
    let customer = tokens.issue("u1", Role::Customer).unwrap();
    let app = analytics::router(s.service.clone(), tokens);

    assert_eq!(get(&app, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, Some(&customer)).await.0, StatusCode::FORBIDDEN);
    let (status, body) = get(&app, Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["orders_confirmed"], 1);
    assert_eq!(body["revenue_cents"], 2598);
    assert_eq!(body["currency"], "USD");
    assert_eq!(body["orders_cancelled"], 0);
    assert_eq!(body["refunded_cents"], 0);
    assert_eq!(body["orders_failed"], serde_json::json!({}));
    assert_eq!(body["payment_declines"], 0);
    assert_eq!(
        body["by_product"],
        serde_json::json!([{"product_id": "mug", "units": 2, "revenue_cents": 2598, "units_cancelled": 0}])
    );
    let minutes = body["by_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    // In the last minute, or the one before if the clock just turned.
    let orders: i64 = minutes.iter().map(|m| m["orders"].as_i64().unwrap()).sum();
    assert_eq!(orders, 1);
    assert_eq!(
        minutes[59]["orders"].as_i64().unwrap() + minutes[58]["orders"].as_i64().unwrap(),
        1
    );
}
