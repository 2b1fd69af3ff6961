//! The checkout saga: an orchestrator that moves each order through reserve → charge →
//! commit (or compensates), persisting an event after every step.
//!
//! Every remote step is idempotent by the order id (reservations) or by a key derived
//! from it (charge, refund), and its outcome is recorded before the next step starts,
//! so the saga can be killed anywhere and resumed from the event stream: the recovery
//! loop picks up every order whose saga is still open.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chassis::CancellationToken;
use chassis::outbox::Outbox;
use contracts::catalog::{CatalogApi, CatalogError, StockLine};
use contracts::payments::{ChargeRequest, PaymentError, PaymentsApi, RefundRequest};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::domain::{Command, Event, Order, Step, decide, next_step, reason};
use crate::published::publishes;
use crate::store::{AppendError, SqlOrders};

/// Test-only crash points (configuration, off by default; nothing a request can
/// set): the process aborts right after the named step is persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterReserve,
    AfterCharge,
    /// The order is confirmed in the store, its `OrderConfirmed` still unsent.
    BeforePublish,
}

impl CrashPoint {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "after_reserve" => CrashPoint::AfterReserve,
            "after_charge" => CrashPoint::AfterCharge,
            "before_publish" => CrashPoint::BeforePublish,
            _ => return None,
        })
    }

    fn hit_by(self, events: &[Event]) -> bool {
        events.iter().any(|e| {
            matches!(
                (self, e),
                (CrashPoint::AfterReserve, Event::StockReserved)
                    | (CrashPoint::AfterCharge, Event::PaymentCaptured { .. })
                    | (CrashPoint::BeforePublish, Event::OrderConfirmed)
            )
        })
    }
}

/// Retry timing for steps whose dependency is unavailable.
#[derive(Debug, Clone, Copy)]
pub struct SagaTiming {
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for SagaTiming {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(5),
        }
    }
}

fn record(command: Command) -> Outcome {
    Outcome::Record(Box::new(command))
}

/// What performing a step gave.
enum Outcome {
    /// Boxed: a placement command is large and outcomes are moved around.
    Record(Box<Command>),
    /// The dependency could not answer; try the same step again later.
    Retry(String),
}

pub struct Saga {
    store: SqlOrders,
    outbox: Outbox,
    catalog: Arc<dyn CatalogApi>,
    payments: Arc<dyn PaymentsApi>,
    timing: SagaTiming,
    crash: Option<CrashPoint>,
    /// Orders being driven in this process: one driver per order.
    running: Mutex<HashSet<String>>,
    /// This process among the replicas of orders, as it signs its saga leases: one
    /// driver per order across them (see [`Saga::drive`]). `None`: no leases (the
    /// store is SQLite, which one process uses).
    holder: Option<String>,
    permits: Semaphore,
    shutdown: CancellationToken,
    /// Every order's driver, so shutdown can wait for them before the stores close.
    tracker: TaskTracker,
}

chassis::debug_fields!(Saga { crash, holder });

/// How long a saga lease lasts without renewal; each step renews it. A replica that
/// died holding one delays its orders' recovery by at most this much (a restart with
/// the same holder name takes its leases back at once).
const LEASE: Duration = Duration::from_secs(15);

/// Sagas driven at once; more wait for a permit.
const MAX_CONCURRENT: usize = 256;

pub fn charge_key(order_id: &str) -> String {
    format!("order:{order_id}:charge")
}

pub fn refund_key(order_id: &str) -> String {
    format!("order:{order_id}:refund")
}

