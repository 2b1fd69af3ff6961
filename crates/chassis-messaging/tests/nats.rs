//! The JetStream bus against a real NATS server: outbox → relay → `NatsBus` →
//! JetStream → durable consumer with inbox.
//!
//! Runs on the test binary's 3-node JetStream cluster (R3 streams, `sync_interval:
//! always`) when `BAZAAR_TEST_NATS_SERVER` names a nats-server 2.10+ (as in CI), else
//! on the single server `BAZAAR_TEST_NATS_URL` names; with neither every test here says
//! it was skipped and passes (fails in CI). Each test uses its own subject/stream
//! prefix and deletes its streams. The restart test starts a cluster of its own and
//! loses one node, then all three (it needs `BAZAAR_TEST_NATS_SERVER`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use chassis_core::events::{DomainEvent, Envelope, topic_of};
use chassis_messaging::bus::Bus;
use chassis_messaging::consumer::{Consumer, Delivery, Handler, HandlerError};
use chassis_messaging::nats::{
    ConsumerSettings, DEAD_LETTER_SOURCE, JetStream, NatsBus, NatsSettings,
};
use chassis_messaging::outbox::{Outbox, enqueue_in};
use chassis_store::store::Store;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use testkit::delivery::TestStore;
use testkit::nats::{CLUSTER_NODES, NatsCluster, SharedNats};
use testkit::until;
use tokio_util::sync::CancellationToken;

use common::{Deposited, commit, deposit, unsent_ids};

#[derive(Debug, Serialize, Deserialize)]
struct Withdrawn {
    account: String,
    amount: i64,
}

impl DomainEvent for Withdrawn {
    const TYPE: &'static str = "Withdrawn";
    const VERSION: u32 = 1;
    const SOURCE: &'static str = "bank";
    fn aggregate_id(&self) -> String {
        self.account.clone()
    }
}

/// Published on the same stream, wanted by nobody here.
#[derive(Debug, Serialize, Deserialize)]
struct Audited {
    account: String,
}

impl DomainEvent for Audited {
    const TYPE: &'static str = "Audited";
    const VERSION: u32 = 1;
    const SOURCE: &'static str = "bank";
    fn aggregate_id(&self) -> String {
        self.account.clone()
    }
}

/// Records every applied event in `applied`, which has no unique key: an event
/// applied twice shows up as two rows. Takes `delay` per event (inside the
/// transaction), so a test can make it lag behind the producer.
struct Ledger {
    delay: Duration,
}

