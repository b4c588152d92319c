//! sluice-connector
