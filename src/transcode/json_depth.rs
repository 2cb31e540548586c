//! A bound on JSON nesting, checked on the raw bytes before any parsing, so a
//! hostile 100,000-deep document costs one linear scan and no stack.

/// The deepest nesting of `[` and `{` in `json`, or `Err(at)` with the byte
/// offset where it first exceeds `max`. Brackets inside strings do not count.
/// Malformed JSON is left for the parser to report.
pub fn check_depth(json: &[u8], max: usize) -> Result<(), usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, &byte) in json.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                (false, _) => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(at);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_depth;

    #[test]
    fn counts_nesting_outside_strings() {
        assert_eq!(check_depth(br#"{"a":[{"b":1}]}"#, 3), Ok(()));
        assert_eq!(check_depth(br#"{"a":[{"b":1}]}"#, 2), Err(6));
        assert_eq!(check_depth(br#"{"a":"[[[[\"[[["}"#, 1), Ok(()));
        let deep = "[".repeat(100_000);
        assert_eq!(check_depth(deep.as_bytes(), 64), Err(64));
    }
}