#[async_trait::async_trait]
impl Handler for Ledger {
    async fn handle(&self, tx: &mut AnyConnection, event: &Envelope) -> Result<(), HandlerError> {
        let amount = if event.is::<Withdrawn>() {
            -event.decode::<Withdrawn>()?.amount
        } else {
            event.decode::<Deposited>()?.amount
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        sqlx::query("INSERT INTO applied (event_id, amount) VALUES ($1, $2)")
            .bind(&event.id)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

fn nats(test: &str) -> Option<SharedNats> {
    // BAZAAR_TEST_LOG=chassis_messaging=debug shows every message settled, every reconnect.
    if let Ok(filter) = std::env::var("BAZAAR_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    testkit::nats::shared(test)
}

/// A prefix no other test run uses.
fn unique_prefix() -> String {
    format!("bazaartest_{}", testkit::unique())
}

fn settings(prefix: String, nats: &SharedNats) -> NatsSettings {
    // Creating an R3 stream on a busy machine (three servers fsyncing every write) can
    // take seconds; a single server answers at once.
    let timeout = Duration::from_secs(if nats.replicas > 1 { 10 } else { 2 });
    NatsSettings {
        prefix,
        replicas: usize::from(nats.replicas),
        publish_timeout: timeout,
        request_timeout: timeout,
        reconnect_max_delay: Duration::from_millis(200),
        consumer: ConsumerSettings {
            heartbeat: Duration::from_secs(1),
            ..ConsumerSettings::default()
        },
        ..NatsSettings::default()
    }
}

struct Fixture {
    producer: TestStore,
    consumer_store: TestStore,
    consumer: Arc<Consumer>,
    outbox: Outbox,
}

async fn fixture(topics: Vec<String>, handler_delay: Duration) -> Fixture {
    let open = |name| TestStore::sqlite_with(name, 4);
    let producer = open("producer").await;
    producer.migrate_platform().await.unwrap();
    let consumer_store = open("consumer").await;
    consumer_store.migrate_platform().await.unwrap();
    sqlx::query("CREATE TABLE applied (event_id TEXT NOT NULL, amount BIGINT NOT NULL)")
        .execute(consumer_store.pool())
        .await
        .unwrap();
    let consumer = Arc::new(consumer_store.consumer(
        "ledger",
        topics,
        Arc::new(Ledger {
            delay: handler_delay,
        }),
    ));
    let outbox = Outbox::new("producer", producer.pool().clone());
    Fixture {
        producer,
        consumer_store,
        consumer,
        outbox,
    }
}

/// What the ledger consumes: two topics of one stream (on NATS < 2.10 the durable then
/// reads the whole stream and skips the rest).
fn both() -> Vec<String> {
    vec![topic_of::<Deposited>(), topic_of::<Withdrawn>()]
}

/// (rows, distinct event ids, sum of amounts) of the consumer's effects.
async fn applied(store: &Store) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT event_id), COALESCE(SUM(amount), 0) FROM applied",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Waits until the durable has nothing left to deliver and nothing unacknowledged
/// (nak'ed messages waiting for redelivery count as unacknowledged).
async fn wait_all_acked(js: &JetStream, consumer: &Consumer) {
    let stream = js.stream_name("bank");
    until(
        "every message acknowledged",
        Duration::from_secs(30),
        || {
            let stream = stream.clone();
            async move {
                let Ok(info) = js
                .context()
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    consumer.name(),
                    stream,
                )
                .await
                .map(|c| c.cached_info().clone())
            else {
                return false;
            };
                info.num_ack_pending == 0 && info.num_pending == 0
            }
        },
    )
    .await;
}

async fn stream_messages(js: &JetStream, source: &str) -> u64 {
    let mut stream = js
        .context()
        .get_stream(js.stream_name(source))
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

async fn stop(shutdown: &CancellationToken, tasks: Vec<tokio::task::JoinHandle<()>>) {
    shutdown.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("task stops on shutdown")
            .unwrap();
    }
}

/// Deletes a test's streams when dropped, also when the test failed: the server at
/// `BAZAAR_TEST_NATS_URL` is shared.
struct DeleteStreams {
    url: String,
    settings: NatsSettings,
}

impl Drop for DeleteStreams {
    fn drop(&mut self) {
        let (url, settings) = (self.url.clone(), self.settings.clone());
        // Its own thread and runtime: drop cannot await, and the test's runtime may be
        // unwinding.
        let deleting = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let delete = async {
                    let js = JetStream::connect(&url, "chassis-test-cleanup", settings).await?;
                    for source in ["bank", DEAD_LETTER_SOURCE] {
                        js.delete_stream(source).await?;
                    }
                    Ok::<(), chassis_messaging::nats::NatsError>(())
                };
                match tokio::time::timeout(Duration::from_secs(10), delete).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("cannot delete test streams: {e}"),
                    Err(_) => eprintln!("cannot delete test streams: timed out"),
                }
            });
        });
        let _ = deleting.join();
    }
}

/// One JetStream test's setup: a connection under a fresh prefix (its streams deleted
/// at the end), the producer/consumer fixture on both topics, a bus, and the consumer
/// task running until `shutdown`.
struct Running {
    js: JetStream,
    f: Fixture,
    bus: NatsBus,
    shutdown: CancellationToken,
    consuming: tokio::task::JoinHandle<()>,
    _cleanup: DeleteStreams,
}

async fn running(test: &str) -> Option<Running> {
    let nats = nats(test)?;
    let js = JetStream::connect(&nats.url, "chassis-test", settings(unique_prefix(), &nats))
        .await
        .unwrap();
    let cleanup = DeleteStreams {
        url: nats.url,
        settings: js.settings().clone(),
    };
    let f = fixture(both(), Duration::ZERO).await;
    let bus = NatsBus::new(js.clone());
    let shutdown = CancellationToken::new();
    let consuming = chassis_messaging::nats::spawn_consumer(
        js.clone(),
        Arc::clone(&f.consumer),
        shutdown.clone(),
    );
    // The consumer creates the stream. On a busy cluster a publisher's stream lookup
    // made while that creation is under way can go unanswered until its timeout (the
    // relay would retry; a test relaying once would fail), so let it finish first.
    until("the stream exists", Duration::from_secs(60), || async {
        js.context()
            .get_stream(js.stream_name("bank"))
            .await
            .is_ok()
    })
    .await;
    Some(Running {
        js,
        f,
        bus,
        shutdown,
        consuming,
        _cleanup: cleanup,
    })
}

