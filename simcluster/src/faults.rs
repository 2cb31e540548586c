//! Faults a test asks for: answers of 503, of 429 with `Retry-After` (API
//! Priority and Fairness turning a client away), added latency, write conflicts,
//! writes an admission webhook denies, and Deployments that never become
//! ready.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::errors::KubeError;

#[derive(Debug, Default)]
pub struct Faults {
    unavailable: AtomicU32,
    throttled: AtomicU32,
    retry_after_secs: AtomicU32,
    conflicts: AtomicU32,
    latency_ms: AtomicU64,
    ready_delay_ms: AtomicU64,
    never_ready: AtomicBool,
    /// Every write (dry run or not) is denied with this, as a validating
    /// admission webhook would.
    denied: std::sync::Mutex<Option<String>>,
    /// Bumped to end every open watch (an API server in trouble drops
    /// them; its clients watch again and meet the fault).
    pub(crate) watches_ended: tokio::sync::watch::Sender<u64>,
}

impl Faults {
    /// The next `n` requests answer 503; open watches end (when `n` > 0).
    pub fn fail_next(&self, n: u32) {
        self.unavailable.store(n, Ordering::SeqCst);
        if n > 0 {
            self.watches_ended.send_modify(|ended| *ended += 1);
        }
    }

    /// The next `n` requests answer 429 TooManyRequests with `Retry-After:
    /// retry_after_secs`, as the API server's priority and fairness does.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u32) {
        self.retry_after_secs
            .store(retry_after_secs, Ordering::SeqCst);
        self.throttled.store(n, Ordering::SeqCst);
    }

    /// The next `n` writes (PUT, PATCH) answer 409 Conflict, as a storm of
    /// concurrent writers would cause.
    pub fn conflict_next(&self, n: u32) {
        self.conflicts.store(n, Ordering::SeqCst);
    }

    /// Every request waits this long first.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(
            latency.as_millis().try_into().unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    pub fn set_ready_delay(&self, delay: Duration) {
        self.ready_delay_ms.store(
            delay.as_millis().try_into().unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    pub fn ready_delay(&self) -> Duration {
        Duration::from_millis(self.ready_delay_ms.load(Ordering::SeqCst))
    }

    /// Deployments stop becoming ready (or start again).
    pub fn set_never_ready(&self, never: bool) {
        self.never_ready.store(never, Ordering::SeqCst);
    }

    pub fn never_ready(&self) -> bool {
        self.never_ready.load(Ordering::SeqCst)
    }

    pub(crate) async fn before(&self, _method: &http::Method) -> Option<KubeError> {
        let latency = self.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if take(&self.throttled) {
            return Some(KubeError::too_many_requests(
                self.retry_after_secs.load(Ordering::SeqCst),
            ));
        }
        take(&self.unavailable)
            .then(|| KubeError::unavailable("injected fault: the server is unavailable"))
    }

    /// Writes are denied with `reason` (an admission webhook's), or no
    /// longer (`None`).
    pub fn deny_writes(&self, reason: Option<&str>) {
        *self.denied.lock().unwrap_or_else(|p| p.into_inner()) = reason.map(str::to_owned);
    }

    pub(crate) fn denial(&self, method: &http::Method) -> Option<KubeError> {
        if !matches!(
            *method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
        ) {
            return None;
        }
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .map(KubeError::denied_by_admission)
    }

    pub(crate) fn take_conflict(&self) -> bool {
        take(&self.conflicts)
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
