//! Structural checks of a parsed project: window names, edges, graph shape, schemas and keys.
//!
//! Problems that a [`ProjectSpec`] cannot represent (an unknown index or join type, a bad
//! retention value, a connector without a type) are reported by the parser, which calls
//! [`validate`] on every project it builds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use sluice_event::FieldType;

use crate::spec::*;

/// Structural validation of one project; every problem found, each with its line.
pub fn validate(project: &ProjectSpec) -> Vec<Diagnostic> {
    validate_with(project, &HashSet::new())
}

/// `schema_errors`: (contquery, window) positions whose schema was refused by the parser, so a
/// missing schema is not reported twice.
pub(crate) fn validate_with(
    project: &ProjectSpec,
    schema_errors: &HashSet<(usize, usize)>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Some(why) = name_problem(&project.name) {
        out.push(Diagnostic {
            line: project.line,
            path: None,
            message: format!("project name '{}' {why}", project.name),
        });
    }
    for (ci, cq) in project.contqueries.iter().enumerate() {
        if let Some(why) = name_problem(&cq.name) {
            diag(
                &mut out,
                cq.line,
                cq.name.clone(),
                format!("contquery name '{}' {why}", cq.name),
            );
        }
        for w in &cq.windows {
            if let Some(why) = name_problem(&w.name) {
                diag(
                    &mut out,
                    w.line,
                    format!("{}/{}", cq.name, w.name),
                    format!("window name '{}' {why}", w.name),
                );
            }
        }
        validate_cq(ci, cq, schema_errors, &mut out);
    }
    out
}

/// The rule for project, contquery and window names: ASCII letters, digits, `_`, `-` and `.`,
/// not starting with `.` (so never `.` or `..`). Names become parts of URLs and of snapshot file
/// paths (`queries/<cq>/<window>.state`), so a name can never be a path. `None` when `name`
/// follows the rule (an empty name is reported where it is missing, not here); otherwise why
/// not, to follow the name in a message.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let bad = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')));
    let what = match bad {
        Some(c) if c.is_control() || c.is_whitespace() => {
            format!("contains the character U+{:04X}", c as u32)
        }
        Some(c) => format!("contains '{c}'"),
        None if name.starts_with('.') => "starts with '.'".to_string(),
        None => return None,
    };
    Some(format!(
        "is not allowed: it {what} (a name is made of letters A-Z and a-z, digits, '_', '-' \
         and '.', and does not start with '.')"
    ))
}

fn diag(out: &mut Vec<Diagnostic>, line: u32, path: String, message: String) {
    out.push(Diagnostic {
        line,
        path: Some(path),
        message,
    });
}

/// Resolved edges (source index, target index) of a contquery; edges naming unknown windows
/// are skipped. The first window of a name wins.
fn resolved_edges(cq: &ContQuerySpec) -> Vec<(usize, usize)> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, w) in cq.windows.iter().enumerate() {
        by_name.entry(w.name.as_str()).or_insert(i);
    }
    cq.edges
        .iter()
        .filter_map(|e| {
            Some((
                *by_name.get(e.source.as_str())?,
                *by_name.get(e.target.as_str())?,
            ))
        })
        .collect()
}

