//! The client-side rate limit of one cluster (client-go's `QPS` and
//! `Burst`): a token bucket every request the driver sends that cluster
//! takes from, shared by all releases, so that a burst of creates or a
//! restart cannot flood its API server. Requests that find the bucket
//! empty wait their turn, first come first served. A 429 answer's
//! `Retry-After` holds every request to the cluster until it has passed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// `[[clusters]] qps` when not set. Above controller-runtime's 20 (a
/// default from before API Priority and Fairness, made for controllers
/// that poll): this driver reads from watch caches and sends writes only,
/// about three per release, so 50 a second carries a burst of 1,000
/// releases on one cluster in a minute, while the API server's own
/// priority and fairness (whose 429s are honoured) stays the real guard.
pub const DEFAULT_QPS: f64 = 50.0;
/// `[[clusters]] burst` when not set: two seconds' worth.
pub const DEFAULT_BURST: u32 = 100;

/// The limit of one cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub qps: f64,
    pub burst: u32,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
        }
    }
}

pub(super) struct Throttle {
    limit: Limit,
    /// Held while a request waits for its token: waiters are served in
    /// order.
    bucket: tokio::sync::Mutex<Bucket>,
    /// No request before this (a 429's `Retry-After`).
    not_before: Mutex<Option<Instant>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Throttle {
    pub(super) fn new(limit: Limit) -> Self {
        Throttle {
            limit,
            bucket: tokio::sync::Mutex::new(Bucket {
                tokens: f64::from(limit.burst),
                at: Instant::now(),
            }),
            not_before: Mutex::new(None),
        }
    }

    /// Waits for this request's turn; answers whether it had to wait.
    pub(super) async fn take(&self) -> bool {
        let mut bucket = self.bucket.lock().await;
        let mut waited = false;
        let held = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = held
            && until > Instant::now()
        {
            tokio::time::sleep_until(until).await;
            waited = true;
        }
        loop {
            let now = Instant::now();
            let refill = now.duration_since(bucket.at).as_secs_f64() * self.limit.qps;
            bucket.tokens = (bucket.tokens + refill).min(f64::from(self.limit.burst));
            bucket.at = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                return waited;
            }
            let short = (1.0 - bucket.tokens) / self.limit.qps;
            tokio::time::sleep(Duration::from_secs_f64(short)).await;
            waited = true;
        }
    }

    /// The wait a 429 answer asks for (`details.retryAfterSeconds`, the
    /// same as its `Retry-After`; one second when it does not say), and
    /// none for any other answer.
    pub(super) fn asked_by(status: &kube::core::Status) -> Option<Duration> {
        (status.code == 429).then(|| {
            let seconds = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .unwrap_or(1);
            Duration::from_secs(u64::from(seconds))
        })
    }

    /// The cluster said to come back after `wait`.
    pub(super) fn retry_after(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut held = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none_or(|h| h < until) {
            *held = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_and_the_rest_at_the_rate() {
        let throttle = Throttle::new(Limit {
            qps: 10.0,
            burst: 5,
        });
        let started = Instant::now();
        for _ in 0..5 {
            assert!(!throttle.take().await, "within the burst nothing waits");
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        for _ in 0..10 {
            throttle.take().await;
        }
        // Ten more at ten a second: one second.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took <= Duration::from_millis(1010),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_request_until_it_has_passed() {
        let throttle = Throttle::new(Limit::default());
        throttle.retry_after(Duration::from_secs(3));
        let started = Instant::now();
        assert!(throttle.take().await);
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert!(!throttle.take().await, "after the wait, the burst is there");
    }
}