#[tokio::test]
async fn outbox_to_jetstream_applies_every_event_once() {
    let Some(Running {
        js,
        f,
        bus,
        shutdown,
        consuming,
        _cleanup,
    }) = running("outbox_to_jetstream_applies_every_event_once").await
    else {
        return;
    };

    // The first one carries a trace context, as it would from a traced request.
    let mut traced = Envelope::wrap(&deposit(1000)).unwrap();
    traced.trace_context =
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
    let mut tx = f.producer.pool().begin().await.unwrap();
    enqueue_in(&mut *tx, &traced).await.unwrap();
    tx.commit().await.unwrap();
    for i in 1..=30 {
        commit(&f.producer, &deposit(i)).await;
        if i % 3 == 0 {
            commit(
                &f.producer,
                &Withdrawn {
                    account: "a".into(),
                    amount: 1,
                },
            )
            .await;
        }
        if i % 6 == 0 {
            commit(
                &f.producer,
                &Audited {
                    account: "a".into(),
                },
            )
            .await;
        }
    }
    // 1 + 30 deposits + 10 withdrawals + 5 audits.
    assert_eq!(f.outbox.relay_once(&bus).await.unwrap(), 46);
    assert_eq!(f.outbox.backlog().await.unwrap().unsent, 0);

    until("41 effects", Duration::from_secs(30), || async {
        applied(&f.consumer_store).await.0 >= 41
    })
    .await;
    // The unwanted audits are acknowledged too (skipped on servers without
    // multi-subject filters, never delivered on the others).
    wait_all_acked(&js, &f.consumer).await;
    assert_eq!(
        applied(&f.consumer_store).await,
        (41, 41, 1000 + (1..=30).sum::<i64>() - 10)
    );
    assert_eq!(stream_messages(&js, "bank").await, 46);

    // Subject, message id and trace context on the stored message.
    let stream = js
        .context()
        .get_stream(js.stream_name("bank"))
        .await
        .unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(
        first.subject.as_str(),
        format!("{}.bank.Deposited", js.settings().prefix)
    );
    assert_eq!(
        first
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .unwrap()
            .as_str(),
        traced.id
    );
    assert_eq!(
        first.headers.get("traceparent").unwrap().as_str(),
        traced.trace_context.as_deref().unwrap()
    );
    // A relay that crashed before marking the row sent publishes it again: JetStream
    // drops the copy (same message id, within the duplicate window).
    bus.publish(&traced).await.unwrap();
    assert_eq!(stream_messages(&js, "bank").await, 46);

    stop(&shutdown, vec![consuming]).await;
    assert_eq!(applied(&f.consumer_store).await.0, 41);
}

/// The message ids of the stream's messages, by sequence.
async fn stream_ids(js: &JetStream, source: &str) -> Vec<String> {
    let stream = js
        .context()
        .get_stream(js.stream_name(source))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for seq in 1..=stream_messages(js, source).await {
        let message = stream.get_raw_message(seq).await.unwrap();
        let id = message.headers.get(async_nats::header::NATS_MESSAGE_ID);
        ids.push(id.unwrap().as_str().to_owned());
    }
    ids
}

/// Sets the stream's largest accepted message (-1: no limit).
async fn limit_message_size(js: &JetStream, source: &str, bytes: i32) {
    let mut stream = js
        .context()
        .get_stream(js.stream_name(source))
        .await
        .unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_message_size = bytes;
    js.context().update_stream(config).await.unwrap();
}

