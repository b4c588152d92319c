//! Type checking and lowering of the syntax tree to the evaluation tree ([`Node`], [`Stmt`]),
//! with names resolved to row, global and local slots.

use regex::Regex;
use sluice_event::{FieldType, Value};

use crate::parse::{err, BinOp, DeclTy, Ex, ExKind, Pos, St};
use crate::ExprError;

/// The static type of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Bool,
    Val(FieldType),
    /// The `null` literal.
    Null,
    /// Known only at run time (`parameter(n)` inside a UDF, and what is computed from it).
    Any,
    Regex,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "boolean",
            Ty::Val(f) => f.name(),
            Ty::Null => "null",
            Ty::Any => "any",
            Ty::Regex => "regex",
        }
    }

    fn of_decl(d: DeclTy) -> Ty {
        match d {
            DeclTy::Bool => Ty::Bool,
            DeclTy::Regex => Ty::Regex,
            DeclTy::Val(f) => Ty::Val(f),
        }
    }

    /// Numeric rank: 0 int32/boolean, 1 int64, 2 money, 3 double.
    fn num_rank(self) -> Option<u8> {
        match self {
            Ty::Bool | Ty::Val(FieldType::Int32) => Some(0),
            Ty::Val(FieldType::Int64) => Some(1),
            Ty::Val(FieldType::Money) => Some(2),
            Ty::Val(FieldType::Double) => Some(3),
            _ => None,
        }
    }

    fn is_int(self) -> bool {
        matches!(self.num_rank(), Some(0 | 1))
    }

    fn is_time(self) -> bool {
        matches!(self, Ty::Val(FieldType::Date | FieldType::Stamp))
    }
}

/// Arithmetic result type of two numeric types: integers compute in int64.
fn num_result(a: Ty, b: Ty) -> Option<Ty> {
    Some(match a.num_rank()?.max(b.num_rank()?) {
        0 | 1 => Ty::Val(FieldType::Int64),
        2 => Ty::Val(FieldType::Money),
        _ => Ty::Val(FieldType::Double),
    })
}

