//! sluice-expr: the Expression Engine Language (EEL) subset used by ESP models — filter
//! `<expression>`, compute `<field-expr>`, splitter expressions, `<initializer>` code and
//! `<udf>` functions.
//!
//! A [`Program`] holds the environment of one window (field names, initializer variables,
//! UDFs). Each expression is parsed and type-checked once by [`Program::compile`] into a tree
//! with names resolved to slots; [`Program::eval`] walks that tree. Evaluating a comparison or
//! arithmetic over fields does not allocate.
//!
//! Layout:
//! - `parse`: lexer and parser (statements need no separators).
//! - `compile`: type checking and lowering to the evaluation tree.
//! - `ops`: run-time arithmetic, comparison, casts and functions.
//! - this file: the public API and the tree walker.
//!
//! The language and the decisions taken are described in `docs/expressions.md`.

use std::borrow::Cow;

use regex::Regex;
use smallvec::SmallVec;

pub use sluice_event::{FieldType, Flags, Opcode, Value};

mod compile;
mod ops;
mod parse;

use compile::{Body, Code, Compiler, Func, Mode, Node, Stmt, Ty, UdfSig, VarDef, VarRef};
use parse::Parser;

/// The environment shared by all expressions of one window: initializer variables and UDFs.
#[derive(Clone, Copy, Debug, Default)]
pub struct EnvSpec<'a> {
    /// `<initializer>` code, run once by [`Program::init_globals`]. May be empty / None. Its
    /// variables (e.g. `integer counter counter=0`) are globals visible to and mutable by
    /// every expression and UDF of the window, and persist across events.
    pub initializer: Option<&'a str>,
    /// `<udf name= type=>code</udf>`: (name, return type, code). Called as `name(args...)`;
    /// `parameter(n)` is the n-th argument (1-based); UDFs may also read fields and globals.
    pub udfs: &'a [(String, FieldType, String)],
}

/// A compiled expression of a [`Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExprId(pub u32);

/// The static result type of an expression. Comparisons, `and`/`or`/`not`, `match_string`,
/// `isnull` and regex `findfirst` are `Bool` (evaluated as `Int32(1)`/`Int32(0)`). An
/// expression that can only produce null (`null`, or statements without `return`) is typed
/// `Value(String)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExprType {
    Bool,
    Value(FieldType),
}

/// Initializer variables, in declaration order: a snapshottable vector (the engine persists
/// and restores it). A `boolean` is stored as `Int32(1)`/`Int32(0)`; a `regex` as its pattern
/// string (null before `compile`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Globals {
    pub values: Vec<Value>,
}

/// Per-evaluation event facts. `now_micros` is supplied by the runtime (the engine never reads
/// a clock); `Today()` and `Now()` read it.
#[derive(Clone, Copy, Debug)]
pub struct EventInfo {
    pub opcode: Opcode,
    pub flags: Flags,
    pub now_micros: i64,
}

/// A compile error: what is wrong and where (1-based line and column within the expression,
/// initializer or UDF text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} at {line}:{column}")]
pub struct ExprError {
    pub message: String,
    pub line: u32,
    pub column: u32,
}

/// A run-time failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// Integer (or money) arithmetic overflowed 64 bits.
    #[error("integer overflow in '{op}'")]
    Overflow { op: &'static str },
    /// Operand types that cannot be combined; only reachable through UDF `parameter(n)`
    /// values, whose types are known at run time only.
    #[error("{0}")]
    Type(Box<str>),
    /// A value that cannot be converted to the type of a variable or a UDF result.
    #[error("{0}")]
    Convert(Box<str>),
    /// A regex pattern computed at run time that does not compile.
    #[error("{0}")]
    Regex(Box<str>),
    /// `r.findfirst(...)` or `r.replace(...)` before `r.compile(...)`.
    #[error("regex '{0}' used before compile()")]
    RegexUnset(Box<str>),
    /// UDFs calling each other too deeply: more than [`MAX_DEPTH`] calls, or more than
    /// [`MAX_EVAL_LEVELS`] levels of nesting in all.
    #[error("udf '{0}' nested too deeply: more than {MAX_DEPTH} calls deep or more than {MAX_EVAL_LEVELS} levels of expression nesting in all")]
    Recursion(Box<str>),
    /// The globals passed to `eval` do not come from this program's `init_globals`.
    #[error(
        "the globals hold {found} values but the program declares {expected} (use init_globals)"
    )]
    Globals { expected: usize, found: usize },
    /// The row passed to `eval` is shorter than the program's field list.
    #[error("the row has {len} values but field '{field}' is at position {index}")]
    Row {
        field: Box<str>,
        index: usize,
        len: usize,
    },
    /// An `ExprId` that this program did not hand out.
    #[error("unknown expression id {0}")]
    UnknownExpr(u32),
}

