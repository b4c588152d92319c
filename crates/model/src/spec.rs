//! Plain data of a parsed project model. No behaviour: the engine compiles it.

use sluice_event::{FieldType, Schema};

/// A generic XML element, kept so a loaded model can be returned as it was.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct XmlNode {
    pub name: String,
    /// Attributes in document order.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<XmlNode>,
    /// Concatenated text and CDATA content directly inside this element.
    pub text: String,
    /// 1-based line of the start tag.
    pub line: u32,
}

impl XmlNode {
    /// The value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<&XmlNode> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All child elements named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a XmlNode> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// Where a problem is: the line in the model and, when known, the window path `cq/window`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u32,
    pub path: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(p) => write!(f, "line {}: {}: {}", self.line, p, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// One `<project>`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectSpec {
    pub name: String,
    /// `pubsub`: none, auto or manual.
    pub pubsub: Option<String>,
    pub threads: Option<u32>,
    /// `heartbeat-interval` in seconds (default 1).
    pub heartbeat_interval_secs: u32,
    /// `restore="DIR"`: restore from this snapshot when loaded.
    pub restore: Option<String>,
    /// Default index of the project's windows.
    pub index: Option<IndexKind>,
    pub contqueries: Vec<ContQuerySpec>,
    /// `project-connectors` orchestration; empty when absent.
    pub connector_groups: Vec<ConnectorGroupSpec>,
    /// Edges between connector groups: (source group, target group).
    pub connector_group_edges: Vec<(String, String)>,
    /// The `<project>` element as loaded (every element and attribute).
    pub node: XmlNode,
    pub line: u32,
}

/// One `<contquery>`.
#[derive(Clone, Debug, PartialEq)]
pub struct ContQuerySpec {
    pub name: String,
    pub index: Option<IndexKind>,
    pub windows: Vec<WindowSpec>,
    /// Edges with multi-name source/target lists already split into single edges.
    pub edges: Vec<EdgeSpec>,
    pub line: u32,
}

/// One `<edge>` (after splitting space-separated lists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSpec {
    pub source: String,
    pub target: String,
    /// `role`: left/right for joins; others kept as written.
    pub role: Option<String>,
    /// `slot`: splitter output slot.
    pub slot: Option<i32>,
    pub line: u32,
}

/// `index=` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexKind {
    RbTree,
    Hash,
    LnHash,
    ClHash,
    FwHash,
    Ln,
    Empty,
    HLevelDb,
}

impl IndexKind {
    /// Parses `pi_RBTREE` and friends.
    pub fn parse(s: &str) -> Option<IndexKind> {
        Some(match s.trim() {
            "pi_RBTREE" => IndexKind::RbTree,
            "pi_HASH" => IndexKind::Hash,
            "pi_LN_HASH" => IndexKind::LnHash,
            "pi_CL_HASH" => IndexKind::ClHash,
            "pi_FW_HASH" => IndexKind::FwHash,
            "pi_LN" => IndexKind::Ln,
            "pi_EMPTY" => IndexKind::Empty,
            "pi_HLEVELDB" => IndexKind::HLevelDb,
            _ => return None,
        })
    }

    /// True for `pi_EMPTY`: the window keeps no state.
    pub fn is_stateless(self) -> bool {
        self == IndexKind::Empty
    }
}

/// One window element (`window-*`).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSpec {
    pub name: String,
    /// The element name, e.g. `window-aggregate`.
    pub element: String,
    pub kind: WindowKind,
    /// `index=` when given.
    pub index: Option<IndexKind>,
    /// The declared schema (`schema` or `schema-string`); None for windows that inherit.
    pub schema: Option<Schema>,
    pub output_insert_only: bool,
    pub collapse_updates: bool,
    pub pubsub: Option<bool>,
    /// `expr-initialize` of filter and compute windows.
    pub expr_init: Option<ExprInitSpec>,
    pub splitter: Option<SplitterSpec>,
    pub retention: Option<RetentionSpec>,
    pub connectors: Vec<ConnectorSpec>,
    pub line: u32,
}

/// What kind of window, with its kind-specific declaration.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowKind {
    Source {
        insert_only: bool,
        autogen_key: bool,
    },
    Filter {
        /// The `<expression>` text.
        expression: String,
        line: u32,
    },
    Compute {
        /// One `<field-expr>` per non-key field, in order, with its line.
        field_exprs: Vec<(String, u32)>,
    },
    Aggregate {
        /// One `<field-expr>` per non-key field, in order, with its line.
        field_exprs: Vec<(String, u32)>,
    },
    Copy,
    Join(JoinSpec),
    Union {
        strict: bool,
    },
    /// A window kind the engine does not execute (functional, pattern, calculate, ...), or a
    /// core window using plugins. Loads; refused when the project starts.
    Unsupported {
        reason: String,
    },
}

/// `<expr-initialize>`: an initializer and UDFs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ExprInitSpec {
    /// `<initializer type=...>code</initializer>`; the code may be empty.
    pub initializer: Option<InitializerSpec>,
    pub udfs: Vec<UdfSpec>,
}

