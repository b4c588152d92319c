//! From a [`ProjectSpec`] to compiled windows: schemas resolved along edges, expressions
//! compiled once, join keys derived, every problem reported with its line.

use std::collections::BTreeMap;

use sluice_event::{Field, FieldType, Schema};
use sluice_expr::{EnvSpec, ExprType, Globals, Program};
use sluice_model::{
    ContQuerySpec, Diagnostic, ExprInitSpec, IndexKind, JoinOutputSpec, JoinType, ProjectSpec,
    WindowKind, WindowSpec,
};

use crate::state::{KeyedStore, Retention};
use crate::window::aggregate::{AggField, AggFn, AggregateWindow, Arg};
use crate::window::join::{JoinWindow, KeyMode, KeySrc, OutSrc};
use crate::window::{
    Autogen, ComputeWindow, CopyWindow, FilterWindow, SourceWindow, Splitter, UnionWindow,
    WindowImpl,
};
use crate::{Node, OutEdge, WindowId};

struct Ctx<'a> {
    diags: Vec<Diagnostic>,
    cq: &'a ContQuerySpec,
}

impl Ctx<'_> {
    fn err(&mut self, line: u32, w: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic {
            line,
            path: Some(format!("{}/{}", self.cq.name, w)),
            message: msg.into(),
        });
    }
}

fn fields_of(s: &Schema) -> Vec<(String, FieldType)> {
    s.fields().iter().map(|f| (f.name.clone(), f.ty)).collect()
}

