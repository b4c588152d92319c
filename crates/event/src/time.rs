//! Date and stamp text: `dateformat` (strftime codes, UTC) parsing and formatting.
//!
//! Decisions (docs/formats/csv-events.md): all times are UTC. A stamp may carry an optional
//! `.ffffff` fraction right after the seconds even when the format does not say so. Without a
//! `dateformat`, a date or stamp field accepts either an integer (seconds for a date,
//! microseconds for a stamp) or the default text form `%Y-%m-%d %H:%M:%S` (plus fraction), and
//! output uses that default text form.

use chrono::format::{parse, Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike};

/// The default text form of dates.
pub const DEFAULT_DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A compiled `dateformat`.
#[derive(Clone, Debug)]
pub struct DateFormat {
    text: String,
    date_items: Vec<Item<'static>>,
    stamp_items: Vec<Item<'static>>,
}

/// The error for a format string that chrono cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dateformat '{0}' is not a valid strftime format")]
pub struct BadDateFormat(pub String);

impl DateFormat {
    /// Compiles a strftime-style format.
    pub fn new(text: &str) -> Result<DateFormat, BadDateFormat> {
        let date_items: Vec<Item<'static>> =
            StrftimeItems::new(text).map(|i| i.to_owned()).collect();
        if date_items.iter().any(|i| matches!(i, Item::Error)) {
            return Err(BadDateFormat(text.to_string()));
        }
        // Stamps accept an optional fraction right after the seconds.
        let stamp_text = text.replacen("%S", "%S%.f", 1);
        let stamp_items = StrftimeItems::new(&stamp_text)
            .map(|i| i.to_owned())
            .collect();
        Ok(DateFormat {
            text: text.to_string(),
            date_items,
            stamp_items,
        })
    }

    /// The format text as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn parse_with(&self, s: &str, items: &[Item<'static>]) -> Option<NaiveDateTime> {
        let mut parsed = Parsed::new();
        parse(&mut parsed, s, items.iter()).ok()?;
        if let Ok(dt) = parsed.to_naive_datetime_with_offset(0) {
            return Some(dt);
        }
        // A format with only a date part.
        let d: NaiveDate = parsed.to_naive_date().ok()?;
        d.and_hms_opt(0, 0, 0)
    }

    /// Parses a date (whole seconds since the epoch; a fraction is dropped).
    pub fn parse_date(&self, s: &str) -> Option<i64> {
        let dt = self
            .parse_with(s, &self.date_items)
            .or_else(|| self.parse_with(s, &self.stamp_items))?;
        Some(dt.and_utc().timestamp())
    }

    /// Parses a stamp (microseconds since the epoch).
    pub fn parse_stamp(&self, s: &str) -> Option<i64> {
        let dt = self.parse_with(s, &self.stamp_items)?;
        Some(dt.and_utc().timestamp_micros())
    }

    /// Formats a date.
    pub fn format_date(&self, secs: i64, out: &mut String) {
        use std::fmt::Write;
        match DateTime::from_timestamp(secs, 0) {
            Some(dt) => {
                let _ = write!(
                    out,
                    "{}",
                    dt.naive_utc().format_with_items(self.date_items.iter())
                );
            }
            None => {
                let _ = write!(out, "{secs}");
            }
        }
    }

    /// Formats a stamp: the format, with `.ffffff` after the seconds.
    pub fn format_stamp(&self, micros: i64, out: &mut String) {
        use std::fmt::Write;
        match DateTime::from_timestamp_micros(micros) {
            Some(dt) => {
                let naive = dt.naive_utc();
                let frac = format!(".{:06}", naive.nanosecond() / 1000);
                if self.text.contains("%S") {
                    let stamp_text = self.text.replacen("%S", &format!("%S{frac}"), 1);
                    let _ = write!(out, "{}", naive.format(&stamp_text));
                } else {
                    let _ = write!(out, "{}", naive.format_with_items(self.date_items.iter()));
                }
            }
            None => {
                let _ = write!(out, "{micros}");
            }
        }
    }
}

fn default_format() -> &'static DateFormat {
    use std::sync::OnceLock;
    static DEFAULT: OnceLock<DateFormat> = OnceLock::new();
    DEFAULT.get_or_init(|| DateFormat::new(DEFAULT_DATE_FORMAT).expect("valid default format"))
}

fn is_integer(s: &str) -> bool {
    let b = s.strip_prefix('-').unwrap_or(s);
    !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit())
}

/// Parses a date field's text with `fmt`, or without one as integer seconds or the default form.
pub fn parse_date(s: &str, fmt: Option<&DateFormat>) -> Option<i64> {
    let s = s.trim();
    match fmt {
        Some(f) => f
            .parse_date(s)
            .or_else(|| is_integer(s).then(|| s.parse().ok()).flatten()),
        None if is_integer(s) => s.parse().ok(),
        None => default_format().parse_date(s),
    }
}

/// Parses a stamp field's text with `fmt`, or without one as integer microseconds or the default form.
pub fn parse_stamp(s: &str, fmt: Option<&DateFormat>) -> Option<i64> {
    let s = s.trim();
    match fmt {
        Some(f) => f
            .parse_stamp(s)
            .or_else(|| is_integer(s).then(|| s.parse().ok()).flatten()),
        None if is_integer(s) => s.parse().ok(),
        None => default_format().parse_stamp(s),
    }
}

/// Formats a date with `fmt` or the default form.
pub fn format_date(secs: i64, fmt: Option<&DateFormat>, out: &mut String) {
    match fmt {
        Some(f) => f.format_date(secs, out),
        None => default_format().format_date(secs, out),
    }
}

/// Formats a stamp with `fmt` or the default form.
pub fn format_stamp(micros: i64, fmt: Option<&DateFormat>, out: &mut String) {
    match fmt {
        Some(f) => f.format_stamp(micros, out),
        None => default_format().format_stamp(micros, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_take_an_optional_fraction() {
        let f = DateFormat::new("%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(f.parse_stamp("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(f.parse_stamp("1970-01-01 00:00:01"), Some(1_000_000));
        assert_eq!(f.parse_date("1970-01-02 00:00:00"), Some(86_400));
        let mut s = String::new();
        f.format_stamp(1_500_000, &mut s);
        assert_eq!(s, "1970-01-01 00:00:01.500000");
    }

    #[test]
    fn fraction_before_more_pattern() {
        let f = DateFormat::new("%d%b%Y %I:%M:%S %p").unwrap();
        assert_eq!(
            f.parse_stamp("07Apr2013 01:03:00.111111 PM"),
            Some(1_365_339_780_111_111)
        );
        let g = DateFormat::new("%d%b%Y%H:%M:%S").unwrap();
        assert_eq!(g.parse_date("07Apr201301:03:00"), Some(1_365_296_580));
    }

    #[test]
    fn without_format_integers_or_default_text() {
        assert_eq!(parse_date("86400", None), Some(86_400));
        assert_eq!(parse_date("1970-01-02 00:00:00", None), Some(86_400));
        assert_eq!(parse_stamp("2", None), Some(2));
        assert_eq!(parse_date("garbage", None), None);
        let mut s = String::new();
        format_date(86_400, None, &mut s);
        assert_eq!(s, "1970-01-02 00:00:00");
    }
}
