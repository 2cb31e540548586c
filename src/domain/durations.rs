//! Durations as Go and Kubernetes write them (`"90s"`, `"1m30s"`, `"2h"`,
//! `"1.5h"`), in whole seconds: what a strategy's pauses, intervals,
//! windows and timeouts are written in. A leaf.

use std::time::Duration;

/// `text` as a duration of whole seconds, or why not.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("is empty: write a duration such as \"30s\", \"5m\" or \"1h30m\"".into());
    }
    let mut rest = text;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!(
                "{text:?} is not a duration: write a number then a unit (h, m, s), such as \"1m30s\""
            ));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" | "us" | "µs" | "ns" => {
                return Err(format!(
                    "{text:?} is finer than whole seconds: write seconds, minutes or hours"
                ));
            }
            "" => {
                return Err(format!(
                    "{text:?} has no unit: write h, m or s after the number"
                ));
            }
            other => {
                return Err(format!(
                    "{text:?} has an unknown unit {other:?}: write h, m or s"
                ));
            }
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("{text:?} is too long a duration"))?
        };
        let mut part = whole
            .checked_mul(scale)
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        let mut place = scale;
        for digit in fraction.chars().take(18) {
            place /= 10;
            part += u128::from(digit.to_digit(10).unwrap_or(0)) * place;
        }
        nanos = nanos
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        rest = next;
    }
    if !nanos.is_multiple_of(1_000_000_000) {
        return Err(format!(
            "{text:?} is not a whole number of seconds: write seconds, minutes or hours"
        ));
    }
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| format!("{text:?} is too long a duration"))?;
    Ok(Duration::from_secs(secs))
}

/// A duration as Go writes it, in whole seconds: `"1h30m0s"` becomes
/// `"1h30m"`, and zero is `"0s"`.
pub fn format(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// `text` as a duration within `min..=max`, or a description of what is
/// wrong for a violation.
pub fn parse_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = parse(text)?;
    if duration < min || duration > max {
        return Err(format!(
            "must be from {} to {}, got {text:?}",
            format(min),
            format(max)
        ));
    }
    Ok(duration)
}

/// Serde for a duration stored as whole seconds.
pub mod as_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// Serde for an optional duration stored as whole seconds.
pub mod as_secs_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(d) => serializer.serialize_some(&d.as_secs()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(deserializer).map(|s| s.map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_in_whole_seconds_are_read() {
        for (text, secs) in [
            ("30s", 30),
            ("90s", 90),
            ("1m30s", 90),
            ("2h", 7200),
            ("1h0m1s", 3601),
            ("1.5h", 5400),
            ("0.5m", 30),
            ("0s", 0),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
    }

    #[test]
    fn anything_else_says_what_is_wrong() {
        for (text, says) in [
            ("", "is empty"),
            ("500ms", "finer than whole seconds"),
            ("1.5s", "whole number of seconds"),
            ("30", "no unit"),
            ("3d", "unknown unit"),
            ("s", "not a duration"),
            ("1..5s", "not a duration"),
            ("99999999999999999999999h", "too long"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn durations_are_written_back_as_go_writes_them() {
        for (secs, text) in [
            (0, "0s"),
            (30, "30s"),
            (90, "1m30s"),
            (7200, "2h"),
            (3601, "1h1s"),
        ] {
            assert_eq!(format(Duration::from_secs(secs)), text);
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn bounds_are_inclusive_and_named() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(3600));
        assert!(parse_within("1s", min, max).is_ok());
        assert!(parse_within("1h", min, max).is_ok());
        let error = parse_within("2h", min, max).unwrap_err();
        assert!(error.contains("from 1s to 1h"), "{error}");
        assert!(parse_within("0s", min, max).is_err());
    }
}
