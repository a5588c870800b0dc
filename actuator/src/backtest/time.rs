//! The range's ends as people write them: RFC 3339 (`2025-05-01T12:00:00Z`, an offset such as
//! `+02:00`, or no zone for UTC), Unix seconds, `now`, or relative to now (`-24h`, `now-90m`).
//! Times are Unix seconds (`f64`) inside the backtest, as Prometheus writes them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a time may look like, for error messages.
const FORMS: &str =
    "write RFC 3339 (2025-05-01T12:00:00Z), Unix seconds, `now`, or relative to now (-24h, now-90m)";

/// `text` as Unix seconds, relative forms counted back from `now`.
pub fn parse_time(text: &str, now: SystemTime) -> Result<f64, String> {
    let text = text.trim();
    let now = unix_seconds(now);
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix("now-").or_else(|| text.strip_prefix('-')) {
        let ago = humantime::parse_duration(ago).map_err(|e| format!("{text:?}: {e}; {FORMS}"))?;
        return Ok(now - ago.as_secs_f64());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(seconds);
        }
    }
    rfc3339(text).ok_or_else(|| format!("{text:?} is not a time; {FORMS}"))
}

/// RFC 3339 with `Z`, a `±HH:MM` offset, or no zone (UTC).
fn rfc3339(text: &str) -> Option<f64> {
    let (local, offset) = split_offset(text)?;
    let at = humantime::parse_rfc3339_weak(local).ok()?;
    Some(unix_seconds(at) - offset)
}

/// The date-time and its zone's offset from UTC in seconds.
fn split_offset(text: &str) -> Option<(&str, f64)> {
    if let Some(local) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        return Some((local, 0.0));
    }
    // A zone offset is the last 6 characters, after the time of day: `+02:00`, `-05:30`.
    let at = text.len().checked_sub(6)?;
    let (local, zone) = (text.get(..at)?, text.get(at..)?);
    let sign = match zone.as_bytes().first() {
        Some(b'+') => 1.0,
        Some(b'-') if local.contains('T') || local.contains(' ') => -1.0,
        _ => return Some((text, 0.0)),
    };
    let (hours, minutes) = zone.get(1..)?.split_once(':')?;
    let (hours, minutes): (u8, u8) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then(|| {
        (
            local,
            sign * (f64::from(hours) * 3600.0 + f64::from(minutes) * 60.0),
        )
    })
}

fn unix_seconds(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// Unix seconds as RFC 3339 in UTC, to the second (the fraction shown only when there is one).
pub fn format_time(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return format!("{seconds}");
    }
    let at = UNIX_EPOCH + Duration::from_secs_f64(seconds);
    if seconds.fract().abs() < 1e-3 {
        humantime::format_rfc3339_seconds(at).to_string()
    } else {
        humantime::format_rfc3339_millis(at).to_string()
    }
}

/// A span of seconds as `1h 2m 3s`, to the second (milliseconds below one second).
pub fn format_span(seconds: f64) -> String {
    if seconds > 0.0 && seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0).round());
    }
    humantime::format_duration(Duration::from_secs(seconds.max(0.0).round() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = at(1_700_000_000);
        assert_eq!(parse_time("now", now), Ok(1_700_000_000.0));
        assert_eq!(parse_time("-24h", now), Ok(1_700_000_000.0 - 86_400.0));
        assert_eq!(parse_time("now-90m", now), Ok(1_700_000_000.0 - 5_400.0));
        assert_eq!(parse_time(" -2s ", now), Ok(1_699_999_998.0));
    }

    #[test]
    fn absolute_times_in_every_form() {
        let now = at(0);
        let utc = 1_746_100_800.0; // 2025-05-01T12:00:00Z
        assert_eq!(parse_time("2025-05-01T12:00:00Z", now), Ok(utc));
        assert_eq!(parse_time("2025-05-01T12:00:00", now), Ok(utc));
        assert_eq!(parse_time("2025-05-01 12:00:00Z", now), Ok(utc));
        assert_eq!(parse_time("2025-05-01T14:00:00+02:00", now), Ok(utc));
        assert_eq!(parse_time("2025-05-01T07:30:00-04:30", now), Ok(utc));
        assert_eq!(parse_time("2025-05-01T12:00:00.250Z", now), Ok(utc + 0.25));
        assert_eq!(parse_time("1746100800", now), Ok(utc));
    }

    #[test]
    fn bad_times_say_what_to_write() {
        for bad in [
            "yesterday",
            "-3 fortnights",
            "2025-13-01T00:00:00Z",
            "2025-05-01T12:00:00+25:00",
            "",
            "-1",
            "NaN",
        ] {
            let e = parse_time(bad, at(0)).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn times_and_spans_print_readably() {
        assert_eq!(format_time(1_746_100_800.0), "2025-05-01T12:00:00Z");
        assert_eq!(format_time(1_746_100_800.5), "2025-05-01T12:00:00.500Z");
        assert_eq!(format_span(3723.0), "1h 2m 3s");
        assert_eq!(format_span(0.25), "250ms");
        assert_eq!(format_span(0.0), "0s");
    }
}