/// The common type of two branches' values (no arithmetic: int32 stays int32).
fn unify(a: Ty, b: Ty) -> Option<Ty> {
    use FieldType as F;
    Some(match (a, b) {
        (Ty::Null, x) | (x, Ty::Null) => x,
        (Ty::Any, _) | (_, Ty::Any) => Ty::Any,
        (x, y) if x == y => x,
        (Ty::Val(F::Date), Ty::Val(F::Stamp)) | (Ty::Val(F::Stamp), Ty::Val(F::Date)) => {
            Ty::Val(F::Stamp)
        }
        (x, y) => match x.num_rank()?.max(y.num_rank()?) {
            0 => Ty::Val(F::Int32),
            1 => Ty::Val(F::Int64),
            2 => Ty::Val(F::Money),
            _ => Ty::Val(F::Double),
        },
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarRef {
    Global(u32),
    Local(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CastTy {
    Bool,
    To(FieldType),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl Arith {
    pub fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
            Arith::Mod => "%",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Built-in functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    MatchString,
    Instr,
    Upper,
    Lower,
    Substr,
    Left,
    Right,
    Length,
    Trim,
    Abs,
    Min,
    Max,
    Round,
    Floor,
    Ceil,
    Sqrt,
    Pow,
    ToString,
    ToInt,
    ToDouble,
    IsNull,
    Today,
    Now,
}

/// Argument kinds for type checking.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    Str,
    Num,
    Any,
}

/// Name → (function, min args, max args, argument kinds).
fn lookup_func(name: &str) -> Option<(Func, usize, usize, &'static [Arg])> {
    use Arg::*;
    Some(match name.to_ascii_lowercase().as_str() {
        "match_string" => (Func::MatchString, 2, 2, &[Str, Str]),
        "instr" => (Func::Instr, 2, 3, &[Str, Str, Num]),
        "upper" | "ucase" => (Func::Upper, 1, 1, &[Str]),
        "lower" | "lcase" => (Func::Lower, 1, 1, &[Str]),
        "substr" | "substring" | "mid" => (Func::Substr, 2, 3, &[Str, Num, Num]),
        "left" => (Func::Left, 2, 2, &[Str, Num]),
        "right" => (Func::Right, 2, 2, &[Str, Num]),
        "length" | "len" | "strlen" => (Func::Length, 1, 1, &[Str]),
        "trim" => (Func::Trim, 1, 1, &[Str]),
        "abs" => (Func::Abs, 1, 1, &[Num]),
        "min" => (Func::Min, 2, 2, &[Num, Num]),
        "max" => (Func::Max, 2, 2, &[Num, Num]),
        "round" => (Func::Round, 1, 2, &[Num, Num]),
        "floor" => (Func::Floor, 1, 1, &[Num]),
        "ceil" | "ceiling" => (Func::Ceil, 1, 1, &[Num]),
        "sqrt" => (Func::Sqrt, 1, 1, &[Num]),
        "pow" | "power" => (Func::Pow, 2, 2, &[Num, Num]),
        "string" | "tostring" => (Func::ToString, 1, 1, &[Any]),
        "int" | "integer" | "toint" | "tointeger" => (Func::ToInt, 1, 1, &[Any]),
        "double" | "real" | "toreal" | "todouble" => (Func::ToDouble, 1, 1, &[Any]),
        "isnull" => (Func::IsNull, 1, 1, &[Any]),
        "today" => (Func::Today, 0, 0, &[]),
        "now" => (Func::Now, 0, 0, &[]),
        _ => return None,
    })
}

/// The evaluation tree.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Const(Value),
    Field(u32),
    Var(VarRef),
    /// `parameter(n)`, 0-based.
    Param(u32),
    Opcode,
    Flags,
    Neg(Box<Node>),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Concat(Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    IsNull(Box<Node>),
    Call(Func, Box<[Node]>),
    Udf(u32, Box<[Node]>),
    Cast(CastTy, Box<Node>),
    /// Fused forms of the common `field op constant` and `field op field` shapes: one tree
    /// step instead of three.
    CmpFC(CmpOp, u32, Value),
    CmpFF(CmpOp, u32, u32),
    ArithFC(Arith, u32, Value),
    ArithCF(Arith, Value, u32),
    ArithFF(Arith, u32, u32),
    RegexCompile(VarRef, Box<Node>),
    RegexFind(VarRef, Box<str>, Box<Node>),
    RegexReplace(VarRef, Box<str>, Box<Node>, Box<Node>),
}

#[derive(Clone, Debug)]
pub(crate) enum Stmt {
    Assign {
        var: VarRef,
        cast: Option<CastTy>,
        name: Box<str>,
        value: Node,
    },
    Eval(Node),
    If(Node, Box<[Stmt]>, Box<[Stmt]>),
    Return(Option<Node>),
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    Expr(Node),
    Stmts(Box<[Stmt]>),
}

/// One compiled piece of code: an expression, a UDF body or the initializer.
#[derive(Clone, Debug)]
pub(crate) struct Code {
    pub body: Body,
    pub nlocals: u32,
    pub ty: Ty,
    /// How deeply evaluating the body nests (see [`crate::MAX_EVAL_LEVELS`]).
    pub height: u32,
}

impl Code {
    fn new(body: Body, nlocals: u32, ty: Ty) -> Code {
        let height = match &body {
            Body::Expr(n) => node_height(n),
            Body::Stmts(s) => stmts_height(s),
        };
        Code {
            body,
            nlocals,
            ty,
            height,
        }
    }
}

/// The height of an evaluation tree (1 for a leaf). Bounded: the parser refuses syntax trees
/// higher than [`crate::MAX_NESTING`], and lowering adds at most a cast per level.
fn node_height(n: &Node) -> u32 {
    let one = |a: &Node| node_height(a);
    let two = |a: &Node, b: &Node| node_height(a).max(node_height(b));
    1 + match n {
        Node::Const(_)
        | Node::Field(_)
        | Node::Var(_)
        | Node::Param(_)
        | Node::Opcode
        | Node::Flags
        | Node::CmpFC(..)
        | Node::CmpFF(..)
        | Node::ArithFC(..)
        | Node::ArithCF(..)
        | Node::ArithFF(..) => 0,
        Node::Neg(a)
        | Node::Not(a)
        | Node::IsNull(a)
        | Node::Cast(_, a)
        | Node::RegexCompile(_, a)
        | Node::RegexFind(_, _, a) => one(a),
        Node::And(a, b)
        | Node::Or(a, b)
        | Node::Arith(_, a, b)
        | Node::Concat(a, b)
        | Node::Cmp(_, a, b)
        | Node::RegexReplace(_, _, a, b) => two(a, b),
        Node::Call(_, args) | Node::Udf(_, args) => args.iter().map(one).max().unwrap_or(0),
    }
}

fn stmts_height(stmts: &[Stmt]) -> u32 {
    stmts
        .iter()
        .map(|s| match s {
            Stmt::Assign { value, .. } => node_height(value),
            Stmt::Eval(n) | Stmt::Return(Some(n)) => node_height(n),
            Stmt::Return(None) => 0,
            Stmt::If(c, t, e) => node_height(c).max(1 + stmts_height(t).max(stmts_height(e))),
        })
        .max()
        .unwrap_or(0)
}

#[derive(Clone, Debug)]
pub(crate) struct VarDef {
    pub name: String,
    pub ty: DeclTy,
}

#[derive(Clone, Debug)]
pub(crate) struct UdfSig {
    pub name: String,
    pub ret: FieldType,
    pub arity: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Init,
    Udf(FieldType),
    Expr,
}

pub(crate) struct Compiler<'p> {
    pub fields: &'p [(String, FieldType)],
    pub globals: &'p mut Vec<VarDef>,
    pub udfs: &'p [UdfSig],
    pub regexes: &'p mut Vec<(Box<str>, Regex)>,
    pub mode: Mode,
    locals: Vec<VarDef>,
    returns: Vec<(Ty, Pos)>,
}

fn bool_node(b: bool) -> Node {
    Node::Const(Value::Int32(i32::from(b)))
}

fn cast_to(target: Ty) -> Option<CastTy> {
    match target {
        Ty::Bool => Some(CastTy::Bool),
        Ty::Val(f) => Some(CastTy::To(f)),
        _ => None,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl<'p> Compiler<'p> {
    pub fn new(
        fields: &'p [(String, FieldType)],
        globals: &'p mut Vec<VarDef>,
        udfs: &'p [UdfSig],
        regexes: &'p mut Vec<(Box<str>, Regex)>,
        mode: Mode,
    ) -> Compiler<'p> {
        Compiler {
            fields,
            globals,
            udfs,
            regexes,
            mode,
            locals: Vec::new(),
            returns: Vec::new(),
        }
    }

    /// Compiles a whole program (an expression or statements).
    pub fn program(mut self, mut stmts: Vec<St>) -> Result<Code, ExprError> {
        // A single expression: the fast path.
        if stmts.len() == 1 {
            if let St::Expr(e) = &stmts[0] {
                let (mut node, ty) = self.expr(e)?;
                let ty = match self.mode {
                    Mode::Udf(ret) => {
                        if ty != Ty::Val(ret) && ty != Ty::Null {
                            node = Node::Cast(CastTy::To(ret), Box::new(node));
                        }
                        Ty::Val(ret)
                    }
                    _ => ty,
                };
                self.check_result(ty, e.pos)?;
                return Ok(Code::new(Body::Expr(node), self.locals.len() as u32, ty));
            }
        }
        // A trailing expression statement (also at the end of a trailing `if`'s branches) is
        // the result.
        tail_returns(&mut stmts);
        let mut out = Vec::new();
        self.stmts(&stmts, &mut out)?;
        let target = match self.mode {
            Mode::Udf(ret) => Ty::Val(ret),
            Mode::Init => Ty::Any,
            Mode::Expr => {
                let mut t = Ty::Null;
                for &(ty, pos) in &self.returns {
                    t = unify(t, ty).ok_or_else(|| {
                        err(
                            pos,
                            format!(
                                "this returns {} but an earlier return gives {}",
                                ty.name(),
                                t.name()
                            ),
                        )
                    })?;
                }
                t
            }
        };
        let mut types = self.returns.iter().map(|r| r.0);
        fix_returns(&mut out, target, &mut types);
        let pos = self.returns.first().map(|r| r.1).unwrap_or_default();
        self.check_result(target, pos)?;
        Ok(Code::new(
            Body::Stmts(out.into_boxed_slice()),
            self.locals.len() as u32,
            target,
        ))
    }

    fn check_result(&self, ty: Ty, pos: Pos) -> Result<(), ExprError> {
        if ty == Ty::Regex {
            return Err(err(pos, "a regex object cannot be a result"));
        }
        Ok(())
    }

    fn stmts(&mut self, stmts: &[St], out: &mut Vec<Stmt>) -> Result<(), ExprError> {
        for s in stmts {
            self.stmt(s, out)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &St, out: &mut Vec<Stmt>) -> Result<(), ExprError> {
        match s {
            St::Decl { ty, names } => {
                for (name, pos, init) in names {
                    let var = self.declare(name, *ty, *pos)?;
                    if let Some(e) = init {
                        out.push(self.assign(var, name, *ty, e)?);
                    }
                }
            }
            St::Assign(name, pos, e) => {
                let Some((var, ty)) = self.find_var(name) else {
                    let what = if self.field_index(name).is_some() {
                        format!("cannot assign to field '{name}' (declare a variable)")
                    } else {
                        format!(
                            "unknown variable '{name}' (declare it first, e.g. 'integer {name}')"
                        )
                    };
                    return Err(err(*pos, what));
                };
                out.push(self.assign(var, name, ty, e)?);
            }
            St::Expr(e) => {
                let (n, _) = self.expr(e)?;
                out.push(Stmt::Eval(n));
            }
            St::If(c, t, e) => {
                let (cond, cty) = self.expr(c)?;
                self.not_regex(cty, c.pos)?;
                let mut then = Vec::new();
                self.stmts(t, &mut then)?;
                let mut els = Vec::new();
                self.stmts(e, &mut els)?;
                out.push(Stmt::If(cond, then.into(), els.into()));
            }
            St::Return(e, pos) => match e {
                Some(e) => {
                    let (n, ty) = self.expr(e)?;
                    self.not_regex(ty, e.pos)?;
                    self.returns.push((ty, e.pos));
                    out.push(Stmt::Return(Some(n)));
                }
                None => {
                    self.returns.push((Ty::Null, *pos));
                    out.push(Stmt::Return(None));
                }
            },
            St::Block(b) => self.stmts(b, out)?,
        }
        Ok(())
    }

    fn declare(&mut self, name: &str, ty: DeclTy, pos: Pos) -> Result<VarRef, ExprError> {
        let twice = || err(pos, format!("variable '{name}' is declared twice"));
        if self.mode == Mode::Init {
            if self.globals.iter().any(|v| v.name == name) {
                return Err(twice());
            }
            self.globals.push(VarDef {
                name: name.to_string(),
                ty,
            });
            Ok(VarRef::Global(self.globals.len() as u32 - 1))
        } else {
            if self.locals.iter().any(|v| v.name == name) {
                return Err(twice());
            }
            self.locals.push(VarDef {
                name: name.to_string(),
                ty,
            });
            Ok(VarRef::Local(self.locals.len() as u32 - 1))
        }
    }

    fn assign(&mut self, var: VarRef, name: &str, ty: DeclTy, e: &Ex) -> Result<Stmt, ExprError> {
        let (value, vty) = self.expr(e)?;
        let target = Ty::of_decl(ty);
        if target == Ty::Regex {
            return Err(err(
                e.pos,
                format!("'{name}' is a regex: set it with {name}.compile(\"pattern\")"),
            ));
        }
        self.not_regex(vty, e.pos)?;
        let cast = if vty == target || vty == Ty::Null {
            None
        } else {
            cast_to(target)
        };
        Ok(Stmt::Assign {
            var,
            cast,
            name: name.into(),
            value,
        })
    }

    fn not_regex(&self, ty: Ty, pos: Pos) -> Result<(), ExprError> {
        if ty == Ty::Regex {
            return Err(err(
                pos,
                "a regex object can only be used as r.compile(...), r.findfirst(...) or r.replace(...)",
            ));
        }
        Ok(())
    }

    fn find_var(&self, name: &str) -> Option<(VarRef, DeclTy)> {
        if let Some(i) = self.locals.iter().rposition(|v| v.name == name) {
            return Some((VarRef::Local(i as u32), self.locals[i].ty));
        }
        let i = self.globals.iter().position(|v| v.name == name)?;
        Some((VarRef::Global(i as u32), self.globals[i].ty))
    }

    fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.0 == name)
    }

    fn unknown_name(&self, name: &str, pos: Pos) -> ExprError {
        if self.mode == Mode::Init {
            return err(pos, format!("unknown variable '{name}'"));
        }
        let fields: Vec<&str> = self.fields.iter().map(|f| f.0.as_str()).collect();
        let mut msg = format!("unknown field '{name}' (fields: {}", fields.join(", "));
        let vars: Vec<&str> = self
            .locals
            .iter()
            .chain(self.globals.iter())
            .map(|v| v.name.as_str())
            .collect();
        if !vars.is_empty() {
            msg.push_str("; variables: ");
            msg.push_str(&vars.join(", "));
        }
        msg.push(')');
        err(pos, msg)
    }

    pub fn expr(&mut self, e: &Ex) -> Result<(Node, Ty), ExprError> {
        let pos = e.pos;
        Ok(match &e.kind {
            ExKind::Int(v) => match i32::try_from(*v) {
                Ok(x) => (Node::Const(Value::Int32(x)), Ty::Val(FieldType::Int32)),
                Err(_) => (Node::Const(Value::Int64(*v)), Ty::Val(FieldType::Int64)),
            },
            ExKind::Real(v) => (Node::Const(Value::Double(*v)), Ty::Val(FieldType::Double)),
            ExKind::Str(s) => (Node::Const(Value::str(s)), Ty::Val(FieldType::String)),
            ExKind::Bool(b) => (bool_node(*b), Ty::Bool),
            ExKind::Null => (Node::Const(Value::Null), Ty::Null),
            ExKind::Name(name) => {
                if let Some((var, ty)) = self.find_var(name) {
                    let ty = Ty::of_decl(ty);
                    if ty == Ty::Regex {
                        return Err(err(
                            pos,
                            format!(
                                "'{name}' is a regex: use {name}.findfirst(text) or {name}.replace(text, with)"
                            ),
                        ));
                    }
                    (Node::Var(var), ty)
                } else if let Some(i) = self.field_index(name) {
                    (Node::Field(i as u32), Ty::Val(self.fields[i].1))
                } else if name == "ESP_OPCODE" {
                    (Node::Opcode, Ty::Val(FieldType::String))
                } else if name == "ESP_FLAGS" {
                    (Node::Flags, Ty::Val(FieldType::String))
                } else {
                    return Err(self.unknown_name(name, pos));
                }
            }
            ExKind::Neg(a) => {
                let (n, t) = self.expr(a)?;
                let ty = match t {
                    Ty::Null | Ty::Any => t,
                    t if t.is_int() => Ty::Val(FieldType::Int64),
                    t if t.num_rank().is_some() => t,
                    t => return Err(err(pos, format!("cannot negate {}", t.name()))),
                };
                (Node::Neg(Box::new(n)), ty)
            }
            ExKind::Not(a) => {
                let (n, t) = self.expr(a)?;
                self.not_regex(t, a.pos)?;
                (Node::Not(Box::new(n)), Ty::Bool)
            }
            ExKind::Bin(op, a, b) => self.binary(*op, a, b, pos)?,
            ExKind::Call(name, args) => self.call(name, args, pos)?,
            ExKind::Method(var, m, args) => self.method(var, m, args, pos)?,
        })
    }

    fn binary(&mut self, op: BinOp, a: &Ex, b: &Ex, pos: Pos) -> Result<(Node, Ty), ExprError> {
        // `x == null` / `x != null` test for null.
        if matches!(op, BinOp::Eq | BinOp::Ne) {
            let other = match (&a.kind, &b.kind) {
                (ExKind::Null, _) => Some(b),
                (_, ExKind::Null) => Some(a),
                _ => None,
            };
            if let Some(o) = other {
                let (n, t) = self.expr(o)?;
                self.not_regex(t, o.pos)?;
                let test = Node::IsNull(Box::new(n));
                let node = if op == BinOp::Eq {
                    test
                } else {
                    Node::Not(Box::new(test))
                };
                return Ok((node, Ty::Bool));
            }
        }
        let (l, lt) = self.expr(a)?;
        let (r, rt) = self.expr(b)?;
        self.not_regex(lt, a.pos)?;
        self.not_regex(rt, b.pos)?;
        let (l, r) = (Box::new(l), Box::new(r));
        let misuse = |verb: &str| {
            err(
                pos,
                format!(
                    "cannot {verb} {} and {} with '{}'",
                    lt.name(),
                    rt.name(),
                    op.symbol()
                ),
            )
        };
        Ok(match op {
            BinOp::And => (Node::And(l, r), Ty::Bool),
            BinOp::Or => (Node::Or(l, r), Ty::Bool),
            BinOp::Concat => (Node::Concat(l, r), Ty::Val(FieldType::String)),
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                if !comparable(lt, rt) {
                    return Err(err(
                        pos,
                        format!("cannot compare {} with {}", lt.name(), rt.name()),
                    ));
                }
                let c = match op {
                    BinOp::Eq => CmpOp::Eq,
                    BinOp::Ne => CmpOp::Ne,
                    BinOp::Lt => CmpOp::Lt,
                    BinOp::Le => CmpOp::Le,
                    BinOp::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                (fuse_cmp(c, *l, *r), Ty::Bool)
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                let a_op = match op {
                    BinOp::Add => Arith::Add,
                    BinOp::Sub => Arith::Sub,
                    BinOp::Mul => Arith::Mul,
                    BinOp::Div => Arith::Div,
                    _ => Arith::Mod,
                };
                let ty = arith_type(a_op, lt, rt).ok_or_else(|| {
                    if a_op == Arith::Add {
                        misuse("add")
                    } else {
                        misuse("compute with")
                    }
                })?;
                (fuse_arith(a_op, *l, *r), ty)
            }
        })
    }

    fn call(&mut self, name: &str, args: &[Ex], pos: Pos) -> Result<(Node, Ty), ExprError> {
        if name.eq_ignore_ascii_case("parameter") {
            if !matches!(self.mode, Mode::Udf(_)) {
                return Err(err(pos, "parameter() can only be used inside a UDF"));
            }
            return match args {
                [Ex {
                    kind: ExKind::Int(n),
                    ..
                }] if *n >= 1 && *n <= 64 => Ok((Node::Param(*n as u32 - 1), Ty::Any)),
                _ => Err(err(
                    pos,
                    "parameter() takes one integer literal, the 1-based argument number",
                )),
            };
        }
        if let Some(i) = self
            .udfs
            .iter()
            .position(|u| u.name.eq_ignore_ascii_case(name))
        {
            let sig = &self.udfs[i];
            if args.len() != sig.arity as usize {
                return Err(err(
                    pos,
                    format!(
                        "udf '{}' expects {} argument{}, got {}",
                        sig.name,
                        sig.arity,
                        plural(sig.arity as usize),
                        args.len()
                    ),
                ));
            }
            let ret = sig.ret;
            let mut nodes = Vec::with_capacity(args.len());
            for a in args {
                let (n, t) = self.expr(a)?;
                self.not_regex(t, a.pos)?;
                nodes.push(n);
            }
            return Ok((Node::Udf(i as u32, nodes.into()), Ty::Val(ret)));
        }
        let Some((f, min, max, kinds)) = lookup_func(name) else {
            return Err(err(pos, format!("unknown function '{name}'")));
        };
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min} argument{}", plural(min))
            } else {
                format!("{min} or {max} arguments")
            };
            return Err(err(
                pos,
                format!("function '{name}' expects {want}, got {}", args.len()),
            ));
        }
        let mut nodes = Vec::with_capacity(args.len());
        let mut types = Vec::with_capacity(args.len());
        for (i, a) in args.iter().enumerate() {
            let (n, t) = self.expr(a)?;
            self.not_regex(t, a.pos)?;
            let ok = match kinds[i] {
                Arg::Any => true,
                Arg::Str => matches!(t, Ty::Val(FieldType::String) | Ty::Null | Ty::Any),
                Arg::Num => t.num_rank().is_some() || matches!(t, Ty::Null | Ty::Any),
            };
            if !ok {
                let want = if kinds[i] == Arg::Str {
                    "a string"
                } else {
                    "a number"
                };
                return Err(err(
                    a.pos,
                    format!(
                        "function '{name}' expects {want} as argument {}, got {}",
                        i + 1,
                        t.name()
                    ),
                ));
            }
            nodes.push(n);
            types.push(t);
        }
        let num_like = |t: Ty| match t {
            Ty::Null | Ty::Any => t,
            t if t.is_int() => Ty::Val(FieldType::Int64),
            t => t,
        };
        let ty = match f {
            Func::MatchString | Func::IsNull => Ty::Bool,
            Func::Instr | Func::Length | Func::ToInt => Ty::Val(FieldType::Int64),
            Func::Upper
            | Func::Lower
            | Func::Substr
            | Func::Left
            | Func::Right
            | Func::Trim
            | Func::ToString => Ty::Val(FieldType::String),
            Func::Abs | Func::Round | Func::Floor | Func::Ceil => num_like(types[0]),
            Func::Min | Func::Max => match (types[0], types[1]) {
                (Ty::Any, _) | (_, Ty::Any) => Ty::Any,
                (Ty::Null, t) | (t, Ty::Null) => num_like(t),
                (a, b) => num_result(a, b).unwrap_or(Ty::Any),
            },
            Func::Sqrt | Func::Pow | Func::ToDouble => Ty::Val(FieldType::Double),
            Func::Today => Ty::Val(FieldType::Date),
            Func::Now => Ty::Val(FieldType::Stamp),
        };
        Ok((Node::Call(f, nodes.into()), ty))
    }

    fn method(
        &mut self,
        var: &str,
        m: &str,
        args: &[Ex],
        pos: Pos,
    ) -> Result<(Node, Ty), ExprError> {
        let vref = match self.find_var(var) {
            Some((v, DeclTy::Regex)) => v,
            Some(_) => {
                return Err(err(
                    pos,
                    format!("'{var}' is not a regex variable (declare it with 'regex {var}')"),
                ))
            }
            None => {
                return Err(err(
                    pos,
                    format!("unknown variable '{var}' (declare it with 'regex {var}')"),
                ))
            }
        };
        let lm = m.to_ascii_lowercase();
        let want = match lm.as_str() {
            "compile" | "findfirst" => 1,
            "replace" => 2,
            _ => {
                return Err(err(
                    pos,
                    format!("unknown regex method '{m}' (use compile, findfirst or replace)"),
                ))
            }
        };
        if args.len() != want {
            return Err(err(
                pos,
                format!(
                    "{var}.{m}() expects {want} argument{}, got {}",
                    plural(want),
                    args.len()
                ),
            ));
        }
        let mut nodes = Vec::new();
        for a in args {
            let (n, t) = self.expr(a)?;
            if !matches!(t, Ty::Val(FieldType::String) | Ty::Null | Ty::Any) {
                return Err(err(
                    a.pos,
                    format!("{var}.{m}() expects a string, got {}", t.name()),
                ));
            }
            nodes.push(n);
        }
        let mut it = nodes.into_iter();
        let a0 = Box::new(it.next().expect("one argument"));
        Ok(match lm.as_str() {
            "compile" => {
                if let Node::Const(Value::String(p)) = &*a0 {
                    if !self.regexes.iter().any(|(q, _)| **q == **p) {
                        let re = Regex::new(p).map_err(|e| {
                            err(args[0].pos, format!("invalid regular expression: {e}"))
                        })?;
                        self.regexes.push((Box::from(&**p), re));
                    }
                }
                (Node::RegexCompile(vref, a0), Ty::Bool)
            }
            "findfirst" => (Node::RegexFind(vref, var.into(), a0), Ty::Bool),
            _ => {
                let a1 = Box::new(it.next().expect("two arguments"));
                (
                    Node::RegexReplace(vref, var.into(), a0, a1),
                    Ty::Val(FieldType::String),
                )
            }
        })
    }
}

fn tail_returns(stmts: &mut Vec<St>) {
    match stmts.last_mut() {
        Some(St::Expr(_)) => {
            let Some(St::Expr(e)) = stmts.pop() else {
                unreachable!()
            };
            let pos = e.pos;
            stmts.push(St::Return(Some(e), pos));
        }
        Some(St::If(_, t, e)) => {
            tail_returns(t);
            tail_returns(e);
        }
        Some(St::Block(b)) => tail_returns(b),
        _ => {}
    }
}

fn fuse_cmp(op: CmpOp, l: Node, r: Node) -> Node {
    match (l, r) {
        (Node::Field(a), Node::Const(k)) => Node::CmpFC(op, a, k),
        (Node::Const(k), Node::Field(a)) => {
            let flipped = match op {
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::Le => CmpOp::Ge,
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::Ge => CmpOp::Le,
                o => o,
            };
            Node::CmpFC(flipped, a, k)
        }
        (Node::Field(a), Node::Field(b)) => Node::CmpFF(op, a, b),
        (l, r) => Node::Cmp(op, Box::new(l), Box::new(r)),
    }
}

fn fuse_arith(op: Arith, l: Node, r: Node) -> Node {
    match (l, r) {
        (Node::Field(a), Node::Const(k)) => Node::ArithFC(op, a, k),
        (Node::Const(k), Node::Field(a)) => Node::ArithCF(op, k, a),
        (Node::Field(a), Node::Field(b)) => Node::ArithFF(op, a, b),
        (l, r) => Node::Arith(op, Box::new(l), Box::new(r)),
    }
}

fn comparable(a: Ty, b: Ty) -> bool {
    match (a, b) {
        (Ty::Null | Ty::Any, _) | (_, Ty::Null | Ty::Any) => true,
        (Ty::Val(FieldType::String), Ty::Val(FieldType::String)) => true,
        (x, y) if x.is_time() && (y.is_time() || y.is_int()) => true,
        (x, y) if y.is_time() && x.is_int() => true,
        (x, y) => x.num_rank().is_some() && y.num_rank().is_some(),
    }
}

/// The result type of `a op b`, or `None` when the operation is not allowed.
fn arith_type(op: Arith, a: Ty, b: Ty) -> Option<Ty> {
    use FieldType as F;
    let string = Ty::Val(F::String);
    if a == Ty::Regex || b == Ty::Regex {
        return None;
    }
    if op == Arith::Add && (a == string || b == string) {
        return Some(string);
    }
    if a == string || b == string {
        return None;
    }
    if a == Ty::Any || b == Ty::Any {
        return Some(Ty::Any);
    }
    // With a null operand, type as if both sides had the other's type.
    let (a, b) = match (a, b) {
        (Ty::Null, Ty::Null) => return Some(Ty::Null),
        (Ty::Null, t) => (t, if t.is_time() { Ty::Val(F::Int64) } else { t }),
        (t, Ty::Null) => (t, if t.is_time() { Ty::Val(F::Int64) } else { t }),
        x => x,
    };
    if let Some(t) = num_result(a, b) {
        return Some(t);
    }
    let num = |t: Ty| t.num_rank().is_some();
    match (op, a, b) {
        (Arith::Add | Arith::Sub, t, n) if t.is_time() && num(n) => Some(t),
        (Arith::Add, n, t) if t.is_time() && num(n) => Some(t),
        (Arith::Sub, x, y) if x.is_time() && y.is_time() => Some(Ty::Val(F::Int64)),
        _ => None,
    }
}

/// Wraps returned values in casts to `target` (the unified or declared result type).
fn fix_returns(stmts: &mut [Stmt], target: Ty, types: &mut impl Iterator<Item = Ty>) {
    for s in stmts {
        match s {
            Stmt::Return(r) => {
                let ty = types.next().unwrap_or(Ty::Null);
                if let Some(n) = r.take() {
                    let cast = if ty == target || ty == Ty::Null {
                        None
                    } else {
                        cast_to(target)
                    };
                    *r = Some(match cast {
                        Some(c) => Node::Cast(c, Box::new(n)),
                        None => n,
                    });
                }
            }
            Stmt::If(_, t, e) => {
                fix_returns(t, target, types);
                fix_returns(e, target, types);
            }
            _ => {}
        }
    }
}
