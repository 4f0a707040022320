//! `250ms` / `2s` / `1m` for command-line flags and query values. Parsing
//! never panics and never wraps: a number too large for a `Duration` is an
//! error, whatever its unit.

use std::time::Duration;

/// Parses `250ms`, `2s` or `1m` (a bare number means seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => value
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long a duration")),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
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
        assert!(parse("1h").is_err());
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
        assert_eq!(
            parse(&format!("{}ms", u64::MAX)),
            Ok(Duration::from_millis(u64::MAX))
        );
        assert!(parse("").is_err());
        assert!(parse("-1s").is_err());
    }
}
