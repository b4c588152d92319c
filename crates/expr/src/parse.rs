//! Lexer and parser: EEL source text to an untyped syntax tree with positions.
//!
//! Statements need no separators (`integer counter counter=0`): the parser finds statement
//! boundaries from the grammar. An expression ends at the first token that cannot continue
//! it (a keyword, a name after a complete operand, `;`, ...).

use crate::ExprError;

/// A 1-based line and column (in characters) within one piece of source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: u32,
    pub col: u32,
}

pub(crate) fn err(pos: Pos, message: impl Into<String>) -> ExprError {
    ExprError {
        message: message.into(),
        line: pos.line,
        column: pos.col,
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Int(i64),
    Real(f64),
    Str(String),
    Op(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

const OPS2: [&str; 7] = ["==", "!=", "<>", ">=", "<=", "&&", "||"];
const OPS1: [&str; 17] = [
    "=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",", ";", ".", "&", "!", "{", "}",
];

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Int(v) => format!("'{v}'"),
        Tok::Real(v) => format!("'{v}'"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Op(o) => format!("'{o}'"),
        Tok::Eof => "end of expression".to_string(),
    }
}

/// Splits source text into tokens. Comments (`// ...`, `/* ... */`) are skipped.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    let advance = |i: &mut usize, line: &mut u32, col: &mut u32, n: usize| {
        for _ in 0..n {
            if chars[*i] == '\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, 1);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut col, 1);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            advance(&mut i, &mut line, &mut col, 2);
            loop {
                if i >= chars.len() {
                    return Err(err(pos, "unterminated comment"));
                }
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    advance(&mut i, &mut line, &mut col, 2);
                    break;
                }
                advance(&mut i, &mut line, &mut col, 1);
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            col += (i - start) as u32;
            out.push(Token {
                tok: Tok::Ident(chars[start..i].iter().collect()),
                pos,
            });
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            let mut real = false;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len()
                && chars[i] == '.'
                && chars
                    .get(i + 1)
                    .is_none_or(|d| d.is_ascii_digit() || !d.is_alphabetic())
            {
                real = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    real = true;
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            col += (i - start) as u32;
            let tok = if real {
                Tok::Real(
                    text.parse()
                        .map_err(|_| err(pos, format!("bad number '{text}'")))?,
                )
            } else {
                Tok::Int(
                    text.parse()
                        .map_err(|_| err(pos, format!("integer literal '{text}' is too large")))?,
                )
            };
            out.push(Token { tok, pos });
            continue;
        }
        if c == '"' || c == '\'' {
            let mut s = String::new();
            advance(&mut i, &mut line, &mut col, 1);
            loop {
                if i >= chars.len() {
                    return Err(err(pos, "unterminated string literal"));
                }
                let d = chars[i];
                if d == c {
                    advance(&mut i, &mut line, &mut col, 1);
                    break;
                }
                if d == '\\' && i + 1 < chars.len() {
                    let e = chars[i + 1];
                    match e {
                        '\\' | '"' | '\'' => s.push(e),
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        // Unknown escapes stay as written, so regex patterns like "\d+" work.
                        _ => {
                            s.push('\\');
                            s.push(e);
                        }
                    }
                    advance(&mut i, &mut line, &mut col, 2);
                    continue;
                }
                s.push(d);
                advance(&mut i, &mut line, &mut col, 1);
            }
            out.push(Token {
                tok: Tok::Str(s),
                pos,
            });
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        if let Some(op) = OPS2.iter().find(|o| **o == two) {
            out.push(Token {
                tok: Tok::Op(op),
                pos,
            });
            advance(&mut i, &mut line, &mut col, 2);
            continue;
        }
        if let Some(op) = OPS1.iter().find(|o| o.starts_with(c)) {
            out.push(Token {
                tok: Tok::Op(op),
                pos,
            });
            advance(&mut i, &mut line, &mut col, 1);
            continue;
        }
        return Err(err(pos, format!("unexpected character '{c}'")));
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: Pos { line, col },
    });
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Syntax tree

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Concat => "&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum ExKind {
    Int(i64),
    Real(f64),
    Str(String),
    Bool(bool),
    Null,
    Name(String),
    Call(String, Vec<Ex>),
    /// `var.method(args)` (the regex object).
    Method(String, String, Vec<Ex>),
    Neg(Box<Ex>),
    Not(Box<Ex>),
    Bin(BinOp, Box<Ex>, Box<Ex>),
}

/// An expression and the position of its first token (for binary operators: the operator).
#[derive(Clone, Debug)]
pub(crate) struct Ex {
    pub kind: ExKind,
    pub pos: Pos,
    /// The height of this tree: 1 for a leaf (bounded by [`MAX_NESTING`]).
    pub height: u32,
}

impl Ex {
    pub fn new(kind: ExKind, pos: Pos) -> Ex {
        let below = match &kind {
            ExKind::Neg(e) | ExKind::Not(e) => e.height,
            ExKind::Bin(_, l, r) => l.height.max(r.height),
            ExKind::Call(_, args) | ExKind::Method(_, _, args) => {
                args.iter().map(|a| a.height).max().unwrap_or(0)
            }
            _ => 0,
        };
        Ex {
            kind,
            pos,
            height: below + 1,
        }
    }
}

/// How deeply an expression, initializer or UDF may nest: parentheses, unary signs and `not`,
/// operators (a chain `a + b + c` nests one level per operator; chains of `and`, `or` and `&`
/// are grouped so that they nest only logarithmically), call arguments, `if` and blocks. Every
/// parse, type check and evaluation walks these trees recursively; the limit keeps them within
/// a 2 MiB thread stack, and lies far above any real ESP expression.
pub const MAX_NESTING: u32 = 64;

fn too_deep(pos: Pos) -> ExprError {
    err(
        pos,
        format!(
            "the expression nests more than {MAX_NESTING} levels deep (parentheses, operators, \
             calls and blocks count): split it with variables or UDFs"
        ),
    )
}

/// A declared variable type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeclTy {
    Bool,
    Regex,
    Val(sluice_event::FieldType),
}

