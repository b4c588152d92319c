//! Functional filters of the REST API (reference 4.1): `eq(field,'v')`, `ne`, `lt`, `le`, `gt`,
//! `ge`, `in(field,'a','b')` (or `in(field,'a|b')`), `match(field,'regex')`, combined with
//! `and(…)`, `or(…)`, `not(…)`. Literals are quoted strings or numbers; a comparison is numeric
//! when both sides read as numbers, else it compares text.
//!
//! Filters nest at most [`MAX_DEPTH`] levels: the parser and the evaluator recurse, so a
//! deeper filter is refused with the limit named rather than allowed to exhaust the stack.

use regex::Regex;
use sluice_event::Value;

/// A parsed filter.
#[derive(Clone, Debug)]
pub enum Filter {
    Cmp(CmpOp, String, String),
    In(String, Vec<String>),
    Match(String, Regex),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '\'' | '"' => {
                let q = c;
                let mut t = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated string in the filter".to_string()),
                        Some(&ch) if ch == q => {
                            if b.get(i + 1) == Some(&q) {
                                t.push(q);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&ch) => {
                            t.push(ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(t));
            }
            _ => {
                let mut t = String::new();
                while i < b.len() && !matches!(b[i], '(' | ')' | ',' | ' ' | '\t' | '\'' | '"') {
                    t.push(b[i]);
                    i += 1;
                }
                out.push(Tok::Ident(t));
            }
        }
    }
    Ok(out)
}

/// Deepest nesting of `and`, `or` and `not` a filter may have (docs/operations.md, Safety).
pub const MAX_DEPTH: usize = 64;

struct P {
    toks: Vec<Tok>,
    pos: usize,
    /// Functions open around the one being read.
    depth: usize,
}

impl P {
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {what}, found {}", show(other))),
        }
    }
    fn atom(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(s)) | Some(Tok::Str(s)) => Ok(s),
            other => Err(format!(
                "expected a field name or a value, found {}",
                show(other)
            )),
        }
    }
    fn args_atoms(&mut self) -> Result<Vec<String>, String> {
        let mut v = vec![self.atom()?];
        loop {
            match self.next() {
                Some(Tok::Comma) => v.push(self.atom()?),
                Some(Tok::Close) => return Ok(v),
                other => return Err(format!("expected ',' or ')', found {}", show(other))),
            }
        }
    }
    fn filter(&mut self) -> Result<Filter, String> {
        if self.depth >= MAX_DEPTH {
            return Err(format!(
                "the filter nests functions more than {MAX_DEPTH} levels deep (the limit): write it flatter"
            ));
        }
        self.depth += 1;
        let f = self.function();
        self.depth -= 1;
        f
    }

    fn function(&mut self) -> Result<Filter, String> {
        let name = match self.next() {
            Some(Tok::Ident(s)) => s,
            other => {
                return Err(format!(
                "expected a function (eq, ne, lt, le, gt, ge, in, match, and, or, not), found {}",
                show(other)
            ))
            }
        };
        self.expect(Tok::Open, "'('")?;
        let f = match name.as_str() {
            "and" | "or" | "not" => {
                let mut subs = vec![self.filter()?];
                loop {
                    match self.next() {
                        Some(Tok::Comma) => subs.push(self.filter()?),
                        Some(Tok::Close) => break,
                        other => return Err(format!("expected ',' or ')', found {}", show(other))),
                    }
                }
                match name.as_str() {
                    "and" => Filter::And(subs),
                    "or" => Filter::Or(subs),
                    _ => {
                        if subs.len() != 1 {
                            return Err("not(…) takes one filter".into());
                        }
                        Filter::Not(Box::new(subs.remove(0)))
                    }
                }
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                let a = self.args_atoms()?;
                if a.len() != 2 {
                    return Err(format!("{name}(field, value) takes two arguments"));
                }
                let op = match name.as_str() {
                    "eq" => CmpOp::Eq,
                    "ne" => CmpOp::Ne,
                    "lt" => CmpOp::Lt,
                    "le" => CmpOp::Le,
                    "gt" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                Filter::Cmp(op, a[0].clone(), a[1].clone())
            }
            "in" => {
                let a = self.args_atoms()?;
                if a.len() < 2 {
                    return Err("in(field, value, ...) takes a field and at least one value".into());
                }
                let vals = a[1..]
                    .iter()
                    .flat_map(|v| v.split('|').map(str::to_string))
                    .collect();
                Filter::In(a[0].clone(), vals)
            }
            "match" => {
                let a = self.args_atoms()?;
                if a.len() != 2 {
                    return Err("match(field, 'regex') takes two arguments".into());
                }
                let re = Regex::new(&a[1]).map_err(|e| format!("bad regular expression '{}': {e}", a[1]))?;
                Filter::Match(a[0].clone(), re)
            }
            other => {
                return Err(format!(
                    "unknown filter function '{other}' (supported: eq, ne, lt, le, gt, ge, in, match, and, or, not)"
                ))
            }
        };
        Ok(f)
    }
}

