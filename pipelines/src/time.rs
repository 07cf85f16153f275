//! Event-time handling: strict RFC 3339 parsing into microseconds since the
//! Unix epoch, and the UTC calendar buckets of SPEC §3 (month, day, minute).
//!
//! Hand-written rather than pulled from a date crate because it sits on the
//! decode hot path and must reject exactly what SPEC §2.6 calls "a `ts` that
//! does not parse" (no lenient forms such as missing offsets or spaces).

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 (ClickHouse `Date` is days since epoch as UInt16).
pub type Day = i32;

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into UTC microseconds.
/// Fractions beyond microseconds are truncated. Years are limited to
/// 1970..=2105, the range of ClickHouse's `Date`/`DateTime`.
pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(range)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let year = num(0..4)?;
    let month = num(5..7)?;
    let day = num(8..10)?;
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let second = num(17..19)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1970..=2105).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut frac_micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                frac_micros = frac_micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits.min(6)..6 {
            frac_micros *= 10;
        }
    }
    let offset_seconds = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    if secs < 0 {
        return None;
    }
    Some(secs * MICROS_PER_SECOND + frac_micros)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// UTC day of a timestamp.
pub fn day_of(ts: Micros) -> Day {
    ts.div_euclid(MICROS_PER_DAY) as Day
}

/// First day of the UTC month of a timestamp.
pub fn month_of(ts: Micros) -> Day {
    let (y, m, _) = civil_from_days(i64::from(day_of(ts)));
    days_from_civil(y, m, 1) as Day
}

/// Start of the UTC minute of a timestamp, in seconds since the epoch.
pub fn minute_of(ts: Micros) -> u32 {
    (ts.div_euclid(MICROS_PER_MINUTE) * 60) as u32
}

/// `YYYY-MM-DD`.
pub fn format_day(day: Day) -> String {
    let (y, m, d) = civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (fraction omitted when zero).
pub fn format_micros(ts: Micros) -> String {
    let secs = ts.div_euclid(MICROS_PER_SECOND);
    let frac = ts.rem_euclid(MICROS_PER_SECOND);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let base = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60);
    if frac == 0 {
        base + "Z"
    } else {
        format!("{base}.{frac:06}Z")
    }
}

/// `YYYY-MM-DDTHH:MM:00Z` for a minute bucket (seconds since the epoch).
pub fn format_minute(minute: u32) -> String {
    format_micros(i64::from(minute) * MICROS_PER_SECOND)
}

/// Parses `YYYY-MM` into the first day of that month.
pub fn parse_month(s: &str) -> Option<Day> {
    let b = s.as_bytes();
    if b.len() != 7 || b[4] != b'-' {
        return None;
    }
    let y: i64 = s.get(0..4)?.parse().ok()?;
    let m: i64 = s.get(5..7)?.parse().ok()?;
    if !(1970..=2105).contains(&y) || !(1..=12).contains(&m) || !s[0..4].bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(days_from_civil(y, m, 1) as Day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-01T12:34:56.789Z"), Some(1_793_536_496_789_000));
        assert_eq!(parse_rfc3339("2026-11-01T14:34:56.789+02:00"), parse_rfc3339("2026-11-01T12:34:56.789Z"));
        assert_eq!(parse_rfc3339("2026-11-01T12:34:56.123456789Z"), Some(1_793_536_496_123_456));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z").map(day_of), Some(19_782));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-11-01",
            "2026-11-01 12:34:56Z",
            "2026-11-01T12:34:56",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-01T24:00:00Z",
            "2026-11-01T12:34:56.Z",
            "2026-11-01T12:34:56Zjunk",
            "2026-11-01T12:34:56+0200",
            "1969-12-31T23:59:59Z",
            "２026-11-01T12:34:56Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn buckets_round_trip() {
        let ts = parse_rfc3339("2026-11-21T06:25:35.5Z").unwrap_or_default();
        assert_eq!(format_day(month_of(ts)), "2026-11-01");
        assert_eq!(format_day(day_of(ts)), "2026-11-21");
        assert_eq!(format_minute(minute_of(ts)), "2026-11-21T06:25:00Z");
        assert_eq!(format_micros(ts), "2026-11-21T06:25:35.500000Z");
        assert_eq!(parse_month("2026-11"), Some(month_of(ts)));
        assert_eq!(parse_month("2026-1"), None);
        for d in -1000..40_000 {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
