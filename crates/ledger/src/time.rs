//! UTC calendar arithmetic for charge and billing periods, without a date crate: the ledger
//! needs only whole hours, month starts and FOCUS's `YYYY-MM-DDTHH:mm:ssZ` text.

/// Seconds since the Unix epoch, UTC.
pub type UnixSeconds = i64;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// FOCUS date/time text: `YYYY-MM-DDTHH:mm:ssZ`.
pub fn format(t: UnixSeconds) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The date alone, `YYYY-MM-DD`, for reports.
pub fn format_date(t: UnixSeconds) -> String {
    format(t)[..10].to_string()
}

/// Parse `YYYY-MM-DD` or `YYYY-MM-DDTHH:mm:ssZ` (UTC only).
pub fn parse(s: &str) -> Result<UnixSeconds, String> {
    let bad = || format!("`{s}` is not a UTC date (YYYY-MM-DD or YYYY-MM-DDTHH:mm:ssZ)");
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    if b.len() != 10 && b.len() != 20 {
        return Err(bad());
    }
    if b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m as u32) as i64 {
        return Err(bad());
    }
    let mut t = days_from_civil(y, m as u32, d as u32) * 86_400;
    if b.len() == 20 {
        if b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
            return Err(bad());
        }
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if hh > 23 || mm > 59 || ss > 59 {
            return Err(bad());
        }
        t += hh * 3600 + mm * 60 + ss;
    }
    Ok(t)
}

/// Days in a month.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Start of the calendar month containing `t`.
pub fn month_start(t: UnixSeconds) -> UnixSeconds {
    let (y, m, _) = civil_from_days(t.div_euclid(86_400));
    days_from_civil(y, m, 1) * 86_400
}

/// Start of the month after the one containing `t`.
pub fn next_month(t: UnixSeconds) -> UnixSeconds {
    let (y, m, _) = civil_from_days(t.div_euclid(86_400));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * 86_400
}

/// `t` plus `n` calendar years (29 February becomes 1 March).
pub fn add_years(t: UnixSeconds, n: u32) -> UnixSeconds {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let y2 = y + n as i64;
    let (m2, d2) = if m == 2 && d == 29 && days_in_month(y2, 2) == 28 {
        (3, 1)
    } else {
        (m, d)
    };
    days_from_civil(y2, m2, d2) * 86_400 + t.rem_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_dates() {
        assert_eq!(parse("1970-01-01").unwrap(), 0);
        assert_eq!(parse("2026-01-01T00:00:00Z").unwrap(), 1_767_225_600);
        assert_eq!(format(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(
            format(parse("2024-02-29T23:59:59Z").unwrap()),
            "2024-02-29T23:59:59Z"
        );
        for t in (-1_000_000_000i64..4_000_000_000).step_by(86_399 * 37) {
            assert_eq!(parse(&format(t)).unwrap(), t);
        }
        assert_eq!(
            format(next_month(parse("2026-12-15").unwrap())),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            format(month_start(parse("2026-03-31T12:00:00Z").unwrap())),
            "2026-03-01T00:00:00Z"
        );
        assert_eq!(
            format(add_years(parse("2024-02-29").unwrap(), 1)),
            "2025-03-01T00:00:00Z"
        );
    }

    #[test]
    fn rejects_bad_text() {
        for s in [
            "2026-13-01",
            "2026-02-30",
            "2026-01-01T24:00:00Z",
            "2026-01-01 00:00",
            "26-1-1",
            "2026-01-01T00:00:00+01:00",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
    }
}
