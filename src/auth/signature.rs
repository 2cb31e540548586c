//! AK/SK request signing, `SDK-HMAC-SHA256`, as the cloud's SDKs sign:
//!
//! ```text
//! canonical request = METHOD \n canonical URI \n canonical query \n
//!                     canonical headers (each "name:value\n") \n
//!                     signed header names (";"-joined) \n hex(sha256(body))
//! string to sign    = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(sha256(canonical request))
//! signature         = hex(hmac_sha256(SK, string to sign))
//! ```
//!
//! Pure functions only: what the HTTP layer reads and the credentials it
//! checks against are elsewhere.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
pub const DATE_HEADER: &str = "x-sdk-date";
pub const NONCE_HEADER: &str = "x-sdk-nonce";
/// `YYYYMMDDTHHMMSSZ`, UTC.
pub const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The parts of `Authorization: SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    /// Lowercase, as sent.
    pub signed_headers: Vec<String>,
    /// 32 bytes, decoded from hex.
    pub signature: Vec<u8>,
}

/// Whether an `Authorization` value claims this algorithm (and so should be
/// checked as a signature rather than ignored).
pub fn is_signature(authorization: &[u8]) -> bool {
    authorization
        .get(..ALGORITHM.len() + 1)
        .is_some_and(|head| head.eq_ignore_ascii_case(format!("{ALGORITHM} ").as_bytes()))
}

/// Parses the header; the error says what is wrong with it.
pub fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let rest = match (value.get(..ALGORITHM.len()), value.get(ALGORITHM.len()..)) {
        (Some(head), Some(rest)) if head.eq_ignore_ascii_case(ALGORITHM) => rest,
        _ => return Err(format!("Authorization must start with {ALGORITHM}")),
    };
    let (mut access, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let Some((name, value)) = part.split_once('=') else {
            return Err(format!(
                "Authorization has a part without '=': {}",
                crate::domain::names::quoted(part)
            ));
        };
        let slot = match name.trim() {
            "Access" => &mut access,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => {
                return Err(format!(
                    "Authorization has an unknown part {}",
                    crate::domain::names::quoted(other)
                ));
            }
        };
        if slot.replace(value.trim()).is_some() {
            return Err(format!("Authorization names {} twice", name.trim()));
        }
    }
    let access_key = access
        .filter(|a| !a.is_empty())
        .ok_or("Authorization lacks Access=")?;
    let signed_headers: Vec<String> = signed
        .ok_or("Authorization lacks SignedHeaders=")?
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    if signed_headers.iter().any(String::is_empty) {
        return Err("SignedHeaders has an empty name".into());
    }
    let signature = signature
        .and_then(|s| hex::decode(s).ok())
        .filter(|s| s.len() == 32)
        .ok_or("Signature must be 64 hex digits")?;
    Ok(Authorization {
        access_key: access_key.to_owned(),
        signed_headers,
        signature,
    })
}

/// Percent-encodes all but the unreserved characters (`A-Z a-z 0-9 - _ . ~`),
/// as the SDKs' `quote(s, safe='~')`.
fn encode(text: &[u8], out: &mut String) {
    for &b in text {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Decodes `%XX` escapes only (a `+` stays a `+`, as the SDKs send it).
fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Each segment of the decoded path encoded again; always ends with `/`.
pub fn canonical_uri(path: &str) -> String {
    let decoded = decode(path);
    let mut out = String::with_capacity(path.len() + 1);
    for (i, segment) in decoded.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode(segment, &mut out);
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Parameters sorted by name then value, each encoded, `&`-joined.
pub fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), Vec::new()),
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(k, &mut out);
        out.push('=');
        encode(v, &mut out);
    }
    out
}

/// The canonical request. `headers` yields the value of a signed header, or
/// `None` when the request lacks it (the error names it).
pub fn canonical_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    signed_headers: &[String],
    header: impl Fn(&str) -> Option<String>,
    body_sha256_hex: &str,
) -> Result<String, String> {
    let mut sorted = signed_headers.to_vec();
    sorted.sort();
    let mut canonical_headers = String::new();
    for name in &sorted {
        let value = header(name).ok_or_else(|| {
            format!(
                "signed header {} is not in the request",
                crate::domain::names::quoted(name)
            )
        })?;
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value.trim());
        canonical_headers.push('\n');
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        canonical_uri(path),
        canonical_query(query),
        canonical_headers,
        sorted.join(";"),
        body_sha256_hex
    ))
}

pub fn string_to_sign(date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// HMAC-SHA256 of `string_to_sign` keyed with the secret key.
pub fn sign(secret_key: &[u8], string_to_sign: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_check_value() {
        let signature = sign(
            b"MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
            "SDK-HMAC-SHA256\n20191115T033655Z\nb25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a",
        );
        assert_eq!(
            hex::encode(signature),
            "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
        );
    }

    #[test]
    fn uris_are_segment_encoded_and_end_with_a_slash() {
        assert_eq!(
            canonical_uri("/v2/meshes/m1/releases"),
            "/v2/meshes/m1/releases/"
        );
        assert_eq!(canonical_uri("/a%20b/c:d/"), "/a%20b/c%3Ad/");
        assert_eq!(canonical_uri("/"), "/");
    }

    #[test]
    fn queries_are_sorted_by_name_then_value_and_encoded() {
        assert_eq!(
            canonical_query(Some("limit=5&phase=running&continue=a%2Bb&phase=ended")),
            "continue=a%2Bb&limit=5&phase=ended&phase=running"
        );
        assert_eq!(canonical_query(Some("flag&x=a b")), "flag=&x=a%20b");
        assert_eq!(canonical_query(None), "");
    }

    #[test]
    fn the_canonical_request_has_its_six_parts() {
        let request = canonical_request(
            "post",
            "/v2/x",
            Some("b=2&a=1"),
            &["x-sdk-date".into(), "host".into()],
            |name| match name {
                "host" => Some("example.com ".into()),
                "x-sdk-date" => Some("20191115T033655Z".into()),
                _ => None,
            },
            "e3b0",
        )
        .unwrap();
        assert_eq!(
            request,
            "POST\n/v2/x/\na=1&b=2\nhost:example.com\nx-sdk-date:20191115T033655Z\n\nhost;x-sdk-date\ne3b0"
        );
    }

    #[test]
    fn the_string_to_sign_is_the_guides() {
        // Algorithm, date, and the hex SHA-256 of the canonical request, one
        // per line (the digest computed apart, with Python's hashlib).
        let canonical = "GET\n/v2/meshes/demo-mesh/releases/\nlimit=10\nhost:127.0.0.1\nx-sdk-date:20261129T060000Z\n\nhost;x-sdk-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            string_to_sign("20261129T060000Z", canonical),
            "SDK-HMAC-SHA256\n20261129T060000Z\n4a1001ee31cb0ee36fb07956adc809595771fa02a81ab8db7ca461bee47aa6e5"
        );
    }

    #[test]
    fn authorization_headers_are_parsed_strictly() {
        let a = parse_authorization(&format!(
            "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;X-Sdk-Date, Signature={}",
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(a.access_key, "AK1");
        assert_eq!(a.signed_headers, ["host", "x-sdk-date"]);
        assert!(parse_authorization("SDK-HMAC-SHA256 Access=AK1").is_err());
        assert!(
            parse_authorization("SDK-HMAC-SHA256 Access=A, SignedHeaders=h, Signature=zz").is_err()
        );
        // Another algorithm, even of the same length, is not this one.
        let other = parse_authorization(&format!(
            "SDK-HMAC-SHA384 Access=AK1, SignedHeaders=host, Signature={}",
            "ab".repeat(32)
        ))
        .unwrap_err();
        assert!(other.contains("must start with SDK-HMAC-SHA256"), "{other}");
        assert!(is_signature(b"sdk-hmac-sha256 Access=x"));
        assert!(!is_signature(b"Bearer x"));
    }
}
