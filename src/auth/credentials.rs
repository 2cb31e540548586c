//! AK/SK credentials and the check of a signed request against them: the
//! access key names the credential, the signature is recomputed with its
//! secret key and compared in constant time, and the date must be within 15
//! minutes of the server's clock. What may run only once (writes, and any
//! request with a nonce) is the HTTP layer's to enforce, by the key
//! [`Verified::replay_key`] (see `replay.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use subtle::ConstantTimeEq;

use super::Caller;
use super::rate_limit::{RateLimit, TokenBucket};
use super::signature::{self, DATE_FORMAT, DATE_HEADER, NONCE_HEADER};
use crate::domain::Principal;

/// How far `X-Sdk-Date` may be from the server's clock, either way.
pub const CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

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
}

/// A correctly signed request: who sent it, and the key it is remembered by
/// if it may run only once.
pub struct Verified<'a> {
    pub caller: Caller<'a>,
    pub replay_key: String,
    /// It carries an `X-Sdk-Nonce`: it may run once, even as a read.
    pub has_nonce: bool,
}

impl CredentialRegistry {
    pub fn new(entries: Vec<CredentialEntry>) -> Self {
        Self::renewed(entries, &Self::default())
    }

    /// The registry a configuration reload makes: an access key kept with
    /// the same rate limit keeps its bucket.
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
        }
    }

    /// The principal of a correctly signed request, or why it is not one
    /// (never the expected signature).
    pub fn verify(
        &self,
        request: &SignedRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Verified<'_>, String> {
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
        Ok(Verified {
            caller: Caller {
                principal: &entry.principal,
                limiter: bucket.as_deref(),
            },
            replay_key: super::replay::replay_key(
                &entry.access_key,
                nonce.as_deref(),
                &authorization.signature,
            ),
            has_nonce: nonce.is_some(),
        })
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

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    const SECRET: &[u8] = b"secret-key-of-ak-1";

    fn registry() -> CredentialRegistry {
        CredentialRegistry::new(vec![CredentialEntry {
            access_key: "AK1".into(),
            secret_key: SECRET.to_vec(),
            principal: Principal {
                subject: "ak-1".into(),
                statements: vec![],
            },
            rate_limit: None,
        }])
    }

    fn now() -> DateTime<Utc> {
        NaiveDateTime::parse_from_str("20261129T080000Z", DATE_FORMAT)
            .unwrap()
            .and_utc()
    }

    /// A GET signed at `signed_at` with `secret`, with a nonce when given.
    /// (The canonicalisation is the module's own: its independence is
    /// checked in `signature.rs` and `tests/api/signing.rs`; here the rules
    /// around it are.)
    fn verify(
        registry: &CredentialRegistry,
        access_key: &str,
        secret: &[u8],
        signed_at: DateTime<Utc>,
        nonce: Option<&str>,
    ) -> Result<String, String> {
        let date = signed_at.format(DATE_FORMAT).to_string();
        let mut headers = http::HeaderMap::new();
        headers.insert(DATE_HEADER, date.parse().unwrap());
        headers.insert("host", "example.com".parse().unwrap());
        let mut signed = vec![DATE_HEADER.to_owned(), "host".to_owned()];
        if let Some(nonce) = nonce {
            headers.insert(NONCE_HEADER, nonce.parse().unwrap());
            signed.push(NONCE_HEADER.to_owned());
        }
        let body = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b""));
        let path = "/v2/meshes/m1/namespaces/ns/releases";
        let canonical = signature::canonical_request(
            "GET",
            path,
            None,
            &signed,
            |n| header(&headers, n),
            &body,
        )
        .unwrap();
        let signature = signature::sign(secret, &signature::string_to_sign(&date, &canonical));
        let authorization = format!(
            "{} Access={access_key}, SignedHeaders={}, Signature={}",
            signature::ALGORITHM,
            signed.join(";"),
            hex::encode(signature)
        );
        registry
            .verify(
                &SignedRequest {
                    method: "GET",
                    path,
                    query: None,
                    headers: &headers,
                    authorization: &authorization,
                    body_sha256_hex: &body,
                },
                now(),
            )
            .map(|verified| verified.caller.principal.subject.clone())
    }

    #[test]
    fn the_date_may_be_up_to_15_minutes_away_either_way() {
        let r = registry();
        let minutes = |m: i64, s: i64| TimeDelta::minutes(m) + TimeDelta::seconds(s);
        for off in [minutes(0, 0), minutes(15, 0), -minutes(15, 0)] {
            assert_eq!(
                verify(&r, "AK1", SECRET, now() + off, None),
                Ok("ak-1".into()),
                "{off}"
            );
        }
        for off in [minutes(15, 1), -minutes(15, 1), minutes(24 * 60, 0)] {
            let refused = verify(&r, "AK1", SECRET, now() + off, None).unwrap_err();
            assert!(refused.contains("15 minutes"), "{off}: {refused}");
        }
    }

    #[test]
    fn a_request_is_remembered_by_its_nonce_when_it_has_one_else_by_its_signature() {
        let r = registry();
        let key = |nonce: Option<&str>, at: DateTime<Utc>| {
            let date = at.format(DATE_FORMAT).to_string();
            let mut headers = http::HeaderMap::new();
            headers.insert(DATE_HEADER, date.parse().unwrap());
            let mut signed = vec![DATE_HEADER.to_owned()];
            if let Some(nonce) = nonce {
                headers.insert(NONCE_HEADER, nonce.parse().unwrap());
                signed.push(NONCE_HEADER.to_owned());
            }
            let canonical = signature::canonical_request(
                "POST",
                "/",
                None,
                &signed,
                |n| header(&headers, n),
                "",
            )
            .unwrap();
            let signature = signature::sign(SECRET, &signature::string_to_sign(&date, &canonical));
            let authorization = format!(
                "{} Access=AK1, SignedHeaders={}, Signature={}",
                signature::ALGORITHM,
                signed.join(";"),
                hex::encode(signature)
            );
            let verified = r
                .verify(
                    &SignedRequest {
                        method: "POST",
                        path: "/",
                        query: None,
                        headers: &headers,
                        authorization: &authorization,
                        body_sha256_hex: "",
                    },
                    now(),
                )
                .map_err(|e| e.to_string())
                .unwrap();
            (verified.replay_key, verified.has_nonce)
        };
        let (plain, has_nonce) = key(None, now());
        assert!(!has_nonce);
        assert_eq!(key(None, now()).0, plain, "the same bytes, the same key");
        assert_ne!(
            key(None, now() + TimeDelta::seconds(1)).0,
            plain,
            "signed again"
        );
        let (with_nonce, has_nonce) = key(Some("n-1"), now());
        assert!(has_nonce);
        assert_eq!(
            key(Some("n-1"), now() + TimeDelta::seconds(1)).0,
            with_nonce
        );
        assert_ne!(key(Some("n-2"), now()).0, with_nonce);
    }

    #[test]
    fn an_unknown_key_and_a_wrong_secret_are_refused() {
        let r = registry();
        let unknown = verify(&r, "AK2", SECRET, now(), None).unwrap_err();
        assert!(unknown.contains("\"AK2\" is not known"), "{unknown}");
        let wrong = verify(&r, "AK1", b"another-secret", now(), None).unwrap_err();
        assert!(wrong.contains("does not match"), "{wrong}");
    }

    #[test]
    fn the_date_and_a_nonce_sent_must_be_signed() {
        let r = registry();
        let date = now().format(DATE_FORMAT).to_string();
        let mut headers = http::HeaderMap::new();
        headers.insert(DATE_HEADER, date.parse().unwrap());
        headers.insert("host", "example.com".parse().unwrap());
        let verify = |headers: &http::HeaderMap, signed: &str| {
            let authorization = format!(
                "{} Access=AK1, SignedHeaders={signed}, Signature={}",
                signature::ALGORITHM,
                "00".repeat(32)
            );
            r.verify(
                &SignedRequest {
                    method: "GET",
                    path: "/",
                    query: None,
                    headers,
                    authorization: &authorization,
                    body_sha256_hex: "",
                },
                now(),
            )
            .map(|_| ())
            .unwrap_err()
        };
        assert!(verify(&headers, "host").contains("X-Sdk-Date must be among"));
        headers.insert(NONCE_HEADER, "n-1".parse().unwrap());
        assert!(verify(&headers, "host;x-sdk-date").contains("X-Sdk-Nonce must be among"));
        // Both signed: the checks pass and the (zero) signature is what fails.
        assert!(verify(&headers, "host;x-sdk-date;x-sdk-nonce").contains("does not match"));
    }

    #[test]
    fn a_reload_keeps_a_keys_used_up_burst_unless_its_limit_changed() {
        let limited = |key: &str, per_second: f64| CredentialEntry {
            access_key: key.into(),
            secret_key: SECRET.to_vec(),
            principal: Principal {
                subject: key.into(),
                statements: vec![],
            },
            rate_limit: Some(RateLimit {
                requests_per_second: per_second,
                burst: 1,
            }),
        };
        let admitted = |r: &CredentialRegistry, key: &str| {
            r.by_access_key[key]
                .1
                .as_ref()
                .expect("a bucket")
                .try_acquire(1)
                .is_ok()
        };
        let before =
            CredentialRegistry::new(vec![limited("kept", 0.001), limited("changed", 0.001)]);
        assert!(admitted(&before, "kept") && admitted(&before, "changed"));
        let after = CredentialRegistry::renewed(
            vec![limited("kept", 0.001), limited("changed", 0.002)],
            &before,
        );
        assert!(!admitted(&after, "kept"), "used up, reload or not");
        assert!(admitted(&after, "changed"), "a new limit is a new bucket");
    }

    #[test]
    fn the_debug_form_never_shows_the_secret() {
        let r = registry();
        let shown = format!("{:?}", r.by_access_key_entries());
        assert!(
            shown.contains("AK1") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("secret-key-of-ak-1"), "{shown}");
        assert!(
            !shown.contains(&format!("{:?}", SECRET.to_vec())),
            "{shown}"
        );
    }

    impl CredentialRegistry {
        fn by_access_key_entries(&self) -> Vec<CredentialEntry> {
            self.by_access_key
                .values()
                .map(|(e, _)| e.clone())
                .collect()
        }
    }
}
