//! Outbox → relay → in-process bus → consumer with inbox: at-least-once delivery,
//! exactly-once effects, retries and dead letters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chassis_core::events::{Envelope, topic_of};
use chassis_messaging::bus::{Bus, InProcBus, Published};
use chassis_messaging::consumer::{Consumer, Delivery, Handler, HandlerError};
use chassis_messaging::outbox::{Outbox, enqueue};
use chassis_messaging::relay::RelayError;
use chassis_store::store::Store;
use sqlx::AnyConnection;
use testkit::delivery::TestStore;

use common::{Deposited, commit, deposit, unsent_ids};

/// Adds each deposit to a balance table; fails the first `fail_first` attempts.
/// Every call with a readable deposit is noted in `seen`, as a handler with an effect
/// outside the database (a mail sent) would leave a trace of each call.
struct Ledger {
    fail_first: u32,
    calls: AtomicU32,
    seen: Arc<Mutex<Vec<i64>>>,
}

#[async_trait::async_trait]
impl Handler for Ledger {
    async fn handle(&self, tx: &mut AnyConnection, event: &Envelope) -> Result<(), HandlerError> {
        let deposit: Deposited = event.decode()?;
        self.seen.lock().unwrap().push(deposit.amount);
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(HandlerError::Transient("flaky".into()));
        }
        sqlx::query("UPDATE balance SET total = total + $1")
            .bind(deposit.amount)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

async fn store(name: &'static str) -> TestStore {
    let store = TestStore::sqlite(name).await;
    store.migrate_platform().await.unwrap();
    store
}

async fn balance(store: &Store) -> i64 {
    let (total,): (i64,) = sqlx::query_as("SELECT total FROM balance")
        .fetch_one(store.pool())
        .await
        .unwrap();
    total
}

async fn setup(fail_first: u32) -> (TestStore, TestStore, Arc<InProcBus>, Arc<Consumer>) {
    let (producer, consumer_store, bus, consumer, _seen) = setup_seen(fail_first).await;
    (producer, consumer_store, bus, consumer)
}

type Seen = Arc<Mutex<Vec<i64>>>;

async fn setup_seen(
    fail_first: u32,
) -> (TestStore, TestStore, Arc<InProcBus>, Arc<Consumer>, Seen) {
    let seen = Seen::default();
    let producer = store("producer").await;
    let consumer_store = store("consumer").await;
    sqlx::query("CREATE TABLE balance (total BIGINT NOT NULL)")
        .execute(consumer_store.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO balance (total) VALUES (0)")
        .execute(consumer_store.pool())
        .await
        .unwrap();
    let consumer = Arc::new(consumer_store.consumer(
        "ledger",
        vec![topic_of::<Deposited>()],
        Arc::new(Ledger {
            fail_first,
            calls: AtomicU32::new(0),
            seen: Arc::clone(&seen),
        }),
    ));
    let bus = Arc::new(InProcBus::new());
    bus.subscribe(Arc::clone(&consumer));
    (producer, consumer_store, bus, consumer, seen)
}

#[tokio::test]
async fn relayed_events_apply_once_even_when_redelivered() {
    let (producer, consumer_store, bus, consumer) = setup(1).await;
    let outbox = Outbox::new("producer", producer.pool().clone());
    let first = commit(&producer, &deposit(5)).await;
    commit(&producer, &deposit(7)).await;
    assert_eq!(outbox.backlog().await.unwrap().unsent, 2);
    assert_eq!(outbox.relay_once(bus.as_ref()).await.unwrap(), 2);
    assert_eq!(outbox.backlog().await.unwrap().unsent, 0);
    assert_eq!(balance(&consumer_store).await, 12);
    // The relay crashed before marking sent, say: the same envelope again.
    assert_eq!(consumer.deliver(&first).await.unwrap(), Delivery::Duplicate);
    bus.publish(&first).await.unwrap();
    assert_eq!(balance(&consumer_store).await, 12);
}

fn wrap(amount: i64) -> Envelope {
    Envelope::wrap(&Deposited {
        account: "a".into(),
        amount,
    })
    .unwrap()
}

/// The relay hands the bus its whole batch; the in-process bus has each consumer apply
/// its share in one transaction. Each event still takes effect once: one seen before
/// is a duplicate, one that cannot be applied is dead-lettered alone, the others apply.
#[tokio::test]
async fn a_batch_applies_each_event_once_and_dead_letters_only_its_poison() {
    let (_producer, consumer_store, bus, consumer, seen) = setup_seen(0).await;
    let fresh: Vec<Envelope> = [10, 20, 30].into_iter().map(wrap).collect();
    let published = bus.publish_batch(&fresh).await;
    assert_eq!((published.accepted, published.failure.is_none()), (3, true));
    assert_eq!(balance(&consumer_store).await, 60);

    let mut poison = wrap(100);
    poison.payload = serde_json::json!({"amount": "lots"});
    let batch = vec![fresh[1].clone(), wrap(1_000), poison.clone(), wrap(10_000)];
    let published = bus.publish_batch(&batch).await;
    assert_eq!((published.accepted, published.failure.is_none()), (4, true));
    assert_eq!(balance(&consumer_store).await, 11_060);
    // The event before the poison committed with the batch and was not handled again
    // when the rest went one by one; the duplicate was never handled.
    assert_eq!(*seen.lock().unwrap(), [10, 20, 30, 1_000, 10_000]);
    let letters = chassis_messaging::dead_letters::dead_letters(consumer_store.pool())
        .await
        .unwrap();
    assert_eq!(
        letters
            .iter()
            .map(|l| l.event_id.as_str())
            .collect::<Vec<_>>(),
        vec![poison.id.as_str()]
    );
    assert_eq!(consumer.redeliveries(), 1);

    // The same batch again (a relay that crashed before stamping it): no effect.
    let published = bus.publish_batch(&batch).await;
    assert_eq!((published.accepted, published.failure.is_none()), (4, true));
    assert_eq!(balance(&consumer_store).await, 11_060);
    assert_eq!(consumer.redeliveries(), 5);
}

#[tokio::test]
async fn rolled_back_changes_publish_nothing() {
    let (producer, _consumer_store, _bus, _consumer) = setup(0).await;
    let mut tx = producer.pool().begin().await.unwrap();
    enqueue(
        &mut tx,
        &Deposited {
            account: "a".into(),
            amount: 1,
        },
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let outbox = Outbox::new("producer", producer.pool().clone());
    assert_eq!(outbox.backlog().await.unwrap().unsent, 0);
}

#[tokio::test]
async fn poison_and_persistently_failing_events_are_dead_lettered() {
    let (_producer, consumer_store, _bus, consumer) = setup(u32::MAX).await;
    // Fails every attempt: retried, then dead-lettered.
    let env = Envelope::wrap(&Deposited {
        account: "a".into(),
        amount: 3,
    })
    .unwrap();
    assert_eq!(
        consumer.deliver(&env).await.unwrap(),
        Delivery::DeadLettered
    );
    // Undecodable: dead-lettered without retries.
    let mut poison = Envelope::wrap(&Deposited {
        account: "a".into(),
        amount: 3,
    })
    .unwrap();
    poison.payload = serde_json::json!({"amount": "lots"});
    assert_eq!(
        consumer.deliver(&poison).await.unwrap(),
        Delivery::DeadLettered
    );
    let letters = chassis_messaging::dead_letters::dead_letters(consumer_store.pool())
        .await
        .unwrap();
    assert_eq!(letters.len(), 2);
    assert!(
        letters
            .iter()
            .any(|l| l.event_id == poison.id && l.attempts == 1)
    );
    assert!(
        letters
            .iter()
            .any(|l| l.event_id == env.id && l.attempts == 3)
    );
    // A dead letter redelivered is not run again.
    assert_eq!(consumer.deliver(&env).await.unwrap(), Delivery::Duplicate);
    assert_eq!(balance(&consumer_store).await, 0);
}

/// On a bus that redelivers (JetStream), a transient failure that outlasts the local
/// retries is left for the next delivery, not dead-lettered; a poison event still is.
#[tokio::test]
async fn a_redelivering_bus_defers_transient_failures() {
    // Fails the first 4 calls; the policy retries 3 times per delivery.
    let (_producer, consumer_store, _bus, consumer) = setup(4).await;
    let env = Envelope::wrap(&Deposited {
        account: "a".into(),
        amount: 9,
    })
    .unwrap();
    assert_eq!(
        consumer.deliver_or_defer(&env).await.unwrap(),
        Delivery::Deferred
    );
    assert!(
        chassis_messaging::dead_letters::dead_letters(consumer_store.pool())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(balance(&consumer_store).await, 0);
    // The next delivery gets through, once.
    assert_eq!(
        consumer.deliver_or_defer(&env).await.unwrap(),
        Delivery::Applied
    );
    assert_eq!(
        consumer.deliver_or_defer(&env).await.unwrap(),
        Delivery::Duplicate
    );
    assert_eq!(balance(&consumer_store).await, 9);

    let mut poison = Envelope::wrap(&Deposited {
        account: "a".into(),
        amount: 3,
    })
    .unwrap();
    poison.payload = serde_json::json!({"amount": "lots"});
    assert_eq!(
        consumer.deliver_or_defer(&poison).await.unwrap(),
        Delivery::DeadLettered
    );
}

/// Records what is published, yielding in between so two relays interleave.
#[derive(Default)]
struct Recording {
    published: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Bus for Recording {
    async fn publish(&self, envelope: &Envelope) -> Result<(), chassis_messaging::bus::BusError> {
        tokio::task::yield_now().await;
        self.published.lock().unwrap().push(envelope.id.clone());
        Ok(())
    }
}

/// Two replicas relaying one PostgreSQL outbox at once: each event is published once,
/// and in the order it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_postgres_outbox_publish_each_event_once_in_order() {
    let Some(producer) = TestStore::postgres("two_relays_on_one_postgres_outbox", "producer").await
    else {
        return;
    };
    producer.migrate_platform().await.unwrap();
    let mut written = Vec::new();
    for amount in 1..=250 {
        written.push(commit(&producer, &deposit(amount)).await.id);
    }
    let bus = Recording::default();
    let first = Outbox::new("producer", producer.pool().clone());
    let second = Outbox::new("producer", producer.pool().clone());
    let (a, b) = tokio::join!(first.relay_once(&bus), second.relay_once(&bus));
    assert_eq!(a.unwrap() + b.unwrap(), written.len(), "rows stamped sent");
    let published = bus.published.lock().unwrap().clone();
    assert_eq!(published, written, "each once, in order");
    assert_eq!(first.backlog().await.unwrap().unsent, 0);
}

/// Takes a whole batch, as JetStream does once a batch is sent, but refuses the one
/// event named in `refuse` (once): the events after it are taken all the same.
#[derive(Default)]
struct RefusesOne {
    refuse: std::sync::Mutex<Option<String>>,
    taken: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Bus for RefusesOne {
    async fn publish(&self, envelope: &Envelope) -> Result<(), chassis_messaging::bus::BusError> {
        let mut refuse = self.refuse.lock().unwrap();
        if refuse.as_deref() == Some(envelope.id.as_str()) {
            *refuse = None;
            return Err(chassis_messaging::bus::BusError::Unavailable(
                "no ack".into(),
            ));
        }
        self.taken.lock().unwrap().push(envelope.id.clone());
        Ok(())
    }

    async fn publish_batch(&self, envelopes: &[Envelope]) -> Published {
        let (mut accepted, mut failure) = (0, None);
        for envelope in envelopes {
            match self.publish(envelope).await {
                Ok(()) if failure.is_none() => accepted += 1,
                Ok(()) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        Published { accepted, failure }
    }
}

/// An acknowledgement that fails midway through a batch: only the rows before it are
/// stamped sent, so nothing after it is lost, and the next pass publishes the rest in
/// order again (the repeats of what had been taken are for the dedup to absorb).
#[tokio::test]
async fn a_batch_refused_midway_stamps_only_what_precedes_the_refusal() {
    let producer = store("producer").await;
    let mut written = Vec::new();
    for amount in 1..=10 {
        written.push(commit(&producer, &deposit(amount)).await.id);
    }
    let bus = RefusesOne::default();
    *bus.refuse.lock().unwrap() = Some(written[3].clone());
    let outbox = Outbox::new("producer", producer.pool().clone());

    let refused = outbox.relay_once(&bus).await;
    assert!(
        matches!(refused, Err(RelayError::Bus(_))),
        "the refusal ends the pass: {refused:?}"
    );
    let unsent = unsent_ids(&producer).await;
    assert_eq!(
        unsent,
        written[3..],
        "stamped: exactly the rows before the refused one"
    );
    let mut taken: Vec<String> = written.clone();
    taken.remove(3);
    assert_eq!(
        *bus.taken.lock().unwrap(),
        taken,
        "the rest of the batch was sent"
    );

    assert_eq!(outbox.relay_once(&bus).await.unwrap(), 7);
    assert_eq!(outbox.backlog().await.unwrap().unsent, 0);
    taken.extend_from_slice(&written[3..]);
    assert_eq!(
        *bus.taken.lock().unwrap(),
        taken,
        "from the refused one on, in order"
    );
}
