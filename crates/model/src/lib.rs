//! The ESP project XML (`esp-reference.md` section 1), parsed into plain [`ProjectSpec`] data.
//!
//! Layout:
//! - [`spec`]: the data types (`ProjectSpec`, `ContQuerySpec`, `WindowSpec`, ...) and the
//!   generic [`XmlNode`] tree that keeps every element and attribute as loaded.
//! - `parse`: XML text to specs, reporting every problem with its line.
//! - `validate`: graph checks (unknown edge endpoints, cycles, schema and key rules).
//! - `write`: an `XmlNode` back to XML text (for `GET projectXml`).
//!
//! Invariant: no I/O. `@NAME@` placeholders are substituted from a map the caller gives.

mod parse;
pub mod spec;
mod validate;
mod write;

pub use parse::{parse_duration_us, parse_models, parse_project, parse_xml_node, MAX_XML_DEPTH};
pub use spec::*;
pub use validate::{name_problem, topo_order, validate};
pub use write::write_xml;