fn validate_cq(
    ci: usize,
    cq: &ContQuerySpec,
    schema_errors: &HashSet<(usize, usize)>,
    out: &mut Vec<Diagnostic>,
) {
    let wpath = |w: &WindowSpec| format!("{}/{}", cq.name, w.name);

    // Duplicate names.
    let mut first: HashMap<&str, &WindowSpec> = HashMap::new();
    for w in &cq.windows {
        if let Some(prev) = first.get(w.name.as_str()) {
            diag(
                out,
                w.line,
                wpath(w),
                format!(
                    "duplicate window name '{}' (first declared at line {})",
                    w.name, prev.line
                ),
            );
        } else {
            first.insert(&w.name, w);
        }
    }

    // Edge endpoints.
    let names: Vec<&str> = cq.windows.iter().map(|w| w.name.as_str()).collect();
    for e in &cq.edges {
        for (end, n) in [("source", &e.source), ("target", &e.target)] {
            if !first.contains_key(n.as_str()) {
                diag(
                    out,
                    e.line,
                    cq.name.clone(),
                    format!(
                        "edge {end} '{n}' is not a window of contquery '{}' (windows: {})",
                        cq.name,
                        names.join(", ")
                    ),
                );
            }
        }
    }

    let edges = resolved_edges(cq);
    let index: HashMap<&str, usize> = cq
        .windows
        .iter()
        .enumerate()
        .rev()
        .map(|(i, w)| (w.name.as_str(), i))
        .collect();
    let mut inputs = vec![0usize; cq.windows.len()];
    let mut first_input_line: Vec<Option<u32>> = vec![None; cq.windows.len()];
    for e in &cq.edges {
        if let (Some(_), Some(&t)) = (first.get(e.source.as_str()), index.get(e.target.as_str())) {
            inputs[t] += 1;
            first_input_line[t].get_or_insert(e.line);
        }
    }

    for (wi, w) in cq.windows.iter().enumerate() {
        if !std::ptr::eq(first[w.name.as_str()], w) {
            continue; // a duplicate: reported above; edges resolve to the first one
        }
        let p = wpath(w);
        let el = w.element.as_str();
        // Inputs.
        if el == "window-join" {
            if inputs[wi] != 2 {
                diag(
                    out,
                    w.line,
                    p.clone(),
                    format!(
                        "join window '{}' has {} input(s); a join needs exactly two (left and right edges)",
                        w.name, inputs[wi]
                    ),
                );
            }
        } else if el == "window-source" {
            if inputs[wi] > 0 {
                diag(
                    out,
                    first_input_line[wi].unwrap_or(w.line),
                    p.clone(),
                    format!(
                        "source window '{}' cannot have inputs: events enter it by publishing or injecting",
                        w.name
                    ),
                );
            }
        } else if inputs[wi] == 0 {
            diag(
                out,
                w.line,
                p.clone(),
                format!(
                    "window '{}' has no input: add an <edge source=\"...\" target=\"{}\"/>",
                    w.name, w.name
                ),
            );
        }

        // Schemas and keys.
        let needs_schema = matches!(el, "window-source" | "window-compute" | "window-aggregate");
        if needs_schema {
            match &w.schema {
                None => {
                    if !schema_errors.contains(&(ci, wi)) {
                        diag(
                            out,
                            w.line,
                            p.clone(),
                            format!(
                                "{el} '{}' has no schema: declare <schema><fields><field .../></fields></schema> or <schema-string>",
                                w.name
                            ),
                        );
                    }
                }
                Some(s) if s.key_indices().is_empty() => diag(
                    out,
                    w.line,
                    p.clone(),
                    "missing keys: mark at least one field key=\"true\" or ID*".to_string(),
                ),
                Some(_) => {}
            }
        }
        if let (
            WindowKind::Compute { field_exprs } | WindowKind::Aggregate { field_exprs },
            Some(s),
        ) = (&w.kind, &w.schema)
        {
            let non_key: Vec<&str> = s
                .non_key_indices()
                .into_iter()
                .map(|i| s.field(i).name.as_str())
                .collect();
            if field_exprs.len() != non_key.len() {
                diag(
                    out,
                    w.line,
                    p.clone(),
                    format!(
                        "{} <field-expr> for {} non-key field(s) ({}): give one <field-expr> per non-key field, in schema order",
                        field_exprs.len(),
                        non_key.len(),
                        non_key.join(", ")
                    ),
                );
            }
        }

        // Retention.
        if let Some(r) = &w.retention {
            if !matches!(el, "window-source" | "window-copy") {
                diag(
                    out,
                    r.line,
                    p.clone(),
                    format!(
                        "retention is only allowed on window-source and window-copy, not on {el} (put a window-copy with the retention in front)"
                    ),
                );
            }
        }

        // autogen-key.
        if let WindowKind::Source {
            insert_only,
            autogen_key: true,
        } = w.kind
        {
            if !insert_only {
                diag(
                    out,
                    w.line,
                    p.clone(),
                    "autogen-key=\"true\" requires insert-only=\"true\"".to_string(),
                );
            }
            if let Some(s) = &w.schema {
                let keys = s.key_indices();
                let ok = keys.len() == 1
                    && matches!(s.field(keys[0]).ty, FieldType::Int64 | FieldType::String);
                if !ok && !keys.is_empty() {
                    diag(
                        out,
                        w.line,
                        p.clone(),
                        "autogen-key=\"true\" needs exactly one key field, of type int64 or string"
                            .to_string(),
                    );
                }
            }
        }
    }

    // Cycles.
    if let Some(cycle) = find_cycle(cq.windows.len(), &edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| cq.windows[i].name.as_str()).collect();
        let w = &cq.windows[cycle[0]];
        diag(
            out,
            w.line,
            cq.name.clone(),
            format!(
                "the edges form a cycle: {} -> {}",
                names.join(" -> "),
                names[0]
            ),
        );
    }
}

/// Kahn's algorithm; ties broken by document order. Returns the order and the remaining
/// in-degrees (non-zero only for windows on or after a cycle).
fn kahn(n: usize, edges: &[(usize, usize)]) -> (Vec<usize>, Vec<usize>) {
    let mut indeg = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(s, t) in edges {
        indeg[t] += 1;
        succ[s].push(t);
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indeg[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &t in &succ[i] {
            indeg[t] -= 1;
            if indeg[t] == 0 {
                ready.push(Reverse(t));
            }
        }
    }
    (order, indeg)
}

/// One cycle (window indices in edge direction, starting at the earliest in document order).
fn find_cycle(n: usize, edges: &[(usize, usize)]) -> Option<Vec<usize>> {
    let (order, indeg) = kahn(n, edges);
    if order.len() == n {
        return None;
    }
    // Every window left over has an input from another left-over window: walk inputs back
    // until one repeats.
    let left: Vec<bool> = indeg.iter().map(|&d| d > 0).collect();
    let start = (0..n).find(|&i| left[i])?;
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut cur = start;
    while !seen.contains_key(&cur) {
        seen.insert(cur, path.len());
        path.push(cur);
        cur = edges
            .iter()
            .find(|&&(s, t)| t == cur && left[s])
            .map(|&(s, _)| s)?;
    }
    let mut cycle: Vec<usize> = path[seen[&cur]..].to_vec();
    cycle.reverse(); // walked backwards
    let min_pos = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, &w)| w)
        .map(|(i, _)| i)
        .unwrap_or(0);
    cycle.rotate_left(min_pos);
    Some(cycle)
}

/// Topological order of a contquery's windows (indices into `cq.windows`), deterministic:
/// ties by document order. Edges naming unknown windows are ignored; windows on a cycle (never
/// in a validated project) come last, in document order.
pub fn topo_order(cq: &ContQuerySpec) -> Vec<usize> {
    let n = cq.windows.len();
    let (mut order, _) = kahn(n, &resolved_edges(cq));
    if order.len() < n {
        let placed: HashSet<usize> = order.iter().copied().collect();
        order.extend((0..n).filter(|i| !placed.contains(i)));
    }
    order
}
