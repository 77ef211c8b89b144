//! Durations as written in services.yaml: `"2s"`, `"500ms"`, `"1m30s"`, `"1.5s"`, or an integer
//! number of seconds (the ADR-007 form).

use std::time::Duration;

/// Parses `"1h2m3s"`, `"500ms"`, `"250us"`, `"1.5s"`. Integers without a unit are seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() {
            return Err(format!(
                "`{text}` is not a duration (try \"2s\" or \"500ms\")"
            ));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "`{text}`: a unit is missing after `{num}` (ms, s, m, h)"
                ));
            }
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ns, us, ms, s, m or h)"
                ));
            }
        };
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}`: `{num}` is not a number"))?;
        let nanos = value * nanos_per_unit;
        // A week is far beyond any sensible timeout and keeps the arithmetic exact.
        if !nanos.is_finite() || nanos > 7.0 * 86400e9 {
            return Err(format!("`{text}` is too long (at most a week)"));
        }
        total += Duration::from_nanos(nanos.round() as u64);
        rest = next;
    }
    Ok(total)
}

/// The shortest exact form: `"2s"`, `"1500ms"`, `"250us"`, `"7ns"`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".into()
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// serde helpers for `Duration` fields in the model.
pub(crate) mod serde_duration {
    use super::*;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&format_duration(*d)),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("2s"), Ok(ms(2000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("10"), Ok(ms(10_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 3s "), Ok(ms(3000)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("5 seconds")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("1.5")
                .unwrap_err()
                .contains("unit is missing")
        );
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(
            parse_duration("1.2.3s")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_duration("99999999h")
                .unwrap_err()
                .contains("too long")
        );
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_millis(1500),
            Duration::from_micros(3),
            Duration::from_nanos(7),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
