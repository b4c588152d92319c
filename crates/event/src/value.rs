//! Field types and values.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The field types Sluice executes. `money` is a fixed-point decimal with
/// [`MONEY_SCALE_DIGITS`] fractional digits stored in an `i64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    Int32,
    Int64,
    Double,
    Money,
    String,
    Date,
    Stamp,
}

/// Number of fractional decimal digits kept by `money` values.
pub const MONEY_SCALE_DIGITS: u32 = 6;
/// `10^MONEY_SCALE_DIGITS`.
pub const MONEY_SCALE: i64 = 1_000_000;

impl FieldType {
    /// Parses an ESP type name. Returns `Err(name)` for types that exist in ESP but that
    /// Sluice does not execute (blob, arrays) and for unknown names; the caller names the field.
    pub fn parse(name: &str) -> Result<FieldType, String> {
        Ok(match name.trim() {
            "int32" => FieldType::Int32,
            "int64" => FieldType::Int64,
            "double" => FieldType::Double,
            "money" => FieldType::Money,
            "string" => FieldType::String,
            "date" => FieldType::Date,
            "stamp" => FieldType::Stamp,
            other => return Err(other.to_string()),
        })
    }

    /// The ESP name of the type.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Int32 => "int32",
            FieldType::Int64 => "int64",
            FieldType::Double => "double",
            FieldType::Money => "money",
            FieldType::String => "string",
            FieldType::Date => "date",
            FieldType::Stamp => "stamp",
        }
    }

    /// True for the numeric types (int32, int64, double, money).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            FieldType::Int32 | FieldType::Int64 | FieldType::Double | FieldType::Money
        )
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One field value. `Null` is a missing value (an empty CSV field).
///
/// `Date` holds whole seconds since 1970-01-01 UTC, `Stamp` microseconds, `Money` a
/// fixed-point number scaled by [`MONEY_SCALE`].
#[derive(Clone, Debug, Default)]
pub enum Value {
    #[default]
    Null,
    Int32(i32),
    Int64(i64),
    Double(f64),
    Money(i64),
    String(Arc<str>),
    Date(i64),
    Stamp(i64),
}

impl Value {
    /// Builds a string value.
    pub fn str(s: &str) -> Value {
        Value::String(Arc::from(s))
    }

    /// True when the value is `Null`.
    #[inline]
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type of a non-null value.
    #[inline]
    pub fn field_type(&self) -> Option<FieldType> {
        Some(match self {
            Value::Null => return None,
            Value::Int32(_) => FieldType::Int32,
            Value::Int64(_) => FieldType::Int64,
            Value::Double(_) => FieldType::Double,
            Value::Money(_) => FieldType::Money,
            Value::String(_) => FieldType::String,
            Value::Date(_) => FieldType::Date,
            Value::Stamp(_) => FieldType::Stamp,
        })
    }

    /// Numeric view as f64 (int, double, money, date and stamp); `None` for null and strings.
    #[inline]
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Value::Int32(v) => v as f64,
            Value::Int64(v) => v as f64,
            Value::Double(v) => v,
            Value::Money(v) => v as f64 / MONEY_SCALE as f64,
            Value::Date(v) | Value::Stamp(v) => v as f64,
            _ => return None,
        })
    }

    /// Integer view (ints, dates, stamps; doubles and money truncated toward zero).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::Int32(v) => v as i64,
            Value::Int64(v) | Value::Date(v) | Value::Stamp(v) => v,
            Value::Double(v) => v as i64,
            Value::Money(v) => v / MONEY_SCALE,
            _ => return None,
        })
    }

    /// String view of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Converts a value to `ty` (numeric widening/narrowing, numbers to strings and back).
    /// Returns `None` when the conversion is impossible (e.g. "abc" to int32).
    pub fn coerce(&self, ty: FieldType) -> Option<Value> {
        if self.is_null() {
            return Some(Value::Null);
        }
        if self.field_type() == Some(ty) {
            return Some(self.clone());
        }
        Some(match ty {
            FieldType::Int32 => match self {
                Value::String(s) => Value::Int32(s.trim().parse().ok()?),
                v => Value::Int32(i32::try_from(v.as_i64()?).ok()?),
            },
            FieldType::Int64 => match self {
                Value::String(s) => Value::Int64(s.trim().parse().ok()?),
                v => Value::Int64(v.as_i64()?),
            },
            FieldType::Date => match self {
                Value::String(s) => Value::Date(s.trim().parse().ok()?),
                Value::Stamp(us) => Value::Date(us.div_euclid(1_000_000)),
                v => Value::Date(v.as_i64()?),
            },
            FieldType::Stamp => match self {
                Value::String(s) => Value::Stamp(s.trim().parse().ok()?),
                Value::Date(s) => Value::Stamp(s.checked_mul(1_000_000)?),
                v => Value::Stamp(v.as_i64()?),
            },
            FieldType::Double => match self {
                Value::String(s) => Value::Double(s.trim().parse().ok()?),
                v => Value::Double(v.as_f64()?),
            },
            FieldType::Money => match self {
                Value::String(s) => Value::Money(parse_money(s.trim())?),
                Value::Int32(v) => Value::Money((*v as i64).checked_mul(MONEY_SCALE)?),
                Value::Int64(v) => Value::Money(v.checked_mul(MONEY_SCALE)?),
                v => Value::Money(f64_to_money(v.as_f64()?)?),
            },
            FieldType::String => Value::String(Arc::from(self.to_string())),
        })
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Int32(_) => 1,
            Value::Int64(_) => 2,
            Value::Double(_) => 3,
            Value::Money(_) => 4,
            Value::String(_) => 5,
            Value::Date(_) => 6,
            Value::Stamp(_) => 7,
        }
    }
}

