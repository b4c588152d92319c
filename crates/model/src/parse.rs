//! XML text to [`ProjectSpec`]s.
//!
//! Two passes: the text is first read into an [`XmlNode`] tree (a malformed document gives one
//! diagnostic), then the tree is walked into specs, collecting every problem, and each project
//! is validated ([`crate::validate`]).

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use sluice_event::schema::Field;
use sluice_event::{FieldType, Schema};

use crate::spec::*;
use crate::validate::validate_with;

/// Window elements the engine executes; the others load as [`WindowKind::Unsupported`].
const EXECUTED: [&str; 7] = [
    "window-source",
    "window-filter",
    "window-compute",
    "window-aggregate",
    "window-copy",
    "window-join",
    "window-union",
];

/// The deepest element nesting a model may have (the root counts as 1). The deepest ESP
/// models nest about 12 elements (`engine/projects/project/contqueries/contquery/windows/
/// window-*/connectors/connector/properties/property`); 64 leaves room for any real one while
/// keeping every recursive walk of the tree (copy, drop, write back) shallow.
pub const MAX_XML_DEPTH: usize = 64;

/// Parses model text: an `<engine>` root (with `<projects>`), or a bare `<project>`. Returns
/// every project, or every problem found, each with its 1-based line.
///
/// `vars` resolves `@NAME@` placeholders in attribute values and element text; an unresolved
/// placeholder is left as written.
pub fn parse_models(
    xml: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ProjectSpec>, Vec<Diagnostic>> {
    let root = parse_xml_node(xml, vars).map_err(|d| vec![d])?;
    let project_nodes: Vec<&XmlNode> = match root.name.as_str() {
        "project" => vec![&root],
        "engine" => root
            .children_named("projects")
            .flat_map(|p| p.children_named("project"))
            .collect(),
        other => {
            return Err(vec![Diagnostic {
                line: root.line,
                path: None,
                message: format!("expected <engine> or <project> root, found <{other}>"),
            }])
        }
    };
    let mut diags = Vec::new();
    let mut projects = Vec::new();
    for node in project_nodes {
        let mut b = Builder::default();
        let project = b.project(node);
        diags.append(&mut b.diags);
        diags.extend(validate_with(&project, &b.schema_errors));
        projects.push(project);
    }
    if diags.is_empty() {
        Ok(projects)
    } else {
        diags.sort_by_key(|d| d.line);
        Err(diags)
    }
}

/// Like [`parse_models`], but exactly one project is expected.
pub fn parse_project(
    xml: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<ProjectSpec, Vec<Diagnostic>> {
    let mut projects = parse_models(xml, vars)?;
    if projects.len() == 1 {
        Ok(projects.remove(0))
    } else {
        Err(vec![Diagnostic {
            line: 1,
            path: None,
            message: format!("expected exactly one <project>, found {}", projects.len()),
        }])
    }
}

/// Reads well-formed XML into an [`XmlNode`] tree (comments, declarations and processing
/// instructions dropped; `@NAME@` substituted). Text that is only whitespace between child
/// elements is dropped; other text is kept as written (entities decoded, CDATA unwrapped).
pub fn parse_xml_node(
    xml: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<XmlNode, Diagnostic> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut lines = LineCounter::new(xml);
    let mut stack: Vec<XmlNode> = Vec::new();
    let mut root: Option<XmlNode> = None;
    let fail = |line: u32, message: String| Diagnostic {
        line,
        path: None,
        message,
    };
    loop {
        let start = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                let line = lines.line_at(reader.error_position() as usize);
                return Err(fail(line, format!("malformed XML: {e}")));
            }
        };
        match event {
            Event::Start(e) => {
                let line = lines.line_at(start);
                too_deep(stack.len() + 1, line)?;
                stack.push(start_node(&e, line, vars).map_err(|m| fail(line, m))?);
            }
            Event::Empty(e) => {
                let line = lines.line_at(start);
                too_deep(stack.len() + 1, line)?;
                let node = start_node(&e, line, vars).map_err(|m| fail(line, m))?;
                finish(node, &mut stack, &mut root, vars)?;
            }
            Event::End(_) => match stack.pop() {
                Some(node) => finish(node, &mut stack, &mut root, vars)?,
                None => {
                    let line = lines.line_at(start);
                    return Err(fail(line, "malformed XML: unmatched end tag".into()));
                }
            },
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| {
                    let line = lines.line_at(start);
                    fail(line, format!("malformed XML: {e}"))
                })?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => {
                        let line = lines.line_at(start);
                        return Err(fail(
                            line,
                            "malformed XML: text outside the root element".into(),
                        ));
                    }
                }
            }
            Event::CData(c) => {
                let bytes = c.into_inner();
                let text = String::from_utf8_lossy(&bytes);
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&text),
                    None => {
                        let line = lines.line_at(start);
                        return Err(fail(
                            line,
                            "malformed XML: CDATA outside the root element".into(),
                        ));
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(open) = stack.last() {
        let line = lines.line_at(xml.len());
        return Err(fail(
            line,
            format!(
                "malformed XML: <{}> opened at line {} is not closed",
                open.name, open.line
            ),
        ));
    }
    root.ok_or_else(|| {
        fail(
            1,
            "empty document: expected <engine> or <project> root".into(),
        )
    })
}