/// A batch is sent whole before its acknowledgements are awaited; when one in the
/// middle is refused (here: too large for the stream), only the rows before it are
/// stamped sent. The next pass publishes from the refused one on again: JetStream
/// drops the repeats of those it had stored (same message id), and every event is
/// applied once.
#[tokio::test]
async fn an_ack_refused_midway_through_a_batch_loses_nothing() {
    let Some(Running {
        js,
        f,
        bus,
        shutdown,
        consuming,
        _cleanup,
    }) = running("an_ack_refused_midway_through_a_batch_loses_nothing").await
    else {
        return;
    };
    // The stream exists before the batch, so the batch goes out whole.
    let mut written = vec![commit(&f.producer, &deposit(1)).await.id];
    assert_eq!(f.outbox.relay_once(&bus).await.unwrap(), 1);
    limit_message_size(&js, "bank", 2048).await;
    for amount in 2..=4 {
        written.push(commit(&f.producer, &deposit(amount)).await.id);
    }
    let too_large = Deposited {
        account: "a".repeat(4096),
        amount: 100,
    };
    written.push(commit(&f.producer, &too_large).await.id);
    for amount in 5..=7 {
        written.push(commit(&f.producer, &deposit(amount)).await.id);
    }

    assert!(
        f.outbox.relay_once(&bus).await.is_err(),
        "the refused publish fails the pass"
    );
    let unsent = unsent_ids(&f.producer).await;
    assert_eq!(
        unsent,
        written[4..],
        "stamped: the rows before the refused one"
    );
    // The three after it were sent with the batch and stored, in order.
    let mut stored: Vec<String> = written.clone();
    stored.remove(4);
    assert_eq!(stream_ids(&js, "bank").await, stored);

    limit_message_size(&js, "bank", -1).await;
    assert_eq!(f.outbox.relay_once(&bus).await.unwrap(), 4);
    assert_eq!(f.outbox.backlog().await.unwrap().unsent, 0);
    stored.push(written[4].clone());
    assert_eq!(
        stream_ids(&js, "bank").await,
        stored,
        "the repeats dropped by message id"
    );
    until("8 effects", Duration::from_secs(30), || async {
        applied(&f.consumer_store).await.0 >= 8
    })
    .await;
    wait_all_acked(&js, &f.consumer).await;
    stop(&shutdown, vec![consuming]).await;
    assert_eq!(
        applied(&f.consumer_store).await,
        (8, 8, (1..=7).sum::<i64>() + 100)
    );
}

