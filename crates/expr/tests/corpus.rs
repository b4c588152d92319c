//! The expressions of the esppy corpus models (`corpus/esppy/*.xml`), copied
//! verbatim (CDATA whitespace included), compiled once and evaluated over rows of the
//! models' data files.

use sluice_expr::{
    EnvSpec, EventInfo, ExprType, FieldType, Flags, Globals, Opcode, Program, Value,
};

fn fields(spec: &[(&str, FieldType)]) -> Vec<(String, FieldType)> {
    spec.iter().map(|(n, t)| (n.to_string(), *t)).collect()
}

fn udfs(spec: &[(&str, FieldType, &str)]) -> Vec<(String, FieldType, String)> {
    spec.iter()
        .map(|(n, t, c)| (n.to_string(), *t, c.to_string()))
        .collect()
}

fn ins() -> EventInfo {
    EventInfo {
        opcode: Opcode::Insert,
        flags: Flags::Normal,
        now_micros: 0,
    }
}

/// name:string, ID:int32 (key), city:string — the compute models' source schema.
fn people() -> Vec<(String, FieldType)> {
    fields(&[
        ("name", FieldType::String),
        ("ID", FieldType::Int32),
        ("city", FieldType::String),
    ])
}

fn person(name: &str, id: i32, city: &str) -> Vec<Value> {
    vec![Value::str(name), Value::Int32(id), Value::str(city)]
}

