//! sluice-expr
