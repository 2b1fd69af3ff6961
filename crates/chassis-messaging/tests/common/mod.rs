//! What the bus suites share: the bank's `Deposited` event and committing an event to
//! a producer's outbox.

use chassis_core::events::{DomainEvent, Envelope};
use chassis_messaging::outbox::enqueue;
use chassis_store::store::Store;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Deposited {
    pub(crate) account: String,
    pub(crate) amount: i64,
}

impl DomainEvent for Deposited {
    const TYPE: &'static str = "Deposited";
    const VERSION: u32 = 1;
    const SOURCE: &'static str = "bank";
    fn aggregate_id(&self) -> String {
        self.account.clone()
    }
}

/// `amount` into account `a`.
pub(crate) fn deposit(amount: i64) -> Deposited {
    Deposited {
        account: "a".into(),
        amount,
    }
}

/// Commits one event to the producer's outbox.
pub(crate) async fn commit<E: DomainEvent>(producer: &Store, event: &E) -> Envelope {
    let mut tx = producer.pool().begin().await.unwrap();
    let envelope = enqueue(&mut tx, event).await.unwrap();
    tx.commit().await.unwrap();
    envelope
}

/// The ids of the producer's unsent outbox rows, in id (creation) order.
pub(crate) async fn unsent_ids(producer: &Store) -> Vec<String> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM outbox WHERE sent_at IS NULL ORDER BY id")
            .fetch_all(producer.pool())
            .await
            .unwrap();
    rows.into_iter().map(|(id,)| id).collect()
}