#[derive(Clone, Debug)]
pub(crate) enum St {
    Decl {
        ty: DeclTy,
        names: Vec<(String, Pos, Option<Ex>)>,
    },
    Assign(String, Pos, Ex),
    Expr(Ex),
    If(Ex, Vec<St>, Vec<St>),
    Return(Option<Ex>, Pos),
    Block(Vec<St>),
}

pub(crate) fn decl_type(word: &str) -> Option<DeclTy> {
    use sluice_event::FieldType as F;
    Some(match word.to_ascii_lowercase().as_str() {
        "integer" | "int64" => DeclTy::Val(F::Int64),
        "int32" => DeclTy::Val(F::Int32),
        "real" | "double" => DeclTy::Val(F::Double),
        "string" => DeclTy::Val(F::String),
        "date" => DeclTy::Val(F::Date),
        "stamp" | "timestamp" => DeclTy::Val(F::Stamp),
        "money" | "decimal" => DeclTy::Val(F::Money),
        "boolean" | "bool" => DeclTy::Bool,
        "regex" => DeclTy::Regex,
        _ => return None,
    })
}

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

/// Words that cannot be used as names in expressions.
const RESERVED: [&str; 9] = [
    "and", "or", "not", "if", "then", "else", "return", "true", "false",
];

pub(crate) struct Parser {
    toks: Vec<Token>,
    i: usize,
    /// Current recursion depth (see [`MAX_NESTING`]).
    depth: u32,
}

enum End {
    Eof,
    Keyword,
    Brace,
}

impl Parser {
    pub fn new(src: &str) -> Result<Parser, ExprError> {
        Ok(Parser {
            toks: lex(src)?,
            i: 0,
            depth: 0,
        })
    }

