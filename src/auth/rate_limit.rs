//! Per-caller request rate limits: a token bucket per configured token or
//! access key (off unless configured). Refill is continuous; a request takes
//! one token or is refused with the time until one is there.
//!
//! Replicas that share a database share each limit: each knows how many
//! are alive ([`Peers`], a heartbeat every second) and grants its even part
//! of the rate and of the burst. A load balancer that spreads a caller's
//! requests gives it its whole limit; no request waits on the database.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// As configured: a sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new((f64::from(limit.burst), Instant::now())),
        }
    }

    /// Takes one request's token, or says how long until one is there;
    /// `replicas` share the limit evenly (this one grants its part).
    pub fn try_acquire(&self, replicas: u32) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now(), replicas)
    }

    fn try_acquire_at(&self, now: Instant, replicas: u32) -> Result<(), Duration> {
        let share = f64::from(replicas.max(1));
        let rate = self.limit.requests_per_second / share;
        // Never below one request, or a small burst split would refuse all.
        let burst = (f64::from(self.limit.burst) / share).max(1.0);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

/// The replicas that share this one's database, as a heartbeat tells them.
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Says this replica is alive; answers how many are (itself included).
    async fn beat(&self) -> Result<u32, String>;

    /// Says this replica is gone (on a clean stop), so that the others take
    /// its part at once.
    async fn leave(&self);
}

/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Keeps `replicas` at the count `peers` answer, every [`HEARTBEAT`], until
/// `stop`; then says this replica is gone. A beat that fails keeps the last
/// count (a replica cut off from the database goes on as it was).
pub async fn count_replicas(
    peers: std::sync::Arc<dyn Peers>,
    replicas: std::sync::Arc<Replicas>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        match tokio::time::timeout(HEARTBEAT * 2, peers.beat()).await {
            Ok(Ok(count)) => {
                if replicas.set(count) {
                    tracing::info!("replicas share the rate limits: {count}");
                }
            }
            Ok(Err(error)) => tracing::debug!(%error, "heartbeat failed; the count stays"),
            Err(_) => tracing::debug!("heartbeat timed out; the count stays"),
        }
    }
    peers.leave().await;
}

/// How many replicas share the limits, as last heard (1 until told).
#[derive(Debug)]
pub struct Replicas(AtomicU32);

impl Default for Replicas {
    fn default() -> Self {
        Self(AtomicU32::new(1))
    }
}

impl Replicas {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Records a count heard; answers whether it changed.
    pub fn set(&self, count: u32) -> bool {
        self.0.swap(count.max(1), Ordering::Relaxed) != count.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let bucket = TokenBucket::new(RateLimit {
            requests_per_second: 2.0,
            burst: 3,
        });
        let start = Instant::now();
        for _ in 0..3 {
            assert!(bucket.try_acquire_at(start, 1).is_ok());
        }
        let wait = bucket.try_acquire_at(start, 1).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // A quarter second later half a token is back: the wait is for the
        // other half.
        let wait = bucket
            .try_acquire_at(start + Duration::from_millis(250), 1)
            .unwrap_err();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
        // Half a second later, one more.
        let later = start + Duration::from_millis(500);
        assert!(bucket.try_acquire_at(later, 1).is_ok());
        assert!(bucket.try_acquire_at(later, 1).is_err());
        // Long idle refills only up to the burst.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.try_acquire_at(much_later, 1).is_ok());
        }
        assert!(bucket.try_acquire_at(much_later, 1).is_err());
    }

    #[test]
    fn replicas_each_grant_their_part_of_the_rate_and_the_burst() {
        let bucket = TokenBucket::new(RateLimit {
            requests_per_second: 4.0,
            burst: 4,
        });
        let start = Instant::now();
        // Two replicas: this one grants 2 at once and 2 a second.
        assert!(bucket.try_acquire_at(start, 2).is_ok());
        assert!(bucket.try_acquire_at(start, 2).is_ok());
        let wait = bucket.try_acquire_at(start, 2).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        let later = start + Duration::from_millis(500);
        assert!(bucket.try_acquire_at(later, 2).is_ok());
        assert!(bucket.try_acquire_at(later, 2).is_err());
        // The other replica is gone: the whole rate is this one's again.
        let alone = later + Duration::from_millis(250);
        assert!(bucket.try_acquire_at(alone, 1).is_ok());
        // Many replicas and a burst of 1: still one request at a time.
        let small = TokenBucket::new(RateLimit {
            requests_per_second: 1.0,
            burst: 1,
        });
        assert!(small.try_acquire_at(start, 8).is_ok());
        let wait = small.try_acquire_at(start, 8).unwrap_err();
        assert!((wait.as_secs_f64() - 8.0).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn the_count_of_replicas_is_never_below_one() {
        let replicas = Replicas::default();
        assert_eq!(replicas.get(), 1);
        assert!(replicas.set(3));
        assert!(!replicas.set(3));
        assert!(replicas.set(0));
        assert_eq!(replicas.get(), 1);
    }
}