impl Saga {
    pub fn new(
        store: SqlOrders,
        outbox: Outbox,
        catalog: Arc<dyn CatalogApi>,
        payments: Arc<dyn PaymentsApi>,
        timing: SagaTiming,
        crash: Option<CrashPoint>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            holder: None,
            store,
            outbox,
            catalog,
            payments,
            timing,
            crash,
            running: Mutex::new(HashSet::new()),
            permits: Semaphore::new(MAX_CONCURRENT),
            shutdown,
            tracker: TaskTracker::new(),
        }
    }

    /// The same saga driving each order under a lease signed `holder` (unique among
    /// the live replicas): for a store several processes share. Without it (SQLite,
    /// one process) no lease is taken, so a restart resumes every order at once.
    #[must_use]
    pub fn leased_as(mut self, holder: String) -> Self {
        self.holder = Some(holder);
        self
    }

    /// After shutdown: waits, at most `limit`, for the drivers running here, each
    /// finishing and recording the step it is in. Recording needs the stores, so this
    /// comes before they close; a step cut short is resumed by the next start's
    /// recovery. False if some were still running at `limit`.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.tracker.close();
        let drained = tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                running = self.tracker.len(),
                limit_secs = limit.as_secs(),
                "sagas still running at the shutdown limit; the next start resumes them"
            );
        }
        drained
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        match self.running.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Drives `order_id` in the background unless this process already is, or is
    /// shutting down (the order stays open in the store; the next start resumes it).
    /// The handle resolves to the order's state when the driver stops.
    pub fn spawn(
        self: &Arc<Self>,
        order_id: &str,
    ) -> Option<tokio::task::JoinHandle<Option<Order>>> {
        self.spawn_from(order_id, None)
    }

    /// [`spawn`](Self::spawn), starting from `known`, the order as the caller's own
    /// append just left it (the placement), instead of reading it back; a concurrent
    /// append makes the saga's first append a conflict, which reloads.
    pub fn spawn_from(
        self: &Arc<Self>,
        order_id: &str,
        known: Option<Order>,
    ) -> Option<tokio::task::JoinHandle<Option<Order>>> {
        if self.shutdown.is_cancelled() || !self.lock_running().insert(order_id.to_owned()) {
            return None;
        }
        let saga = Arc::clone(self);
        let id = order_id.to_owned();
        let span = tracing::info_span!("saga", order_id = %id);
        Some(self.tracker.spawn(
            async move {
                let permit = tokio::select! {
                    permit = saga.permits.acquire() => permit.ok(),
                    () = saga.shutdown.cancelled() => None,
                };
                let result = match permit {
                    Some(_permit) => saga.drive(&id, known).await,
                    None => Ok(None),
                };
                saga.lock_running().remove(&id);
                match result {
                    Ok(order) => order,
                    Err(e) => {
                        tracing::error!(error = %e, "saga stopped; the recovery loop will resume it");
                        None
                    }
                }
            }
            .instrument(span),
        ))
    }

    /// Resumes every open saga now and then every `every`, until shutdown.
    pub fn spawn_recovery(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let saga = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match saga.store.open_orders(500).await {
                    Ok(ids) => {
                        let resumed = ids.iter().filter(|id| saga.spawn(id).is_some()).count();
                        if resumed > 0 {
                            tracing::info!(resumed, "resumed open sagas");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list open sagas"),
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = saga.shutdown.cancelled() => break,
                }
            }
        })
    }

    /// Runs the order's saga until nothing is left to do (or shutdown), holding its
    /// lease; `None` when another replica holds it (that one drives the order).
    async fn drive(
        &self,
        order_id: &str,
        known: Option<Order>,
    ) -> Result<Option<Order>, AppendError> {
        let result = self.drive_leased(order_id, known).await;
        if let Some(holder) = &self.holder {
            if let Err(e) = self.store.release_saga(order_id, holder).await {
                // It lapses on its own.
                tracing::warn!(error = %e, "cannot give up a saga lease");
            }
        }
        result
    }

    /// Takes or renews the lease: false when another replica holds it.
    async fn lease(&self, order_id: &str) -> Result<bool, AppendError> {
        let Some(holder) = &self.holder else {
            return Ok(true);
        };
        let now = chassis::time::now_micros();
        let until = now + i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX);
        Ok(self.store.claim_saga(order_id, holder, now, until).await?)
    }

    async fn drive_leased(
        &self,
        order_id: &str,
        mut known: Option<Order>,
    ) -> Result<Option<Order>, AppendError> {
        let mut retries: u32 = 0;
        // `known`: the state our own last append produced (or the placement's): the
        // next step starts from it instead of reading the events back. Anything else
        // that appended meanwhile (a cancel, another driver) makes our next append a
        // conflict, which reloads.
        let mut first = true;
        loop {
            // Renewed before every step: a step (with its retries) is far shorter
            // than the lease.
            if !self.lease(order_id).await? {
                tracing::debug!(order_id, "another replica drives this saga");
                return Ok(self.store.load(order_id).await?);
            }
            let order = match known.take() {
                Some(order) => order,
                None => match self.store.load(order_id).await? {
                    Some(order) => order,
                    None => return Ok(None),
                },
            };
            let Some(step) = next_step(&order) else {
                return Ok(Some(order));
            };
            if self.shutdown.is_cancelled() {
                // Left open in the store: the next start resumes it.
                return Ok(Some(order));
            }
            let command = match self.perform(&order, &step).await {
                Outcome::Record(command) => *command,
                Outcome::Retry(why) => {
                    retries += 1;
                    tracing::warn!(?step, retries, error = %why, "saga step will be retried");
                    self.pause(retries).await;
                    continue;
                }
            };
            let unavailable = matches!(command, Command::ChargeUnavailable { .. });
            let events = match decide(&order, command) {
                Ok(events) => events,
                Err(rejection) => {
                    // Another driver moved the order on meanwhile: look again.
                    tracing::debug!(%rejection, "step outcome no longer applies");
                    continue;
                }
            };
            match self.store.append(&order, &events, None).await {
                Ok(after) => {
                    retries = 0;
                    if let Some(point) = self.crash.filter(|p| p.hit_by(&events)) {
                        tracing::error!(
                            ?point,
                            order_id,
                            "crash point reached: aborting (test fault)"
                        );
                        std::process::abort();
                    }
                    // The relay only when there is something for it: the steps'
                    // own records write no outbox rows. The first record also sends
                    // the `OrderPlaced` the placement wrote.
                    if first || publishes(&events) {
                        self.outbox.wake();
                    }
                    first = false;
                    record_metrics(&after, &events);
                    known = Some(after);
                }
                Err(AppendError::Conflict) => continue,
                Err(e) => return Err(e),
            }
            if unavailable {
                // Recorded as an attempt; back off before the next one.
                retries += 1;
                self.pause(retries).await;
            }
        }
    }

    async fn pause(&self, attempt: u32) {
        let wait = chassis::retry::backoff(attempt, self.timing.retry_base, self.timing.retry_cap);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    async fn perform(&self, order: &Order, step: &Step) -> Outcome {
        let Some(placed) = &order.placed else {
            return Outcome::Retry("order not placed".into());
        };
        match step {
            Step::Reserve => {
                let lines: Vec<StockLine> = placed
                    .lines
                    .iter()
                    .map(|l| StockLine {
                        product_id: l.product_id.clone(),
                        quantity: l.quantity,
                    })
                    .collect();
                match self.catalog.reserve(order.id.clone(), lines).await {
                    Ok(_) => record(Command::Reserved),
                    Err(CatalogError::OutOfStock(product_id)) => {
                        record(Command::ReservationRejected {
                            reason: reason::OUT_OF_STOCK.into(),
                            product_id,
                        })
                    }
                    Err(CatalogError::NotFound(product_id)) => {
                        record(Command::ReservationRejected {
                            reason: reason::PRODUCT_UNAVAILABLE.into(),
                            product_id,
                        })
                    }
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Step::Charge => {
                if placed.total_cents == 0 {
                    // Nothing to charge (free items).
                    return record(Command::Charged {
                        payment_id: String::new(),
                        amount_cents: 0,
                    });
                }
                let request = ChargeRequest {
                    idempotency_key: charge_key(&order.id),
                    order_id: order.id.clone(),
                    amount_cents: placed.total_cents,
                    currency: placed.currency.clone(),
                    payment_token: placed.payment_token.clone(),
                };
                match self.payments.charge(request).await {
                    Ok(payment) => record(Command::Charged {
                        payment_id: payment.id,
                        amount_cents: payment.amount_cents,
                    }),
                    Err(PaymentError::Declined(reason)) => {
                        record(Command::ChargeDeclined { reason })
                    }
                    Err(PaymentError::Unavailable(error)) => {
                        record(Command::ChargeUnavailable { error })
                    }
                    // Invalid or mismatched parameters cannot succeed by retrying.
                    Err(e @ (PaymentError::Invalid(_) | PaymentError::KeyMismatch)) => {
                        record(Command::ChargeDeclined {
                            reason: format!("payment_rejected: {e}"),
                        })
                    }
                    Err(e @ (PaymentError::InProgress | PaymentError::NotFound(_))) => {
                        Outcome::Retry(e.to_string())
                    }
                }
            }
            Step::Release => {
                // Giving up on a payment whose outcome was unknown: if it was captured
                // after all, record it (the saga then confirms) rather than lose it.
                match self.payments.find_by_order(order.id.clone()).await {
                    Ok(Some(payment)) => {
                        return record(Command::Charged {
                            payment_id: payment.id,
                            amount_cents: payment.amount_cents,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => return Outcome::Retry(e.to_string()),
                }
                match self.catalog.release(order.id.clone()).await {
                    Ok(_) => record(Command::Released),
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Step::Commit => match self.catalog.commit(order.id.clone()).await {
                Ok(_) => record(Command::Committed),
                Err(CatalogError::NoReservation(_)) => record(Command::CommitRejected),
                Err(e) => Outcome::Retry(e.to_string()),
            },
            Step::Refund => {
                let payment_id = order.payment_id.clone().unwrap_or_default();
                if payment_id.is_empty() {
                    return record(Command::Refunded {
                        payment_id,
                        amount_cents: 0,
                    });
                }
                let request = RefundRequest {
                    idempotency_key: refund_key(&order.id),
                    payment_id: payment_id.clone(),
                    amount_cents: placed.total_cents,
                };
                match self.payments.refund(request).await {
                    Ok(_) => record(Command::Refunded {
                        payment_id,
                        amount_cents: placed.total_cents,
                    }),
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Step::Restock => match self.catalog.restock(order.id.clone()).await {
                Ok(_) => record(Command::Restocked),
                Err(CatalogError::NoReservation(_)) => {
                    tracing::warn!(order_id = %order.id, "nothing to restock");
                    record(Command::Restocked)
                }
                Err(e) => Outcome::Retry(e.to_string()),
            },
        }
    }
}

fn record_metrics(order: &Order, events: &[Event]) {
    for event in events {
        match event {
            Event::OrderConfirmed => {
                metrics::counter!("orders_total", "outcome" => "confirmed").increment(1);
                if let Some(placed) = &order.placed {
                    metrics::counter!("orders_revenue_cents_total")
                        .increment(u64::try_from(placed.total_cents).unwrap_or(0));
                }
            }
            Event::OrderFailed { reason } => {
                metrics::counter!("orders_total", "outcome" => "failed", "reason" => reason.clone())
                    .increment(1);
            }
            Event::OrderCancelled { .. } => {
                metrics::counter!("orders_total", "outcome" => "cancelled").increment(1);
            }
            _ => {}
        }
    }
}
