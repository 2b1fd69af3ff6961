//! When requests are sent: open loop (fixed arrival rate, whatever the responses do)
//! or closed loop (N users, each waiting for its response before the next request).
//!
//! Open-loop latency is measured from the *intended* send time, so a server that
//! stalls is charged for the requests that queued behind the stall (no coordinated
//! omission).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use loadreport::StatusClass;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::mix::Operation;
use crate::recorder::{OrderSeen, Recorder};

/// One request of an arrival and when its response ended. An arrival is usually one
/// step; a checkout on an empty cart is two (add to cart, then checkout).
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) op: Operation,
    pub(crate) class: StatusClass,
    /// The HTTP status (`None`: a transport error).
    pub(crate) status: Option<u16>,
    /// A checkout's order id, when its answer carried one (for `--trace`).
    pub(crate) order_id: Option<String>,
    pub(crate) finished: Instant,
    /// A checkout's order, as its answer described it.
    pub(crate) order: Option<OrderSeen>,
}

/// The steps of one arrival, recorded: the first from `intended`, each next one from
/// the end of the one before.
fn record_steps(recorder: &Recorder, intended: Instant, steps: &[Step]) {
    let mut from = intended;
    for step in steps {
        let latency = step.finished.saturating_duration_since(from);
        recorder.record(step.op, step.class, intended, latency);
        recorder.trace(step, latency);
        if let Some(order) = &step.order {
            recorder.order(intended, order.clone());
        }
        from = step.finished;
    }
}

/// The bounds every run keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Arrivals stop at `start + until` (warmup included).
    pub(crate) until: Duration,
    /// No more than this many arrivals in all.
    pub(crate) max_requests: u64,
    /// After the end, in-flight requests get this long to finish, then are abandoned.
    pub(crate) drain: Duration,
}

/// Open loop: arrival `i` is intended at `start + i / rate`; it is sent then (or at
/// once, when the scheduler is late) unless `max_in_flight` are already in flight, in
/// which case it is counted as dropped. Returns the number of arrivals.
pub(crate) async fn open_loop<F, Fut>(
    rate: f64,
    start: Instant,
    bounds: Bounds,
    max_in_flight: usize,
    recorder: Arc<Recorder>,
    mut arrival: F,
) -> u64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Vec<Step>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut in_flight = JoinSet::new();
    let mut sent = 0_u64;
    for i in 0..bounds.max_requests {
        // f64 keeps the schedule exact over long runs (no accumulated rounding).
        #[allow(clippy::cast_precision_loss)]
        let offset = Duration::from_secs_f64(i as f64 / rate);
        if offset >= bounds.until {
            break;
        }
        let intended = start + offset;
        sleep_until(intended).await;
        while in_flight.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            recorder.dropped(intended);
            continue;
        };
        let request = arrival(i);
        let recorder = Arc::clone(&recorder);
        in_flight.spawn(async move {
            let steps = request.await;
            record_steps(&recorder, intended, &steps);
            drop(slot);
        });
        sent += 1;
    }
    drain(in_flight, bounds.drain).await;
    sent
}

/// Closed loop: `users` tasks, each sending its next request when the previous
/// response has ended. `arrival(user, i)` makes user `user`'s request; latency runs
/// from the send. Returns the number of requests.
pub(crate) async fn closed_loop<F, Fut>(
    users: u64,
    start: Instant,
    bounds: Bounds,
    recorder: Arc<Recorder>,
    arrival: F,
) -> u64
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Step>> + Send + 'static,
{
    let arrival = Arc::new(arrival);
    let issued = Arc::new(AtomicU64::new(0));
    let end = start + bounds.until;
    let mut tasks = JoinSet::new();
    for user in 0..users {
        let (arrival, issued, recorder) = (
            Arc::clone(&arrival),
            Arc::clone(&issued),
            Arc::clone(&recorder),
        );
        tasks.spawn(async move {
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let i = issued.fetch_add(1, Ordering::Relaxed);
                if i >= bounds.max_requests {
                    break;
                }
                let steps = arrival(user, i).await;
                record_steps(&recorder, now, &steps);
            }
        });
    }
    drain(tasks, bounds.until + bounds.drain).await;
    issued.load(Ordering::Relaxed).min(bounds.max_requests)
}