fn show(t: Option<Tok>) -> String {
    match t {
        None => "the end".into(),
        Some(Tok::Ident(s)) => format!("'{s}'"),
        Some(Tok::Str(s)) => format!("'{s}'"),
        Some(Tok::Open) => "'('".into(),
        Some(Tok::Close) => "')'".into(),
        Some(Tok::Comma) => "','".into(),
    }
}

impl Filter {
    /// Parses a filter; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Filter, String> {
        let mut p = P {
            toks: lex(s)?,
            pos: 0,
            depth: 0,
        };
        let f = p.filter()?;
        if p.pos < p.toks.len() {
            return Err(format!(
                "unexpected {} after the end of the filter",
                show(p.toks.get(p.pos).cloned())
            ));
        }
        Ok(f)
    }

    /// The field names the filter reads.
    pub fn fields(&self, out: &mut Vec<String>) {
        match self {
            Filter::Cmp(_, f, _) | Filter::In(f, _) | Filter::Match(f, _) => out.push(f.clone()),
            Filter::And(v) | Filter::Or(v) => v.iter().for_each(|f| f.fields(out)),
            Filter::Not(f) => f.fields(out),
        }
    }

    /// Evaluates against a record; `get` gives a field's value (None: unknown or null).
    pub fn eval(&self, get: &dyn Fn(&str) -> Option<Value>) -> bool {
        match self {
            Filter::Cmp(op, f, lit) => {
                let Some(v) = get(f) else { return false };
                let ord = compare(&v, lit);
                match op {
                    CmpOp::Eq => ord == Some(std::cmp::Ordering::Equal),
                    CmpOp::Ne => ord != Some(std::cmp::Ordering::Equal),
                    CmpOp::Lt => ord == Some(std::cmp::Ordering::Less),
                    CmpOp::Le => matches!(ord, Some(o) if o.is_le()),
                    CmpOp::Gt => ord == Some(std::cmp::Ordering::Greater),
                    CmpOp::Ge => matches!(ord, Some(o) if o.is_ge()),
                }
            }
            Filter::In(f, vals) => {
                let Some(v) = get(f) else { return false };
                vals.iter()
                    .any(|l| compare(&v, l) == Some(std::cmp::Ordering::Equal))
            }
            Filter::Match(f, re) => get(f).is_some_and(|v| re.is_match(&text(&v))),
            Filter::And(v) => v.iter().all(|f| f.eval(get)),
            Filter::Or(v) => v.iter().any(|f| f.eval(get)),
            Filter::Not(f) => !f.eval(get),
        }
    }
}

fn text(v: &Value) -> String {
    v.to_string()
}

fn compare(v: &Value, lit: &str) -> Option<std::cmp::Ordering> {
    if v.is_null() {
        return None;
    }
    if !matches!(v, Value::String(_)) {
        if let (Some(a), Ok(b)) = (v.as_f64(), lit.trim().parse::<f64>()) {
            return a.partial_cmp(&b);
        }
    }
    Some(text(v).as_str().cmp(lit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> Option<Value> {
        match name {
            "symbol" => Some(Value::str("IBM")),
            "price" => Some(Value::Double(10.5)),
            "qty" => Some(Value::Int32(7)),
            _ => None,
        }
    }

    #[test]
    fn functional_filters_evaluate() {
        let t = |s: &str| Filter::parse(s).unwrap().eval(&rec);
        assert!(t("eq(symbol,'IBM')"));
        assert!(!t("eq(symbol,'MSFT')"));
        assert!(t("gt(price, 10)"));
        assert!(t("and(ge(qty,7), in(symbol,'SAP|IBM'))"));
        assert!(t("match(symbol,'^I.M$')"));
        assert!(t("not(lt(qty,'7'))"));
        assert!(!t("eq(missing,'x')"));
    }

    #[test]
    fn bad_filters_say_why() {
        assert!(Filter::parse("eq(symbol").unwrap_err().contains("expected"));
        assert!(Filter::parse("foo(a,b)")
            .unwrap_err()
            .contains("unknown filter function"));
        assert!(Filter::parse("match(a,'(')")
            .unwrap_err()
            .contains("regular expression"));
    }

    #[test]
    fn nesting_is_limited() {
        let nest = |n: usize| format!("{}eq(qty,7){}", "not(".repeat(n), ")".repeat(n));
        assert!(Filter::parse(&nest(MAX_DEPTH - 1)).is_ok());
        let e = Filter::parse(&nest(5000)).unwrap_err();
        assert!(e.contains("more than 64 levels"), "{e}");
        let e = Filter::parse(&format!("{}eq(qty,7)", "and(".repeat(MAX_DEPTH))).unwrap_err();
        assert!(e.contains("64 levels"), "{e}");
    }
}
