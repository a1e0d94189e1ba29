//! Get Order Detail (`GET /order/202309/orders?ids=…`) as a cached lookup of placement times,
//! for the TikTok Shop facts (returns, refunds) that count on their order's date but do not
//! carry it.
//!
//! Assumed from "Order API 202309 > Get Order Detail" (not recorded traffic): `ids` is a
//! comma-separated list of at most 50 order ids; the answer's `data.orders[]` have the order
//! search's shape (`id`, `create_time`, `fulfillment_type`, …); an id TikTok does not know is
//! simply absent from the list.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;

use super::api::{ShopApi, secs};
use super::map::fulfilment;
use crate::IngestError;
use crate::connectors::amazon_sp_orders::{OrderInfo, Orders};
use crate::map::Record;

/// The path of Get Order Detail.
pub const DETAIL_PATH: &str = "/order/202309/orders";

/// Ids per Get Order Detail call (TikTok's documented maximum).
const BATCH: usize = 50;

/// Placement times kept between syncs: an order is looked up once. Cleared when it reaches
/// this size, so a long-running connector's memory stays bounded.
const ORDER_CACHE: usize = 50_000;

#[derive(Deserialize, Default)]
struct Detail {
    #[serde(default)]
    orders: Vec<Value>,
}

/// Get Order Detail behind a cache.
#[derive(Default)]
pub struct OrderLookup {
    cache: Mutex<Orders>,
}

impl OrderLookup {
    /// The placement times of `ids`, from the cache or Get Order Detail (in batches of 50)
    /// through `api`; an order TikTok does not return is left out (the caller dead-letters
    /// what needed it). An order whose own fields do not parse fails the sync: it is
    /// TikTok's answer, not the return, that is wrong.
    pub async fn get(&self, api: &ShopApi, ids: BTreeSet<String>) -> Result<Orders, IngestError> {
        let mut out = Orders::new();
        let mut missing = Vec::new();
        for id in ids {
            match self.cache().get(&id).copied() {
                Some(info) => {
                    out.insert(id, info);
                }
                None => missing.push(id),
            }
        }
        for batch in missing.chunks(BATCH) {
            let params = vec![("ids".to_string(), batch.join(","))];
            let detail: Detail = api.get(DETAIL_PATH, params).await?;
            for o in &detail.orders {
                let (id, info) = order_info(o).map_err(|e| IngestError::Input {
                    source_name: api.connector().into(),
                    problem: format!("Get Order Detail: {e}"),
                })?;
                out.insert(id, info);
            }
        }
        let mut cache = self.cache();
        if cache.len() >= ORDER_CACHE {
            cache.clear();
        }
        cache.extend(out.iter().map(|(k, v)| (k.clone(), *v)));
        Ok(out)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Orders> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One Get Order Detail order → its id, `create_time` and `fulfillment_type`.
fn order_info(v: &Value) -> Result<(String, OrderInfo), String> {
    let r = Record(v);
    let id = r.str("id")?;
    let at = |e: String| format!("order {id}: {e}");
    let placed_at = secs(&r, "create_time")
        .map_err(at)?
        .ok_or_else(|| at("field `create_time` is missing".into()))?;
    Ok((
        id.to_string(),
        OrderInfo {
            placed_at,
            fulfilment: Some(fulfilment(&r).map_err(at)?),
        },
    ))
}