/// Waits for the tasks up to `limit`, then abandons the rest.
async fn drain(mut tasks: JoinSet<()>, limit: Duration) {
    let all = async { while tasks.join_next().await.is_some() {} };
    if timeout(limit, all).await.is_err() {
        tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::Mutex;

    use super::*;
    use loadreport::RunInfo;

    fn run() -> RunInfo {
        RunInfo {
            target: "test".into(),
            mode: "open".into(),
            mix: "shop".into(),
            rate: Some(10.0),
            users: None,
            warmup_secs: 0.0,
        }
    }

    const BOUNDS: Bounds = Bounds {
        until: Duration::from_secs(1),
        max_requests: 1_000,
        drain: Duration::from_secs(30),
    };

    /// A server that answers one request at a time, each in `service`.
    fn serial_server(
        service: Duration,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Vec<Step>> + Send>> {
        let lock = Arc::new(Mutex::new(()));
        move || {
            let lock = Arc::clone(&lock);
            Box::pin(async move {
                let _one_at_a_time = lock.lock().await;
                tokio::time::sleep(service).await;
                vec![Step {
                    op: Operation::ProductView,
                    class: StatusClass::S2xx,
                    status: Some(200),
                    order_id: None,
                    finished: Instant::now(),
                    order: None,
                }]
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_latency_includes_the_queueing_behind_a_slow_server() {
        // 10 arrivals/s for 1 s against a server that takes 300 ms per request, one at
        // a time: arrival i (intended at i*100 ms) finishes at (i+1)*300 ms, so its
        // latency from the intended time is 300 + 200*i ms: 300, 500, ..., 2100 ms.
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start).unwrap());
        let server = serial_server(Duration::from_millis(300));
        let sent = open_loop(10.0, start, BOUNDS, 100, Arc::clone(&recorder), |_| {
            server()
        })
        .await;
        assert_eq!(sent, 10);
        let report = recorder.report(run(), Duration::from_secs(1));
        let view = &report.operations["product_view"];
        assert_eq!(view.count, 10);
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        // Measured from the send (coordinated omission) every latency would be 300 ms.
        assert!(
            near(view.latency_us.max, 2_100_000),
            "{:?}",
            view.latency_us
        );
        assert!(
            near(view.latency_us.p50, 1_100_000),
            "{:?}",
            view.latency_us
        );
        assert!(
            (view.latency_us.mean - 1_200_000.0).abs() < 1_200.0,
            "{:?}",
            view.latency_us
        );
        // Arrivals kept their schedule: all 10 were sent within the second.
        assert_eq!(report.dropped, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_drops_arrivals_beyond_the_in_flight_cap() {
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start).unwrap());
        let server = serial_server(Duration::from_millis(300));
        // 3 in flight at most: arrivals at 0..=200 ms go; 300 ms finds 3 in flight
        // (the first ends at 300 ms, reaped at the next arrival), and so on.
        let sent = open_loop(10.0, start, BOUNDS, 3, Arc::clone(&recorder), |_| server()).await;
        let report = recorder.report(run(), Duration::from_secs(1));
        assert!(report.dropped > 0, "{report}");
        assert_eq!(sent + report.dropped, 10);
        assert_eq!(report.total.count, sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_two_step_arrival_charges_each_step_its_own_part() {
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start).unwrap());
        let bounds = Bounds {
            max_requests: 1,
            ..BOUNDS
        };
        open_loop(1.0, start, bounds, 10, Arc::clone(&recorder), |_| async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let first = Instant::now();
            tokio::time::sleep(Duration::from_millis(60)).await;
            vec![
                Step {
                    op: Operation::AddToCart,
                    class: StatusClass::S2xx,
                    status: Some(200),
                    order_id: None,
                    finished: first,
                    order: None,
                },
                Step {
                    op: Operation::Checkout,
                    class: StatusClass::S2xx,
                    status: Some(200),
                    order_id: None,
                    finished: Instant::now(),
                    order: None,
                },
            ]
        })
        .await;
        let report = recorder.report(run(), Duration::from_secs(1));
        assert_eq!(report.operations["add_to_cart"].latency_us.max / 1000, 40);
        assert_eq!(report.operations["checkout"].latency_us.max / 1000, 60);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_users_wait_for_their_responses_and_stop_at_the_end() {
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start).unwrap());
        // 2 users, 100 ms per request, 1 s: 10 requests each.
        let n = closed_loop(2, start, BOUNDS, Arc::clone(&recorder), |_, _| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            vec![Step {
                op: Operation::ViewCart,
                class: StatusClass::S2xx,
                status: Some(200),
                order_id: None,
                finished: Instant::now(),
                order: None,
            }]
        })
        .await;
        assert_eq!(n, 20);
        let report = recorder.report(run(), Duration::from_secs(1));
        assert_eq!(report.operations["view_cart"].count, 20);
        assert_eq!(report.operations["view_cart"].latency_us.max / 1000, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn max_requests_bounds_both_loops() {
        let bounds = Bounds {
            max_requests: 5,
            ..BOUNDS
        };
        let step = || async {
            vec![Step {
                op: Operation::Listing,
                class: StatusClass::S2xx,
                status: Some(200),
                order_id: None,
                finished: Instant::now(),
                order: None,
            }]
        };
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start).unwrap());
        assert_eq!(
            open_loop(1000.0, start, bounds, 10, Arc::clone(&recorder), |_| step()).await,
            5
        );
        let recorder = Arc::new(Recorder::new(start).unwrap());
        assert_eq!(
            closed_loop(
                3,
                Instant::now(),
                bounds,
                Arc::clone(&recorder),
                move |_, _| step()
            )
            .await,
            5
        );
        assert_eq!(
            recorder.report(run(), Duration::from_secs(1)).total.count,
            5
        );
    }
}