#[test]
fn compute_exp_model_match_string() {
    let mut p = Program::new(&people(), &EnvSpec::default()).unwrap();
    let name = p.compile("name").unwrap();
    let city = p.compile("city").unwrap();
    let m = p.compile(r#"match_string(city, "Apex")"#).unwrap();
    assert_eq!(p.result_type(m), ExprType::Bool);
    let mut g = p.init_globals().unwrap();
    let rows = [
        (person("Jerry", 1111, "Apex"), 1),
        (person("Scott", 1112, "Apex"), 1),
        (person("someone", 1113, "Raleigh"), 0),
    ];
    for (row, want) in rows {
        assert_eq!(p.eval(name, &row, ins(), &mut g).unwrap(), row[0]);
        assert_eq!(p.eval(city, &row, ins(), &mut g).unwrap(), row[2]);
        assert_eq!(p.eval(m, &row, ins(), &mut g).unwrap(), Value::Int32(want));
    }
}

#[test]
fn compute_exp_udf_model() {
    let u = udfs(&[
        (
            "func1",
            FieldType::Int32,
            "private integer p\n                      p = parameter(1);\n                      return (p+3) * 2;",
        ),
        (
            "func2",
            FieldType::Int32,
            "private integer p\n                      p = parameter(1);\n                      return (p+5) * 3;",
        ),
    ]);
    let mut p = Program::new(
        &people(),
        &EnvSpec {
            initializer: None,
            udfs: &u,
        },
    )
    .unwrap();
    let f1 = p.compile("func1(ID)").unwrap();
    let f2 = p.compile("func2(ID)").unwrap();
    assert_eq!(p.result_type(f1), ExprType::Value(FieldType::Int32));
    let mut g = p.init_globals().unwrap();
    for (id, a, b) in [(1111, 2228, 3348), (1112, 2230, 3351), (1113, 2232, 3354)] {
        let row = person("x", id, "Cary");
        assert_eq!(p.eval(f1, &row, ins(), &mut g).unwrap(), Value::Int32(a));
        assert_eq!(p.eval(f2, &row, ins(), &mut g).unwrap(), Value::Int32(b));
    }
}

#[test]
fn compute_field_expression_counter() {
    let p0 = EnvSpec {
        initializer: Some("integer counter counter=0"),
        udfs: &[],
    };
    let mut p = Program::new(&people(), &p0).unwrap();
    let c = p.compile("counter=counter+1 return counter").unwrap();
    let mut g = p.init_globals().unwrap();
    assert_eq!(g.values, vec![Value::Int64(0)]);
    let row = person("Jerry", 1111, "Apex");
    let got: Vec<Value> = (0..3)
        .map(|_| p.eval(c, &row, ins(), &mut g).unwrap())
        .collect();
    assert_eq!(got, [1, 2, 3].map(Value::Int64));
    // The engine coerces into the output field type (string in this model).
    assert_eq!(got[0].coerce(FieldType::String), Some(Value::str("1")));
    // Globals are a plain snapshot: restoring them resumes the count.
    let saved = g.clone();
    assert_eq!(p.eval(c, &row, ins(), &mut g).unwrap(), Value::Int64(4));
    let mut restored = Globals {
        values: saved.values,
    };
    assert_eq!(
        p.eval(c, &row, ins(), &mut restored).unwrap(),
        Value::Int64(4)
    );
}

#[test]
fn compute_udf_model() {
    let u = udfs(&[
        (
            "myFunction1",
            FieldType::Int32,
            "private integer p\n                            p = parameter(1);\n                            return 2*p",
        ),
        (
            "myFunction2",
            FieldType::Double,
            "private integer p2\n                        p2 = parameter(1);\n                        return 3.0*p2",
        ),
    ]);
    let env = EnvSpec {
        initializer: Some(
            "\n         integer counter;\n                        counter=0;\n        ",
        ),
        udfs: &u,
    };
    let mut p = Program::new(&people(), &env).unwrap();
    let exprs: Vec<_> = [
        "name",
        "city",
        "counter=counter+1 return counter",
        "myFunction1(counter)",
        "myFunction2(counter)",
    ]
    .iter()
    .map(|s| p.compile(s).unwrap())
    .collect();
    assert_eq!(p.result_type(exprs[4]), ExprType::Value(FieldType::Double));
    let mut g = p.init_globals().unwrap();
    for (i, row) in [
        person("Jerry", 1111, "Apex"),
        person("Scott", 1112, "Cary"),
        person("someone", 1113, "Raleigh"),
    ]
    .iter()
    .enumerate()
    {
        let n = i as i64 + 1;
        let out: Vec<Value> = exprs
            .iter()
            .map(|id| p.eval(*id, row, ins(), &mut g).unwrap())
            .collect();
        assert_eq!(
            out,
            vec![
                row[0].clone(),
                row[2].clone(),
                Value::Int64(n),
                Value::Int32(2 * n as i32),
                Value::Double(3.0 * n as f64)
            ]
        );
    }
}

#[test]
fn splitter_expressions() {
    let f = fields(&[
        ("ID", FieldType::Int32),
        ("symbol", FieldType::String),
        ("price", FieldType::Double),
    ]);
    // copy_with_slots_model.xml, splitter_model.xml: <expression>ID%2</expression>
    let mut p = Program::new(&f, &EnvSpec::default()).unwrap();
    let s = p.compile("ID%2").unwrap();
    let mut g = p.init_globals().unwrap();
    for id in 1..=4 {
        let row = vec![Value::Int32(id), Value::str("ibm"), Value::Double(1.0)];
        assert_eq!(
            p.eval(s, &row, ins(), &mut g).unwrap(),
            Value::Int64(i64::from(id % 2))
        );
    }
    // splitter_udf_model.xml
    let u = udfs(&[(
        "udf1",
        FieldType::Int32,
        "private integer p\n                        p = parameter(1);\n                        return p%2",
    )]);
    let mut p = Program::new(
        &f,
        &EnvSpec {
            initializer: None,
            udfs: &u,
        },
    )
    .unwrap();
    let s = p.compile("udf1(ID)").unwrap();
    let mut g = p.init_globals().unwrap();
    let row = vec![Value::Int32(7), Value::str("ibm"), Value::Double(1.0)];
    assert_eq!(p.eval(s, &row, ins(), &mut g).unwrap(), Value::Int32(1));
    // A UDF reading a field directly (reference 1.8).
    let u = udfs(&[("udf1", FieldType::Int32, "return ID%2")]);
    let mut p = Program::new(
        &f,
        &EnvSpec {
            initializer: None,
            udfs: &u,
        },
    )
    .unwrap();
    let s = p.compile("udf1()").unwrap();
    let mut g = p.init_globals().unwrap();
    assert_eq!(p.eval(s, &row, ins(), &mut g).unwrap(), Value::Int32(1));
    // A boolean splitter yields 0/1 (reference 1.8).
    let b = p
        .compile(r#"udf1() and match_string(symbol, "i*") and (price > 0.5)"#)
        .unwrap();
    assert_eq!(p.eval(b, &row, ins(), &mut g).unwrap(), Value::Int32(1));
}

#[test]
fn slot_exp_model_counter_with_trailing_blank() {
    let f = fields(&[
        ("ID", FieldType::Int32),
        ("symbol", FieldType::String),
        ("price", FieldType::Double),
    ]);
    let env = EnvSpec {
        initializer: Some("integer counter \n                    counter=0"),
        udfs: &[],
    };
    let mut p = Program::new(&f, &env).unwrap();
    let c = p.compile("counter=counter+1 return counter").unwrap();
    let mut g = p.init_globals().unwrap();
    let row = vec![Value::Int32(1), Value::str("a"), Value::Double(1.0)];
    p.eval(c, &row, ins(), &mut g).unwrap();
    assert_eq!(p.eval(c, &row, ins(), &mut g).unwrap(), Value::Int64(2));
}

/// ID:int64, symbol, quant:int32, price:money (filter_exp_model.xml).
#[test]
fn filter_exp_model() {
    let f = fields(&[
        ("ID", FieldType::Int64),
        ("symbol", FieldType::String),
        ("quant", FieldType::Int32),
        ("price", FieldType::Money),
    ]);
    let mut p = Program::new(&f, &EnvSpec::default()).unwrap();
    let e = p.compile("quant > 1000").unwrap();
    let mut g = p.init_globals().unwrap();
    for (q, want) in [
        (Some(2000), true),
        (Some(1000), false),
        (Some(3000), true),
        (None, false),
    ] {
        let row = vec![
            Value::Int64(10),
            Value::str("ibm"),
            q.map_or(Value::Null, Value::Int32),
            Value::Money(164_100_000),
        ];
        assert_eq!(p.eval_bool(e, &row, ins(), &mut g).unwrap(), want);
    }
}

fn trades() -> Vec<(String, FieldType)> {
    fields(&[
        ("ID", FieldType::Int64),
        ("symbol", FieldType::String),
        ("price", FieldType::Money),
        ("quant", FieldType::Int32),
        ("vwap", FieldType::Double),
        ("trade_date", FieldType::Date),
        ("tstamp", FieldType::Stamp),
    ])
}

fn trade() -> Vec<Value> {
    vec![
        Value::Int64(1),
        Value::str("ibm"),
        Value::Money(1_000_000),
        Value::Int32(10),
        Value::Double(1.0),
        Value::Date(0),
        Value::Stamp(0),
    ]
}

#[test]
fn filter_on_flag_and_opcode_models() {
    let mut p = Program::new(&trades(), &EnvSpec::default()).unwrap();
    let flag = p
        .compile(r#"if instr(ESP_FLAGS,"R") then return 0 else return 1"#)
        .unwrap();
    let op = p.compile(r#"ESP_OPCODE=="I""#).unwrap();
    let mut g = p.init_globals().unwrap();
    let row = trade();
    let at = |opcode, flags| EventInfo {
        opcode,
        flags,
        now_micros: 0,
    };
    assert!(p
        .eval_bool(flag, &row, at(Opcode::Insert, Flags::Normal), &mut g)
        .unwrap());
    assert!(!p
        .eval_bool(flag, &row, at(Opcode::Delete, Flags::Retention), &mut g)
        .unwrap());
    assert!(p
        .eval_bool(op, &row, at(Opcode::Insert, Flags::Normal), &mut g)
        .unwrap());
    for o in [
        Opcode::Update,
        Opcode::Delete,
        Opcode::Upsert,
        Opcode::SafeDelete,
    ] {
        assert!(!p.eval_bool(op, &row, at(o, Flags::Normal), &mut g).unwrap());
    }
}

#[test]
fn filter_with_udf_model() {
    let f = fields(&[
        ("id", FieldType::Int32),
        ("charData", FieldType::String),
        ("int64D", FieldType::Int64),
        ("doubleD", FieldType::Double),
        ("dateD", FieldType::Date),
        ("moneyD", FieldType::Money),
    ]);
    let u = udfs(&[
        (
            "udf1",
            FieldType::Double,
            "private real p p = parameter(1); return (p*2)",
        ),
        (
            "udf2",
            FieldType::String,
            "private string p p = parameter(1); return upper(p)",
        ),
    ]);
    let mut p = Program::new(
        &f,
        &EnvSpec {
            initializer: None,
            udfs: &u,
        },
    )
    .unwrap();
    // The XML text is `(udf1(doubleD) &gt; 200.0) and ...`; the model reader unescapes it.
    let e = p
        .compile("(udf1(doubleD) > 200.0) and match_string(udf2(charData),'INSERT')")
        .unwrap();
    assert_eq!(p.result_type(e), ExprType::Bool);
    let mut g = p.init_globals().unwrap();
    // filter_with_udf.csv
    let data = [
        (1, "insert", 164.1, true),
        (2, "upsert", 150.1, false),
        (3, "insert", 78.1, false),
        (4, "insert", 164.1, true),
    ];
    for (id, text, d, want) in data {
        let row = vec![
            Value::Int32(id),
            Value::str(text),
            Value::Int64(1),
            Value::Double(d),
            Value::Date(0),
            Value::Money(12_345_678_900),
        ];
        assert_eq!(p.eval_bool(e, &row, ins(), &mut g).unwrap(), want, "{id}");
    }
}

#[test]
fn regex_model() {
    let env = EnvSpec {
        initializer: Some(
            "regex r\n                        r.compile(\"Apex\")\n                        return 5",
        ),
        udfs: &[],
    };
    let mut p = Program::new(&people(), &env).unwrap();
    let name = p.compile("name").unwrap();
    let m = p
        .compile(
            "\n         if r.findfirst(city) then\n                          return 1\n                          else\n                          return 0",
        )
        .unwrap();
    assert_eq!(p.result_type(m), ExprType::Value(FieldType::Int32));
    let mut g = p.init_globals().unwrap();
    // The regex global holds its pattern, so it survives a globals snapshot.
    assert_eq!(g.values, vec![Value::str("Apex")]);
    for (row, want) in [
        (person("Jerry", 1111, "Apex"), 1),
        (person("Scott", 1112, "Cary"), 0),
        (person("someone", 1113, "Apex West"), 1),
    ] {
        assert_eq!(p.eval(name, &row, ins(), &mut g).unwrap(), row[0]);
        assert_eq!(p.eval(m, &row, ins(), &mut g).unwrap(), Value::Int32(want));
    }
}

#[test]
fn vwap_model_throughput() {
    let f = fields(&[("ID", FieldType::Int32), ("price", FieldType::Double)]);
    let env = EnvSpec {
        initializer: Some(
            "integer tradeCnt; tradeCnt=0; date starttime; integer def; starttime=Today()",
        ),
        udfs: &[],
    };
    let mut p = Program::new(&f, &env).unwrap();
    let e = p
        .compile("tradeCnt=tradeCnt+1; def=Today()-starttime; if (def != 0) return tradeCnt/def;")
        .unwrap();
    assert_eq!(p.result_type(e), ExprType::Value(FieldType::Int64));
    let start = 1_000_000_000_000_000; // micros
    let mut g = p.init_globals_at(start).unwrap();
    assert_eq!(
        g.values,
        vec![Value::Int64(0), Value::Date(1_000_000_000), Value::Null]
    );
    let row = vec![Value::Int32(1), Value::Double(1.0)];
    let at = |secs: i64| EventInfo {
        opcode: Opcode::Insert,
        flags: Flags::Normal,
        now_micros: start + secs * 1_000_000,
    };
    // Same second: def == 0, no return, null.
    assert_eq!(p.eval(e, &row, at(0), &mut g).unwrap(), Value::Null);
    assert_eq!(p.eval(e, &row, at(1), &mut g).unwrap(), Value::Int64(2));
    assert_eq!(p.eval(e, &row, at(2), &mut g).unwrap(), Value::Int64(1));
    assert_eq!(g.values[0], Value::Int64(3));
}

#[test]
fn join_style_field_names() {
    let f = fields(&[
        ("l_symbol", FieldType::String),
        ("r_name", FieldType::String),
    ]);
    let mut p = Program::new(&f, &EnvSpec::default()).unwrap();
    let e = p.compile("r_name").unwrap();
    let mut g = p.init_globals().unwrap();
    let row = vec![Value::str("ibm"), Value::str("Jerry")];
    assert_eq!(p.eval(e, &row, ins(), &mut g).unwrap(), Value::str("Jerry"));
}

#[test]
fn empty_initializer_is_fine() {
    // kafka1.xml: <initializer type="int64"/>
    let p = Program::new(
        &people(),
        &EnvSpec {
            initializer: Some(""),
            udfs: &[],
        },
    )
    .unwrap();
    assert_eq!(p.init_globals().unwrap(), Globals::default());
}