/// Converts a double to money, rounding to the nearest representable value.
pub fn f64_to_money(v: f64) -> Option<i64> {
    let scaled = (v * MONEY_SCALE as f64).round();
    if scaled.is_finite() && scaled.abs() < i64::MAX as f64 {
        Some(scaled as i64)
    } else {
        None
    }
}

/// Parses decimal text (`-12345.67890`) into scaled money. Digits beyond the scale are
/// rounded half away from zero.
pub fn parse_money(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    v = v.checked_mul(MONEY_SCALE)?;
    let mut f: i64 = 0;
    let digits = frac.as_bytes();
    for i in 0..MONEY_SCALE_DIGITS as usize {
        f = f * 10 + digits.get(i).map_or(0, |d| (d - b'0') as i64);
    }
    if digits
        .get(MONEY_SCALE_DIGITS as usize)
        .is_some_and(|d| *d >= b'5')
    {
        f += 1;
    }
    v = v.checked_add(f)?;
    Some(if neg { -v } else { v })
}

/// Writes money as minimal decimal text (`12345.6789`, `3`, `-0.5`).
pub fn format_money(v: i64, out: &mut String) {
    use std::fmt::Write;
    let neg = v < 0;
    let a = v.unsigned_abs();
    let int = a / MONEY_SCALE as u64;
    let frac = a % MONEY_SCALE as u64;
    if neg {
        out.push('-');
    }
    let _ = write!(out, "{int}");
    if frac != 0 {
        let mut digits = format!("{frac:06}");
        while digits.ends_with('0') {
            digits.pop();
        }
        out.push('.');
        out.push_str(&digits);
    }
}

impl fmt::Display for Value {
    /// The plain text form: numbers in decimal, dates as integer seconds, stamps as integer
    /// microseconds, strings as they are, null as the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Int32(v) => write!(f, "{v}"),
            Value::Int64(v) | Value::Date(v) | Value::Stamp(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Money(v) => {
                let mut s = String::new();
                format_money(*v, &mut s);
                f.write_str(&s)
            }
            Value::String(s) => f.write_str(s),
        }
    }
}

impl PartialEq for Value {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Value {}

impl PartialOrd for Value {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    /// A total order: values of one type compare naturally (doubles by `total_cmp`), values
    /// of different types by a fixed type rank, null first.
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Int32(a), Value::Int32(b)) => a.cmp(b),
            (Value::Int64(a), Value::Int64(b)) => a.cmp(b),
            (Value::Double(a), Value::Double(b)) => a.total_cmp(b),
            (Value::Money(a), Value::Money(b)) => a.cmp(b),
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Date(a), Value::Date(b)) => a.cmp(b),
            (Value::Stamp(a), Value::Stamp(b)) => a.cmp(b),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

impl Hash for Value {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.rank());
        match self {
            Value::Null => {}
            Value::Int32(v) => state.write_i32(*v),
            Value::Int64(v) | Value::Money(v) | Value::Date(v) | Value::Stamp(v) => {
                state.write_i64(*v)
            }
            Value::Double(v) => state.write_u64(v.to_bits()),
            Value::String(s) => s.hash(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_and_prints_exactly() {
        assert_eq!(parse_money("12345.67890"), Some(12_345_678_900));
        assert_eq!(parse_money("-0.5"), Some(-500_000));
        assert_eq!(parse_money("1.0000005"), Some(1_000_001));
        assert_eq!(parse_money("abc"), None);
        assert_eq!(parse_money("."), None);
        let mut s = String::new();
        format_money(12_345_678_900, &mut s);
        assert_eq!(s, "12345.6789");
        s.clear();
        format_money(-500_000, &mut s);
        assert_eq!(s, "-0.5");
    }

    #[test]
    fn coerce_between_types() {
        assert_eq!(
            Value::Int32(3).coerce(FieldType::String),
            Some(Value::str("3"))
        );
        assert_eq!(
            Value::str(" 7").coerce(FieldType::Int64),
            Some(Value::Int64(7))
        );
        assert_eq!(Value::str("x").coerce(FieldType::Int64), None);
        assert_eq!(Value::Int64(1 << 40).coerce(FieldType::Int32), None);
        assert_eq!(
            Value::Double(2.5).coerce(FieldType::Money),
            Some(Value::Money(2_500_000))
        );
    }

    #[test]
    fn unsupported_types_are_refused_by_name() {
        assert_eq!(FieldType::parse("blob"), Err("blob".to_string()));
        assert_eq!(FieldType::parse("int64"), Ok(FieldType::Int64));
    }
}
