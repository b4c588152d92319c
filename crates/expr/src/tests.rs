//! Unit tests of the language: every construct, the null and division rules, errors.

use super::*;

fn fields() -> Vec<(String, FieldType)> {
    [
        ("ID", FieldType::Int64),
        ("symbol", FieldType::String),
        ("quant", FieldType::Int32),
        ("price", FieldType::Double),
        ("cost", FieldType::Money),
        ("day", FieldType::Date),
        ("ts", FieldType::Stamp),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), *t))
    .collect()
}

fn row() -> Vec<Value> {
    vec![
        Value::Int64(7),
        Value::str("IBM"),
        Value::Int32(2000),
        Value::Double(1.5),
        Value::Money(2_500_000),
        Value::Date(86_400),
        Value::Stamp(1_000_000),
    ]
}

fn info() -> EventInfo {
    EventInfo {
        opcode: Opcode::Insert,
        flags: Flags::Normal,
        now_micros: 1_700_000_000_123_456,
    }
}

/// Compiles and evaluates `src` over `row()`.
fn ev(src: &str) -> Value {
    try_ev(src).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn try_ev(src: &str) -> Result<Value, String> {
    let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
    let id = p.compile(src).map_err(|e| e.to_string())?;
    let mut g = p.init_globals().unwrap();
    p.eval(id, &row(), info(), &mut g)
        .map_err(|e| e.to_string())
}

fn ty(src: &str) -> ExprType {
    let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
    let id = p.compile(src).unwrap();
    p.result_type(id)
}

fn compile_err(src: &str) -> ExprError {
    let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
    match p.compile(src) {
        Ok(_) => panic!("{src} compiled"),
        Err(e) => e,
    }
}

const T: Value = Value::Int32(1);
const F: Value = Value::Int32(0);

#[test]
fn literals_and_fields() {
    assert_eq!(ev("quant"), Value::Int32(2000));
    assert_eq!(ev("symbol"), Value::str("IBM"));
    assert_eq!(ev("42"), Value::Int32(42));
    assert_eq!(ev("5000000000"), Value::Int64(5_000_000_000));
    assert_eq!(ev("100.00"), Value::Double(100.0));
    assert_eq!(ev(".5"), Value::Double(0.5));
    assert_eq!(ev("1e3"), Value::Double(1000.0));
    assert_eq!(ev("\"Apex\""), Value::str("Apex"));
    assert_eq!(ev("'INSERT'"), Value::str("INSERT"));
    assert_eq!(ev("\"update's result\""), Value::str("update's result"));
    assert_eq!(ev("'say \"hi\"'"), Value::str("say \"hi\""));
    assert_eq!(ev(r#""a\"b""#), Value::str("a\"b"));
    assert_eq!(ev(r#""\d+""#), Value::str("\\d+"));
    assert_eq!(ev("true"), T);
    assert_eq!(ev("FALSE"), F);
    assert_eq!(ev("null"), Value::Null);
    assert_eq!(ev("-3"), Value::Int32(-3));
    assert_eq!(ev("-2147483648"), Value::Int32(i32::MIN));
    assert_eq!(ty("null"), ExprType::Value(FieldType::String));
}

#[test]
fn arithmetic_and_promotion() {
    assert_eq!(ev("quant + 1"), Value::Int64(2001));
    assert_eq!(ty("quant + 1"), ExprType::Value(FieldType::Int64));
    assert_eq!(ev("quant * price"), Value::Double(3000.0));
    assert_eq!(ty("quant * price"), ExprType::Value(FieldType::Double));
    assert_eq!(ev("7 / 2"), Value::Int64(3));
    assert_eq!(ev("-7 / 2"), Value::Int64(-3));
    assert_eq!(ev("7 % 3"), Value::Int64(1));
    assert_eq!(ev("-7 % 3"), Value::Int64(-1));
    assert_eq!(ev("7.0 / 2"), Value::Double(3.5));
    assert_eq!(ev("7.5 % 2"), Value::Double(1.5));
    assert_eq!(ev("1 + 2 * 3"), Value::Int64(7));
    assert_eq!(ev("(1 + 2) * 3"), Value::Int64(9));
    assert_eq!(ev("2 - 3 - 4"), Value::Int64(-5));
    assert_eq!(ev("- quant"), Value::Int64(-2000));
    assert_eq!(ev("-(1.5)"), Value::Double(-1.5));
    assert_eq!(ev("+4"), Value::Int32(4));
    // Money: int promotes to money, double wins over money.
    assert_eq!(ev("cost + 1"), Value::Money(3_500_000));
    assert_eq!(ty("cost * 2"), ExprType::Value(FieldType::Money));
    assert_eq!(ev("cost * 2"), Value::Money(5_000_000));
    assert_eq!(ev("cost * cost"), Value::Money(6_250_000));
    assert_eq!(ev("cost / 2"), Value::Money(1_250_000));
    assert_eq!(ev("cost / cost"), Value::Money(1_000_000));
    assert_eq!(ev("cost % 2"), Value::Money(500_000));
    assert_eq!(ev("-cost"), Value::Money(-2_500_000));
    assert_eq!(ev("cost + 0.5"), Value::Double(3.0));
    assert_eq!(ty("cost + 0.5"), ExprType::Value(FieldType::Double));
    assert_eq!(ev("ID + quant"), Value::Int64(2007));
    assert_eq!(ev("true + 1"), Value::Int64(2));
    assert_eq!(ev("10 - quant"), Value::Int64(-1990));
    assert_eq!(ev("quant - ID"), Value::Int64(1993));
    assert_eq!(ev("3 / price"), Value::Double(2.0));
    assert_eq!(ev("price * 2"), Value::Double(3.0));
    // Overflow is an error, not a wrap.
    assert!(try_ev("9223372036854775807 + 1")
        .unwrap_err()
        .contains("integer overflow in '+'"));
}

#[test]
fn division_by_zero_is_null() {
    assert_eq!(ev("quant / 0"), Value::Null);
    assert_eq!(ev("quant % 0"), Value::Null);
    assert_eq!(ev("price / 0"), Value::Null);
    assert_eq!(ev("price / 0.0"), Value::Null);
    assert_eq!(ev("cost / 0"), Value::Null);
    assert_eq!(ev("cost % 0"), Value::Null);
    assert_eq!(ev("quant / 0 + 1"), Value::Null);
}

#[test]
fn null_propagates_and_compares_false() {
    assert_eq!(ev("null + 1"), Value::Null);
    assert_eq!(ev("quant * null"), Value::Null);
    assert_eq!(ev("-null"), Value::Null);
    assert_eq!(ev("null > 1"), F);
    assert_eq!(ev("null < 1"), F);
    assert_eq!(ev("quant / 0 != 1"), F);
    assert_eq!(ev("quant / 0 == quant / 0"), F);
    assert_eq!(ev("quant / 0 == null"), T);
    assert_eq!(ev("null == quant / 0"), T);
    assert_eq!(ev("quant != null"), T);
    assert_eq!(ev("isnull(quant / 0)"), T);
    assert_eq!(ev("isnull(quant)"), F);
    assert_eq!(ev("not null"), T);
    assert_eq!(ev("null and 1"), F);
    assert_eq!(ev("null or 1"), T);
    assert_eq!(ev("upper(null)"), Value::Null);
    assert_eq!(ev("symbol + null"), Value::Null);
}

#[test]
fn comparisons() {
    assert_eq!(ev("quant > 1000"), T);
    assert_eq!(ty("quant > 1000"), ExprType::Bool);
    assert_eq!(ev("quant >= 2000"), T);
    assert_eq!(ev("quant < 2000"), F);
    assert_eq!(ev("quant <= 2000"), T);
    assert_eq!(ev("quant == 2000"), T);
    assert_eq!(ev("quant != 2000"), F);
    assert_eq!(ev("quant <> 2000"), F);
    assert_eq!(ev("price == 1.5"), T);
    assert_eq!(ev("quant > price"), T);
    assert_eq!(ev("cost == 2.5"), T);
    assert_eq!(ev("cost > 2"), T);
    assert_eq!(ev("symbol == \"IBM\""), T);
    assert_eq!(ev("symbol < 'JAVA'"), T);
    assert_eq!(ev("day == 86400"), T);
    assert_eq!(ev("ts > day"), F);
    assert_eq!(ev("ts < day"), T);
    // Constant on the left (the fused form flips the operator).
    assert_eq!(ev("1000 < quant"), T);
    assert_eq!(ev("3000 <= quant"), F);
    assert_eq!(ev("2000 >= quant"), T);
    assert_eq!(ev("ID < quant"), T);
    assert_eq!(ev("1.5 == price"), T);
}

#[test]
fn logic() {
    assert_eq!(ev("quant > 1 and price > 1"), T);
    assert_eq!(ev("quant > 1 and price > 2"), F);
    assert_eq!(ev("quant > 1 && price > 2"), F);
    assert_eq!(ev("quant > 9999 or price > 1"), T);
    assert_eq!(ev("quant > 9999 || price > 9"), F);
    assert_eq!(ev("not quant > 9999"), T);
    assert_eq!(ev("!(quant > 9999)"), T);
    assert_eq!(ev("not 0"), T);
    assert_eq!(ev("1 or 0 and 0"), T);
    assert_eq!(ev("(1 or 0) and 0"), F);
    // Short-circuit: the right side is not evaluated.
    assert_eq!(ev("0 and 9223372036854775807 + 1"), F);
    assert_eq!(ev("1 or 9223372036854775807 + 1"), T);
}

#[test]
fn string_concatenation() {
    assert_eq!(ev("symbol + \"-\" + quant"), Value::str("IBM-2000"));
    assert_eq!(ev("quant + symbol"), Value::str("2000IBM"));
    assert_eq!(ev("symbol & quant"), Value::str("IBM2000"));
    assert_eq!(ev("1 & 2"), Value::str("12"));
    assert_eq!(ty("symbol + 1"), ExprType::Value(FieldType::String));
    assert_eq!(ev("price + ''"), Value::str("1.5"));
    // Precedence: arithmetic before concatenation left to right.
    assert_eq!(ev("1 + 2 + symbol"), Value::str("3IBM"));
}

#[test]
fn dates_and_stamps() {
    assert_eq!(ev("day + 60"), Value::Date(86_460));
    assert_eq!(ev("60 + day"), Value::Date(86_460));
    assert_eq!(ev("day - 400"), Value::Date(86_000));
    assert_eq!(ev("day - day"), Value::Int64(0));
    assert_eq!(ev("ts - 1"), Value::Stamp(999_999));
    assert_eq!(ev("ts - day"), Value::Int64(1_000_000 - 86_400_000_000));
    assert_eq!(ev("Today()"), Value::Date(1_700_000_000));
    assert_eq!(ev("today() - day"), Value::Int64(1_700_000_000 - 86_400));
    assert_eq!(ev("Now()"), Value::Stamp(1_700_000_000_123_456));
    assert_eq!(ty("Today()"), ExprType::Value(FieldType::Date));
}

#[test]
fn opcode_and_flags() {
    let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
    let op = p.compile("ESP_OPCODE==\"I\"").unwrap();
    let opc = p.compile("ESP_OPCODE").unwrap();
    let fl = p
        .compile("if instr(ESP_FLAGS,\"R\") then return 0 else return 1")
        .unwrap();
    let mut g = p.init_globals().unwrap();
    let r = row();
    let at = |opcode, flags| EventInfo {
        opcode,
        flags,
        now_micros: 0,
    };
    assert!(p
        .eval_bool(op, &r, at(Opcode::Insert, Flags::Normal), &mut g)
        .unwrap());
    assert!(!p
        .eval_bool(op, &r, at(Opcode::Update, Flags::Normal), &mut g)
        .unwrap());
    for (o, l) in [
        (Opcode::Insert, "I"),
        (Opcode::Update, "U"),
        (Opcode::Delete, "D"),
        (Opcode::Upsert, "P"),
        (Opcode::SafeDelete, "S"),
    ] {
        assert_eq!(
            p.eval(opc, &r, at(o, Flags::Normal), &mut g).unwrap(),
            Value::str(l)
        );
    }
    assert!(p
        .eval_bool(fl, &r, at(Opcode::Insert, Flags::Normal), &mut g)
        .unwrap());
    assert!(p
        .eval_bool(fl, &r, at(Opcode::Insert, Flags::Partial), &mut g)
        .unwrap());
    assert!(!p
        .eval_bool(fl, &r, at(Opcode::Delete, Flags::Retention), &mut g)
        .unwrap());
    assert_eq!(p.result_type(fl), ExprType::Value(FieldType::Int32));
}

#[test]
fn string_functions() {
    assert_eq!(ev("match_string(symbol, \"IBM\")"), T);
    assert_eq!(ev("match_string(symbol, \"I*\")"), T);
    assert_eq!(ev("match_string(symbol, \"?BM\")"), T);
    assert_eq!(ev("match_string(symbol, \"ibm\")"), F);
    assert_eq!(ev("match_string(symbol, \"IB\")"), F);
    assert_eq!(ty("match_string(symbol, 'x')"), ExprType::Bool);
    assert_eq!(ev("instr(symbol, \"B\")"), Value::Int64(2));
    assert_eq!(ev("instr(symbol, \"Z\")"), Value::Int64(0));
    assert_eq!(ev("instr('abcabc', 'b', 3)"), Value::Int64(5));
    assert_eq!(ev("upper('abc')"), Value::str("ABC"));
    assert_eq!(ev("lower(symbol)"), Value::str("ibm"));
    assert_eq!(ev("substr('hello', 2, 3)"), Value::str("ell"));
    assert_eq!(ev("substring('hello', 2)"), Value::str("ello"));
    assert_eq!(ev("left('hello', 2)"), Value::str("he"));
    assert_eq!(ev("right('hello', 3)"), Value::str("llo"));
    assert_eq!(ev("length(symbol)"), Value::Int64(3));
    assert_eq!(ev("strlen('')"), Value::Int64(0));
    assert_eq!(ev("len('héllo')"), Value::Int64(5));
    assert_eq!(ev("trim('  a b ')"), Value::str("a b"));
    assert_eq!(ev("UPPER(symbol)"), Value::str("IBM"));
}

#[test]
fn number_functions() {
    assert_eq!(ev("abs(-3)"), Value::Int64(3));
    assert_eq!(ev("abs(-3.5)"), Value::Double(3.5));
    assert_eq!(ev("abs(-cost)"), Value::Money(2_500_000));
    assert_eq!(ev("min(quant, 5)"), Value::Int64(5));
    assert_eq!(ev("max(quant, 5)"), Value::Int64(2000));
    assert_eq!(ev("max(quant, 2500.5)"), Value::Double(2500.5));
    assert_eq!(ty("max(quant, 2500.5)"), ExprType::Value(FieldType::Double));
    assert_eq!(ev("min(quant, null)"), Value::Null);
    assert_eq!(ev("round(2.5)"), Value::Double(3.0));
    assert_eq!(ev("round(-2.5)"), Value::Double(-3.0));
    assert_eq!(ev("round(1.23456, 3)"), Value::Double(1.235));
    assert_eq!(ev("round(cost)"), Value::Money(3_000_000));
    assert_eq!(ev("round(7)"), Value::Int64(7));
    assert_eq!(ev("floor(1.7)"), Value::Double(1.0));
    assert_eq!(ev("floor(-1.2)"), Value::Double(-2.0));
    assert_eq!(ev("ceil(1.2)"), Value::Double(2.0));
    assert_eq!(ev("floor(cost)"), Value::Money(2_000_000));
    assert_eq!(ev("ceil(cost)"), Value::Money(3_000_000));
    assert_eq!(ev("sqrt(16)"), Value::Double(4.0));
    assert_eq!(ev("sqrt(-1)"), Value::Null);
    assert_eq!(ev("pow(2, 10)"), Value::Double(1024.0));
}

#[test]
fn conversions() {
    assert_eq!(ev("string(quant)"), Value::str("2000"));
    assert_eq!(ev("string(cost)"), Value::str("2.5"));
    assert_eq!(ev("int('42')"), Value::Int64(42));
    assert_eq!(ev("int(' 4.9 ')"), Value::Int64(4));
    assert_eq!(ev("int('abc')"), Value::Null);
    assert_eq!(ev("int(price)"), Value::Int64(1));
    assert_eq!(ev("double('2.25')"), Value::Double(2.25));
    assert_eq!(ev("double(quant)"), Value::Double(2000.0));
    assert_eq!(ev("double('x')"), Value::Null);
    assert_eq!(ty("int(price)"), ExprType::Value(FieldType::Int64));
}

#[test]
fn statements_without_separators() {
    assert_eq!(ev("integer x x = 5 return x * 2"), Value::Int64(10));
    assert_eq!(ev("integer x; x = 5; return x * 2;"), Value::Int64(10));
    assert_eq!(ev("integer x\nx = 5\nreturn x * 2"), Value::Int64(10));
    assert_eq!(ev("integer x = 3, y = 4 return x * y"), Value::Int64(12));
    assert_eq!(ev("real r r = quant return r"), Value::Double(2000.0));
    assert_eq!(ev("string s s = quant return s"), Value::str("2000"));
    assert_eq!(ev("string(10) s s = 'x' return s"), Value::str("x"));
    assert_eq!(ev("boolean b b = 5 return b"), T);
    assert_eq!(ev("date d d = 60 return d"), Value::Date(60));
    assert_eq!(ev("stamp t t = day return t"), Value::Stamp(86_400_000_000));
    assert_eq!(ev("money m m = 1.25 return m"), Value::Money(1_250_000));
    assert_eq!(ev("integer x x = 2.9 return x"), Value::Int64(2));
    // A trailing expression is the result.
    assert_eq!(ev("integer x x = 5; x + 1"), Value::Int64(6));
    // No return: null.
    assert_eq!(ev("integer x x = 5"), Value::Null);
    // Comments.
    assert_eq!(ev("// note\nquant /* inline */ + 1"), Value::Int64(2001));
    assert!(try_ev("integer x x = 'abc' return x")
        .unwrap_err()
        .contains("cannot convert 'abc' (string) to int64 for variable 'x'"));
}

#[test]
fn if_then_else() {
    assert_eq!(
        ev("if quant > 10 then return 1 else return 2"),
        Value::Int32(1)
    );
    assert_eq!(
        ev("if quant < 10 then return 1 else return 2"),
        Value::Int32(2)
    );
    assert_eq!(ev("if (quant < 10) return 1"), Value::Null);
    assert_eq!(ev("if (quant > 10) return 1"), Value::Int32(1));
    // A trailing `if` whose branches end in expressions yields them.
    assert_eq!(
        ev("if quant > 10 then 'big' else 'small'"),
        Value::str("big")
    );
    assert_eq!(
        ev("if quant < 10 then 'big' else 'small'"),
        Value::str("small")
    );
    assert_eq!(ev("if quant < 10 then 'big'"), Value::Null);
    assert_eq!(
        ev("if quant < 10 then return 1; else return 2;"),
        Value::Int32(2)
    );
    assert_eq!(
        ev("if quant < 10 then return 1 else if quant < 5000 then return 2 else return 3"),
        Value::Int32(2)
    );
    assert_eq!(
        ev("integer x if quant > 10 then begin x = 1 x = x + 1 end else x = 0 return x"),
        Value::Int64(2)
    );
    assert_eq!(
        ev("integer x if (quant > 10) { x = 1; x = x + 5 } return x"),
        Value::Int64(6)
    );
    // Mixed return types unify: int and double give double.
    assert_eq!(
        ty("if quant > 10 then return 1 else return 2.5"),
        ExprType::Value(FieldType::Double)
    );
    assert_eq!(
        ev("if quant > 10 then return 1 else return 2.5"),
        Value::Double(1.0)
    );
    assert_eq!(
        ty("if quant > 10 then return quant > 1 else return 0 == 1"),
        ExprType::Bool
    );
    assert_eq!(
        ty("if quant > 10 then return 'a'"),
        ExprType::Value(FieldType::String)
    );
}

#[test]
fn compile_errors_name_the_problem_and_position() {
    let e = compile_err("qunt > 1000");
    assert_eq!(
        e.to_string(),
        "unknown field 'qunt' (fields: ID, symbol, quant, price, cost, day, ts) at 1:1"
    );
    assert_eq!((e.line, e.column), (1, 1));
    let e = compile_err("(quant > 1000");
    assert_eq!(
        e.to_string(),
        "expected ')', found end of expression at 1:14"
    );
    let e = compile_err("foo(quant)");
    assert_eq!(e.to_string(), "unknown function 'foo' at 1:1");
    let e = compile_err("upper(symbol, 1)");
    assert_eq!(
        e.to_string(),
        "function 'upper' expects 1 argument, got 2 at 1:1"
    );
    let e = compile_err("instr(symbol)");
    assert!(e.message.contains("expects 2 or 3 arguments, got 1"), "{e}");
    let e = compile_err("symbol - 1");
    assert_eq!(
        e.to_string(),
        "cannot compute with string and int32 with '-' at 1:8"
    );
    let e = compile_err("symbol > 1");
    assert_eq!(e.to_string(), "cannot compare string with int32 at 1:8");
    let e = compile_err("upper(quant)");
    assert_eq!(
        e.to_string(),
        "function 'upper' expects a string as argument 1, got int32 at 1:7"
    );
    let e = compile_err("quant >");
    assert_eq!(e.to_string(), "unexpected end of expression at 1:8");
    let e = compile_err("quant 1000");
    assert!(e.message.contains("expected an operator"), "{e}");
    assert_eq!(e.column, 7);
    let e = compile_err("");
    assert_eq!(e.message, "empty expression");
    let e = compile_err("x = 1");
    assert!(e.message.contains("unknown variable 'x'"), "{e}");
    let e = compile_err("quant = 1");
    assert!(e.message.contains("cannot assign to field 'quant'"), "{e}");
    let e = compile_err("'abc");
    assert_eq!(e.to_string(), "unterminated string literal at 1:1");
    let e = compile_err("quant # 1");
    assert_eq!(e.to_string(), "unexpected character '#' at 1:7");
    let e = compile_err("integer x\n  return y");
    assert_eq!((e.line, e.column), (2, 10));
    let e = compile_err("integer x integer x");
    assert!(e.message.contains("declared twice"), "{e}");
    let e = compile_err("parameter(1)");
    assert!(e.message.contains("only be used inside a UDF"), "{e}");
    let e = compile_err("if quant > 1 then return 'a' else return 1");
    assert!(e.message.contains("returns int32"), "{e}");
    let e = compile_err("quant == 1 = 2");
    assert!(e.message.contains("use '=='"), "{e}");
    let e = compile_err("if quant > 1 then");
    assert!(e.message.contains("expected a statement"), "{e}");
    let e = compile_err("regex r r.compile('(')");
    assert!(e.message.contains("invalid regular expression"), "{e}");
    let e = compile_err("regex r r.find(symbol)");
    assert!(e.message.contains("unknown regex method 'find'"), "{e}");
    let e = compile_err("quant.compile('x')");
    assert!(
        e.message.contains("'quant' is not a regex variable")
            || e.message.contains("unknown variable"),
        "{e}"
    );
    let e = compile_err("then");
    assert!(e.message.contains("unexpected 'then'"), "{e}");
}

#[test]
fn regex_object() {
    assert_eq!(
        ev("regex r r.compile(\"^I.M$\") return r.findfirst(symbol)"),
        T
    );
    assert_eq!(
        ev("regex r r.compile('x') if r.findfirst(symbol) then return 1 else return 0"),
        Value::Int32(0)
    );
    assert_eq!(
        ev(r##"regex r r.compile("[0-9]+") return r.replace("a12b3", "#")"##),
        Value::str("a#b#")
    );
    // A pattern computed at run time works too.
    assert_eq!(
        ev("regex r r.compile(symbol + '$') return r.findfirst('xIBM')"),
        T
    );
    assert!(try_ev("regex r return r.findfirst(symbol)")
        .unwrap_err()
        .contains("regex 'r' used before compile()"));
    assert!(
        try_ev("regex r r.compile(symbol + '(') return r.findfirst('x')")
            .unwrap_err()
            .contains("invalid regular expression 'IBM('")
    );
}

#[test]
fn globals_and_udfs() {
    let udfs = vec![
        (
            "twice".to_string(),
            FieldType::Int32,
            "private integer p p = parameter(1) return 2*p".to_string(),
        ),
        (
            "bump".to_string(),
            FieldType::Int64,
            "total = total + parameter(1) return total".to_string(),
        ),
        (
            "quad".to_string(),
            FieldType::Int32,
            "return twice(twice(parameter(1)))".to_string(),
        ),
        (
            "echo".to_string(),
            FieldType::Double,
            "parameter(1)".to_string(),
        ),
        (
            "loop".to_string(),
            FieldType::Int32,
            "return loop()".to_string(),
        ),
        (
            "sym".to_string(),
            FieldType::String,
            "return lower(symbol)".to_string(),
        ),
    ];
    let env = EnvSpec {
        initializer: Some("integer total = 100; string tag; boolean on on = 1"),
        udfs: &udfs,
    };
    let mut p = Program::new(&fields(), &env).unwrap();
    assert_eq!(p.global_names().collect::<Vec<_>>(), ["total", "tag", "on"]);
    let mut g = p.init_globals().unwrap();
    assert_eq!(
        g.values,
        vec![Value::Int64(100), Value::Null, Value::Int32(1)]
    );
    let a = p.compile("twice(quant)").unwrap();
    let b = p.compile("bump(quant)").unwrap();
    let c = p.compile("quad(3)").unwrap();
    let d = p.compile("echo(quant)").unwrap();
    let e = p.compile("loop()").unwrap();
    let f = p.compile("sym()").unwrap();
    let h = p.compile("tag = symbol return tag + total").unwrap();
    assert_eq!(p.result_type(a), ExprType::Value(FieldType::Int32));
    let r = row();
    assert_eq!(p.eval(a, &r, info(), &mut g).unwrap(), Value::Int32(4000));
    assert_eq!(p.eval(b, &r, info(), &mut g).unwrap(), Value::Int64(2100));
    assert_eq!(p.eval(b, &r, info(), &mut g).unwrap(), Value::Int64(4100));
    assert_eq!(g.values[0], Value::Int64(4100));
    assert_eq!(p.eval(c, &r, info(), &mut g).unwrap(), Value::Int32(12));
    assert_eq!(
        p.eval(d, &r, info(), &mut g).unwrap(),
        Value::Double(2000.0)
    );
    assert!(matches!(
        p.eval(e, &r, info(), &mut g),
        Err(EvalError::Recursion(_))
    ));
    assert_eq!(p.eval(f, &r, info(), &mut g).unwrap(), Value::str("ibm"));
    assert_eq!(
        p.eval(h, &r, info(), &mut g).unwrap(),
        Value::str("IBM4100")
    );
    assert_eq!(g.values[1], Value::str("IBM"));
    // Arity is checked.
    let err = p.compile("twice()").unwrap_err();
    assert_eq!(err.message, "udf 'twice' expects 1 argument, got 0");
    // Wrong globals.
    let mut empty = Globals::default();
    assert!(matches!(
        p.eval(a, &r, info(), &mut empty),
        Err(EvalError::Globals {
            expected: 3,
            found: 0
        })
    ));
    assert!(matches!(
        p.eval(a, &r[..1], info(), &mut g),
        Err(EvalError::Row { index: 2, .. })
    ));
}

#[test]
fn env_errors_name_their_source() {
    let udfs = vec![(
        "f".to_string(),
        FieldType::Int32,
        "private integer p\n p = parameter(1) return p + nope".to_string(),
    )];
    let e = Program::new(
        &fields(),
        &EnvSpec {
            initializer: None,
            udfs: &udfs,
        },
    )
    .unwrap_err();
    assert!(
        e.message.starts_with("udf 'f': unknown field 'nope'"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (2, 30));
    let e = Program::new(
        &fields(),
        &EnvSpec {
            initializer: Some("integer c c = quant"),
            udfs: &[],
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "initializer: unknown variable 'quant' at 1:15"
    );
    let dup = vec![
        ("f".to_string(), FieldType::Int32, "1".to_string()),
        ("F".to_string(), FieldType::Int32, "2".to_string()),
    ];
    let e = Program::new(
        &fields(),
        &EnvSpec {
            initializer: None,
            udfs: &dup,
        },
    )
    .unwrap_err();
    assert!(e.message.contains("defined twice"), "{e}");
}

#[test]
fn truthiness_of_eval_bool() {
    let mut p = Program::new(&fields(), &EnvSpec::default()).unwrap();
    let mut g = p.init_globals().unwrap();
    let r = row();
    for (src, want) in [
        ("quant", true),
        ("quant - 2000", false),
        ("null", false),
        ("symbol", true),
        ("''", false),
        ("0.0", false),
        ("0.1", true),
        ("cost", true),
        ("quant / 0", false),
    ] {
        let id = p.compile(src).unwrap();
        assert_eq!(p.eval_bool(id, &r, info(), &mut g).unwrap(), want, "{src}");
    }
}

#[test]
fn program_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<Program>();
    check::<Globals>();
}

#[test]
fn init_globals_at_supplies_the_clock() {
    let env = EnvSpec {
        initializer: Some("date start; start = Today()"),
        udfs: &[],
    };
    let p = Program::new(&fields(), &env).unwrap();
    assert_eq!(p.init_globals().unwrap().values, vec![Value::Date(0)]);
    assert_eq!(
        p.init_globals_at(5_000_000).unwrap().values,
        vec![Value::Date(5)]
    );
}
