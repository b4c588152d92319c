//! Hostile expressions: deeply nested input gets an error naming the limit, never a stack
//! overflow. Everything runs on a thread with the 2 MiB stack of a server thread, so a test that
//! passes proves the parse, the type check, the evaluation and the drop of the trees fit in it.

use sluice_expr::{
    EnvSpec, EvalError, EventInfo, FieldType, Flags, Opcode, Program, Value, MAX_EVAL_LEVELS,
    MAX_NESTING,
};

/// Runs `f` on a thread with a 2 MiB stack (what tokio and server threads get).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the expression thread died")
}

fn info() -> EventInfo {
    EventInfo {
        opcode: Opcode::Insert,
        flags: Flags::Normal,
        now_micros: 0,
    }
}

fn fields() -> Vec<(String, FieldType)> {
    vec![
        ("a".to_string(), FieldType::Int64),
        ("s".to_string(), FieldType::String),
    ]
}

/// Compiles `src` as a filter expression and evaluates it on `a = 1, s = "x"`.
fn run(src: String) -> Result<Value, String> {
    on_small_stack(move || {
        let mut p = Program::new(&fields(), &EnvSpec::default()).map_err(|e| e.to_string())?;
        let id = p.compile(&src).map_err(|e| e.to_string())?;
        let mut g = p.init_globals().map_err(|e| e.to_string())?;
        p.eval(id, &[Value::Int64(1), Value::str("x")], info(), &mut g)
            .map_err(|e| e.to_string())
    })
}

fn assert_too_deep(what: &str, src: String) {
    let e = run(src).expect_err(what);
    assert!(
        e.contains(&format!("nests more than {MAX_NESTING} levels deep")),
        "{what}: {e}"
    );
}

#[test]
fn deep_nesting_is_refused_naming_the_limit() {
    let d = 1_000;
    assert_too_deep(
        "parentheses",
        format!("{}a{}", "(".repeat(d), ")".repeat(d)),
    );
    assert_too_deep("calls", format!("{}a{}", "abs(".repeat(d), ")".repeat(d)));
    assert_too_deep("not", "not ".repeat(100_000) + "a");
    assert_too_deep("unary minus", "-".repeat(100_000) + "a");
    assert_too_deep("unary minus on a literal", "-".repeat(100_000) + "1");
    assert_too_deep("unary plus", "+".repeat(100_000) + "1");
    assert_too_deep("additions", "1".to_string() + &"+1".repeat(100_000));
    assert_too_deep("subtractions", "a".to_string() + &"-a".repeat(100_000));
    assert_too_deep("products", "a".to_string() + &"*a".repeat(100_000));
    assert_too_deep(
        "right-nested additions",
        format!("{}a{}", "a+(".repeat(d), ")".repeat(d)),
    );
    assert_too_deep("nested ifs", "if a then ".repeat(10_000) + "return 1");
    assert_too_deep(
        "nested blocks",
        format!("{}return 1{}", "{".repeat(d), "}".repeat(d)),
    );
    assert_too_deep(
        "nested begin",
        format!("{}return 1{}", "begin ".repeat(d), " end".repeat(d)),
    );
    // The error says where: the position of the token that goes too deep (the statement and
    // the expression itself count as two levels).
    let e = run(format!("{}a{}", "(".repeat(d), ")".repeat(d))).unwrap_err();
    assert!(e.ends_with(&format!("at 1:{MAX_NESTING}")), "{e}");
}

#[test]
fn nesting_within_the_limit_compiles_and_evaluates() {
    let n = MAX_NESTING as usize - 3;
    assert_eq!(
        run(format!("{}a{}", "(".repeat(n), ")".repeat(n))).unwrap(),
        Value::Int64(1)
    );
    // A chain of additions: one level per operator.
    let chain = "a".to_string() + &"+a".repeat(MAX_NESTING as usize - 1);
    assert_eq!(run(chain).unwrap(), Value::Int64(MAX_NESTING as i64));
    let chain = "a".to_string() + &"+a".repeat(MAX_NESTING as usize);
    assert!(run(chain).unwrap_err().contains("nests more than"));
    let parens = format!("{}a{}", "(-".repeat(n / 2), ")".repeat(n / 2));
    assert!(run(parens).is_ok());
    // Long chains of `or`, `and` and `&` (lists of alternatives, strings built from many
    // fields) are grouped as balanced trees: 100,000 terms nest 17 levels.
    let ors = "a == 0".to_string() + &" or a == 0".repeat(99_999) + " or a == 1";
    assert_eq!(run(ors).unwrap(), Value::Int32(1));
    let ands = "a == 1".to_string() + &" and a == 1".repeat(99_999);
    assert_eq!(run(ands).unwrap(), Value::Int32(1));
    let cat = "a + 1 & s".to_string() + &" & s".repeat(9_999);
    assert_eq!(
        run(cat).unwrap(),
        Value::str(&format!("2{}", "x".repeat(10_000)))
    );
}

#[test]
fn udfs_calling_udfs_stop_at_the_evaluation_bound() {
    let out = on_small_stack(|| {
        // Each UDF nests almost to the limit and calls the next: the bound on the sum is what
        // stops the evaluation, before the stack runs out.
        let n = MAX_NESTING as usize - 4;
        let body = |next: &str| format!("{}{next}{}", "(1+".repeat(n), ")".repeat(n));
        let udfs: Vec<(String, FieldType, String)> = (0..8)
            .map(|i| {
                let next = if i < 7 {
                    format!("f{}()", i + 1)
                } else {
                    "1".into()
                };
                (format!("f{i}"), FieldType::Int64, body(&next))
            })
            .collect();
        let env = EnvSpec {
            initializer: None,
            udfs: &udfs,
        };
        let mut p = Program::new(&fields(), &env).unwrap();
        let deep = p.compile(&body("f0()")).unwrap();
        let shallow = p.compile("f7()").unwrap();
        let mut g = p.init_globals().unwrap();
        let row = [Value::Int64(1), Value::str("x")];
        (
            p.eval(deep, &row, info(), &mut g),
            p.eval(shallow, &row, info(), &mut g),
        )
    });
    match out.0 {
        Err(e @ EvalError::Recursion(_)) => {
            assert!(
                e.to_string()
                    .contains(&format!("more than {MAX_EVAL_LEVELS} levels")),
                "{e}"
            )
        }
        other => panic!("expected the nesting bound, got {other:?}"),
    }
    assert_eq!(out.1.unwrap(), Value::Int64(MAX_NESTING as i64 - 3));
}
