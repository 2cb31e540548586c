//! A signed write is carried out once: the signature of every signed
//! mutating request (or its `X-Sdk-Nonce`, when sent) is claimed before the
//! request runs and kept for [`REPLAY_WINDOW`], so that the same bytes sent
//! again (to this replica or, on PostgreSQL, to any other) are refused as a
//! replay. A request refused before it ran gives its claim back, so that a
//! client's retry of the very same request after a 429 still works.
//!
//! Where the claims live is the store's choice ([`SignedWrites`]): shared by
//! the replicas of one PostgreSQL database, this process's own otherwise.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::credentials::CLOCK_SKEW;

/// How long a claim is kept: twice the clock skew (a request signed at the
/// far edge of the skew one way, replayed at the far edge the other).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(CLOCK_SKEW.as_secs() * 2);

/// Claims kept in a process at most; beyond this, signed writes are refused
/// until old claims expire (a flood cannot grow memory without bound).
const MAX_CLAIMS: usize = 1_000_000;

/// The signed requests that ran (or are running), remembered for
/// [`REPLAY_WINDOW`].
#[async_trait]
pub trait SignedWrites: Send + Sync + 'static {
    /// Takes `key`: `Ok(false)` when it is already taken (a replay), `Err`
    /// when it cannot be told (the caller refuses the request).
    async fn claim(&self, key: &str) -> Result<bool, String>;

    /// Gives back a claim whose request was refused before it ran.
    async fn release(&self, key: &str);
}

/// The key a signed request is remembered by: its nonce when it carries one
/// (the client's own promise of uniqueness), its signature otherwise, under
/// its access key; hashed, so that neither is stored.
pub fn replay_key(access_key: &str, nonce: Option<&str>, signature: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(access_key.as_bytes());
    match nonce {
        Some(nonce) => {
            hash.update(b"\nnonce\n");
            hash.update(nonce.as_bytes());
        }
        None => {
            hash.update(b"\nsignature\n");
            hash.update(signature);
        }
    }
    hex::encode(hash.finalize())
}

/// Whether a request of this method changes something, and so may run once.
pub fn is_write(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// Whether an answer says the request was refused before it ran (bad
/// input, no identity, no permission, too large, too many): its claim is
/// given back. Any other answer (done, a conflict, a precondition, a
/// failure midway) keeps it: the client signs again to try again.
pub fn refused_before_it_ran(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 401 | 403 | 413 | 429)
}

/// Claims kept in this process (SQLite, memory): one replica's own.
#[derive(Default)]
pub struct InProcess {
    claims: Mutex<HashMap<String, Instant>>,
}

#[async_trait]
impl SignedWrites for InProcess {
    async fn claim(&self, key: &str) -> Result<bool, String> {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        claim_at(&mut claims, key, Instant::now(), MAX_CLAIMS)
    }

    async fn release(&self, key: &str) {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Takes `key` unless it was taken within [`REPLAY_WINDOW`] of `now`. At
/// `cap` claims, the expired ones are dropped first; if none has expired,
/// the request is refused (memory stays bounded).
fn claim_at(
    claims: &mut HashMap<String, Instant>,
    key: &str,
    now: Instant,
    cap: usize,
) -> Result<bool, String> {
    let fresh = |seen: &Instant| now.saturating_duration_since(*seen) < REPLAY_WINDOW;
    if claims.get(key).is_some_and(fresh) {
        return Ok(false);
    }
    if claims.len() >= cap {
        claims.retain(|_, seen| fresh(seen));
        if claims.len() >= cap {
            return Err("too many recent signed requests to remember; retry later".into());
        }
    }
    claims.insert(key.to_owned(), now);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_for_twice_the_clock_skew() {
        let mut claims = HashMap::new();
        let t0 = Instant::now();
        assert_eq!(claim_at(&mut claims, "k", t0, 10), Ok(true));
        let almost = t0 + REPLAY_WINDOW - Duration::from_secs(1);
        assert_eq!(claim_at(&mut claims, "k", almost, 10), Ok(false));
        assert_eq!(claim_at(&mut claims, "other", t0, 10), Ok(true));
        // Once the window has passed, it may be claimed afresh.
        assert_eq!(claim_at(&mut claims, "k", t0 + REPLAY_WINDOW, 10), Ok(true));
        let after = t0 + REPLAY_WINDOW + Duration::from_secs(1);
        assert_eq!(claim_at(&mut claims, "k", after, 10), Ok(false));
    }

    #[test]
    fn at_the_cap_expired_claims_make_room_and_recent_ones_do_not() {
        let t0 = Instant::now();
        let mut claims = HashMap::new();
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64 * 60);
            assert_eq!(claim_at(&mut claims, k, at, 3), Ok(true));
        }
        let full = claim_at(&mut claims, "d", t0 + Duration::from_secs(180), 3);
        assert!(full.unwrap_err().contains("too many"));
        assert_eq!(claims.len(), 3, "nothing dropped, nothing added");
        // "a" expires at t0 + 30 min: its room goes to "d"; "b" stays.
        let later = t0 + REPLAY_WINDOW;
        assert_eq!(claim_at(&mut claims, "d", later, 3), Ok(true));
        assert_eq!(claim_at(&mut claims, "b", later, 3), Ok(false));
        assert!(!claims.contains_key("a"));
    }

    #[tokio::test]
    async fn a_released_claim_may_be_taken_again() {
        let claims = InProcess::default();
        assert_eq!(claims.claim("k").await, Ok(true));
        assert_eq!(claims.claim("k").await, Ok(false));
        claims.release("k").await;
        assert_eq!(claims.claim("k").await, Ok(true));
    }

    #[test]
    fn the_key_is_the_nonce_when_sent_and_never_shows_either() {
        let signature = [7u8; 32];
        let by_signature = replay_key("AK1", None, &signature);
        assert_ne!(by_signature, replay_key("AK2", None, &signature));
        assert_ne!(by_signature, replay_key("AK1", None, &[8u8; 32]));
        // With a nonce, the signature does not matter.
        assert_eq!(
            replay_key("AK1", Some("n-1"), &signature),
            replay_key("AK1", Some("n-1"), &[8u8; 32])
        );
        assert_ne!(by_signature, replay_key("AK1", Some("n-1"), &signature));
        assert!(!by_signature.contains(&hex::encode(signature)));
        assert_eq!(by_signature.len(), 64);
    }

    #[test]
    fn only_refusals_before_running_give_a_claim_back() {
        for code in [400, 401, 403, 413, 429] {
            assert!(refused_before_it_ran(
                http::StatusCode::from_u16(code).unwrap()
            ));
        }
        for code in [200, 204, 404, 409, 412, 500, 503] {
            assert!(
                !refused_before_it_ran(http::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        assert!(is_write(&http::Method::POST) && is_write(&http::Method::DELETE));
        assert!(!is_write(&http::Method::GET) && !is_write(&http::Method::HEAD));
    }
}
