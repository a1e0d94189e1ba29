//! Connectors, one folder each; [`crate::connector::REGISTRY`] lists them.

pub mod shopify;
pub mod simulator;
pub mod threepl;