/// Refuses an element at nesting `depth` (the root is 1) beyond [`MAX_XML_DEPTH`].
fn too_deep(depth: usize, line: u32) -> Result<(), Diagnostic> {
    if depth > MAX_XML_DEPTH {
        return Err(Diagnostic {
            line,
            path: None,
            message: format!(
                "an element nested more than {MAX_XML_DEPTH} elements deep (the limit for a model)"
            ),
        });
    }
    Ok(())
}

fn start_node(
    e: &BytesStart<'_>,
    line: u32,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<XmlNode, String> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| format!("malformed XML: bad attribute in <{name}>: {err}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|err| format!("malformed XML: attribute '{key}' of <{name}>: {err}"))?;
        attrs.push((key, subst(&value, vars).into_owned()));
    }
    Ok(XmlNode {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
        line,
    })
}

fn finish(
    mut node: XmlNode,
    stack: &mut [XmlNode],
    root: &mut Option<XmlNode>,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Diagnostic> {
    if !node.children.is_empty() && node.text.trim().is_empty() {
        node.text.clear();
    } else if let Cow::Owned(s) = subst(&node.text, vars) {
        node.text = s;
    }
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None if root.is_none() => *root = Some(node),
        None => {
            return Err(Diagnostic {
                line: node.line,
                path: None,
                message: format!(
                    "malformed XML: second root element <{}> (a document has one root)",
                    node.name
                ),
            })
        }
    }
    Ok(())
}

/// Replaces `@NAME@` tokens that `vars` knows; others are left as written.
pub(crate) fn subst<'a>(s: &'a str, vars: &dyn Fn(&str) -> Option<String>) -> Cow<'a, str> {
    if !s.contains('@') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find('@') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(j) = after.find('@') {
            let name = &after[..j];
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            {
                if let Some(v) = vars(name) {
                    out.push_str(&v);
                    rest = &after[j + 1..];
                    changed = true;
                    continue;
                }
            }
        }
        out.push('@');
        rest = after;
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

/// Byte offset to 1-based line, counting newlines incrementally (offsets mostly increase).
struct LineCounter<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: u32,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        LineCounter {
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, pos: usize) -> u32 {
        let pos = pos.min(self.bytes.len());
        if pos < self.pos {
            self.pos = 0;
            self.line = 1;
        }
        let n = self.bytes[self.pos..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += n as u32;
        self.pos = pos;
        self.line
    }
}