/// Maximum UDF call depth.
pub const MAX_DEPTH: u32 = 64;

/// Maximum nesting of one evaluation in all: the heights of the expression and of every UDF
/// body being called, one more per call. Each level is a stack frame of the evaluator; the bound
/// keeps an evaluation within a 2 MiB thread stack whatever UDFs call each other.
pub const MAX_EVAL_LEVELS: u32 = 2 * MAX_NESTING;

pub use parse::MAX_NESTING;

#[derive(Clone, Debug)]
struct Udf {
    name: String,
    code: Code,
}

/// The compiled expressions of one window, with its fields, initializer and UDFs.
#[derive(Clone, Debug)]
pub struct Program {
    fields: Vec<(String, FieldType)>,
    globals: Vec<VarDef>,
    init: Option<Code>,
    udfs: Vec<Udf>,
    sigs: Vec<UdfSig>,
    exprs: Vec<Code>,
    /// Whether an expression or UDF may call `now()` or `today()` (see [`Program::reads_clock`]).
    reads_clock: bool,
    /// Regexes compiled ahead of time (every constant pattern given to `compile`).
    regexes: Vec<(Box<str>, Regex)>,
    opcode_vals: [Value; 5],
    flag_vals: [Value; 3],
}

fn in_context(e: ExprError, what: &str) -> ExprError {
    ExprError {
        message: format!("{what}: {}", e.message),
        line: e.line,
        column: e.column,
    }
}

/// Whether the code `src` may call `now()` or `today()`: a textual check that never misses a
/// call (function names are matched in lower case) and may say yes for other uses of the words.
fn may_read_clock(src: &str) -> bool {
    let s = src.to_ascii_lowercase();
    s.contains("now") || s.contains("today")
}

impl Program {
    /// `fields`: the fields visible by name, in the order of the row slices passed to
    /// [`eval`](Program::eval) (for a join the engine passes names like `l_symbol`,
    /// `r_name`). Compiles the initializer and the UDFs; their errors name the UDF
    /// (`udf 'f': ...`) or the initializer, with positions within that code.
    pub fn new(fields: &[(String, FieldType)], env: &EnvSpec) -> Result<Program, ExprError> {
        let mut udf_asts = Vec::with_capacity(env.udfs.len());
        let mut sigs: Vec<UdfSig> = Vec::with_capacity(env.udfs.len());
        for (name, ret, code) in env.udfs {
            let what = format!("udf '{name}'");
            if sigs.iter().any(|s| s.name.eq_ignore_ascii_case(name)) {
                return Err(ExprError {
                    message: format!("{what} is defined twice"),
                    line: 1,
                    column: 1,
                });
            }
            let ast = Parser::new(code)
                .and_then(|mut p| p.program())
                .map_err(|e| in_context(e, &what))?;
            sigs.push(UdfSig {
                name: name.clone(),
                ret: *ret,
                arity: parse::max_parameter(&ast),
            });
            udf_asts.push(ast);
        }
        let reads_clock = env.udfs.iter().any(|(_, _, code)| may_read_clock(code));
        let mut globals = Vec::new();
        let mut regexes = Vec::new();
        let init = match env.initializer {
            Some(src) if !src.trim().is_empty() => {
                let ast = Parser::new(src)
                    .and_then(|mut p| p.program())
                    .map_err(|e| in_context(e, "initializer"))?;
                let code = Compiler::new(&[], &mut globals, &sigs, &mut regexes, Mode::Init)
                    .program(ast)
                    .map_err(|e| in_context(e, "initializer"))?;
                Some(code)
            }
            _ => None,
        };
        let mut udfs = Vec::with_capacity(udf_asts.len());
        for (ast, sig) in udf_asts.into_iter().zip(&sigs) {
            let code = Compiler::new(
                fields,
                &mut globals,
                &sigs,
                &mut regexes,
                Mode::Udf(sig.ret),
            )
            .program(ast)
            .map_err(|e| in_context(e, &format!("udf '{}'", sig.name)))?;
            udfs.push(Udf {
                name: sig.name.clone(),
                code,
            });
        }
        Ok(Program {
            fields: fields.to_vec(),
            globals,
            init,
            udfs,
            sigs,
            exprs: Vec::new(),
            reads_clock,
            regexes,
            opcode_vals: ["I", "U", "D", "P", "S"].map(Value::str),
            flag_vals: ["N", "P", "R"].map(Value::str),
        })
    }

