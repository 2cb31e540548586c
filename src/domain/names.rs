//! Name rules: the release name of the contract and the Kubernetes name kinds
//! (RFC 1123 labels and subdomains, label values). Each check returns a
//! sentence describing what is wrong, for a violation's description.

/// A release name: 4-64 characters, `^[a-z][a-z0-9-]*[a-z0-9]$`.
pub fn check_release_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if !(4..=64).contains(&len) {
        return Err(format!("must be 4 to 64 characters long, got {len}"));
    }
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_lowercase() {
        return Err("must start with a lowercase letter".into());
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err("may contain only lowercase letters, digits and '-'".into());
    }
    if bytes[bytes.len() - 1] == b'-' {
        return Err("must end with a lowercase letter or a digit".into());
    }
    Ok(())
}

/// An RFC 1123 label (Kubernetes Service, namespace and container names).
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("must be at most 63 characters, got {}", name.len()));
    }
    check_label_chars(name)
}

/// An RFC 1123 subdomain (Kubernetes Deployment names): dot-separated labels,
/// at most 253 characters.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "must be at most 253 characters, got {}",
            name.len()
        ));
    }
    for part in name.split('.') {
        if part.is_empty() {
            return Err("must not contain empty parts between dots".into());
        }
        check_label_chars(part)?;
    }
    Ok(())
}

fn check_label_chars(label: &str) -> Result<(), String> {
    let bytes = label.as_bytes();
    let ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.iter().all(|b| ok(b) || *b == b'-') {
        return Err(
            "may contain only lowercase letters, digits, '-' (and '.' between parts)".into(),
        );
    }
    if !ok(&bytes[0]) || !ok(&bytes[bytes.len() - 1]) {
        return Err("must start and end with a lowercase letter or a digit".into());
    }
    Ok(())
}

/// A Kubernetes label value, required to be non-empty here: at most 63
/// characters, alphanumerics with '-', '_' or '.' inside.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 63 {
        return Err(format!(
            "must be at most 63 characters, got {}",
            value.len()
        ));
    }
    let bytes = value.as_bytes();
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may contain only letters, digits, '-', '_' and '.'".into());
    }
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err("must start and end with a letter or a digit".into());
    }
    Ok(())
}

/// A Kubernetes label key: an optional DNS subdomain prefix and '/', then a
/// name of at most 63 characters.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns_subdomain(prefix).map_err(|e| format!("prefix {e}"))?;
    }
    check_label_value(name).map_err(|e| format!("name {e}"))
}

/// The most characters of a client's value that an error message or a log
/// line quotes.
pub const MAX_ECHO: usize = 128;

/// `text` cut to [`MAX_ECHO`] characters, with an ellipsis where it was cut:
/// what an error may quote of a value the client sent.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    bounded_to(text, MAX_ECHO)
}

/// `text` cut to `max` characters, with an ellipsis where it was cut.
pub fn bounded_to(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// `text` quoted as `{:?}` would, cut as [`bounded`] cuts.
pub fn quoted(text: &str) -> String {
    format!("{:?}", bounded(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_bounded() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(5000);
        let cut = bounded(&long);
        assert_eq!(cut.chars().count(), MAX_ECHO + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(quoted(&long).chars().count(), MAX_ECHO + 3);
    }
    use proptest::prelude::*;

    fn reference_release_name(name: &str) -> bool {
        let b = name.as_bytes();
        (4..=64).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[b.len() - 1] != b'-'
    }

    #[test]
    fn release_name_examples() {
        assert!(check_release_name("canary-1").is_ok());
        assert!(check_release_name("abcd").is_ok());
        assert!(check_release_name("abc").is_err());
        assert!(check_release_name(&"a".repeat(65)).is_err());
        assert!(check_release_name(&"a".repeat(64)).is_ok());
        assert!(check_release_name("1abc").is_err());
        assert!(check_release_name("abc-").is_err());
        assert!(check_release_name("aBcd").is_err());
        assert!(check_release_name("ab_cd").is_err());
        assert!(check_release_name("ébcd").is_err());
    }

    #[test]
    fn kubernetes_names() {
        assert!(check_dns_label("reviews").is_ok());
        assert!(check_dns_label("-reviews").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
        assert!(check_dns_subdomain("reviews.v1").is_ok());
        assert!(check_dns_subdomain("reviews..v1").is_err());
        assert!(check_label_value("v2").is_ok());
        assert!(check_label_value("V2_rc.1").is_ok());
        assert!(check_label_value("v2-").is_err());
        assert!(check_label_key("app.kubernetes.io/name").is_ok());
        assert!(check_label_key("bad key").is_err());
    }

    #[test]
    fn kubernetes_name_lengths_at_their_limits() {
        let a = |n: usize| "a".repeat(n);
        assert!(check_dns_label(&a(63)).is_ok());
        assert!(check_dns_label(&a(64)).is_err());
        assert!(check_dns_label("").is_err());
        let subdomain = |n: usize| format!("{}.{}", a(63), a(n - 64));
        assert!(check_dns_subdomain(&subdomain(253)).is_ok());
        assert!(check_dns_subdomain(&subdomain(254)).is_err());
        assert!(check_dns_subdomain("").is_err());
        assert!(check_label_value(&a(63)).is_ok());
        assert!(check_label_value(&a(64)).is_err());
        assert!(check_label_value("").is_err());
        assert!(check_label_key(&a(63)).is_ok());
        assert!(check_label_key(&a(64)).is_err());
        assert!(check_label_key(&format!("{}/name", subdomain(253))).is_ok());
        assert!(check_label_key(&format!("{}/name", subdomain(254))).is_err());
        assert!(check_label_key("/name").is_err());
        assert!(check_label_key("example.com/").is_err());
    }

    #[test]
    fn kubernetes_name_characters() {
        for ok in ["a", "0", "a-0", "reviews-v1"] {
            assert!(check_dns_label(ok).is_ok(), "{ok}");
            assert!(check_dns_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in ["A", "a_b", "a.b", "a-", "-a", "é"] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        for bad in ["A.b", "a.-b", "a-.b", ".a", "a.", "a b"] {
            assert!(check_dns_subdomain(bad).is_err(), "{bad}");
        }
        for ok in ["a", "A", "0", "a.b_c-D"] {
            assert!(check_label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["_a", "a_", ".a", "a.", "a b", "a/b", "é"] {
            assert!(check_label_value(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn release_name_matches_the_contract_regex(name in "[a-z0-9A-Z_-]{0,70}") {
            prop_assert_eq!(check_release_name(&name).is_ok(), reference_release_name(&name));
        }

        #[test]
        fn valid_release_names_are_accepted(name in "[a-z][a-z0-9-]{2,62}[a-z0-9]") {
            prop_assert!(check_release_name(&name).is_ok());
        }

        #[test]
        fn arbitrary_text_never_panics(name in "\\PC{0,80}") {
            let _ = check_release_name(&name);
            let _ = check_dns_subdomain(&name);
            let _ = check_label_key(&name);
        }
    }
}