#[tokio::test]
async fn redelivered_and_republished_events_apply_once() {
    let Some(nats) = nats("redelivered_and_republished_events_apply_once") else {
        return;
    };
    let mut config = settings(unique_prefix(), &nats);
    config.consumer.ack_wait = Duration::from_secs(1);
    config.consumer.backoff = Vec::new();
    let js = JetStream::connect(&nats.url, "chassis-test", config)
        .await
        .unwrap();
    let _cleanup = DeleteStreams {
        url: nats.url.clone(),
        settings: js.settings().clone(),
    };
    // One topic: a durable with a single `filter_subject`.
    let f = fixture(vec![topic_of::<Deposited>()], Duration::ZERO).await;
    let bus = NatsBus::new(js.clone());

    let event = Envelope::wrap(&deposit(5)).unwrap();
    bus.publish(&event).await.unwrap();
    // The same event again under another message id (a republish after the duplicate
    // window): JetStream stores it twice, only the inbox can tell.
    js.context()
        .send_publish(
            js.subject(&event.topic()),
            PublishMessage::build()
                .payload(serde_json::to_vec(&event).unwrap().into())
                .message_id("another-id"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(stream_messages(&js, "bank").await, 2);

    // A consumer instance takes the first message, commits its effect and crashes
    // before acknowledging it.
    let pull = js.ensure_consumer(&f.consumer, "bank").await.unwrap();
    let mut batch = pull
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let taken = batch.next().await.unwrap().unwrap();
    let decoded: Envelope = serde_json::from_slice(&taken.payload).unwrap();
    assert_eq!(decoded.id, event.id);
    assert_eq!(
        f.consumer.deliver(&decoded).await.unwrap(),
        Delivery::Applied
    );
    drop(taken);
    drop(batch);

    // Its replacement gets both after the ack wait, applies neither, acks both.
    let shutdown = CancellationToken::new();
    let consuming = chassis_messaging::nats::spawn_consumer(
        js.clone(),
        Arc::clone(&f.consumer),
        shutdown.clone(),
    );
    wait_all_acked(&js, &f.consumer).await;
    stop(&shutdown, vec![consuming]).await;

    assert_eq!(applied(&f.consumer_store).await, (1, 1, 5));
    let (inbox,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM inbox WHERE consumer = 'ledger'")
        .fetch_one(f.consumer_store.pool())
        .await
        .unwrap();
    assert_eq!(inbox, 1);
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_acked() {
    let Some(Running {
        js,
        f,
        bus,
        shutdown,
        consuming,
        _cleanup,
    }) = running("poison_messages_are_dead_lettered_and_acked").await
    else {
        return;
    };

    // A well-formed envelope whose payload the handler cannot decode.
    let mut poison = Envelope::wrap(&deposit(1)).unwrap();
    poison.payload = serde_json::json!({"amount": "lots"});
    bus.publish(&poison).await.unwrap();
    // Not an envelope at all.
    js.context()
        .send_publish(
            js.subject(&topic_of::<Deposited>()),
            PublishMessage::build()
                .payload("not json".into())
                .message_id("garbage"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let good = Envelope::wrap(&deposit(7)).unwrap();
    bus.publish(&good).await.unwrap();

    // The effects first: on a cluster the durable's counts can trail the stream's
    // last writes, so "nothing pending" alone may be read before they arrive.
    until(
        "the good one applied, the poison dead-lettered",
        Duration::from_secs(30),
        || async {
            applied(&f.consumer_store).await.0 >= 1
                && !chassis_messaging::dead_letters::dead_letters(f.consumer_store.pool())
                    .await
                    .unwrap()
                    .is_empty()
        },
    )
    .await;
    wait_all_acked(&js, &f.consumer).await;
    stop(&shutdown, vec![consuming]).await;

    assert_eq!(applied(&f.consumer_store).await, (1, 1, 7));
    let letters = chassis_messaging::dead_letters::dead_letters(f.consumer_store.pool())
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, poison.id);
    assert_eq!(letters[0].attempts, 1);

    // The undecodable one was copied to the consumer's dead-letter subject.
    assert_eq!(stream_messages(&js, DEAD_LETTER_SOURCE).await, 1);
    let dead = js
        .context()
        .get_stream(js.stream_name(DEAD_LETTER_SOURCE))
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    assert_eq!(dead.subject.as_str(), js.dead_letter_subject("ledger"));
    assert_eq!(&dead.payload[..], b"not json");
    assert_eq!(
        dead.headers
            .get("Bazaar-Original-Subject")
            .unwrap()
            .as_str(),
        js.subject(&topic_of::<Deposited>())
    );
    assert!(
        dead.headers
            .get("Bazaar-Error")
            .unwrap()
            .as_str()
            .starts_with("undecodable")
    );
}

#[tokio::test]
async fn a_deleted_durable_is_recreated_and_replays_without_second_effects() {
    let Some(Running {
        js,
        f,
        bus,
        shutdown,
        consuming,
        _cleanup,
    }) = running("a_deleted_durable_is_recreated_and_replays_without_second_effects").await
    else {
        return;
    };
    bus.publish(&Envelope::wrap(&deposit(2)).unwrap())
        .await
        .unwrap();
    until("the first effect", Duration::from_secs(30), || async {
        applied(&f.consumer_store).await.0 >= 1
    })
    .await;

    // An operator deletes the durable: the consume loop notices, creates it again, and
    // the new one starts from the beginning of the stream.
    js.context()
        .delete_consumer_from_stream(f.consumer.name(), js.stream_name("bank"))
        .await
        .unwrap();
    bus.publish(&Envelope::wrap(&deposit(3)).unwrap())
        .await
        .unwrap();
    until("the second effect", Duration::from_secs(60), || async {
        applied(&f.consumer_store).await.0 >= 2
    })
    .await;
    wait_all_acked(&js, &f.consumer).await;
    stop(&shutdown, vec![consuming]).await;
    assert_eq!(applied(&f.consumer_store).await, (2, 2, 5));
}

#[tokio::test]
async fn nats_restart_loses_nothing_and_applies_nothing_twice() {
    const EVENTS: i64 = 300;
    let Some(mut cluster) =
        NatsCluster::started("nats_restart_loses_nothing_and_applies_nothing_twice").await
    else {
        return;
    };
    let nats = SharedNats {
        url: cluster.url(),
        replicas: u8::try_from(CLUSTER_NODES).unwrap(),
    };

    let mut config = settings(unique_prefix(), &nats);
    config.publish_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(1);
    // Messages handed to a pull request the dead server forgot come back after this.
    config.consumer.ack_wait = Duration::from_secs(2);
    config.consumer.backoff = Vec::new();
    config.consumer.max_in_flight = 8;
    let js = JetStream::connect(&nats.url, "chassis-restart-test", config)
        .await
        .unwrap();
    // A consumer slower than the producer: when the server dies there are messages in
    // flight, pulled but unacknowledged, and outbox rows waiting.
    let f = fixture(both(), Duration::from_millis(5)).await;
    let bus: Arc<dyn Bus> = Arc::new(NatsBus::new(js.clone()));
    let shutdown = CancellationToken::new();
    let consuming = chassis_messaging::nats::spawn_consumer(
        js.clone(),
        Arc::clone(&f.consumer),
        shutdown.clone(),
    );
    let relaying = f
        .outbox
        .spawn_relay(bus, Duration::from_millis(20), shutdown.clone());

    let produced = Arc::new(AtomicI64::new(0));
    let producing = tokio::spawn({
        let producer = f.producer.clone();
        let outbox = f.outbox.clone();
        let produced = Arc::clone(&produced);
        async move {
            for _ in 0..EVENTS {
                commit(&producer, &deposit(1)).await;
                produced.fetch_add(1, Ordering::SeqCst);
                outbox.wake();
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }
    });
    let effects_at_least = |n: i64| {
        let store = f.consumer_store.clone();
        async move { applied(&store).await.0 >= n }
    };

    // One node killed while the consumer is busy (messages pulled, not yet
    // acknowledged), down briefly: the R3 streams keep a quorum of two.
    until("a fifth of the effects", Duration::from_secs(60), || {
        effects_at_least(EVENTS / 5)
    })
    .await;
    cluster.kill_node(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.start_node(0).await;

    // The whole cluster killed once consuming resumed and while the producer is still going, down
    // long enough for publishes to time out and the relay to back off.
    until("effects after the restart", Duration::from_secs(60), || {
        effects_at_least(EVENTS / 5 + 20)
    })
    .await;
    until(
        "half of the events produced",
        Duration::from_secs(60),
        || {
            let produced = produced.load(Ordering::SeqCst);
            async move { produced >= EVENTS / 2 }
        },
    )
    .await;
    let produced_at_kill = produced.load(Ordering::SeqCst);
    cluster.kill();
    let mut max_backlog = 0;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_backlog = max_backlog.max(f.outbox.backlog().await.unwrap().unsent);
    }
    cluster.start().await;

    tokio::time::timeout(Duration::from_secs(60), producing)
        .await
        .expect("producer finishes")
        .unwrap();
    until(
        "every effect and an empty outbox",
        Duration::from_secs(120),
        || async {
            applied(&f.consumer_store).await.0 >= EVENTS
                && f.outbox.backlog().await.unwrap().unsent == 0
        },
    )
    .await;
    // Whatever was still unacknowledged comes back within an ack wait; let it.
    wait_all_acked(&js, &f.consumer).await;
    stop(&shutdown, vec![consuming, relaying]).await;

    let (rows, distinct, sum) = applied(&f.consumer_store).await;
    let stored = stream_messages(&js, "bank").await;
    eprintln!(
        "restart test: {rows} effects of {EVENTS} events, {stored} messages in the stream; \
         second kill after {produced_at_kill} events produced, outbox backlog during that \
         outage up to {max_backlog}"
    );
    assert_eq!((rows, distinct, sum), (EVENTS, EVENTS, EVENTS));
    assert_eq!(f.outbox.backlog().await.unwrap().unsent, 0);
    assert!(stored >= u64::try_from(EVENTS).unwrap());
    assert!(
        chassis_messaging::dead_letters::dead_letters(f.consumer_store.pool())
            .await
            .unwrap()
            .is_empty()
    );
    drop(cluster);
}
