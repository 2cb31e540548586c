//! Continue tokens for list pages: opaque to clients, signed so that a
//! tampered token, or one from another list (other mesh, namespace or
//! filters), is refused instead of silently giving a wrong page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token continues: the list it belongs to and where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The store position of the last release of the previous page.
    pub after: i64,
    /// The list's identity: mesh, namespace and filters.
    pub list: String,
}

pub fn encode(cursor: &Cursor, secret: &[u8; 32]) -> String {
    let payload = serde_json::to_vec(cursor).unwrap_or_default();
    let signature = sign(&payload, secret);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// The cursor of `token` if it is intact, was made with `secret` and belongs
/// to the list `list`.
pub fn decode(token: &str, secret: &[u8; 32], list: &str) -> Option<Cursor> {
    let (payload, signature) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(&payload);
    mac.verify_slice(&signature).ok()?;
    let cursor: Cursor = serde_json::from_slice(&payload).ok()?;
    (cursor.list == list).then_some(cursor)
}

fn sign(payload: &[u8], secret: &[u8; 32]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    #[test]
    fn a_token_round_trips_and_refuses_tampering() {
        let cursor = Cursor {
            after: 42,
            list: "mesh|ns||".into(),
        };
        let token = encode(&cursor, &SECRET);
        assert_eq!(decode(&token, &SECRET, "mesh|ns||"), Some(cursor));
        assert_eq!(
            decode(&token, &SECRET, "mesh|other||"),
            None,
            "foreign list"
        );
        assert_eq!(decode(&token, &[8; 32], "mesh|ns||"), None, "other secret");
        let mut bytes = token.into_bytes();
        bytes[3] ^= 1;
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(decode(&tampered, &SECRET, "mesh|ns||"), None);
        assert_eq!(decode("garbage", &SECRET, "mesh|ns||"), None);
    }
}
