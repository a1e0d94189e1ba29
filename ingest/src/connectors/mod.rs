//! Connectors, one folder each; [`crate::connector::REGISTRY`] lists them.

pub mod amazon_sp_orders;
pub mod simulator;
