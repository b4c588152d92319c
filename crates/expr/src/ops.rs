//! Run-time operations on values: arithmetic, comparison, truth, casts and the string and
//! number functions.

use std::cmp::Ordering;
use std::sync::Arc;

use sluice_event::value::{f64_to_money, MONEY_SCALE};
use sluice_event::{FieldType, Value};

use crate::compile::{Arith, CastTy, CmpOp};
use crate::EvalError;

/// The boolean representation: `Int32(1)` / `Int32(0)`.
#[inline]
pub(crate) fn bool_val(b: bool) -> Value {
    Value::Int32(i32::from(b))
}

/// Truth of a value: null is false, numbers (and dates) are true when non-zero, strings when
/// non-empty.
#[inline]
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Int32(x) => *x != 0,
        Value::Int64(x) | Value::Money(x) | Value::Date(x) | Value::Stamp(x) => *x != 0,
        Value::Double(x) => *x != 0.0,
        Value::String(s) => !s.is_empty(),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    v.field_type().map_or("null", FieldType::name)
}

enum NumPair {
    I(i64, i64),
    M(i64, i64),
    D(f64, f64),
}

fn num_kind(v: &Value) -> Option<u8> {
    match v {
        Value::Int32(_) | Value::Int64(_) => Some(0),
        Value::Money(_) => Some(1),
        Value::Double(_) => Some(2),
        _ => None,
    }
}

fn to_money(v: &Value, op: &'static str) -> Result<i64, EvalError> {
    match v {
        Value::Money(m) => Ok(*m),
        Value::Double(d) => f64_to_money(*d).ok_or(EvalError::Overflow { op }),
        v => v
            .as_i64()
            .and_then(|i| i.checked_mul(MONEY_SCALE))
            .ok_or(EvalError::Overflow { op }),
    }
}

/// Promotes two non-null numeric values to a common kind.
fn num_pair(a: &Value, b: &Value, op: &'static str, verb: &str) -> Result<NumPair, EvalError> {
    let (Some(ka), Some(kb)) = (num_kind(a), num_kind(b)) else {
        return Err(EvalError::Type(
            format!(
                "cannot {verb} {} and {} with '{op}'",
                type_name(a),
                type_name(b)
            )
            .into(),
        ));
    };
    Ok(match ka.max(kb) {
        0 => NumPair::I(a.as_i64().unwrap_or(0), b.as_i64().unwrap_or(0)),
        1 => NumPair::M(to_money(a, op)?, to_money(b, op)?),
        _ => NumPair::D(a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0)),
    })
}

fn checked(v: Option<i64>, op: &'static str) -> Result<i64, EvalError> {
    v.ok_or(EvalError::Overflow { op })
}

fn finite(x: f64) -> Value {
    if x.is_finite() {
        Value::Double(x)
    } else {
        Value::Null
    }
}

fn is_num(v: &Value) -> bool {
    num_kind(v).is_some()
}

/// String concatenation; null propagates.
pub(crate) fn concat(a: &Value, b: &Value) -> Value {
    if a.is_null() || b.is_null() {
        return Value::Null;
    }
    let mut s = String::new();
    use std::fmt::Write;
    let _ = write!(s, "{a}{b}");
    Value::String(Arc::from(s))
}

/// `a op b`. Null operands give null; division and modulo by zero give null; integer overflow
/// is an error.
#[inline]
pub(crate) fn arith(op: Arith, a: &Value, b: &Value) -> Result<Value, EvalError> {
    use Value as V;
    // The common cases first.
    match (a, b) {
        (V::Int32(x), V::Int32(y)) => int_op(op, *x as i64, *y as i64),
        (V::Int64(x), V::Int64(y)) => int_op(op, *x, *y),
        (V::Int32(x), V::Int64(y)) => int_op(op, *x as i64, *y),
        (V::Int64(x), V::Int32(y)) => int_op(op, *x, *y as i64),
        (V::Double(x), V::Double(y)) => Ok(double_op(op, *x, *y)),
        (V::Double(x), V::Int32(y)) => Ok(double_op(op, *x, *y as f64)),
        (V::Int32(x), V::Double(y)) => Ok(double_op(op, *x as f64, *y)),
        (V::Null, _) | (_, V::Null) => Ok(V::Null),
        _ => arith_slow(op, a, b),
    }
}

#[inline]
fn double_op(op: Arith, x: f64, y: f64) -> Value {
    match op {
        Arith::Add => finite(x + y),
        Arith::Sub => finite(x - y),
        Arith::Mul => finite(x * y),
        Arith::Div if y == 0.0 => Value::Null,
        Arith::Div => finite(x / y),
        Arith::Mod if y == 0.0 => Value::Null,
        Arith::Mod => finite(x % y),
    }
}

