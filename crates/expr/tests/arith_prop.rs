//! Random integer arithmetic agrees with a direct Rust evaluation: i64 checked arithmetic,
//! truncating division, null for division or modulo by zero, null propagation, comparisons
//! false against null.

use proptest::prelude::*;
use sluice_expr::{EnvSpec, EventInfo, FieldType, Flags, Opcode, Program, Value};

#[derive(Clone, Debug)]
enum E {
    Lit(i32),
    Field(usize),
    Neg(Box<E>),
    Bin(char, Box<E>, Box<E>),
}

/// `Ok(None)` is null; `Err(())` is an overflow.
type R = Result<Option<i64>, ()>;

fn eval(e: &E, row: &[i32]) -> R {
    Ok(match e {
        E::Lit(v) => Some(*v as i64),
        E::Field(i) => Some(row[*i] as i64),
        E::Neg(a) => match eval(a, row)? {
            None => None,
            Some(x) => Some(x.checked_neg().ok_or(())?),
        },
        E::Bin(op, a, b) => {
            let x = eval(a, row)?;
            let y = eval(b, row)?;
            let (Some(x), Some(y)) = (x, y) else {
                return Ok(None);
            };
            match op {
                '+' => Some(x.checked_add(y).ok_or(())?),
                '-' => Some(x.checked_sub(y).ok_or(())?),
                '*' => Some(x.checked_mul(y).ok_or(())?),
                '/' if y == 0 => None,
                '/' => Some(x.checked_div(y).ok_or(())?),
                '%' if y == 0 => None,
                '%' => Some(x.checked_rem(y).ok_or(())?),
                _ => unreachable!(),
            }
        }
    })
}

fn render(e: &E) -> String {
    match e {
        E::Lit(v) if *v < 0 => format!("({v})"),
        E::Lit(v) => v.to_string(),
        E::Field(i) => ["a", "b", "c"][*i].to_string(),
        E::Neg(a) => format!("-({})", render(a)),
        E::Bin(op, a, b) => format!("({} {op} {})", render(a), render(b)),
    }
}

fn expr() -> impl Strategy<Value = E> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(E::Lit),
        (-5i32..5).prop_map(E::Lit),
        (0usize..3).prop_map(E::Field),
    ];
    leaf.prop_recursive(5, 40, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| E::Neg(Box::new(a))),
            (
                prop_oneof![Just('+'), Just('-'), Just('*'), Just('/'), Just('%')],
                inner.clone(),
                inner
            )
                .prop_map(|(op, a, b)| E::Bin(op, Box::new(a), Box::new(b))),
        ]
    })
}

fn fields() -> Vec<(String, FieldType)> {
    ["a", "b", "c"]
        .iter()
        .map(|n| (n.to_string(), FieldType::Int32))
        .collect()
}

const EV: EventInfo = EventInfo {
    opcode: Opcode::Insert,
    flags: Flags::Normal,
    now_micros: 0,
};

proptest! {
    #[test]
    fn int_arithmetic_matches_rust(e in expr(), row in proptest::array::uniform3(any::<i32>())) {
        let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
        let src = render(&e);
        let id = p.compile(&src).unwrap();
        let mut g = p.init_globals().unwrap();
        let vals: Vec<Value> = row.iter().map(|v| Value::Int32(*v)).collect();
        let got = p.eval(id, &vals, EV, &mut g);
        match eval(&e, &row) {
            Ok(Some(v)) => {
                let got = got.unwrap();
                // Literals and fields stay int32; arithmetic computes in int64.
                prop_assert_eq!(got.as_i64(), Some(v), "{}", src);
            }
            Ok(None) => prop_assert_eq!(got.unwrap(), Value::Null, "{}", src),
            Err(()) => prop_assert!(got.is_err(), "{} gave {:?}", src, got),
        }
    }

    #[test]
    fn comparisons_match_rust(e1 in expr(), e2 in expr(), row in proptest::array::uniform3(-3i32..3)) {
        let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
        let vals: Vec<Value> = row.iter().map(|v| Value::Int32(*v)).collect();
        let (x, y) = (eval(&e1, &row), eval(&e2, &row));
        for (op, f) in [
            ("<", i64::lt as fn(&i64, &i64) -> bool),
            ("<=", i64::le),
            (">", i64::gt),
            (">=", i64::ge),
            ("==", i64::eq),
            ("!=", i64::ne),
        ] {
            let src = format!("{} {op} {}", render(&e1), render(&e2));
            let id = p.compile(&src).unwrap();
            let mut g = p.init_globals().unwrap();
            let got = p.eval_bool(id, &vals, EV, &mut g);
            match (&x, &y) {
                (Err(()), _) | (Ok(_), Err(())) => prop_assert!(got.is_err()),
                (Ok(Some(a)), Ok(Some(b))) => prop_assert_eq!(got.unwrap(), f(a, b), "{}", src),
                _ => prop_assert!(!got.unwrap(), "{}", src),
            }
        }
    }
}

fn token() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "a",
        "b",
        "c",
        "x",
        "r",
        "1",
        "0",
        "2.5",
        "-",
        "+",
        "*",
        "/",
        "%",
        "(",
        ")",
        "==",
        "!=",
        "<",
        ">=",
        "and",
        "or",
        "not",
        "if",
        "then",
        "else",
        "return",
        "integer",
        "regex",
        "private",
        "=",
        ";",
        ",",
        "\"s\"",
        "'t'",
        "null",
        "true",
        "upper",
        "instr",
        "match_string",
        "substr",
        "round",
        "r.compile",
        "r.findfirst",
        "ESP_OPCODE",
        "&",
        "begin",
        "end",
        "{",
        "}",
        "parameter",
        "Today()",
        "\n",
    ])
}

proptest! {
    /// Arbitrary token soup never panics: it compiles or gives an error with a position, and
    /// whatever compiles evaluates to a value or an error.
    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(token(), 0..14), row in proptest::array::uniform3(any::<i32>())) {
        let src = toks.join(" ");
        let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
        match p.compile(&src) {
            Ok(id) => {
                let mut g = p.init_globals().unwrap();
                let vals: Vec<Value> = row.iter().map(|v| Value::Int32(*v)).collect();
                let _ = p.eval(id, &vals, EV, &mut g);
            }
            Err(e) => prop_assert!(e.line >= 1 && e.column >= 1, "{}", e),
        }
    }
}

proptest! {
    /// Arbitrary text never panics the lexer or the parser.
    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,40}") {
        let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
        if let Err(e) = p.compile(&src) {
            prop_assert!(e.line >= 1 && e.column >= 1, "{}", e);
        }
    }
}
