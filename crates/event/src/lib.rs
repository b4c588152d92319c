//! What flows through Sluice: field types, values, schemas, events and event blocks, and the
//! CSV text form of events used by file connectors, REST injection and `sluice run`.
//!
//! Layout:
//! - [`value`]: [`FieldType`], [`Value`] (with total ordering and hashing so rows can be keys).
//! - [`schema`]: [`Schema`], [`Field`], the `schema-string` parser.
//! - [`event`]: [`Opcode`], [`Flags`], [`Event`], [`EventBlock`], [`Key`].
//! - [`csv`]: parsing and writing the fs connector's CSV event lines.
//! - [`time`]: `dateformat` parsing and formatting of date and stamp fields (UTC).
//!
//! Invariant: nothing here does I/O or reads a clock.

pub mod csv;
pub mod event;
pub mod schema;
pub mod time;
pub mod value;

pub use event::{Event, EventBlock, Flags, Key, MsgId, Opcode, Row};
pub use schema::{Field, Schema, SchemaError};
pub use value::{FieldType, Value};
