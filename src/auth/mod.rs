//! Who the caller is: a token (`X-Auth-Token`, both protocols) or, on REST,
//! an AK/SK signature (`credentials`, `signature`). Tokens are configured as SHA-256 hashes; a presented
//! token is hashed and compared with every configured hash in constant time,
//! so neither the match nor its position leaks through timing. Tokens are
//! never logged.

pub mod credentials;
pub mod rate_limit;
pub mod signature;

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
    entries: Vec<(TokenEntry, Option<TokenBucket>)>,
}

impl TokenRegistry {
    pub fn new(entries: Vec<TokenEntry>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|e| {
                    let bucket = e.rate_limit.map(TokenBucket::new);
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
                    limiter: bucket.as_ref(),
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
}