    /// Parses and type-checks one expression once (filter `<expression>`, compute
    /// `<field-expr>`, splitter `<expression>`, aggregate arguments).
    pub fn compile(&mut self, src: &str) -> Result<ExprId, ExprError> {
        let ast = Parser::new(src)?.program()?;
        let code = Compiler::new(
            &self.fields,
            &mut self.globals,
            &self.sigs,
            &mut self.regexes,
            Mode::Expr,
        )
        .program(ast)?;
        self.exprs.push(code);
        self.reads_clock |= may_read_clock(src);
        Ok(ExprId(self.exprs.len() as u32 - 1))
    }

    /// Whether evaluating the compiled expressions may read the time the runtime supplies
    /// (`now()`, `today()`, directly or in a UDF). The initializer is not counted: it runs
    /// once, at start. A runtime may skip reading its clock for a project whose expressions
    /// never read it. Conservative: a name that merely contains those words counts too.
    pub fn reads_clock(&self) -> bool {
        self.reads_clock
    }

    /// The static result type of a compiled expression.
    pub fn result_type(&self, id: ExprId) -> ExprType {
        match self.exprs.get(id.0 as usize).map(|c| c.ty) {
            Some(Ty::Bool) => ExprType::Bool,
            Some(Ty::Val(f)) => ExprType::Value(f),
            _ => ExprType::Value(FieldType::String),
        }
    }

    /// The fields visible by name, as given to [`Program::new`].
    pub fn fields(&self) -> &[(String, FieldType)] {
        &self.fields
    }

    /// The initializer's variables, in the order of [`Globals::values`].
    pub fn global_names(&self) -> impl Iterator<Item = &str> {
        self.globals.iter().map(|g| g.name.as_str())
    }

    /// Runs the initializer once; returns the initial globals (all declared variables, null
    /// where unassigned). `Today()`/`Now()` in the initializer see time 0; use
    /// [`Program::init_globals_at`] to supply the clock.
    pub fn init_globals(&self) -> Result<Globals, EvalError> {
        self.init_globals_at(0)
    }

    /// [`Program::init_globals`] with the runtime's current time for `Today()`/`Now()`.
    pub fn init_globals_at(&self, now_micros: i64) -> Result<Globals, EvalError> {
        let mut values = vec![Value::Null; self.globals.len()];
        if let Some(code) = &self.init {
            let mut locals: Frame = SmallVec::from_elem(Value::Null, code.nlocals as usize);
            let mut st = State {
                g: &mut values,
                locals: &mut locals,
                params: &[],
                ev: EventInfo {
                    opcode: Opcode::Insert,
                    flags: Flags::Normal,
                    now_micros,
                },
                depth: 0,
                levels: code.height,
            };
            self.run(code, &[], &mut st)?;
        }
        Ok(Globals { values })
    }

