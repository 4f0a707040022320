//! `250ms` / `2s` / `1m` for command-line flags and query values, parsed by
//! `humantime` (which also takes `1m 30s`, `1h`). Parsing never panics and
//! never wraps: a number too large for a `Duration` is an error, whatever its
//! unit. A bare number means seconds, as it always did here.

use std::time::Duration;

/// Parses `250ms`, `2s` or `1m` (a bare number means seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let with_unit = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        format!("{text}s")
    } else {
        text.to_owned()
    };
    humantime::parse_duration(&with_unit)
        .map_err(|e| format!("{text:?} is not a duration like 250ms, 2s or 1m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_understood() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse("1x").is_err());
        assert!(parse("fast").is_err());
    }

    #[test]
    fn numbers_too_large_are_errors_not_panics() {
        assert!(parse("99999999999999999999m").is_err());
        assert!(parse(&format!("{}m", u64::MAX / 60 + 1)).is_err());
        assert_eq!(
            parse(&format!("{}m", u64::MAX / 60)),
            Ok(Duration::from_secs(u64::MAX / 60 * 60))
        );
        // humantime counts a unit's fraction in nanoseconds: this many
        // milliseconds are refused rather than rounded.
        assert!(parse(&format!("{}ms", u64::MAX)).is_err());
        // A century is still a duration.
        assert_eq!(parse("3153600000s"), Ok(Duration::from_secs(3_153_600_000)));
        assert!(parse("").is_err());
        assert!(parse("-1s").is_err());
    }
}
