//! Connectors that need no network: the `fs` connector (CSV and XML event files in, CSV out)
//! and the event text formats shared with the REST API.
//!
//! Layout:
//! - [`fs`]: [`FsPublisher`] (file to event blocks) and [`FsSubscriber`] (window output to a
//!   CSV file), configured from the connector's properties.
//! - [`xml_events`]: the `<events><event>...` text form.
//!
//! The engine never sees a file: the runtime reads blocks from a publisher, injects them, and
//! hands output to subscribers.

pub mod fs;
pub mod xml_events;

pub use fs::{BadLine, FsPublisher, FsSubscriber, PubBatch};

/// A connector that cannot start, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector '{connector}': property '{property}' is required")]
    Missing { connector: String, property: String },
    #[error("connector '{connector}': property '{property}' = '{value}': {why}")]
    Bad {
        connector: String,
        property: String,
        value: String,
        why: String,
    },
    #[error("connector '{connector}': cannot open '{path}': {source}")]
    Io {
        connector: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connector '{connector}': {message}")]
    Other { connector: String, message: String },
}
