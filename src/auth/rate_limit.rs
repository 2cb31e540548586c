//! Per-caller request rate limits: a token bucket per configured token or
//! access key (off unless configured). Refill is continuous; a request takes
//! one token or is refused with the time until one is there.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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

    /// Takes one request's token, or says how long until one is there.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens =
            (*tokens + elapsed * self.limit.requests_per_second).min(f64::from(self.limit.burst));
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - *tokens) / self.limit.requests_per_second,
            ))
        }
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
            assert!(bucket.try_acquire_at(start).is_ok());
        }
        let wait = bucket.try_acquire_at(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // A quarter second later half a token is back: the wait is for the
        // other half.
        let wait = bucket
            .try_acquire_at(start + Duration::from_millis(250))
            .unwrap_err();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
        // Half a second later, one more.
        let later = start + Duration::from_millis(500);
        assert!(bucket.try_acquire_at(later).is_ok());
        assert!(bucket.try_acquire_at(later).is_err());
        // Long idle refills only up to the burst.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.try_acquire_at(much_later).is_ok());
        }
        assert!(bucket.try_acquire_at(much_later).is_err());
    }
}