/// `<initializer>`.
#[derive(Clone, Debug, PartialEq)]
pub struct InitializerSpec {
    pub ty: Option<FieldType>,
    pub code: String,
    pub line: u32,
}

/// `<udf name= type=>code</udf>`.
#[derive(Clone, Debug, PartialEq)]
pub struct UdfSpec {
    pub name: String,
    pub ty: FieldType,
    pub code: String,
    pub line: u32,
}

/// `<splitter-expr>`.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitterSpec {
    pub init: Option<ExprInitSpec>,
    pub expression: String,
    pub line: u32,
}

/// `<retention type=... [field=...]>value</retention>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionSpec {
    pub kind: RetentionKind,
    /// Event count for by-count kinds, microseconds for by-time kinds.
    pub amount: u64,
    /// Event-time field for by-time kinds.
    pub field: Option<String>,
    pub line: u32,
}

/// Retention kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetentionKind {
    ByTimeSliding,
    ByTimeJumping,
    ByCountSliding,
    ByCountJumping,
}

impl RetentionKind {
    /// True for the by-time kinds.
    pub fn is_time(self) -> bool {
        matches!(
            self,
            RetentionKind::ByTimeSliding | RetentionKind::ByTimeJumping
        )
    }
}

/// `<join>` and `<output>` of a join window.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinSpec {
    pub join_type: JoinType,
    pub no_regenerates: bool,
    /// Equality conditions (left field, right field).
    pub conditions: Vec<(String, String)>,
    pub left_index: Option<IndexKind>,
    pub right_index: Option<IndexKind>,
    /// Output fields in order.
    pub outputs: Vec<JoinOutputSpec>,
}

/// Join types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JoinType {
    Inner,
    LeftOuter,
    RightOuter,
    FullOuter,
}

/// One output declaration of a join.
#[derive(Clone, Debug, PartialEq)]
pub enum JoinOutputSpec {
    /// `<field-expr name= type=>expr</field-expr>` over `l_`/`r_` prefixed fields.
    Expr {
        name: String,
        ty: FieldType,
        expr: String,
        line: u32,
    },
    /// `<field-selection name= source="l_x"/>`.
    Selection {
        name: String,
        source: String,
        line: u32,
    },
    /// `<left-select exclude=>a,b</left-select>` / `<right-select>`: copy many fields under
    /// their own names. `fields` empty means all (minus `exclude`).
    Select {
        left: bool,
        fields: Vec<String>,
        exclude: Vec<String>,
        line: u32,
    },
}

/// Publish or subscribe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectorDirection {
    Publish,
    Subscribe,
}

/// One `<connector>`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorSpec {
    pub class: String,
    pub name: String,
    pub direction: ConnectorDirection,
    /// `active="false"` connectors are not started.
    pub active: bool,
    /// Properties in document order, CDATA unwrapped, `@VAR@` substituted.
    pub properties: Vec<(String, String)>,
    pub line: u32,
}

impl ConnectorSpec {
    /// The value of property `name` (case-sensitive, as ESP).
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean property (`true`/`false`, `1`/`0`, `yes`/`no`), `default` when absent.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        match self.prop(name).map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) => matches!(v.as_str(), "true" | "1" | "yes"),
            None => default,
        }
    }
}

/// A connector property with a value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadProperty {
    pub property: String,
    pub value: String,
    pub why: String,
}

impl ConnectorSpec {
    /// How a publisher reads CSV text, from its properties: `dateformat`, `addcsvopcode`,
    /// `addcsvflags`, `publishwithupsert`, `noautogenfield` (with the autogen key at
    /// `autogen_field`) and `csvfielddelimiter`. Shared by every publisher that reads CSV.
    pub fn csv_options(
        &self,
        autogen_field: Option<usize>,
    ) -> Result<sluice_event::csv::CsvOptions, BadProperty> {
        let bad = |property: &str, value: &str, why: String| BadProperty {
            property: property.into(),
            value: value.into(),
            why,
        };
        let dateformat = match self.prop("dateformat") {
            None => None,
            Some(f) => Some(
                sluice_event::time::DateFormat::new(f)
                    .map_err(|e| bad("dateformat", f, e.to_string()))?,
            ),
        };
        let delimiter = match self.prop("csvfielddelimiter") {
            None => b',',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some(d) => return Err(bad("csvfielddelimiter", d, "expected one character".into())),
        };
        Ok(sluice_event::csv::CsvOptions {
            dateformat,
            add_opcode: self.flag("addcsvopcode", false),
            add_flags: self.flag("addcsvflags", false),
            upsert: self.flag("publishwithupsert", false),
            missing_field: if self.flag("noautogenfield", false) {
                autogen_field
            } else {
                None
            },
            delimiter,
        })
    }
}

/// `<connector-group name=>` with its entries (`cq/window/connector`, target state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorGroupSpec {
    pub name: String,
    pub entries: Vec<(String, String)>,
}
