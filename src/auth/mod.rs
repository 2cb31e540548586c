//! Who the caller is: a token (`X-Auth-Token`, both protocols) or, on REST,
//! an AK/SK signature (`credentials`, `signature`). Tokens are configured as SHA-256 hashes; a presented
//! token is hashed and compared with every configured hash in constant time,
//! so neither the match nor its position leaks through timing. Tokens are
//! never logged.

pub mod credentials;
pub mod rate_limit;
pub mod replay;
pub mod signature;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::rate_limit::{RateLimit, TokenBucket};
use crate::domain::Principal;

/// The header (REST) and metadata key (gRPC) that carries the token.
pub const TOKEN_HEADER: &str = "x-auth-token";

/// A configured token: the SHA-256 of its value and whom it stands for.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub sha256: [u8; 32],
    pub principal: Principal,
    pub rate_limit: Option<RateLimit>,
}

/// Who a request authenticated as, and the rate limit that applies to it.
pub struct Caller<'a> {
    pub principal: &'a Principal,
    pub limiter: Option<&'a TokenBucket>,
}

#[derive(Debug, Default)]
pub struct TokenRegistry {
    entries: Vec<(TokenEntry, Option<Arc<TokenBucket>>)>,
}

impl TokenRegistry {
    pub fn new(entries: Vec<TokenEntry>) -> Self {
        Self::renewed(entries, &Self::default())
    }

    /// The registry a configuration reload makes: a token kept with the same
    /// rate limit keeps its bucket (what it has used up stays used up).
    pub fn renewed(entries: Vec<TokenEntry>, previous: &TokenRegistry) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|e| {
                    let kept = previous.entries.iter().find_map(|(old, bucket)| {
                        (old.sha256 == e.sha256 && old.rate_limit == e.rate_limit)
                            .then(|| bucket.clone())
                            .flatten()
                    });
                    let bucket =
                        kept.or_else(|| e.rate_limit.map(|l| Arc::new(TokenBucket::new(l))));
                    (e, bucket)
                })
                .collect(),
        }
    }

    /// The caller presenting `token`, if it is a configured one.
    pub fn authenticate(&self, token: &[u8]) -> Option<Caller<'_>> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        // Visit every entry whatever matched, so timing says nothing of which.
        for (entry, bucket) in &self.entries {
            if bool::from(entry.sha256.ct_eq(&digest)) {
                found = Some(Caller {
                    principal: &entry.principal,
                    limiter: bucket.as_deref(),
                });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> TokenRegistry {
        TokenRegistry::new(vec![TokenEntry {
            sha256: Sha256::digest(b"demo-token").into(),
            principal: Principal {
                subject: "demo".into(),
                statements: vec![],
            },
            rate_limit: None,
        }])
    }

    #[test]
    fn only_the_configured_token_authenticates() {
        let r = registry();
        assert_eq!(
            r.authenticate(b"demo-token").unwrap().principal.subject,
            "demo"
        );
        assert!(r.authenticate(b"demo-token ").is_none());
        assert!(r.authenticate(b"").is_none());
    }

    fn limited(token: &[u8], subject: &str, per_second: f64) -> TokenEntry {
        TokenEntry {
            sha256: Sha256::digest(token).into(),
            principal: Principal {
                subject: subject.into(),
                statements: vec![],
            },
            rate_limit: Some(RateLimit {
                requests_per_second: per_second,
                burst: 1,
            }),
        }
    }

    fn admitted(registry: &TokenRegistry, token: &[u8]) -> bool {
        registry
            .authenticate(token)
            .unwrap()
            .limiter
            .unwrap()
            .try_acquire(1)
            .is_ok()
    }

    #[test]
    fn a_reload_keeps_what_a_kept_token_used_up_and_starts_a_changed_limit_afresh() {
        let before = TokenRegistry::new(vec![
            limited(b"kept", "kept", 0.001),
            limited(b"changed", "changed", 0.001),
            limited(b"unused", "unused", 0.001),
        ]);
        assert!(admitted(&before, b"kept"));
        assert!(admitted(&before, b"changed"));
        assert!(!admitted(&before, b"kept"));

        let after = TokenRegistry::renewed(
            vec![
                limited(b"kept", "kept", 0.001),
                limited(b"changed", "changed", 0.002),
                limited(b"unused", "unused", 0.001),
            ],
            &before,
        );
        // Each kept token keeps its own bucket, not another's with the
        // same limit.
        assert!(admitted(&after, b"unused"));
        // The burst of one is used up, reload or not ...
        assert!(!admitted(&after, b"kept"));
        // ... but a new limit is a new bucket.
        assert!(admitted(&after, b"changed"));
        assert!(after.authenticate(b"gone").is_none());
    }
}