#[inline(never)]
fn arith_slow(op: Arith, a: &Value, b: &Value) -> Result<Value, EvalError> {
    use Value as V;
    let sym = op.symbol();
    if a.is_null() || b.is_null() {
        return Ok(V::Null);
    }
    if op == Arith::Add && (matches!(a, V::String(_)) || matches!(b, V::String(_))) {
        return Ok(concat(a, b));
    }
    let addsub = matches!(op, Arith::Add | Arith::Sub);
    let sign = |n: &Value| -> Result<i64, EvalError> {
        let n = n.as_i64().unwrap_or(0);
        if op == Arith::Sub {
            checked(n.checked_neg(), sym)
        } else {
            Ok(n)
        }
    };
    match (a, b) {
        (V::Date(x), V::Date(y)) | (V::Stamp(x), V::Stamp(y)) if op == Arith::Sub => {
            return Ok(V::Int64(checked(x.checked_sub(*y), sym)?))
        }
        (V::Date(x), V::Stamp(y)) if op == Arith::Sub => {
            let x = checked(x.checked_mul(1_000_000), sym)?;
            return Ok(V::Int64(checked(x.checked_sub(*y), sym)?));
        }
        (V::Stamp(x), V::Date(y)) if op == Arith::Sub => {
            let y = checked(y.checked_mul(1_000_000), sym)?;
            return Ok(V::Int64(checked(x.checked_sub(y), sym)?));
        }
        (V::Date(x), n) if addsub && is_num(n) => {
            return Ok(V::Date(checked(x.checked_add(sign(n)?), sym)?))
        }
        (V::Stamp(x), n) if addsub && is_num(n) => {
            return Ok(V::Stamp(checked(x.checked_add(sign(n)?), sym)?))
        }
        (n, V::Date(x)) if op == Arith::Add && is_num(n) => {
            return Ok(V::Date(checked(x.checked_add(sign(n)?), sym)?))
        }
        (n, V::Stamp(x)) if op == Arith::Add && is_num(n) => {
            return Ok(V::Stamp(checked(x.checked_add(sign(n)?), sym)?))
        }
        _ => {}
    }
    match num_pair(a, b, sym, "compute with")? {
        NumPair::I(x, y) => int_op(op, x, y),
        NumPair::M(x, y) => {
            let scale = MONEY_SCALE as i128;
            let wide = |v: i128| i64::try_from(v).map_err(|_| EvalError::Overflow { op: sym });
            Ok(V::Money(match op {
                Arith::Add => checked(x.checked_add(y), sym)?,
                Arith::Sub => checked(x.checked_sub(y), sym)?,
                Arith::Mul => wide(x as i128 * y as i128 / scale)?,
                Arith::Div if y == 0 => return Ok(V::Null),
                Arith::Div => wide(x as i128 * scale / y as i128)?,
                Arith::Mod if y == 0 => return Ok(V::Null),
                Arith::Mod => checked(x.checked_rem(y), sym)?,
            }))
        }
        NumPair::D(x, y) => Ok(double_op(op, x, y)),
    }
}

#[inline(always)]
fn int_op(op: Arith, x: i64, y: i64) -> Result<Value, EvalError> {
    let sym = op.symbol();
    Ok(Value::Int64(match op {
        Arith::Add => checked(x.checked_add(y), sym)?,
        Arith::Sub => checked(x.checked_sub(y), sym)?,
        Arith::Mul => checked(x.checked_mul(y), sym)?,
        Arith::Div if y == 0 => return Ok(Value::Null),
        Arith::Div => checked(x.checked_div(y), sym)?,
        Arith::Mod if y == 0 => return Ok(Value::Null),
        Arith::Mod => checked(x.checked_rem(y), sym)?,
    }))
}

/// Unary minus.
pub(crate) fn neg(v: &Value) -> Result<Value, EvalError> {
    Ok(match v {
        Value::Null => Value::Null,
        Value::Int32(x) => Value::Int64(-(*x as i64)),
        Value::Int64(x) => Value::Int64(checked(x.checked_neg(), "-")?),
        Value::Money(x) => Value::Money(checked(x.checked_neg(), "-")?),
        Value::Double(x) => Value::Double(-x),
        v => {
            return Err(EvalError::Type(
                format!("cannot negate {}", type_name(v)).into(),
            ))
        }
    })
}

