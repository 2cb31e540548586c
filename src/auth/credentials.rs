//! AK/SK credentials and the check of a signed request against them: the
//! access key names the credential, the signature is recomputed with its
//! secret key and compared in constant time, the date must be within 15
//! minutes of the server's clock, and a nonce (when sent) may be used once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use subtle::ConstantTimeEq;

use super::Caller;
use super::rate_limit::{RateLimit, TokenBucket};
use super::signature::{self, DATE_FORMAT, DATE_HEADER, NONCE_HEADER};
use crate::domain::Principal;

/// How far `X-Sdk-Date` may be from the server's clock, either way.
pub const CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Nonces remembered at most; beyond this, signed requests with a nonce are
/// refused until old ones expire (a flood cannot grow memory without bound).
const MAX_NONCES: usize = 1_000_000;

/// A configured access key pair and whom it stands for.
#[derive(Clone)]
pub struct CredentialEntry {
    pub access_key: String,
    pub secret_key: Vec<u8>,
    pub principal: Principal,
    pub rate_limit: Option<RateLimit>,
}

impl std::fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialEntry")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("principal", &self.principal)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// What the HTTP layer read of a signed request.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub authorization: &'a str,
    pub body_sha256_hex: &'a str,
}

#[derive(Default)]
pub struct CredentialRegistry {
    by_access_key: HashMap<String, (CredentialEntry, Option<Arc<TokenBucket>>)>,
    /// Shared with the registry a reload replaces it by.
    nonces: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

impl CredentialRegistry {
    pub fn new(entries: Vec<CredentialEntry>) -> Self {
        Self::renewed(entries, &Self::default())
    }

    /// The registry a configuration reload makes: an access key kept with
    /// the same rate limit keeps its bucket, and the nonces seen stay seen
    /// (a replay across a reload is still a replay).
    pub fn renewed(entries: Vec<CredentialEntry>, previous: &CredentialRegistry) -> Self {
        Self {
            by_access_key: entries
                .into_iter()
                .map(|e| {
                    let kept = previous
                        .by_access_key
                        .get(&e.access_key)
                        .filter(|(old, _)| old.rate_limit == e.rate_limit)
                        .and_then(|(_, bucket)| bucket.clone());
                    let bucket =
                        kept.or_else(|| e.rate_limit.map(|l| Arc::new(TokenBucket::new(l))));
                    (e.access_key.clone(), (e, bucket))
                })
                .collect(),
            nonces: previous.nonces.clone(),
        }
    }

    /// The principal of a correctly signed request, or why it is not one
    /// (never the expected signature).
    pub fn verify(
        &self,
        request: &SignedRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Caller<'_>, String> {
        let authorization = signature::parse_authorization(request.authorization)?;
        let date = header(request.headers, DATE_HEADER).ok_or("X-Sdk-Date is missing")?;
        if !authorization
            .signed_headers
            .iter()
            .any(|h| h == DATE_HEADER)
        {
            return Err("X-Sdk-Date must be among the SignedHeaders".into());
        }
        let nonce = header(request.headers, NONCE_HEADER);
        if nonce.is_some()
            && !authorization
                .signed_headers
                .iter()
                .any(|h| h == NONCE_HEADER)
        {
            return Err("X-Sdk-Nonce must be among the SignedHeaders".into());
        }
        let signed_at = NaiveDateTime::parse_from_str(date.trim(), DATE_FORMAT)
            .map_err(|_| "X-Sdk-Date must be YYYYMMDDTHHMMSSZ (UTC)".to_owned())?
            .and_utc();
        let skew = (now - signed_at).abs();
        if skew.to_std().map_or(true, |s| s > CLOCK_SKEW) {
            return Err(format!(
                "X-Sdk-Date {} is more than 15 minutes away from the server's clock ({})",
                date.trim(),
                now.format(DATE_FORMAT)
            ));
        }
        let (entry, bucket) = self
            .by_access_key
            .get(&authorization.access_key)
            .ok_or_else(|| {
                format!(
                    "access key {} is not known",
                    crate::domain::names::quoted(&authorization.access_key)
                )
            })?;
        let canonical = signature::canonical_request(
            request.method,
            request.path,
            request.query,
            &authorization.signed_headers,
            |name| header(request.headers, name),
            request.body_sha256_hex,
        )?;
        let expected = signature::sign(
            &entry.secret_key,
            &signature::string_to_sign(date.trim(), &canonical),
        );
        if !bool::from(expected.as_slice().ct_eq(&authorization.signature)) {
            tracing::debug!(
                canonical_request = %crate::domain::names::bounded_to(&canonical, 2048),
                "signature mismatch"
            );
            return Err(
                "the signature does not match the request (method, path, query, signed headers and body are all signed)"
                    .into(),
            );
        }
        if let Some(nonce) = nonce {
            self.remember_nonce(&entry.access_key, &nonce)?;
        }
        Ok(Caller {
            principal: &entry.principal,
            limiter: bucket.as_deref(),
        })
    }

    /// Refuses a nonce seen within the window; remembers it otherwise.
    fn remember_nonce(&self, access_key: &str, nonce: &str) -> Result<(), String> {
        let window = CLOCK_SKEW * 2;
        let now = Instant::now();
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let key = (access_key.to_owned(), nonce.to_owned());
        if let Some(seen) = nonces.get(&key)
            && now.duration_since(*seen) < window
        {
            return Err("X-Sdk-Nonce was already used: this request is a replay".into());
        }
        if nonces.len() >= MAX_NONCES {
            nonces.retain(|_, seen| now.duration_since(*seen) < window);
            if nonces.len() >= MAX_NONCES {
                return Err("too many recent nonces; retry later".into());
            }
        }
        nonces.insert(key, now);
        Ok(())
    }
}

/// A header's value (several joined with `,`), as text.
fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or_default())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}
