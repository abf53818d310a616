//! Temporal arithmetic on the wire model: integer ticks of 100 ns, days from 0001-01-01.
//!
//! **The one rounding rule.** Every temporal value is rounded by [`round_ticks`] to the target
//! column's fractional precision (at most 6 digits, PostgreSQL's limit), half up: a value
//! exactly halfway goes to the later instant. Ticks since 0001-01-01 are never negative, so
//! "half up" and "half away from zero" agree. A carry simply moves into the next second, day or
//! year (9999-12-31 23:59:59.9999995 becomes 10000-01-01, which PostgreSQL accepts; a time of
//! 23:59:59.9999995 becomes 24:00:00, which PostgreSQL's `time` also accepts). The binary COPY
//! encoder, SQL literals and the canonical verification form all use this function, so the full
//! load, CDC apply and verification always agree.

/// 100-ns ticks per second / day.
pub const TICKS_PER_SECOND: i64 = 10_000_000;
pub const TICKS_PER_DAY: i64 = 86_400 * TICKS_PER_SECOND;
pub const TICKS_PER_MICROSECOND: i64 = 10;
/// Days from 0001-01-01 to 1900-01-01 (SQL Server datetime/smalldatetime epoch).
pub const DAYS_0001_TO_1900: i64 = 693_595;
/// Days from 0001-01-01 to 2000-01-01 (PostgreSQL epoch).
pub const DAYS_0001_TO_2000: i64 = 730_119;
/// Days from 0001-01-01 to 1970-01-01.
pub const DAYS_0001_TO_1970: i64 = 719_162;
/// PostgreSQL's maximum fractional-second precision.
pub const PG_MAX_FRACTION_DIGITS: u8 = 6;

/// Rounds ticks to `digits` fractional-second digits (0..=7), half up. See the module docs.
#[inline]
pub fn round_ticks(ticks: i64, digits: u8) -> i64 {
    if digits >= 7 {
        return ticks;
    }
    let unit = 10i64.pow(7 - u32::from(digits));
    (ticks + unit / 2).div_euclid(unit) * unit
}

/// Ticks since 0001-01-01 → PostgreSQL timestamp microseconds since 2000-01-01, rounded to
/// `digits` (≤ 6) by the one rule.
#[inline]
pub fn pg_timestamp_micros(ticks: i64, digits: u8) -> i64 {
    let rounded = round_ticks(ticks, digits.min(PG_MAX_FRACTION_DIGITS));
    (rounded - DAYS_0001_TO_2000 * TICKS_PER_DAY) / TICKS_PER_MICROSECOND
}

/// Ticks since midnight → PostgreSQL time microseconds, rounded by the one rule (may be
/// exactly 24:00:00).
#[inline]
pub fn pg_time_micros(ticks: i64, digits: u8) -> i64 {
    round_ticks(ticks, digits.min(PG_MAX_FRACTION_DIGITS)) / TICKS_PER_MICROSECOND
}

/// Days since 0001-01-01 → PostgreSQL date (days since 2000-01-01).
#[inline]
pub fn pg_date_days(days: i32) -> i32 {
    (i64::from(days) - DAYS_0001_TO_2000) as i32
}

/// Proleptic Gregorian (year, month, day) from days since 0001-01-01 (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days - DAYS_0001_TO_1970 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 0001-01-01 from a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + DAYS_0001_TO_1970
}

/// Writes `YYYY-MM-DD` (at least 4 year digits).
pub fn write_date(out: &mut impl std::fmt::Write, days: i64) -> std::fmt::Result {
    let (y, m, d) = civil_from_days(days);
    write!(out, "{y:04}-{m:02}-{d:02}")
}

/// Writes `HH:MM:SS.ffffff` from microseconds since midnight (24:00:00 allowed).
pub fn write_time_micros(out: &mut impl std::fmt::Write, micros: i64) -> std::fmt::Result {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    write!(
        out,
        "{:02}:{:02}:{:02}.{fraction:06}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Writes `YYYY-MM-DD<sep>HH:MM:SS.ffffff` for ticks since 0001-01-01 rounded to `digits`.
pub fn write_timestamp(
    out: &mut impl std::fmt::Write,
    ticks: i64,
    digits: u8,
    separator: char,
) -> std::fmt::Result {
    let rounded = round_ticks(ticks, digits.min(PG_MAX_FRACTION_DIGITS));
    write_date(out, rounded.div_euclid(TICKS_PER_DAY))?;
    out.write_char(separator)?;
    write_time_micros(
        out,
        rounded.rem_euclid(TICKS_PER_DAY) / TICKS_PER_MICROSECOND,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_match_the_calendar() {
        assert_eq!(days_from_civil(1, 1, 1), 0);
        assert_eq!(days_from_civil(1900, 1, 1), DAYS_0001_TO_1900);
        assert_eq!(days_from_civil(2000, 1, 1), DAYS_0001_TO_2000);
        assert_eq!(days_from_civil(1970, 1, 1), DAYS_0001_TO_1970);
        for days in [0, 1, 58, 59, 365, 36_524, 146_096, 730_119, 3_652_058] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(3_652_058), (9999, 12, 31));
    }

    #[test]
    fn rounding_is_half_up_with_carry() {
        assert_eq!(round_ticks(14, 6), 10);
        assert_eq!(round_ticks(15, 6), 20);
        assert_eq!(round_ticks(TICKS_PER_DAY - 5, 6), TICKS_PER_DAY);
        assert_eq!(round_ticks(TICKS_PER_DAY - 6, 6), TICKS_PER_DAY - 10);
        assert_eq!(round_ticks(1234567, 7), 1234567);
        assert_eq!(round_ticks(5_000_000, 0), TICKS_PER_SECOND);
        assert_eq!(pg_time_micros(TICKS_PER_DAY - 5, 6), 86_400_000_000);
    }
}