/// Orders two non-null values, or fails for values that cannot be compared.
fn order(a: &Value, b: &Value) -> Result<Option<Ordering>, EvalError> {
    use Value as V;
    let wide = |x: i64| x as i128 * 1_000_000;
    Ok(match (a, b) {
        (V::Int32(x), V::Int32(y)) => Some(x.cmp(y)),
        (V::String(x), V::String(y)) => Some(x.cmp(y)),
        (V::Date(x), V::Date(y)) | (V::Stamp(x), V::Stamp(y)) => Some(x.cmp(y)),
        (V::Date(x), V::Stamp(y)) => Some(wide(*x).cmp(&(*y as i128))),
        (V::Stamp(x), V::Date(y)) => Some((*x as i128).cmp(&wide(*y))),
        (V::Date(x) | V::Stamp(x), V::Int32(_) | V::Int64(_)) => {
            Some(x.cmp(&b.as_i64().unwrap_or(0)))
        }
        (V::Int32(_) | V::Int64(_), V::Date(y) | V::Stamp(y)) => {
            Some(a.as_i64().unwrap_or(0).cmp(y))
        }
        _ => match num_pair(a, b, "==", "compare")? {
            NumPair::I(x, y) | NumPair::M(x, y) => Some(x.cmp(&y)),
            NumPair::D(x, y) => x.partial_cmp(&y),
        },
    })
}

/// A comparison; false when either side is null.
#[inline]
pub(crate) fn compare(op: CmpOp, a: &Value, b: &Value) -> Result<bool, EvalError> {
    let o = match (a, b) {
        (Value::Int32(x), Value::Int32(y)) => Some(x.cmp(y)),
        (Value::Int64(x), Value::Int64(y)) => Some(x.cmp(y)),
        (Value::Int64(x), Value::Int32(y)) => Some(x.cmp(&(*y as i64))),
        (Value::Int32(x), Value::Int64(y)) => Some((*x as i64).cmp(y)),
        (Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
        (Value::Double(x), Value::Int32(y)) => x.partial_cmp(&(*y as f64)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Null, _) | (_, Value::Null) => return Ok(false),
        _ => order_slow(a, b)?,
    };
    let Some(o) = o else {
        return Ok(false);
    };
    Ok(match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    })
}

#[inline(never)]
fn order_slow(a: &Value, b: &Value) -> Result<Option<Ordering>, EvalError> {
    order(a, b).map_err(|e| match e {
        EvalError::Type(_) => {
            EvalError::Type(format!("cannot compare {} with {}", type_name(a), type_name(b)).into())
        }
        e => e,
    })
}

/// `min`/`max`: the promoted smaller or larger value; null when either is null.
pub(crate) fn min_max(a: &Value, b: &Value, max: bool) -> Result<Value, EvalError> {
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    let name = if max { "max" } else { "min" };
    let pick = |o: Ordering| if max { o.is_ge() } else { o.is_le() };
    Ok(
        match num_pair(a, b, name, "take the minimum or maximum of")? {
            NumPair::I(x, y) => Value::Int64(if pick(x.cmp(&y)) { x } else { y }),
            NumPair::M(x, y) => Value::Money(if pick(x.cmp(&y)) { x } else { y }),
            NumPair::D(x, y) => Value::Double(if max { x.max(y) } else { x.min(y) }),
        },
    )
}

/// Converts for an assignment, a declared return type or a return-type unification.
pub(crate) fn cast(c: CastTy, v: Value) -> Result<Value, EvalError> {
    match c {
        CastTy::Bool => Ok(if v.is_null() {
            Value::Null
        } else {
            bool_val(truthy(&v))
        }),
        CastTy::To(ft) => v.coerce(ft).ok_or_else(|| {
            EvalError::Convert(format!("cannot convert '{v}' ({}) to {ft}", type_name(&v)).into())
        }),
    }
}

/// The unary numeric functions that keep the kind of their argument (ints become int64).
pub(crate) fn num_unary(
    v: &Value,
    name: &'static str,
    i: impl Fn(i64) -> Option<i64>,
    m: impl Fn(i64) -> Option<i64>,
    d: impl Fn(f64) -> f64,
) -> Result<Value, EvalError> {
    Ok(match v {
        Value::Null => Value::Null,
        Value::Int32(_) | Value::Int64(_) => {
            Value::Int64(checked(i(v.as_i64().unwrap_or(0)), name)?)
        }
        Value::Money(x) => Value::Money(checked(m(*x), name)?),
        Value::Double(x) => finite(d(*x)),
        v => {
            return Err(EvalError::Type(
                format!("{name}() expects a number, got {}", type_name(v)).into(),
            ))
        }
    })
}

/// Rounds money (scaled) to `digits` decimals, half away from zero.
pub(crate) fn round_money(x: i64, digits: i64) -> Option<i64> {
    if digits >= 6 {
        return Some(x);
    }
    let unit = 10i64.checked_pow(u32::try_from(6i64.saturating_sub(digits)).ok()?)?;
    let r = (x.unsigned_abs() as u128 + unit as u128 / 2) / unit as u128 * unit as u128;
    let r = i64::try_from(r).ok()?;
    Some(if x < 0 { -r } else { r })
}

