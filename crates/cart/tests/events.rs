//! cart hears `OrderConfirmed`: the lines bought leave the cart, exactly those
//! quantities; what the buyer added since stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cart::domain::Quantity;
use cart::events::CartEvents;
use cart::store::{CartItems, Line, SqlCartItems};
use chassis::bus::Handler;
use chassis::events::Envelope;
use chassis::store::Store;
use contracts::orders::{OrderConfirmed, OrderLine};
use testkit::delivery::TestStore;

async fn store() -> (TestStore, SqlCartItems) {
    let store = TestStore::migrated(cart::MODULE, &cart::MIGRATOR).await;
    let items = SqlCartItems::new(store.pool().clone());
    (store, items)
}

async fn add(items: &SqlCartItems, product_id: &str, quantity: i64) {
    items
        .add("u1", product_id, Quantity::parse(quantity).unwrap())
        .await
        .unwrap();
}

fn bought(product_id: &str, quantity: u32) -> OrderLine {
    OrderLine {
        product_id: product_id.into(),
        quantity,
        price_cents: 100,
        name: format!("Product {product_id}"),
    }
}

/// Delivers `event` to the handler the way the consumer does: in a transaction.
async fn deliver(store: &Store, event: &Envelope) {
    let mut tx = store.pool().begin().await.unwrap();
    CartEvents.handle(&mut tx, event).await.unwrap();
    tx.commit().await.unwrap();
}

fn confirmed(lines: Vec<OrderLine>) -> Envelope {
    Envelope::wrap(&OrderConfirmed {
        order_id: "o1".into(),
        user_id: "u1".into(),
        lines,
        total_cents: 0,
        currency: "USD".into(),
        payment_id: "pay1".into(),
    })
    .unwrap()
}

fn line(product_id: &str, quantity: u32) -> Line {
    Line {
        product_id: product_id.into(),
        quantity,
    }
}

#[tokio::test]
async fn a_confirmed_order_removes_exactly_what_it_bought() {
    let (store, items) = store().await;
    // Bought: 2 of a, 1 of c. Since then the buyer raised c to 3 and added b.
    add(&items, "a", 2).await;
    add(&items, "c", 3).await;
    add(&items, "b", 1).await;
    add(&items, "d", 1).await;
    let event = confirmed(vec![
        bought("a", 2),
        bought("c", 1),
        bought("gone", 4),
        bought("d", 5),
    ]);
    deliver(&store, &event).await;
    let mut left = items.lines("u1").await.unwrap();
    left.sort_by(|x, y| x.product_id.cmp(&y.product_id));
    assert_eq!(
        left,
        [line("b", 1), line("c", 2)],
        "a bought whole, c keeps what was added, b was never bought, d bought more than held"
    );
    // Another user's cart is not touched.
    items
        .add("u2", "a", Quantity::parse(2).unwrap())
        .await
        .unwrap();
    deliver(&store, &confirmed(vec![bought("a", 2)])).await;
    assert_eq!(items.lines("u2").await.unwrap(), [line("a", 2)]);
}

#[tokio::test]
async fn an_event_without_lines_removes_nothing() {
    let (store, items) = store().await;
    add(&items, "a", 2).await;
    let mut event = confirmed(vec![bought("a", 2)]);
    event
        .payload
        .as_object_mut()
        .unwrap()
        .remove("lines")
        .unwrap();
    deliver(&store, &event).await;
    assert_eq!(items.lines("u1").await.unwrap(), [line("a", 2)]);
}