    /// Evaluates. Booleans are returned as `Value::Int32(1)` / `Value::Int32(0)`.
    pub fn eval(
        &self,
        id: ExprId,
        row: &[Value],
        ev: EventInfo,
        globals: &mut Globals,
    ) -> Result<Value, EvalError> {
        let code = self
            .exprs
            .get(id.0 as usize)
            .ok_or(EvalError::UnknownExpr(id.0))?;
        if globals.values.len() < self.globals.len() {
            return Err(EvalError::Globals {
                expected: self.globals.len(),
                found: globals.values.len(),
            });
        }
        match &code.body {
            Body::Expr(n) if code.nlocals == 0 => {
                let mut st = State {
                    g: &mut globals.values,
                    locals: &mut [],
                    params: &[],
                    ev,
                    depth: 0,
                    levels: code.height,
                };
                Ok(self.ev(n, row, &mut st)?.into_owned())
            }
            _ => {
                let mut locals: Frame = SmallVec::from_elem(Value::Null, code.nlocals as usize);
                let mut st = State {
                    g: &mut globals.values,
                    locals: &mut locals,
                    params: &[],
                    ev,
                    depth: 0,
                    levels: code.height,
                };
                self.run(code, row, &mut st)
            }
        }
    }

    /// Filter semantics: true when the result is non-null and non-zero; a string is true
    /// when non-empty.
    pub fn eval_bool(
        &self,
        id: ExprId,
        row: &[Value],
        ev: EventInfo,
        globals: &mut Globals,
    ) -> Result<bool, EvalError> {
        Ok(ops::truthy(&self.eval(id, row, ev, globals)?))
    }
}

/// Storage for the local variables or the arguments of one frame.
type Frame = SmallVec<[Value; 4]>;

/// The mutable state of one evaluation frame.
struct State<'g> {
    g: &'g mut [Value],
    locals: &'g mut [Value],
    params: &'g [Value],
    ev: EventInfo,
    depth: u32,
    /// Evaluation levels in use (see [`MAX_EVAL_LEVELS`]).
    levels: u32,
}

impl State<'_> {
    fn read(&self, v: VarRef) -> &Value {
        match v {
            VarRef::Global(i) => &self.g[i as usize],
            VarRef::Local(i) => &self.locals[i as usize],
        }
    }

    fn write(&mut self, v: VarRef, val: Value) {
        match v {
            VarRef::Global(i) => self.g[i as usize] = val,
            VarRef::Local(i) => self.locals[i as usize] = val,
        }
    }
}

fn opcode_index(o: Opcode) -> usize {
    match o {
        Opcode::Insert => 0,
        Opcode::Update => 1,
        Opcode::Delete => 2,
        Opcode::Upsert => 3,
        Opcode::SafeDelete => 4,
    }
}

fn flags_index(f: Flags) -> usize {
    match f {
        Flags::Normal => 0,
        Flags::Partial => 1,
        Flags::Retention => 2,
    }
}

fn str_arg(v: &Value) -> Result<Option<&str>, EvalError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        v => Err(EvalError::Type(
            format!("expected a string, got {}", ops::type_name(v)).into(),
        )),
    }
}

fn int_arg(v: &Value) -> Result<Option<i64>, EvalError> {
    match v {
        Value::Null => Ok(None),
        Value::String(_) => Err(EvalError::Type("expected a number, got string".into())),
        v => Ok(v.as_i64()),
    }
}

fn string_val(s: String) -> Value {
    Value::String(s.into())
}