pub(crate) fn round_f64(x: f64, digits: i64) -> f64 {
    if digits == 0 {
        return x.round();
    }
    let m = 10f64.powi(digits.clamp(-300, 300) as i32);
    (x * m).round() / m
}

/// Whole-string match of `s` against `p`, where `*` matches any run of characters and `?`
/// exactly one character. Case-sensitive.
pub(crate) fn match_wild(s: &str, p: &str) -> bool {
    let (s, p) = (s.as_bytes(), p.as_bytes());
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    let char_len = |b: u8| match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            pi += 1;
            star = Some((pi, si));
        } else if pi < p.len() && p[pi] == b'?' {
            pi += 1;
            si += char_len(s[si]);
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            // Let the last star absorb one more character.
            let ns = ss + char_len(s[ss]);
            star = Some((sp, ns));
            pi = sp;
            si = ns;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len() && si == s.len()
}

/// 1-based character position of `sub` in `s` at or after character `start`; 0 when absent
/// (or when `sub` is empty).
pub(crate) fn instr(s: &str, sub: &str, start: i64) -> i64 {
    if sub.is_empty() {
        return 0;
    }
    let skip = (start.max(1) - 1) as usize;
    let byte_start = match s.char_indices().nth(skip) {
        Some((b, _)) => b,
        None => return 0,
    };
    match s[byte_start..].find(sub) {
        Some(b) => (skip + s[byte_start..byte_start + b].chars().count() + 1) as i64,
        None => 0,
    }
}

/// `substr(s, start[, len])`: 1-based; a start before 1 counts from 1; out of range gives "".
pub(crate) fn substr(s: &str, start: i64, len: Option<i64>) -> String {
    let skip = (start.max(1) - 1) as usize;
    let take = match len {
        Some(n) if n <= 0 => return String::new(),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => usize::MAX,
    };
    s.chars().skip(skip).take(take).collect()
}

pub(crate) fn left(s: &str, n: i64) -> String {
    s.chars().take(n.max(0) as usize).collect()
}

pub(crate) fn right(s: &str, n: i64) -> String {
    let count = s.chars().count();
    let n = (n.max(0) as usize).min(count);
    s.chars().skip(count - n).collect()
}

/// `int(x)`: strings may hold an integer or a decimal (truncated); failure gives null.
pub(crate) fn to_int(v: &Value) -> Value {
    match v {
        Value::String(s) => {
            let t = s.trim();
            match t.parse::<i64>() {
                Ok(i) => Value::Int64(i),
                Err(_) => t
                    .parse::<f64>()
                    .ok()
                    .filter(|d| d.is_finite() && d.abs() < 9.2e18)
                    .map_or(Value::Null, |d| Value::Int64(d as i64)),
            }
        }
        v => v.coerce(FieldType::Int64).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(match_wild("Apex", "Apex"));
        assert!(!match_wild("Apex", "apex"));
        assert!(!match_wild("Apexx", "Apex"));
        assert!(match_wild("Apex", "A*"));
        assert!(match_wild("Apex", "*x"));
        assert!(match_wild("Apex", "A?e?"));
        assert!(!match_wild("Apex", "A?e"));
        assert!(match_wild("", "*"));
        assert!(!match_wild("", "?"));
        assert!(match_wild("abcbcd", "a*bcd"));
        assert!(match_wild("héllo", "h?llo"));
        assert!(match_wild("héllo", "*é*"));
        assert!(match_wild("aaa", "a*a*a"));
        assert!(!match_wild("aa", "a*a*a"));
    }

    #[test]
    fn string_helpers() {
        assert_eq!(instr("hello", "l", 1), 3);
        assert_eq!(instr("hello", "z", 1), 0);
        assert_eq!(instr("hello", "l", 4), 4);
        assert_eq!(instr("héllo", "l", 1), 3);
        assert_eq!(instr("R", "R", 1), 1);
        assert_eq!(instr("abc", "", 1), 0);
        assert_eq!(substr("hello", 2, Some(3)), "ell");
        assert_eq!(substr("hello", 0, None), "hello");
        assert_eq!(substr("hello", 9, None), "");
        assert_eq!(left("hello", 2), "he");
        assert_eq!(right("hello", 2), "lo");
        assert_eq!(right("hello", 9), "hello");
        assert_eq!(round_money(1_500_000, 0), Some(2_000_000));
        assert_eq!(round_money(-1_500_000, 0), Some(-2_000_000));
        assert_eq!(round_money(1_234_567, 2), Some(1_230_000));
        assert_eq!(round_f64(1.23456, 2), 1.23);
        assert_eq!(round_f64(2.5, 0), 3.0);
    }
}