fn udfs_of(init: Option<&ExprInitSpec>) -> Vec<(String, FieldType, String)> {
    init.map(|i| {
        i.udfs
            .iter()
            .map(|u| (u.name.clone(), u.ty, u.code.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// Builds a program over `fields` with the window's initializer and UDFs.
fn program(
    ctx: &mut Ctx,
    w: &WindowSpec,
    fields: &[(String, FieldType)],
    init: Option<&ExprInitSpec>,
) -> Option<(Program, Globals)> {
    let udfs = udfs_of(init);
    let code = init
        .and_then(|i| i.initializer.as_ref())
        .map(|i| i.code.as_str());
    let line = init
        .and_then(|i| i.initializer.as_ref().map(|x| x.line))
        .unwrap_or(w.line);
    let env = EnvSpec {
        initializer: code,
        udfs: &udfs,
    };
    match Program::new(fields, &env) {
        Ok(p) => match p.init_globals() {
            Ok(g) => Some((p, g)),
            Err(e) => {
                ctx.err(line, &w.name, format!("initializer failed: {e}"));
                None
            }
        },
        Err(e) => {
            ctx.err(line, &w.name, format!("initializer or UDF: {e}"));
            None
        }
    }
}

fn index_of(w: &WindowSpec, cq: &ContQuerySpec, project: &ProjectSpec) -> IndexKind {
    w.index
        .or(cq.index)
        .or(project.index)
        .unwrap_or(IndexKind::RbTree)
}

/// Compiles every window of every continuous query.
pub fn compile(project: &ProjectSpec) -> Result<Vec<Node>, Vec<Diagnostic>> {
    let mut all_diags = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for cq in &project.contqueries {
        let mut ctx = Ctx {
            diags: Vec::new(),
            cq,
        };
        let order = sluice_model::topo_order(cq);
        let base = nodes.len();
        // Window name -> id.
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, &wi) in order.iter().enumerate() {
            ids.insert(cq.windows[wi].name.as_str(), base + k);
        }
        let mut schemas: Vec<Option<Schema>> = vec![None; order.len()];
        // `insert_only[k]`: no delete or update can ever leave window k, derived from the
        // whole graph above it once here (a source that accepts only inserts and has no
        // retention; a copy without retention, a filter, compute or strict union whose inputs
        // are all insert-only). Every insert-only fast path (running min/max/first/last,
        // 8-byte integer sums, a stream join's unkept left side) is chosen from this fact,
        // never from a source's declaration (docs/semantics.md, "What can reach a window").
        let mut insert_only: Vec<bool> = vec![false; order.len()];
        for (k, &wi) in order.iter().enumerate() {
            let w = &cq.windows[wi];
            // Inputs in edge order; join ports by role, else edge order.
            let mut inputs: Vec<(usize, Option<String>)> = Vec::new();
            for e in cq.edges.iter().filter(|e| e.target == w.name) {
                if let Some(&src) = ids.get(e.source.as_str()) {
                    inputs.push((src - base, e.role.clone()));
                }
            }
            let built = build_window(&mut ctx, project, w, &inputs, &schemas, &insert_only);
            if let Some((schema, imp, io)) = built {
                schemas[k] = Some(schema.clone());
                insert_only[k] = io;
                let splitter = w.splitter.as_ref().and_then(|sp| {
                    let fields = fields_of(&schema);
                    let (mut p, g) = program(&mut ctx, w, &fields, sp.init.as_ref())?;
                    match p.compile(&sp.expression) {
                        Ok(id) => Some(Splitter {
                            expr: id,
                            program: p,
                            globals: g,
                        }),
                        Err(e) => {
                            ctx.err(sp.line, &w.name, format!("splitter expression: {e}"));
                            None
                        }
                    }
                });
                nodes.push(Node {
                    cq: cq.name.clone(),
                    name: w.name.clone(),
                    path: format!("{}/{}", cq.name, w.name),
                    schema,
                    imp,
                    edges: Vec::new(),
                    splitter,
                    output_insert_only: w.output_insert_only,
                    insert_only: io,
                    observed: false,
                });
            } else {
                // Keep numbering aligned; the project is refused anyway.
                nodes.push(placeholder(cq, w));
            }
        }
        // Out edges.
        for e in &cq.edges {
            let (Some(&s), Some(&t)) = (ids.get(e.source.as_str()), ids.get(e.target.as_str()))
            else {
                continue;
            };
            let target_spec = &cq.windows[order[t - base]];
            let port = if matches!(target_spec.kind, WindowKind::Join(_)) {
                join_port(cq, &target_spec.name, e)
            } else {
                0
            };
            nodes[s].edges.push(OutEdge {
                target: WindowId(t as u32),
                port,
                slot: e.slot,
            });
        }
        all_diags.extend(ctx.diags);
    }
    if all_diags.is_empty() {
        Ok(nodes)
    } else {
        all_diags.sort_by_key(|d| d.line);
        Err(all_diags)
    }
}

fn placeholder(cq: &ContQuerySpec, w: &WindowSpec) -> Node {
    Node {
        cq: cq.name.clone(),
        name: w.name.clone(),
        path: format!("{}/{}", cq.name, w.name),
        schema: Schema::default(),
        imp: WindowImpl::Copy(CopyWindow {
            keys: Vec::new(),
            store: KeyedStore::new(None),
        }),
        edges: Vec::new(),
        splitter: None,
        output_insert_only: false,
        insert_only: false,
        observed: false,
    }
}

/// Join input port of edge `e`: role left/right, else the order of edges into the join.
fn join_port(cq: &ContQuerySpec, join: &str, e: &sluice_model::EdgeSpec) -> u8 {
    match e.role.as_deref() {
        Some("left") => 0,
        Some("right") => 1,
        _ => {
            let pos = cq
                .edges
                .iter()
                .filter(|x| x.target == join)
                .position(|x| x == e)
                .unwrap_or(0);
            u8::from(pos > 0)
        }
    }
}

fn retention_of(ctx: &mut Ctx, w: &WindowSpec, schema: &Schema) -> Option<Option<Retention>> {
    let Some(r) = &w.retention else {
        return Some(None);
    };
    let field = match &r.field {
        Some(f) => match schema.index_of(f) {
            Some(i) if matches!(schema.field(i).ty, FieldType::Date | FieldType::Stamp) => {
                // Event time is kept in microseconds for stamps, seconds for dates.
                Some(i)
            }
            Some(_) => {
                ctx.err(
                    r.line,
                    &w.name,
                    format!("retention field '{f}' must be a date or stamp field"),
                );
                return None;
            }
            None => {
                ctx.err(
                    r.line,
                    &w.name,
                    format!("retention field '{f}' is not in the schema ({schema})"),
                );
                return None;
            }
        },
        None => None,
    };
    let mut spec = r.clone();
    // A date field counts seconds: scale the time amount to its unit.
    if let Some(i) = field {
        if schema.field(i).ty == FieldType::Date {
            spec.amount /= 1_000_000;
        }
    }
    Some(Some(Retention::new(&spec, field)))
}

type Built = (Schema, WindowImpl, bool);

fn build_window(
    ctx: &mut Ctx,
    project: &ProjectSpec,
    w: &WindowSpec,
    inputs: &[(usize, Option<String>)],
    schemas: &[Option<Schema>],
    insert_only: &[bool],
) -> Option<Built> {
    let index = index_of(w, ctx.cq, project);
    let stateless = index.is_stateless();
    let input_schema =
        |k: usize| -> Option<&Schema> { inputs.get(k).and_then(|(i, _)| schemas[*i].as_ref()) };
    if !matches!(
        w.kind,
        WindowKind::Source { .. } | WindowKind::Unsupported { .. }
    ) {
        if inputs.is_empty() {
            ctx.err(w.line, &w.name, "the window has no input edge");
            return None;
        }
        if inputs.iter().any(|(i, _)| schemas[*i].is_none()) {
            // An input failed to compile; its error is reported already.
            return None;
        }
    }
    let all_inputs_insert_only = inputs.iter().all(|(i, _)| insert_only[*i]);
    match &w.kind {
        WindowKind::Unsupported { reason } => {
            ctx.err(
                w.line,
                &w.name,
                format!("{} cannot run: {reason}", w.element),
            );
            None
        }
        WindowKind::Source {
            insert_only: io,
            autogen_key,
        } => {
            let schema = w.schema.clone()?;
            let keys = schema.key_indices().to_vec();
            if stateless && !io {
                ctx.err(w.line, &w.name, "index pi_EMPTY keeps no state: the source must be insert-only (insert-only=\"true\")");
                return None;
            }
            if stateless && w.retention.is_some() {
                ctx.err(
                    w.line,
                    &w.name,
                    "retention needs a stateful index, not pi_EMPTY",
                );
                return None;
            }
            let autogen = if *autogen_key {
                let f = keys[0];
                Some(Autogen {
                    field: f,
                    ty: schema.field(f).ty,
                    next: 1,
                })
            } else {
                None
            };
            let retention = retention_of(ctx, w, &schema)?;
            // What the source accepts (only inserts) is not what it emits: its own retention
            // emits deletes, so the windows below see deletes (docs/semantics.md,
            // "What can reach a window").
            let emits_only_inserts = (*io || *autogen_key) && retention.is_none();
            let store = (!stateless).then(|| KeyedStore::new(retention));
            let imp = WindowImpl::Source(SourceWindow {
                keys,
                insert_only: *io || *autogen_key,
                autogen,
                store,
            });
            Some((schema, imp, emits_only_inserts))
        }
        WindowKind::Copy => {
            let schema = input_schema(0)?.clone();
            let retention = retention_of(ctx, w, &schema)?;
            let io = all_inputs_insert_only && retention.is_none();
            let imp = WindowImpl::Copy(CopyWindow {
                keys: schema.key_indices().to_vec(),
                store: KeyedStore::new(retention),
            });
            Some((schema, imp, io))
        }
        WindowKind::Union { strict } => {
            let schema = input_schema(0)?.clone();
            for (k, _) in inputs.iter().enumerate().skip(1) {
                let other = input_schema(k)?;
                if *other != schema {
                    ctx.err(
                        w.line,
                        &w.name,
                        format!(
                            "union inputs must share one schema: '{schema}' and '{other}' differ"
                        ),
                    );
                    return None;
                }
            }
            let imp = WindowImpl::Union(UnionWindow {
                keys: schema.key_indices().to_vec(),
                strict: *strict,
                store: KeyedStore::new(None),
            });
            Some((schema, imp, all_inputs_insert_only && *strict))
        }
        WindowKind::Filter { expression, line } => {
            let schema = input_schema(0)?.clone();
            let fields = fields_of(&schema);
            let (mut p, g) = program(ctx, w, &fields, w.expr_init.as_ref())?;
            let expr = match p.compile(expression) {
                Ok(id) => id,
                Err(e) => {
                    ctx.err(*line, &w.name, format!("filter expression: {e}"));
                    return None;
                }
            };
            let imp = WindowImpl::Filter(FilterWindow {
                expr,
                program: p,
                globals: g,
                keys: schema.key_indices().to_vec(),
                store: (!stateless).then(|| KeyedStore::new(None)),
            });
            Some((schema, imp, all_inputs_insert_only))
        }
        WindowKind::Compute { field_exprs } => {
            let schema = w.schema.clone()?;
            let input = input_schema(0)?.clone();
            let mut key_map = Vec::new();
            for &k in schema.key_indices() {
                let f = schema.field(k);
                match input.index_of(&f.name) {
                    Some(i) if input.field(i).ty == f.ty => key_map.push((k, i)),
                    Some(i) => ctx.err(
                        w.line,
                        &w.name,
                        format!(
                            "key field '{}' is {} here but {} in the input",
                            f.name,
                            f.ty,
                            input.field(i).ty
                        ),
                    ),
                    None => ctx.err(
                        w.line,
                        &w.name,
                        format!(
                            "key field '{}' must be a field of the input ({input})",
                            f.name
                        ),
                    ),
                }
            }
            let fields = fields_of(&input);
            let (mut p, g) = program(ctx, w, &fields, w.expr_init.as_ref())?;
            let non_keys = schema.non_key_indices();
            let mut exprs = Vec::new();
            for (pos, (text, line)) in non_keys.iter().zip(field_exprs) {
                match p.compile(text) {
                    Ok(id) => exprs.push((*pos, id, schema.field(*pos).ty)),
                    Err(e) => ctx.err(
                        *line,
                        &w.name,
                        format!("field-expr for '{}': {e}", schema.field(*pos).name),
                    ),
                }
            }
            if exprs.len() != non_keys.len() || key_map.len() != schema.key_indices().len() {
                return None;
            }
            let imp = WindowImpl::Compute(ComputeWindow {
                key_map,
                exprs,
                width: schema.len(),
                out_keys: schema.key_indices().to_vec(),
                program: p,
                globals: g,
                store: (!stateless).then(|| KeyedStore::new(None)),
                names: schema.fields().iter().map(|f| f.name.clone()).collect(),
            });
            Some((schema, imp, all_inputs_insert_only))
        }
        WindowKind::Aggregate { field_exprs } => {
            let schema = w.schema.clone()?;
            let input = input_schema(0)?.clone();
            let mut group_by = Vec::new();
            for &k in schema.key_indices() {
                let f = schema.field(k);
                match input.index_of(&f.name) {
                    Some(i) => group_by.push(i),
                    None => ctx.err(
                        w.line,
                        &w.name,
                        format!(
                            "group-by key field '{}' must be a field of the input ({input})",
                            f.name
                        ),
                    ),
                }
            }
            let fields = fields_of(&input);
            let (mut p, g) = program(ctx, w, &fields, w.expr_init.as_ref())?;
            let mut aggs = Vec::new();
            let non_keys = schema.non_key_indices();
            for (pos, (text, line)) in non_keys.iter().zip(field_exprs) {
                match parse_agg(text, &input, &mut p) {
                    Ok((func, args)) => aggs.push(AggField {
                        func,
                        args,
                        ty: schema.field(*pos).ty,
                        out_pos: *pos,
                    }),
                    Err(e) => ctx.err(
                        *line,
                        &w.name,
                        format!("field-expr for '{}': {e}", schema.field(*pos).name),
                    ),
                }
            }
            if aggs.len() != non_keys.len() || group_by.len() != schema.key_indices().len() {
                return None;
            }
            let io = all_inputs_insert_only;
            // The group keys are the input's values: their column is typed by the input.
            let key_types: Vec<_> = group_by.iter().map(|&i| input.field(i).ty).collect();
            let imp = WindowImpl::Aggregate(Box::new(AggregateWindow::new(
                aggs,
                group_by,
                &key_types,
                schema.len(),
                schema.key_indices().to_vec(),
                input.key_indices().to_vec(),
                io,
                p,
                g,
            )));
            Some((schema, imp, false))
        }
        WindowKind::Join(js) => {
            if inputs.len() != 2 {
                ctx.err(
                    w.line,
                    &w.name,
                    format!("a join needs exactly two inputs, found {}", inputs.len()),
                );
                return None;
            }
            // Ports: role left/right, else order.
            let (mut l, mut r) = (0usize, 1usize);
            if inputs[0].1.as_deref() == Some("right") || inputs[1].1.as_deref() == Some("left") {
                std::mem::swap(&mut l, &mut r);
            }
            let ls = input_schema(l)?.clone();
            let rs = input_schema(r)?.clone();
            let left_insert_only = insert_only[inputs[l].0];
            build_join(ctx, w, js, &ls, &rs, left_insert_only)
        }
    }
}

/// Splits `f(a, b)` arguments at top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut cur = String::new();
    for ch in s.chars() {
        match quote {
            Some(q) => {
                cur.push(ch);
                if ch == q {
                    quote = None;
                }
            }
            None => match ch {
                '"' | '\'' => {
                    quote = Some(ch);
                    cur.push(ch);
                }
                '(' => {
                    depth += 1;
                    cur.push(ch);
                }
                ')' => {
                    depth -= 1;
                    cur.push(ch);
                }
                ',' if depth == 0 => out.push(std::mem::take(&mut cur).trim().to_string()),
                _ => cur.push(ch),
            },
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    let q = s.chars().next()?;
    if (q == '"' || q == '\'') && s.len() >= 2 && s.ends_with(q) {
        Some(s[1..s.len() - 1].to_string())
    } else {
        None
    }
}

/// Parses an aggregate field-expr (`ESP_aSum(quantity)`; a plain expression is the value on
/// the group's latest event).
fn parse_agg(text: &str, input: &Schema, p: &mut Program) -> Result<(AggFn, Vec<Arg>), String> {
    let t = text.trim();
    let arg = |a: &str, p: &mut Program| -> Result<Arg, String> {
        match input.index_of(a.trim()) {
            Some(i) => Ok(Arg::Field(i)),
            None => p.compile(a).map(Arg::Expr).map_err(|e| e.to_string()),
        }
    };
    let Some(open) = t.find('(') else {
        return Ok((AggFn::Plain, vec![arg(t, p)?]));
    };
    let name = t[..open].trim();
    if !name.starts_with("ESP_a") {
        return Ok((AggFn::Plain, vec![arg(t, p)?]));
    }
    if !t.ends_with(')') {
        return Err(format!(
            "'{t}' is not a function call: expected ')' at the end"
        ));
    }
    let args = split_args(&t[open + 1..t.len() - 1]);
    let want = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{name} takes {n} argument(s), found {}",
                args.len()
            ))
        }
    };
    let one = |p: &mut Program| -> Result<Vec<Arg>, String> { Ok(vec![arg(&args[0], p)?]) };
    let (func, a) = match name {
        "ESP_aSum" => (want(1).map(|_| AggFn::Sum)?, one(p)?),
        "ESP_aCount" => {
            if !args.is_empty() {
                return Err(format!("ESP_aCount takes no argument, found {}", args.len()));
            }
            (AggFn::Count, Vec::new())
        }
        "ESP_aAve" => (want(1).map(|_| AggFn::Ave)?, one(p)?),
        "ESP_aStd" => (want(1).map(|_| AggFn::Std)?, one(p)?),
        "ESP_aMax" => (want(1).map(|_| AggFn::Max)?, one(p)?),
        "ESP_aMin" => (want(1).map(|_| AggFn::Min)?, one(p)?),
        "ESP_aFirst" => (want(1).map(|_| AggFn::First)?, one(p)?),
        "ESP_aLast" => (want(1).map(|_| AggFn::Last)?, one(p)?),
        "ESP_aMode" => (want(1).map(|_| AggFn::Mode)?, one(p)?),
        "ESP_aCountDistinct" => (want(1).map(|_| AggFn::CountDistinct)?, one(p)?),
        "ESP_aWAve" => {
            want(2)?;
            (AggFn::WAve, vec![arg(&args[0], p)?, arg(&args[1], p)?])
        }
        "ESP_aLag" => {
            want(2)?;
            let n: usize = args[1]
                .trim()
                .parse()
                .map_err(|_| format!("ESP_aLag's second argument must be a whole number, found '{}'", args[1]))?;
            (AggFn::Lag(n), one(p)?)
        }
        "ESP_aCat" => {
            if args.is_empty() || args.len() > 2 {
                return Err(format!("ESP_aCat takes 1 or 2 arguments, found {}", args.len()));
            }
            let sep = match args.get(1) {
                Some(s) => unquote(s).ok_or_else(|| format!("ESP_aCat's separator must be a quoted string, found {s}"))?,
                None => ",".to_string(),
            };
            (AggFn::Cat(sep), one(p)?)
        }
        other => {
            return Err(format!(
                "aggregate function {other} is not supported (supported: ESP_aSum, ESP_aCount, ESP_aAve, ESP_aStd, ESP_aWAve, ESP_aMax, ESP_aMin, ESP_aFirst, ESP_aLast, ESP_aLag, ESP_aCat, ESP_aMode, ESP_aCountDistinct)"
            ))
        }
    };
    Ok((func, a))
}

fn build_join(
    ctx: &mut Ctx,
    w: &WindowSpec,
    js: &sluice_model::JoinSpec,
    ls: &Schema,
    rs: &Schema,
    left_insert_only: bool,
) -> Option<Built> {
    let mut left_cond = Vec::new();
    let mut right_cond = Vec::new();
    for (lf, rf) in &js.conditions {
        match (ls.index_of(lf), rs.index_of(rf)) {
            (Some(a), Some(b)) => {
                left_cond.push(a);
                right_cond.push(b);
            }
            (None, _) => ctx.err(
                w.line,
                &w.name,
                format!("join condition: '{lf}' is not a field of the left input ({ls})"),
            ),
            (_, None) => ctx.err(
                w.line,
                &w.name,
                format!("join condition: '{rf}' is not a field of the right input ({rs})"),
            ),
        }
    }
    if js.conditions.is_empty() {
        ctx.err(
            w.line,
            &w.name,
            "a join needs at least one <fields left= right=/> condition",
        );
    }
    if left_cond.len() != js.conditions.len() || js.conditions.is_empty() {
        return None;
    }
    let covers_right = rs.key_indices().iter().all(|k| right_cond.contains(k));
    let covers_left = ls.key_indices().iter().all(|k| left_cond.contains(k));
    let mode = match (covers_left, covers_right) {
        (true, true) => KeyMode::OneToOne,
        (false, true) => KeyMode::LeftKey,
        (true, false) => KeyMode::RightKey,
        (false, false) => KeyMode::ManyToMany,
    };
    match (mode, js.join_type) {
        (KeyMode::LeftKey, JoinType::RightOuter | JoinType::FullOuter) => {
            ctx.err(w.line, &w.name, "this join is one-to-many with the fact stream on the left (the conditions cover the right key): use inner or leftouter");
            return None;
        }
        (KeyMode::RightKey, JoinType::LeftOuter | JoinType::FullOuter) => {
            ctx.err(w.line, &w.name, "this join is many-to-one with the fact stream on the right (the conditions cover the left key): use inner or rightouter");
            return None;
        }
        _ => {}
    }
    // `left-index="pi_EMPTY"`: the fact stream on the left is not kept (docs/semantics.md).
    let stream_left = js.left_index == Some(sluice_model::IndexKind::Empty);
    if stream_left {
        if mode != KeyMode::LeftKey {
            ctx.err(w.line, &w.name, "left-index=\"pi_EMPTY\" keeps no left rows, so the join conditions must cover the right window's key (each left event then meets at most one right row)");
            return None;
        }
        if !left_insert_only {
            ctx.err(w.line, &w.name, "left-index=\"pi_EMPTY\" keeps no left rows, so the left input must be insert-only (for example a source with insert-only=\"true\")");
            return None;
        }
    }
    if js.right_index == Some(sluice_model::IndexKind::Empty) {
        ctx.err(w.line, &w.name, "right-index=\"pi_EMPTY\" is not supported: the right (dimension) side of a join is always kept; put the fact stream on the left with left-index=\"pi_EMPTY\"");
        return None;
    }
    // Output key fields.
    let mut fields: Vec<Field> = Vec::new();
    let mut key_src = Vec::new();
    let map_right_for_left = |lk: usize| {
        left_cond
            .iter()
            .position(|&c| c == lk)
            .map(|p| right_cond[p])
    };
    let map_left_for_right = |rk: usize| {
        right_cond
            .iter()
            .position(|&c| c == rk)
            .map(|p| left_cond[p])
    };
    // A key field of one side, with where its value comes from on each side; a name already
    // taken (many-to-many) gets `_r`.
    let mut add_key = |f: &Field, src: KeySrc| {
        let name = if fields.iter().any(|g| g.name == f.name) {
            format!("{}_r", f.name)
        } else {
            f.name.clone()
        };
        fields.push(Field {
            name,
            ty: f.ty,
            key: true,
        });
        key_src.push(src);
    };
    match mode {
        KeyMode::LeftKey | KeyMode::OneToOne => {
            for &k in ls.key_indices() {
                let right = map_right_for_left(k);
                add_key(
                    ls.field(k),
                    KeySrc {
                        left: Some(k),
                        right,
                    },
                );
            }
        }
        KeyMode::RightKey => {
            for &k in rs.key_indices() {
                let left = map_left_for_right(k);
                add_key(
                    rs.field(k),
                    KeySrc {
                        left,
                        right: Some(k),
                    },
                );
            }
        }
        KeyMode::ManyToMany => {
            for &k in ls.key_indices() {
                add_key(
                    ls.field(k),
                    KeySrc {
                        left: Some(k),
                        right: None,
                    },
                );
            }
            for &k in rs.key_indices() {
                add_key(
                    rs.field(k),
                    KeySrc {
                        left: None,
                        right: Some(k),
                    },
                );
            }
        }
    }
    // Expression fields: l_ then r_.
    let mut combined: Vec<(String, FieldType)> = Vec::new();
    for f in ls.fields() {
        combined.push((format!("l_{}", f.name), f.ty));
    }
    for f in rs.fields() {
        combined.push((format!("r_{}", f.name), f.ty));
    }
    let (mut p, g) = program(ctx, w, &combined, w.expr_init.as_ref())?;
    let mut outputs = Vec::new();
    let mut ok = true;
    let add =
        |ctx: &mut Ctx, fields: &mut Vec<Field>, name: &str, ty: FieldType, line: u32| -> bool {
            if fields.iter().any(|f| f.name == name) {
                ctx.err(
                    line,
                    &w.name,
                    format!(
                    "output field '{name}' is declared twice (key fields are added automatically)"
                ),
                );
                false
            } else {
                fields.push(Field {
                    name: name.to_string(),
                    ty,
                    key: false,
                });
                true
            }
        };
    let side_field = |src: &str| -> Option<(bool, usize, FieldType)> {
        if let Some(n) = src.strip_prefix("l_") {
            ls.index_of(n).map(|i| (true, i, ls.field(i).ty))
        } else if let Some(n) = src.strip_prefix("r_") {
            rs.index_of(n).map(|i| (false, i, rs.field(i).ty))
        } else {
            None
        }
    };
    for o in &js.outputs {
        match o {
            JoinOutputSpec::Expr {
                name,
                ty,
                expr,
                line,
            } => match p.compile(expr) {
                Ok(id) => {
                    if let ExprType::Value(t) = p.result_type(id) {
                        let _ = t;
                    }
                    // A plain l_/r_ reference is copied, not evaluated.
                    let src = match side_field(expr.trim()) {
                        Some((true, i, t)) if t == *ty => OutSrc::Left(i),
                        Some((false, i, t)) if t == *ty => OutSrc::Right(i),
                        _ => OutSrc::Expr(id),
                    };
                    if add(ctx, &mut fields, name, *ty, *line) {
                        outputs.push(src);
                    } else {
                        ok = false;
                    }
                }
                Err(e) => {
                    ctx.err(*line, &w.name, format!("field-expr for '{name}': {e}"));
                    ok = false;
                }
            },
            JoinOutputSpec::Selection { name, source, line } => match side_field(source) {
                Some((left, i, t)) => {
                    if add(ctx, &mut fields, name, t, *line) {
                        outputs.push(if left {
                            OutSrc::Left(i)
                        } else {
                            OutSrc::Right(i)
                        });
                    } else {
                        ok = false;
                    }
                }
                None => {
                    ctx.err(*line, &w.name, format!("field-selection source '{source}' must be l_FIELD or r_FIELD of an input field"));
                    ok = false;
                }
            },
            JoinOutputSpec::Select {
                left,
                fields: names,
                exclude,
                line,
            } => {
                let s = if *left { ls } else { rs };
                let chosen: Vec<usize> = if names.is_empty() {
                    (0..s.len())
                        .filter(|i| !exclude.contains(&s.field(*i).name))
                        .collect()
                } else {
                    let mut v = Vec::new();
                    for n in names {
                        match s.index_of(n) {
                            Some(i) => v.push(i),
                            None => {
                                ctx.err(
                                    *line,
                                    &w.name,
                                    format!(
                                        "'{n}' is not a field of the {} input ({s})",
                                        if *left { "left" } else { "right" }
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                    v
                };
                for i in chosen {
                    let f = s.field(i);
                    // Key fields already in the output are skipped, not duplicated.
                    if fields.iter().any(|g| g.name == f.name) {
                        continue;
                    }
                    fields.push(Field {
                        name: f.name.clone(),
                        ty: f.ty,
                        key: false,
                    });
                    outputs.push(if *left {
                        OutSrc::Left(i)
                    } else {
                        OutSrc::Right(i)
                    });
                }
            }
        }
    }
    if !ok {
        return None;
    }
    let schema = match Schema::new(fields) {
        Ok(s) => s,
        Err(e) => {
            ctx.err(w.line, &w.name, format!("join output schema: {e}"));
            return None;
        }
    };
    let has_exprs = outputs.iter().any(|o| matches!(o, OutSrc::Expr(_)));
    let imp = WindowImpl::Join(Box::new(JoinWindow {
        join_type: js.join_type,
        mode,
        no_regenerates: js.no_regenerates,
        stream_left,
        left_cond,
        right_cond,
        left_keys: ls.key_indices().to_vec(),
        right_keys: rs.key_indices().to_vec(),
        left_width: ls.len(),
        right_width: rs.len(),
        key_src,
        outputs,
        has_exprs,
        program: p,
        globals: g,
        left: Default::default(),
        right: Default::default(),
        left_by_jk: Default::default(),
        right_by_jk: Default::default(),
        out: Default::default(),
    }));
    // A stream join only ever inserts.
    Some((schema, imp, stream_left))
}

/// FNV-1a over the canonical text of the graph: paths, kinds, schemas, edges.
pub fn fingerprint(nodes: &[Node]) -> u64 {
    let mut text = String::new();
    for n in nodes {
        text.push_str(&format!("{}|{}|{}\n", n.path, n.imp.kind(), n.schema));
        for e in &n.edges {
            text.push_str(&format!(" ->{}:{}:{:?}\n", e.target.0, e.port, e.slot));
        }
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