/// Walks an `XmlNode` tree into specs, collecting diagnostics.
#[derive(Default)]
struct Builder {
    diags: Vec<Diagnostic>,
    /// (contquery, window) positions whose schema declaration had an error (already reported).
    schema_errors: HashSet<(usize, usize)>,
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// Parses an ESP time amount like `5 minutes` (also `pulse-interval`, `count-interval`) into
/// microseconds: `<integer> <unit>`, units microsecond/millisecond/second/minute/hour/day,
/// singular or plural.
pub fn parse_duration_us(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('s').unwrap_or(&unit);
    let mult: u64 = match unit {
        "microsecond" | "usec" | "us" => 1,
        "millisecond" | "msec" | "ms" => 1_000,
        "second" | "sec" | "" => 1_000_000,
        "minute" | "min" => 60_000_000,
        "hour" => 3_600_000_000,
        "day" => 86_400_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl Builder {
    fn err(&mut self, line: u32, path: Option<&str>, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            line,
            path: path.map(String::from),
            message: message.into(),
        });
    }

    fn index_attr(
        &mut self,
        node: &XmlNode,
        attr: &str,
        path: Option<&str>,
        strict: bool,
    ) -> Option<IndexKind> {
        let v = node.attr(attr)?;
        let k = IndexKind::parse(v);
        if k.is_none() && strict {
            self.err(
                node.line,
                path,
                format!(
                    "unknown index '{v}' in {attr}= (expected pi_RBTREE, pi_HASH, pi_LN_HASH, \
                     pi_CL_HASH, pi_FW_HASH, pi_LN, pi_EMPTY or pi_HLEVELDB)"
                ),
            );
        }
        k
    }

    fn bool_attr(
        &mut self,
        node: &XmlNode,
        attr: &str,
        path: Option<&str>,
        strict: bool,
    ) -> Option<bool> {
        let v = node.attr(attr)?;
        let b = parse_bool(v);
        if b.is_none() && strict {
            self.err(
                node.line,
                path,
                format!("{attr}=\"{v}\" is not a boolean (expected true or false)"),
            );
        }
        b
    }

    fn project(&mut self, node: &XmlNode) -> ProjectSpec {
        let name = match node.attr("name") {
            Some(n) => n.to_string(),
            None => {
                self.err(node.line, None, "<project> has no name attribute");
                String::new()
            }
        };
        let threads = node
            .attr("threads")
            .and_then(|t| match t.trim().parse::<u32>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.err(
                        node.line,
                        None,
                        format!("threads=\"{t}\" is not a positive integer"),
                    );
                    None
                }
            });
        let heartbeat_interval_secs = match node.attr("heartbeat-interval") {
            None => 1,
            Some(h) => match h.trim().parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    self.err(
                        node.line,
                        None,
                        format!("heartbeat-interval=\"{h}\" is not a whole number of seconds"),
                    );
                    1
                }
            },
        };
        let index = self.index_attr(node, "index", None, true);
        let contqueries = node
            .children_named("contqueries")
            .flat_map(|c| c.children_named("contquery"))
            .enumerate()
            .map(|(ci, cq)| self.contquery(ci, cq))
            .collect();
        let mut connector_groups = Vec::new();
        let mut connector_group_edges = Vec::new();
        for pc in node.children_named("project-connectors") {
            for g in pc
                .children_named("connector-groups")
                .flat_map(|g| g.children_named("connector-group"))
            {
                let gname = g.attr("name").unwrap_or_default().to_string();
                if gname.is_empty() {
                    self.err(g.line, None, "<connector-group> has no name attribute");
                }
                let mut entries = Vec::new();
                for e in g.children_named("connector-entry") {
                    match e.attr("connector") {
                        Some(c) => entries.push((
                            c.to_string(),
                            e.attr("state").unwrap_or("running").to_string(),
                        )),
                        None => self.err(
                            e.line,
                            None,
                            "<connector-entry> has no connector attribute (cq/window/connector)",
                        ),
                    }
                }
                connector_groups.push(ConnectorGroupSpec {
                    name: gname,
                    entries,
                });
            }
            for e in pc
                .children_named("edges")
                .flat_map(|e| e.children_named("edge"))
            {
                match (e.attr("source"), e.attr("target")) {
                    (Some(s), Some(t)) => {
                        for s in s.split_whitespace() {
                            for t in t.split_whitespace() {
                                connector_group_edges.push((s.to_string(), t.to_string()));
                            }
                        }
                    }
                    _ => self.err(
                        e.line,
                        None,
                        "connector-group <edge> needs source= and target=",
                    ),
                }
            }
        }
        ProjectSpec {
            name,
            pubsub: node.attr("pubsub").map(String::from),
            threads,
            heartbeat_interval_secs,
            restore: node.attr("restore").map(String::from),
            index,
            contqueries,
            connector_groups,
            connector_group_edges,
            node: node.clone(),
            line: node.line,
        }
    }

    fn contquery(&mut self, ci: usize, node: &XmlNode) -> ContQuerySpec {
        let name = match node.attr("name") {
            Some(n) => n.to_string(),
            None => {
                self.err(node.line, None, "<contquery> has no name attribute");
                String::new()
            }
        };
        let index = self.index_attr(node, "index", Some(&name), true);
        let windows = node
            .children_named("windows")
            .flat_map(|w| w.children.iter())
            .filter(|w| w.name.starts_with("window-"))
            .enumerate()
            .map(|(wi, w)| self.window(ci, wi, &name, w))
            .collect();
        let mut edges = Vec::new();
        for e in node
            .children_named("edges")
            .flat_map(|e| e.children_named("edge"))
        {
            let (Some(src), Some(tgt)) = (e.attr("source"), e.attr("target")) else {
                self.err(e.line, Some(&name), "<edge> needs source= and target=");
                continue;
            };
            let slot = e.attr("slot").and_then(|s| match s.trim().parse::<i32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(
                        e.line,
                        Some(&name),
                        format!("edge slot=\"{s}\" is not an integer"),
                    );
                    None
                }
            });
            for s in src.split_whitespace() {
                for t in tgt.split_whitespace() {
                    edges.push(EdgeSpec {
                        source: s.to_string(),
                        target: t.to_string(),
                        role: e.attr("role").map(String::from),
                        slot,
                        line: e.line,
                    });
                }
            }
        }
        ContQuerySpec {
            name,
            index,
            windows,
            edges,
            line: node.line,
        }
    }

    fn window(&mut self, ci: usize, wi: usize, cq: &str, node: &XmlNode) -> WindowSpec {
        let element = node.name.clone();
        let strict = EXECUTED.contains(&element.as_str());
        let name = node.attr("name").unwrap_or_default().to_string();
        let path = format!("{cq}/{name}");
        let p = Some(path.as_str());
        if name.is_empty() {
            self.err(node.line, p, format!("<{element}> has no name attribute"));
        }
        let index = self.index_attr(node, "index", p, strict);
        let output_insert_only = self
            .bool_attr(node, "output-insert-only", p, strict)
            .unwrap_or(false);
        let collapse_updates = self
            .bool_attr(node, "collapse-updates", p, strict)
            .unwrap_or(false);
        let pubsub = self.bool_attr(node, "pubsub", p, strict);

        let schema = self.schema(ci, wi, node, &name, p, strict);
        let mut unsupported: Option<String> = None;
        let mut kind = match element.as_str() {
            "window-source" => WindowKind::Source {
                insert_only: self
                    .bool_attr(node, "insert-only", p, true)
                    .unwrap_or(false),
                autogen_key: self
                    .bool_attr(node, "autogen-key", p, true)
                    .unwrap_or(false),
            },
            "window-filter" => {
                if node.child("plugin").is_some() {
                    unsupported = Some("filter plugins are not supported".into());
                } else if node.child("code").is_some() || node.child("use").is_some() {
                    unsupported = Some("Lua filters are not supported".into());
                }
                match node.child("expression") {
                    Some(e) => WindowKind::Filter {
                        expression: e.text.trim().to_string(),
                        line: e.line,
                    },
                    None => {
                        if unsupported.is_none() {
                            self.err(
                                node.line,
                                p,
                                "window-filter needs an <expression> (the filter condition)",
                            );
                        }
                        WindowKind::Filter {
                            expression: String::new(),
                            line: node.line,
                        }
                    }
                }
            }
            "window-compute" | "window-aggregate" => {
                let output = node.child("output");
                if output.is_some_and(|o| o.child("field-plug").is_some()) {
                    unsupported = Some("field-plug plugins are not supported".into());
                } else if node.child("context-plugin").is_some() {
                    unsupported = Some("context-plugin plugins are not supported".into());
                }
                let field_exprs = output
                    .map(|o| {
                        o.children_named("field-expr")
                            .map(|f| (f.text.trim().to_string(), f.line))
                            .collect()
                    })
                    .unwrap_or_default();
                if element == "window-compute" {
                    WindowKind::Compute { field_exprs }
                } else {
                    WindowKind::Aggregate { field_exprs }
                }
            }
            "window-copy" => WindowKind::Copy,
            "window-join" => match self.join(node, p, &mut unsupported) {
                Some(j) => WindowKind::Join(j),
                None => WindowKind::Unsupported {
                    reason: "invalid join".into(),
                },
            },
            "window-union" => WindowKind::Union {
                strict: self.bool_attr(node, "strict", p, true).unwrap_or(false),
            },
            other => WindowKind::Unsupported {
                reason: format!("{other} is not supported"),
            },
        };

        let expr_init = if strict {
            node.child("expr-initialize").map(|e| self.expr_init(e, p))
        } else {
            None
        };
        let mut splitter = None;
        if strict {
            if let Some(s) = node.child("splitter-expr") {
                let init = s.child("expr-initialize").map(|e| self.expr_init(e, p));
                let expression = match s.child("expression") {
                    Some(e) => e.text.trim().to_string(),
                    None => {
                        self.err(s.line, p, "<splitter-expr> needs an <expression>");
                        String::new()
                    }
                };
                splitter = Some(SplitterSpec {
                    init,
                    expression,
                    line: s.line,
                });
            }
            if node.child("splitter-plug").is_some() {
                unsupported = Some("splitter-plug plugins are not supported".into());
            }
        }
        let retention = if strict {
            node.child("retention").and_then(|r| self.retention(r, p))
        } else {
            None
        };
        let connectors = node
            .children_named("connectors")
            .flat_map(|c| c.children_named("connector"))
            .filter_map(|c| self.connector(c, p))
            .collect();
        if let Some(reason) = unsupported {
            kind = WindowKind::Unsupported { reason };
        }
        WindowSpec {
            name,
            element,
            kind,
            index,
            schema,
            output_insert_only,
            collapse_updates,
            pubsub,
            expr_init,
            splitter,
            retention,
            connectors,
            line: node.line,
        }
    }

    /// The declared schema. Errors are reported only when `strict`.
    fn schema(
        &mut self,
        ci: usize,
        wi: usize,
        node: &XmlNode,
        wname: &str,
        p: Option<&str>,
        strict: bool,
    ) -> Option<Schema> {
        let schema_node = node.child("schema");
        let string_node = node
            .child("schema-string")
            .or_else(|| schema_node.and_then(|s| s.child("schema-string")));
        if let Some(s) = string_node {
            return match Schema::parse_schema_string(&s.text) {
                Ok(schema) => Some(schema),
                Err(e) => {
                    if strict {
                        self.err(s.line, p, format!("schema of window '{wname}': {e}"));
                        self.schema_errors.insert((ci, wi));
                    }
                    None
                }
            };
        }
        let schema_node = schema_node?;
        let field_nodes: Vec<&XmlNode> = schema_node
            .children_named("fields")
            .flat_map(|f| f.children_named("field"))
            .collect();
        if field_nodes.is_empty() {
            return None;
        }
        let mut fields = Vec::new();
        let mut bad = false;
        for f in field_nodes {
            let Some(fname) = f.attr("name") else {
                if strict {
                    self.err(f.line, p, "<field> has no name attribute");
                }
                bad = true;
                continue;
            };
            let Some(ty) = f.attr("type") else {
                if strict {
                    self.err(
                        f.line,
                        p,
                        format!("field '{fname}' of window '{wname}' has no type attribute"),
                    );
                }
                bad = true;
                continue;
            };
            match FieldType::parse(ty) {
                Ok(ty) => fields.push(Field {
                    name: fname.to_string(),
                    ty,
                    key: f.attr("key").and_then(parse_bool).unwrap_or(false),
                }),
                Err(ty) => {
                    if strict {
                        self.err(
                            f.line,
                            p,
                            format!(
                                "field '{fname}' of window '{wname}' has type '{ty}', which \
                                 Sluice does not support (use int32, int64, double, money, \
                                 string, date or stamp)"
                            ),
                        );
                    }
                    bad = true;
                }
            }
        }
        if bad {
            if strict {
                self.schema_errors.insert((ci, wi));
            }
            return None;
        }
        match Schema::new(fields) {
            Ok(s) => Some(s),
            Err(e) => {
                if strict {
                    self.err(
                        schema_node.line,
                        p,
                        format!("schema of window '{wname}': {e}"),
                    );
                    self.schema_errors.insert((ci, wi));
                }
                None
            }
        }
    }

    fn expr_init(&mut self, node: &XmlNode, p: Option<&str>) -> ExprInitSpec {
        let initializer = node.child("initializer").map(|i| InitializerSpec {
            ty: i.attr("type").and_then(|t| match FieldType::parse(t) {
                Ok(ty) => Some(ty),
                Err(t) => {
                    self.err(
                        i.line,
                        p,
                        format!("initializer type '{t}' is not supported (use int32, int64, double, money, string, date or stamp)"),
                    );
                    None
                }
            }),
            code: i.text.trim().to_string(),
            line: i.line,
        });
        let mut udfs = Vec::new();
        for u in node
            .children_named("udfs")
            .flat_map(|u| u.children_named("udf"))
        {
            let Some(name) = u.attr("name") else {
                self.err(u.line, p, "<udf> has no name attribute");
                continue;
            };
            let ty = match u.attr("type").map(FieldType::parse) {
                Some(Ok(ty)) => ty,
                Some(Err(t)) => {
                    self.err(
                        u.line,
                        p,
                        format!("udf '{name}' has type '{t}', which is not supported (use int32, int64, double, money, string, date or stamp)"),
                    );
                    continue;
                }
                None => {
                    self.err(u.line, p, format!("udf '{name}' has no type attribute"));
                    continue;
                }
            };
            udfs.push(UdfSpec {
                name: name.to_string(),
                ty,
                code: u.text.trim().to_string(),
                line: u.line,
            });
        }
        ExprInitSpec { initializer, udfs }
    }

    fn retention(&mut self, node: &XmlNode, p: Option<&str>) -> Option<RetentionSpec> {
        let ty = node.attr("type").unwrap_or_default();
        let kind = match ty.trim() {
            "bytime_sliding" => RetentionKind::ByTimeSliding,
            "bytime_jumping" => RetentionKind::ByTimeJumping,
            "bycount_sliding" => RetentionKind::ByCountSliding,
            "bycount_jumping" => RetentionKind::ByCountJumping,
            "bytime_jumping_lookback" => {
                self.err(
                    node.line,
                    p,
                    "retention type 'bytime_jumping_lookback' is not supported",
                );
                return None;
            }
            "" => {
                self.err(
                    node.line,
                    p,
                    "retention has no type (expected bytime_sliding, bytime_jumping, bycount_sliding or bycount_jumping)",
                );
                return None;
            }
            other => {
                self.err(
                    node.line,
                    p,
                    format!("unknown retention type '{other}' (expected bytime_sliding, bytime_jumping, bycount_sliding or bycount_jumping)"),
                );
                return None;
            }
        };
        let value = node.text.trim();
        let amount = if kind.is_time() {
            parse_duration_us(value)
        } else {
            value.parse::<u64>().ok()
        };
        let Some(amount) = amount.filter(|&a| a > 0) else {
            let expect = if kind.is_time() {
                "a positive time such as '5 minutes' (units: microseconds, milliseconds, seconds, minutes, hours, days)"
            } else {
                "a positive event count"
            };
            self.err(
                node.line,
                p,
                format!("retention value '{value}' is not {expect}"),
            );
            return None;
        };
        Some(RetentionSpec {
            kind,
            amount,
            field: node.attr("field").map(String::from),
            line: node.line,
        })
    }

    fn join(
        &mut self,
        node: &XmlNode,
        p: Option<&str>,
        unsupported: &mut Option<String>,
    ) -> Option<JoinSpec> {
        let Some(j) = node.child("join") else {
            self.err(
                node.line,
                p,
                "window-join needs a <join type=...> element with its <conditions>",
            );
            return None;
        };
        let ty = j.attr("type").unwrap_or_default();
        let join_type = match ty.trim() {
            "inner" => JoinType::Inner,
            "leftouter" => JoinType::LeftOuter,
            "rightouter" => JoinType::RightOuter,
            "fullouter" => JoinType::FullOuter,
            other => {
                self.err(
                    j.line,
                    p,
                    format!("unknown join type '{other}' (expected inner, leftouter, rightouter or fullouter)"),
                );
                return None;
            }
        };
        let no_regenerates = self
            .bool_attr(j, "no-regenerates", p, true)
            .unwrap_or(false);
        let left_index = self.index_attr(j, "left-index", p, true);
        let right_index = self.index_attr(j, "right-index", p, true);
        let mut conditions = Vec::new();
        for f in j
            .children_named("conditions")
            .flat_map(|c| c.children_named("fields"))
        {
            match (f.attr("left"), f.attr("right")) {
                (Some(l), Some(r)) => conditions.push((l.to_string(), r.to_string())),
                _ => self.err(f.line, p, "join condition <fields> needs left= and right="),
            }
        }
        let mut outputs = Vec::new();
        for o in node
            .children_named("output")
            .flat_map(|o| o.children.iter())
        {
            match o.name.as_str() {
                "field-expr" => {
                    let (Some(name), Some(ty)) = (o.attr("name"), o.attr("type")) else {
                        self.err(o.line, p, "join <field-expr> needs name= and type=");
                        continue;
                    };
                    match FieldType::parse(ty) {
                        Ok(ty) => outputs.push(JoinOutputSpec::Expr {
                            name: name.to_string(),
                            ty,
                            expr: o.text.trim().to_string(),
                            line: o.line,
                        }),
                        Err(t) => self.err(
                            o.line,
                            p,
                            format!("join output field '{name}' has type '{t}', which Sluice does not support (use int32, int64, double, money, string, date or stamp)"),
                        ),
                    }
                }
                "field-selection" => {
                    let (Some(name), Some(source)) = (o.attr("name"), o.attr("source")) else {
                        self.err(o.line, p, "join <field-selection> needs name= and source=");
                        continue;
                    };
                    outputs.push(JoinOutputSpec::Selection {
                        name: name.to_string(),
                        source: source.to_string(),
                        line: o.line,
                    });
                }
                "left-select" | "right-select" => outputs.push(JoinOutputSpec::Select {
                    left: o.name == "left-select",
                    fields: split_list(&o.text),
                    exclude: o.attr("exclude").map(split_list).unwrap_or_default(),
                    line: o.line,
                }),
                "field-plug" => *unsupported = Some("field-plug plugins are not supported".into()),
                "left-expr" | "right-expr" => {
                    *unsupported = Some(format!("join <{}> is not supported", o.name))
                }
                _ => {}
            }
        }
        Some(JoinSpec {
            join_type,
            no_regenerates,
            conditions,
            left_index,
            right_index,
            outputs,
        })
    }

    fn connector(&mut self, node: &XmlNode, p: Option<&str>) -> Option<ConnectorSpec> {
        let name = node.attr("name").unwrap_or_default().to_string();
        let class = node.attr("class").unwrap_or_default().to_string();
        let properties: Vec<(String, String)> = node
            .children_named("properties")
            .flat_map(|ps| ps.children_named("property"))
            .filter_map(|prop| {
                prop.attr("name")
                    .map(|n| (n.to_string(), prop.text.trim().to_string()))
            })
            .collect();
        let mut ok = true;
        if name.is_empty() {
            self.err(node.line, p, "<connector> has no name attribute");
            ok = false;
        }
        if class.is_empty() {
            self.err(
                node.line,
                p,
                format!("connector '{name}' has no class (e.g. class=\"fs\")"),
            );
            ok = false;
        }
        let ty = node.attr("type").map(str::to_string).or_else(|| {
            properties
                .iter()
                .find(|(k, _)| k == "type")
                .map(|(_, v)| v.clone())
        });
        let direction = match ty.as_deref().map(|t| t.trim().to_ascii_lowercase()) {
            Some(t) if t == "pub" || t == "publish" => Some(ConnectorDirection::Publish),
            Some(t) if t == "sub" || t == "subscribe" => Some(ConnectorDirection::Subscribe),
            Some(t) => {
                self.err(
                    node.line,
                    p,
                    format!("connector '{name}' has unknown type '{t}' (expected pub or sub)"),
                );
                None
            }
            None => {
                self.err(
                    node.line,
                    p,
                    format!(
                        "connector '{name}' has no type: set type=\"pub\" or type=\"sub\" \
                         (attribute or <property name=\"type\">)"
                    ),
                );
                None
            }
        };
        let active = match node.attr("active") {
            None => true,
            Some(a) => match parse_bool(a) {
                Some(b) => b,
                None => {
                    self.err(
                        node.line,
                        p,
                        format!("connector '{name}': active=\"{a}\" is not a boolean"),
                    );
                    true
                }
            },
        };
        let direction = direction?;
        if !ok {
            return None;
        }
        Some(ConnectorSpec {
            class,
            name,
            direction,
            active,
            properties,
            line: node.line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_us("5 minutes"), Some(300_000_000));
        assert_eq!(parse_duration_us("1 second"), Some(1_000_000));
        assert_eq!(parse_duration_us("1 days"), Some(86_400_000_000));
        assert_eq!(parse_duration_us("2 hour"), Some(7_200_000_000));
        assert_eq!(parse_duration_us("15 milliseconds"), Some(15_000));
        assert_eq!(parse_duration_us("7 microsecond"), Some(7));
        assert_eq!(parse_duration_us("5 fortnights"), None);
        assert_eq!(parse_duration_us("minutes"), None);
    }

    #[test]
    fn substitution() {
        let vars = |n: &str| (n == "D").then(|| "/data".to_string());
        assert_eq!(subst("@D@/x.csv", &vars), "/data/x.csv");
        assert_eq!(subst("a@b.com", &vars), "a@b.com");
        assert_eq!(subst("@X@/@D@", &vars), "@X@//data");
        assert_eq!(subst("@@D@", &vars), "@/data");
        assert!(matches!(subst("plain", &vars), Cow::Borrowed(_)));
    }

    #[test]
    fn line_numbers_of_elements() {
        let n = parse_xml_node("<a>\n <b/>\n\n <c x='1'>t</c>\n</a>", &none).unwrap();
        assert_eq!(n.line, 1);
        assert_eq!(n.children[0].line, 2);
        assert_eq!(n.children[1].line, 4);
        assert_eq!(n.children[1].text, "t");
        assert_eq!(n.text, "");
    }

    #[test]
    fn text_cdata_and_entities() {
        let n = parse_xml_node(
            "<a><e>x &gt; 1 &amp;&amp; y</e><f><![CDATA[ a < b ]]></f><g> </g></a>",
            &none,
        )
        .unwrap();
        assert_eq!(n.children[0].text, "x > 1 && y");
        assert_eq!(n.children[1].text, " a < b ");
        assert_eq!(n.children[2].text, " ");
    }

    #[test]
    fn malformed_documents() {
        let e = parse_xml_node("<a>\n<b>\n</a>", &none).unwrap_err();
        assert!(e.message.starts_with("malformed XML"), "{e}");
        assert_eq!(e.line, 3);
        let e = parse_xml_node("<a>\n<b x=1/>\n</a>", &none).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse_xml_node("<a>\n<b>\n", &none).unwrap_err();
        assert!(e.message.contains("not closed"), "{e}");
        let e = parse_xml_node("", &none).unwrap_err();
        assert!(e.message.contains("expected <engine> or <project>"), "{e}");
        let e = parse_xml_node("<a/><b/>", &none).unwrap_err();
        assert!(e.message.contains("second root"), "{e}");
    }
}
