//! Connectors, one folder each; [`crate::connector::REGISTRY`] lists them.

pub mod amazon_ads;
pub mod amazon_fba_inventory;
pub mod amazon_sp_finances;
pub mod amazon_sp_orders;
pub mod amazon_sp_reports;
pub mod cogs_file;
pub mod google_ads;
pub mod meta_ads;
pub mod shopify;
pub mod simulator;
pub mod threepl;
pub mod tiktok_ads;
pub mod tiktok_shop_orders;
pub mod tiktok_shop_returns;
pub mod tracking;
pub mod walmart_connect_ads;
pub mod walmart_orders;
pub mod walmart_returns;
pub mod walmart_wfs_inventory;