impl Program {
    fn run<'a>(
        &'a self,
        code: &'a Code,
        row: &'a [Value],
        st: &mut State<'_>,
    ) -> Result<Value, EvalError> {
        match &code.body {
            Body::Expr(n) => Ok(self.ev(n, row, st)?.into_owned()),
            Body::Stmts(s) => Ok(self.exec(s, row, st)?.unwrap_or(Value::Null)),
        }
    }

    fn exec<'a>(
        &'a self,
        stmts: &'a [Stmt],
        row: &'a [Value],
        st: &mut State<'_>,
    ) -> Result<Option<Value>, EvalError> {
        for s in stmts {
            match s {
                Stmt::Assign {
                    var,
                    cast,
                    name,
                    value,
                } => {
                    let v = self.ev(value, row, st)?.into_owned();
                    let v = match cast {
                        Some(c) => ops::cast(*c, v).map_err(|e| match e {
                            EvalError::Convert(m) => {
                                EvalError::Convert(format!("{m} for variable '{name}'").into())
                            }
                            e => e,
                        })?,
                        None => v,
                    };
                    st.write(*var, v);
                }
                Stmt::Eval(n) => {
                    self.ev(n, row, st)?;
                }
                Stmt::If(c, t, e) => {
                    let b = ops::truthy(&*self.ev(c, row, st)?);
                    if let Some(v) = self.exec(if b { t } else { e }, row, st)? {
                        return Ok(Some(v));
                    }
                }
                Stmt::Return(r) => {
                    return Ok(Some(match r {
                        Some(n) => self.ev(n, row, st)?.into_owned(),
                        None => Value::Null,
                    }))
                }
            }
        }
        Ok(None)
    }

    fn regex_for(&self, pat: &str) -> Result<Cow<'_, Regex>, EvalError> {
        if let Some((_, r)) = self.regexes.iter().find(|(p, _)| **p == *pat) {
            return Ok(Cow::Borrowed(r));
        }
        Regex::new(pat).map(Cow::Owned).map_err(|e| {
            EvalError::Regex(format!("invalid regular expression '{pat}': {e}").into())
        })
    }

    fn regex_var<'s>(
        &self,
        st: &'s State<'_>,
        v: VarRef,
        name: &str,
    ) -> Result<&'s str, EvalError> {
        match st.read(v) {
            Value::String(p) => Ok(p),
            _ => Err(EvalError::RegexUnset(name.into())),
        }
    }

    #[inline(always)]
    fn field<'a>(&self, i: u32, row: &'a [Value]) -> Result<&'a Value, EvalError> {
        match row.get(i as usize) {
            Some(v) => Ok(v),
            None => Err(self.row_error(i, row.len())),
        }
    }

    #[cold]
    fn row_error(&self, i: u32, len: usize) -> EvalError {
        EvalError::Row {
            field: self.fields[i as usize].0.as_str().into(),
            index: i as usize,
            len,
        }
    }

    /// Evaluates a child: fields and constants are borrowed without a recursive call.
    #[inline(always)]
    fn sub<'a>(
        &'a self,
        n: &'a Node,
        row: &'a [Value],
        st: &mut State<'_>,
    ) -> Result<Cow<'a, Value>, EvalError> {
        match n {
            Node::Const(v) => Ok(Cow::Borrowed(v)),
            Node::Field(i) => match row.get(*i as usize) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None => self.ev(n, row, st),
            },
            _ => self.ev(n, row, st),
        }
    }

    fn ev<'a>(
        &'a self,
        n: &'a Node,
        row: &'a [Value],
        st: &mut State<'_>,
    ) -> Result<Cow<'a, Value>, EvalError> {
        use Cow::{Borrowed, Owned};
        Ok(match n {
            Node::Const(v) => Borrowed(v),
            Node::Field(i) => Borrowed(self.field(*i, row)?),
            Node::Var(v) => Owned(st.read(*v).clone()),
            Node::Param(i) => Owned(st.params.get(*i as usize).cloned().unwrap_or_default()),
            Node::Opcode => Borrowed(&self.opcode_vals[opcode_index(st.ev.opcode)]),
            Node::Flags => Borrowed(&self.flag_vals[flags_index(st.ev.flags)]),
            Node::Neg(a) => Owned(ops::neg(&*self.ev(a, row, st)?)?),
            Node::Not(a) => Owned(ops::bool_val(!ops::truthy(&*self.ev(a, row, st)?))),
            Node::And(a, b) => {
                let r = ops::truthy(&*self.ev(a, row, st)?) && ops::truthy(&*self.ev(b, row, st)?);
                Owned(ops::bool_val(r))
            }
            Node::Or(a, b) => {
                let r = ops::truthy(&*self.ev(a, row, st)?) || ops::truthy(&*self.ev(b, row, st)?);
                Owned(ops::bool_val(r))
            }
            Node::Arith(op, a, b) => {
                let x = self.sub(a, row, st)?;
                let y = self.sub(b, row, st)?;
                Owned(ops::arith(*op, &x, &y)?)
            }
            Node::Concat(a, b) => {
                let x = self.sub(a, row, st)?;
                let y = self.sub(b, row, st)?;
                Owned(ops::concat(&x, &y))
            }
            Node::Cmp(op, a, b) => {
                let x = self.sub(a, row, st)?;
                let y = self.sub(b, row, st)?;
                Owned(ops::bool_val(ops::compare(*op, &x, &y)?))
            }
            Node::CmpFC(op, f, k) => {
                let x = self.field(*f, row)?;
                Owned(ops::bool_val(ops::compare(*op, x, k)?))
            }
            Node::CmpFF(op, f, g) => {
                let (x, y) = (self.field(*f, row)?, self.field(*g, row)?);
                Owned(ops::bool_val(ops::compare(*op, x, y)?))
            }
            Node::ArithFC(op, f, k) => Owned(ops::arith(*op, self.field(*f, row)?, k)?),
            Node::ArithCF(op, k, f) => Owned(ops::arith(*op, k, self.field(*f, row)?)?),
            Node::ArithFF(op, f, g) => {
                let (x, y) = (self.field(*f, row)?, self.field(*g, row)?);
                Owned(ops::arith(*op, x, y)?)
            }
            Node::IsNull(a) => Owned(ops::bool_val(self.ev(a, row, st)?.is_null())),
            Node::Cast(c, a) => Owned(ops::cast(*c, self.ev(a, row, st)?.into_owned())?),
            Node::Call(f, args) => Owned(self.call(*f, args, row, st)?),
            Node::Udf(i, args) => Owned(self.call_udf(*i, args, row, st)?),
            Node::RegexCompile(..) | Node::RegexFind(..) | Node::RegexReplace(..) => {
                Owned(self.regex_node(n, row, st)?)
            }
        })
    }

    #[inline(never)]
    fn call_udf<'a>(
        &'a self,
        i: u32,
        args: &'a [Node],
        row: &'a [Value],
        st: &mut State<'_>,
    ) -> Result<Value, EvalError> {
        let udf = &self.udfs[i as usize];
        let levels = st.levels + 1 + udf.code.height;
        if st.depth >= MAX_DEPTH || levels > MAX_EVAL_LEVELS {
            return Err(EvalError::Recursion(udf.name.as_str().into()));
        }
        let mut params: Frame = SmallVec::new();
        for a in args.iter() {
            params.push(self.ev(a, row, st)?.into_owned());
        }
        let mut locals: Frame = SmallVec::from_elem(Value::Null, udf.code.nlocals as usize);
        let mut sub = State {
            g: &mut *st.g,
            locals: &mut locals,
            params: &params,
            ev: st.ev,
            depth: st.depth + 1,
            levels,
        };
        self.run(&udf.code, row, &mut sub)
    }

    #[inline(never)]
    fn regex_node<'a>(
        &'a self,
        n: &'a Node,
        row: &'a [Value],
        st: &mut State<'_>,
    ) -> Result<Value, EvalError> {
        Ok(match n {
            Node::RegexCompile(v, a) => {
                let p = self.ev(a, row, st)?.into_owned();
                match &p {
                    Value::String(s) => {
                        self.regex_for(s)?;
                    }
                    Value::Null => {}
                    other => {
                        return Err(EvalError::Type(
                            format!("compile() expects a string, got {}", ops::type_name(other))
                                .into(),
                        ))
                    }
                }
                let ok = !p.is_null();
                st.write(*v, p);
                ops::bool_val(ok)
            }
            Node::RegexFind(v, name, a) => {
                let s = self.ev(a, row, st)?;
                let pat = self.regex_var(st, *v, name)?;
                let Some(s) = str_arg(&s)? else {
                    return Ok(ops::bool_val(false));
                };
                ops::bool_val(self.regex_for(pat)?.is_match(s))
            }
            Node::RegexReplace(v, name, a, b) => {
                let s = self.ev(a, row, st)?;
                let with = self.ev(b, row, st)?;
                let pat = self.regex_var(st, *v, name)?;
                match (str_arg(&s)?, str_arg(&with)?) {
                    (Some(s), Some(w)) => {
                        let out = self.regex_for(pat)?.replace_all(s, w).into_owned();
                        string_val(out)
                    }
                    _ => Value::Null,
                }
            }
            _ => unreachable!("not a regex node"),
        })
    }

    #[inline(never)]
    fn call<'a>(
        &'a self,
        f: Func,
        args: &'a [Node],
        row: &'a [Value],
        st: &mut State<'_>,
    ) -> Result<Value, EvalError> {
        use Value as V;
        let now = st.ev.now_micros;
        match f {
            Func::Today => return Ok(V::Date(now.div_euclid(1_000_000))),
            Func::Now => return Ok(V::Stamp(now)),
            _ => {}
        }
        let a = self.sub(&args[0], row, st)?;
        let b = match args.get(1) {
            Some(n) => Some(self.sub(n, row, st)?),
            None => None,
        };
        let c = match args.get(2) {
            Some(n) => Some(self.sub(n, row, st)?),
            None => None,
        };
        let b_ref = b.as_deref().unwrap_or(&V::Null);
        macro_rules! s {
            ($v:expr) => {
                match str_arg($v)? {
                    Some(s) => s,
                    None => return Ok(V::Null),
                }
            };
        }
        macro_rules! i {
            ($v:expr) => {
                match int_arg($v)? {
                    Some(i) => i,
                    None => return Ok(V::Null),
                }
            };
        }
        Ok(match f {
            Func::MatchString => ops::bool_val(ops::match_wild(s!(&a), s!(b_ref))),
            Func::Instr => {
                let start = match &c {
                    Some(c) => i!(c),
                    None => 1,
                };
                V::Int64(ops::instr(s!(&a), s!(b_ref), start))
            }
            Func::Upper => string_val(s!(&a).to_uppercase()),
            Func::Lower => string_val(s!(&a).to_lowercase()),
            Func::Trim => string_val(s!(&a).trim().to_string()),
            Func::Length => V::Int64(s!(&a).chars().count() as i64),
            Func::Substr => {
                let len = match &c {
                    Some(c) => Some(i!(c)),
                    None => None,
                };
                string_val(ops::substr(s!(&a), i!(b_ref), len))
            }
            Func::Left => string_val(ops::left(s!(&a), i!(b_ref))),
            Func::Right => string_val(ops::right(s!(&a), i!(b_ref))),
            Func::Abs => ops::num_unary(&a, "abs", i64::checked_abs, i64::checked_abs, f64::abs)?,
            Func::Floor => ops::num_unary(
                &a,
                "floor",
                Some,
                |m| {
                    m.div_euclid(sluice_event::value::MONEY_SCALE)
                        .checked_mul(1_000_000)
                },
                f64::floor,
            )?,
            Func::Ceil => ops::num_unary(
                &a,
                "ceil",
                Some,
                |m| {
                    let s = sluice_event::value::MONEY_SCALE;
                    let q = m.div_euclid(s) + i64::from(m.rem_euclid(s) != 0);
                    q.checked_mul(s)
                },
                f64::ceil,
            )?,
            Func::Round => {
                let digits = match &b {
                    Some(d) => i!(d),
                    None => 0,
                };
                ops::num_unary(
                    &a,
                    "round",
                    Some,
                    |m| ops::round_money(m, digits),
                    |d| ops::round_f64(d, digits),
                )?
            }
            Func::Min | Func::Max => ops::min_max(&a, b_ref, f == Func::Max)?,
            Func::Sqrt | Func::Pow => {
                let num = |v: &Value| match v {
                    V::String(_) => Err(EvalError::Type("expected a number, got string".into())),
                    v => Ok(v.as_f64()),
                };
                let Some(x) = num(&a)? else {
                    return Ok(V::Null);
                };
                let r = if f == Func::Sqrt {
                    x.sqrt()
                } else {
                    let Some(y) = num(b_ref)? else {
                        return Ok(V::Null);
                    };
                    x.powf(y)
                };
                if r.is_finite() {
                    V::Double(r)
                } else {
                    V::Null
                }
            }
            Func::ToString => a.coerce(FieldType::String).unwrap_or(V::Null),
            Func::ToInt => ops::to_int(&a),
            Func::ToDouble => a.coerce(FieldType::Double).unwrap_or(V::Null),
            Func::IsNull => ops::bool_val(a.is_null()),
            Func::Today | Func::Now => unreachable!("handled above"),
        })
    }
}

#[cfg(test)]
mod tests;
