//! Driving a target: closed loop (a fixed number of requests in flight, each
//! worker sending its next request when the last is answered) and open loop
//! (requests started on a fixed schedule, latency counted from when each was
//! due, so that a stall shows in the figures instead of hiding).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use crate::targets::Client;
use crate::workload::Workload;

/// What one or more runs of a target measured.
pub(crate) struct Measured {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    /// Open loop only: how late each request started against its schedule.
    pub(crate) dispatch_lag_us: Option<Histogram<u64>>,
    /// The slowest request: how long it took and when it was sent (to find
    /// it in a trace of the server).
    pub(crate) worst: Option<(Duration, Instant)>,
}

impl Measured {
    pub(crate) fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            dispatch_lag_us: None,
            worst: None,
        }
    }

    pub(crate) fn add(&mut self, other: Measured) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        if other.worst.map(|w| w.0) > self.worst.map(|w| w.0) {
            self.worst = other.worst;
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// A percentile in milliseconds.
    pub(crate) fn ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Sequence numbers unique across every run of one workload.
pub(crate) struct Sequence(AtomicU64);

impl Sequence {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// `concurrency` workers, each sending back to back, for `duration`.
pub(crate) async fn closed_loop(
    client: Arc<Client>,
    workload: Arc<Workload>,
    sequence: Arc<Sequence>,
    concurrency: usize,
    duration: Duration,
) -> Measured {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let client = client.clone();
        let workload = workload.clone();
        let sequence = sequence.clone();
        workers.push(tokio::spawn(async move {
            let mut measured = Measured::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = client.send(&workload, worker, sequence.next()).await;
                record(&mut measured, sent.elapsed(), outcome);
            }
            measured
        }));
    }
    let mut total = Measured::new();
    for worker in workers {
        total.add(worker.await.expect("a worker panicked"));
    }
    total.elapsed = started.elapsed();
    total
}

/// Requests started at `rate` per second for `duration`, whether or not the
/// earlier ones were answered. The schedule is kept on tokio's 1 ms timer: at
/// each tick every request due by then is started. Latency is counted from
/// each request's start; how late a start was against its due time is kept as
/// the dispatch lag, so that a generator that fell behind shows.
pub(crate) async fn open_loop(
    client: Arc<Client>,
    workload: Arc<Workload>,
    sequence: Arc<Sequence>,
    rate: f64,
    duration: Duration,
) -> Measured {
    let total = Arc::new(Mutex::new(Measured::new()));
    let rate = rate.max(1.0);
    let count = (duration.as_secs_f64() * rate) as u64;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = Vec::with_capacity(count as usize);
    let mut lag = Measured::new().latency_us;
    let mut next = 0u64;
    while next < count {
        ticks.tick().await;
        let due_by_now = ((started.elapsed().as_secs_f64() * rate) as u64).min(count);
        while next < due_by_now {
            let due = started + Duration::from_secs_f64(next as f64 / rate);
            let _ = lag.record((due.elapsed().as_micros() as u64).max(1));
            let client = client.clone();
            let workload = workload.clone();
            let sequence = sequence.clone();
            let total = total.clone();
            let i = next;
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let outcome = client.send(&workload, i as usize, sequence.next()).await;
                let took = sent.elapsed();
                let mut total = total.lock().await;
                if total.worst.is_none_or(|(worst, _)| took > worst) {
                    total.worst = Some((took, sent));
                }
                record(&mut total, took, outcome);
            }));
            next += 1;
        }
    }
    for task in tasks {
        task.await.expect("a request task panicked");
    }
    let mut total = Arc::try_unwrap(total)
        .ok()
        .expect("every task finished")
        .into_inner();
    total.elapsed = started.elapsed();
    total.dispatch_lag_us = Some(lag);
    total
}

fn record(measured: &mut Measured, took: Duration, outcome: Result<(), String>) {
    match outcome {
        Ok(()) => {
            measured.ok += 1;
            let _ = measured.latency_us.record((took.as_micros() as u64).max(1));
        }
        Err(e) => {
            measured.errors += 1;
            measured.first_error.get_or_insert(e);
        }
    }
}