    /// Runs `f` one nesting level deeper, refusing to go beyond [`MAX_NESTING`].
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Parser) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        if self.depth >= MAX_NESTING {
            return Err(too_deep(self.pos()));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// A node, refused when its tree grows beyond [`MAX_NESTING`].
    fn node(&self, kind: ExKind, pos: Pos) -> Result<Ex, ExprError> {
        let e = Ex::new(kind, pos);
        if e.height > MAX_NESTING {
            return Err(too_deep(pos));
        }
        Ok(e)
    }

    fn bin(&self, op: BinOp, l: Ex, r: Ex, pos: Pos) -> Result<Ex, ExprError> {
        self.node(ExKind::Bin(op, Box::new(l), Box::new(r)), pos)
    }

    /// `terms[0] op terms[1] op ...` for an associative `op`, grouped as a balanced tree (the
    /// terms stay in order, so evaluation order and short-circuits are those of the chain).
    /// `ops[i]` is the position of the operator before `terms[i + 1]`.
    fn balanced(&self, op: BinOp, terms: Vec<Ex>, ops: &[Pos]) -> Result<Ex, ExprError> {
        // (tree, index of its first term)
        let mut level: Vec<(Ex, usize)> =
            terms.into_iter().enumerate().map(|(i, t)| (t, i)).collect();
        while level.len() > 1 {
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            let mut it = level.into_iter();
            while let Some((a, start)) = it.next() {
                match it.next() {
                    Some((b, bstart)) => next.push((self.bin(op, a, b, ops[bstart - 1])?, start)),
                    None => next.push((a, start)),
                }
            }
            level = next;
        }
        Ok(level.pop().expect("at least one term").0)
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        let j = (self.i + n).min(self.toks.len() - 1);
        &self.toks[j].tok
    }

    fn pos(&self) -> Pos {
        self.toks[self.i].pos
    }

    fn bump(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.is_op(op) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(err(
                self.pos(),
                format!("expected '{op}', found {}", describe(self.peek())),
            ))
        }
    }

    fn unexpected(&self) -> ExprError {
        match self.peek() {
            Tok::Eof => err(self.pos(), "unexpected end of expression"),
            t => err(self.pos(), format!("unexpected {}", describe(t))),
        }
    }

    /// Parses a whole program: statements up to the end of the text.
    pub fn program(&mut self) -> Result<Vec<St>, ExprError> {
        if matches!(self.peek(), Tok::Eof) {
            return Err(err(self.pos(), "empty expression"));
        }
        self.stmts(End::Eof)
    }

    fn stmts(&mut self, end: End) -> Result<Vec<St>, ExprError> {
        let mut out = Vec::new();
        loop {
            while self.eat_op(";") {}
            match (&end, self.peek()) {
                (End::Eof, Tok::Eof) => break,
                (End::Keyword, t) if is_kw(t, "end") => {
                    self.bump();
                    break;
                }
                (End::Brace, Tok::Op("}")) => {
                    self.bump();
                    break;
                }
                (End::Keyword, Tok::Eof) => {
                    return Err(err(self.pos(), "expected 'end' to close 'begin'"))
                }
                (End::Brace, Tok::Eof) => return Err(err(self.pos(), "expected '}' to close '{'")),
                _ => {}
            }
            // A plain expression followed by more code is almost always a typo
            // (`quant 1000`); only calls may stand as statements before others.
            if let Some(St::Expr(e)) = out.last() {
                if !matches!(e.kind, ExKind::Call(..) | ExKind::Method(..)) {
                    return Err(err(
                        self.pos(),
                        format!(
                            "expected an operator or the end of the expression, found {}",
                            describe(self.peek())
                        ),
                    ));
                }
            }
            let s = self.stmt()?;
            out.push(s);
        }
        Ok(out)
    }

    fn stmt(&mut self) -> Result<St, ExprError> {
        self.nested(Parser::stmt_inner)
    }

    fn stmt_inner(&mut self) -> Result<St, ExprError> {
        let pos = self.pos();
        let t = self.peek().clone();
        if let Tok::Ident(word) = &t {
            let lw = word.to_ascii_lowercase();
            match lw.as_str() {
                "if" => {
                    self.bump();
                    let cond = self.expr()?;
                    self.eat_kw("then");
                    let then = self.branch()?;
                    // Allow `if c then s; else t`.
                    let save = self.i;
                    while self.eat_op(";") {}
                    let els = if self.eat_kw("else") {
                        self.branch()?
                    } else {
                        self.i = save;
                        Vec::new()
                    };
                    return Ok(St::If(cond, then, els));
                }
                "return" => {
                    self.bump();
                    let ends = matches!(self.peek(), Tok::Eof | Tok::Op(";") | Tok::Op("}"))
                        || is_kw(self.peek(), "else")
                        || is_kw(self.peek(), "end");
                    let e = if ends { None } else { Some(self.expr()?) };
                    return Ok(St::Return(e, pos));
                }
                "begin" => {
                    self.bump();
                    return Ok(St::Block(self.stmts(End::Keyword)?));
                }
                "else" | "then" | "end" => return Err(self.unexpected()),
                "private" | "public" | "static" => {
                    self.bump();
                    let tpos = self.pos();
                    let ty = match self.peek() {
                        Tok::Ident(w) => decl_type(w),
                        _ => None,
                    };
                    let Some(ty) = ty else {
                        return Err(err(
                            tpos,
                            format!(
                                "expected a type after '{word}' (integer, real, string, date, stamp, boolean, money, regex), found {}",
                                describe(self.peek())
                            ),
                        ));
                    };
                    self.bump();
                    return self.decl(ty);
                }
                _ => {}
            }
            if let Some(ty) = decl_type(word) {
                // `integer x`, or EEL's `string(10) x`.
                if matches!(self.peek_at(1), Tok::Ident(_)) {
                    self.bump();
                    return self.decl(ty);
                }
                if matches!(self.peek_at(1), Tok::Op("("))
                    && matches!(self.peek_at(2), Tok::Int(_))
                    && matches!(self.peek_at(3), Tok::Op(")"))
                    && matches!(self.peek_at(4), Tok::Ident(_))
                {
                    self.i += 4;
                    return self.decl(ty);
                }
            }
            if matches!(self.peek_at(1), Tok::Op("=")) {
                self.bump();
                self.bump();
                let e = self.expr()?;
                return Ok(St::Assign(word.clone(), pos, e));
            }
        }
        if self.eat_op("{") {
            return Ok(St::Block(self.stmts(End::Brace)?));
        }
        let e = self.expr()?;
        if self.is_op("=") {
            return Err(err(
                self.pos(),
                "only a variable can be assigned (use '==' to compare)",
            ));
        }
        Ok(St::Expr(e))
    }

    fn branch(&mut self) -> Result<Vec<St>, ExprError> {
        while self.eat_op(";") {}
        if matches!(self.peek(), Tok::Eof) {
            return Err(err(self.pos(), "expected a statement after 'if'"));
        }
        match self.stmt()? {
            St::Block(b) => Ok(b),
            s => Ok(vec![s]),
        }
    }

    fn decl(&mut self, ty: DeclTy) -> Result<St, ExprError> {
        let mut names = Vec::new();
        loop {
            let pos = self.pos();
            let name = match self.bump().tok {
                Tok::Ident(n) if !RESERVED.iter().any(|r| n.eq_ignore_ascii_case(r)) => n,
                t => {
                    return Err(err(
                        pos,
                        format!("expected a variable name, found {}", describe(&t)),
                    ))
                }
            };
            let init = if self.eat_op("=") {
                Some(self.expr()?)
            } else {
                None
            };
            names.push((name, pos, init));
            if !self.eat_op(",") {
                break;
            }
        }
        Ok(St::Decl { ty, names })
    }

    // ---- expressions, lowest precedence first

    pub fn expr(&mut self) -> Result<Ex, ExprError> {
        self.nested(Parser::or)
    }

    fn or(&mut self) -> Result<Ex, ExprError> {
        let mut terms = vec![self.and()?];
        let mut ops = Vec::new();
        loop {
            let pos = self.pos();
            if self.eat_kw("or") || self.eat_op("||") {
                terms.push(self.and()?);
                ops.push(pos);
            } else {
                return self.balanced(BinOp::Or, terms, &ops);
            }
        }
    }

    fn and(&mut self) -> Result<Ex, ExprError> {
        let mut terms = vec![self.not()?];
        let mut ops = Vec::new();
        loop {
            let pos = self.pos();
            if self.eat_kw("and") || self.eat_op("&&") {
                terms.push(self.not()?);
                ops.push(pos);
            } else {
                return self.balanced(BinOp::And, terms, &ops);
            }
        }
    }

    fn not(&mut self) -> Result<Ex, ExprError> {
        let pos = self.pos();
        if self.eat_kw("not") || self.eat_op("!") {
            let e = self.nested(Parser::not)?;
            return self.node(ExKind::Not(Box::new(e)), pos);
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Ex, ExprError> {
        let l = self.add()?;
        let pos = self.pos();
        let op = match self.peek() {
            Tok::Op("==") => BinOp::Eq,
            Tok::Op("!=") | Tok::Op("<>") => BinOp::Ne,
            Tok::Op("<") => BinOp::Lt,
            Tok::Op("<=") => BinOp::Le,
            Tok::Op(">") => BinOp::Gt,
            Tok::Op(">=") => BinOp::Ge,
            _ => return Ok(l),
        };
        self.bump();
        let r = self.add()?;
        self.bin(op, l, r, pos)
    }

    /// A chain of `+`, `-` and `&`, left to right. A run of `&` is grouped as a balanced tree
    /// (`x & a & b & c` is `x & ((a & b) & c)`: concatenation is associative), so long
    /// concatenations do not nest deeply.
    fn add(&mut self) -> Result<Ex, ExprError> {
        let mut l = self.mul()?;
        loop {
            let pos = self.pos();
            let op = match self.peek() {
                Tok::Op("+") => BinOp::Add,
                Tok::Op("-") => BinOp::Sub,
                Tok::Op("&") => BinOp::Concat,
                _ => return Ok(l),
            };
            self.bump();
            if op != BinOp::Concat {
                let r = self.mul()?;
                l = self.bin(op, l, r, pos)?;
                continue;
            }
            let mut run = vec![self.mul()?];
            let mut ops = Vec::new();
            while self.is_op("&") {
                ops.push(self.pos());
                self.bump();
                run.push(self.mul()?);
            }
            let r = self.balanced(BinOp::Concat, run, &ops)?;
            l = self.bin(BinOp::Concat, l, r, pos)?;
        }
    }

    fn mul(&mut self) -> Result<Ex, ExprError> {
        let mut l = self.unary()?;
        loop {
            let pos = self.pos();
            let op = match self.peek() {
                Tok::Op("*") => BinOp::Mul,
                Tok::Op("/") => BinOp::Div,
                Tok::Op("%") => BinOp::Mod,
                _ => return Ok(l),
            };
            self.bump();
            let r = self.unary()?;
            l = self.bin(op, l, r, pos)?;
        }
    }

    fn unary(&mut self) -> Result<Ex, ExprError> {
        let pos = self.pos();
        if self.eat_op("-") {
            let e = self.nested(Parser::unary)?;
            return match e.kind {
                ExKind::Int(v) => self.node(ExKind::Int(-v), pos),
                ExKind::Real(v) => self.node(ExKind::Real(-v), pos),
                _ => self.node(ExKind::Neg(Box::new(e)), pos),
            };
        }
        if self.eat_op("+") {
            return self.nested(Parser::unary);
        }
        self.primary()
    }

    fn args(&mut self) -> Result<Vec<Ex>, ExprError> {
        // '(' already consumed.
        let mut args = Vec::new();
        if self.eat_op(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat_op(")") {
                return Ok(args);
            }
            if !self.is_op(",") {
                return Err(err(
                    self.pos(),
                    format!("expected ',' or ')', found {}", describe(self.peek())),
                ));
            }
            self.bump();
        }
    }

    fn primary(&mut self) -> Result<Ex, ExprError> {
        let pos = self.pos();
        let t = self.peek().clone();
        let kind = match t {
            Tok::Int(v) => {
                self.bump();
                ExKind::Int(v)
            }
            Tok::Real(v) => {
                self.bump();
                ExKind::Real(v)
            }
            Tok::Str(s) => {
                self.bump();
                ExKind::Str(s)
            }
            Tok::Op("(") => {
                self.bump();
                let e = self.expr()?;
                self.expect_op(")")?;
                return Ok(e);
            }
            Tok::Ident(name) => {
                let lw = name.to_ascii_lowercase();
                match lw.as_str() {
                    "true" => {
                        self.bump();
                        ExKind::Bool(true)
                    }
                    "false" => {
                        self.bump();
                        ExKind::Bool(false)
                    }
                    "null" => {
                        self.bump();
                        ExKind::Null
                    }
                    _ if RESERVED.contains(&lw.as_str()) => return Err(self.unexpected()),
                    _ => {
                        self.bump();
                        if self.eat_op("(") {
                            ExKind::Call(name, self.args()?)
                        } else if self.is_op(".") && matches!(self.peek_at(1), Tok::Ident(_)) {
                            self.bump();
                            let Tok::Ident(m) = self.bump().tok else {
                                unreachable!()
                            };
                            self.expect_op("(")?;
                            ExKind::Method(name, m, self.args()?)
                        } else {
                            ExKind::Name(name)
                        }
                    }
                }
            }
            _ => return Err(self.unexpected()),
        };
        self.node(kind, pos)
    }
}

/// The highest `parameter(n)` used in a UDF body (its arity).
pub(crate) fn max_parameter(stmts: &[St]) -> u32 {
    fn ex(e: &Ex) -> u32 {
        match &e.kind {
            ExKind::Call(n, args) => {
                let own = match (n.eq_ignore_ascii_case("parameter"), args.first()) {
                    (
                        true,
                        Some(Ex {
                            kind: ExKind::Int(v),
                            ..
                        }),
                    ) if *v > 0 => u32::try_from(*v).unwrap_or(0),
                    _ => 0,
                };
                args.iter().map(ex).fold(own, u32::max)
            }
            ExKind::Method(_, _, args) => args.iter().map(ex).max().unwrap_or(0),
            ExKind::Neg(e) | ExKind::Not(e) => ex(e),
            ExKind::Bin(_, l, r) => ex(l).max(ex(r)),
            _ => 0,
        }
    }
    fn st(s: &St) -> u32 {
        match s {
            St::Decl { names, .. } => names
                .iter()
                .filter_map(|(_, _, e)| e.as_ref().map(ex))
                .max()
                .unwrap_or(0),
            St::Assign(_, _, e) | St::Expr(e) | St::Return(Some(e), _) => ex(e),
            St::Return(None, _) => 0,
            St::If(c, t, e) => ex(c).max(max_parameter(t)).max(max_parameter(e)),
            St::Block(b) => max_parameter(b),
        }
    }
    stmts.iter().map(st).max().unwrap_or(0)
}
