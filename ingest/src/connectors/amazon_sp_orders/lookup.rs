//! getOrder (`GET /orders/v0/orders/{id}`) as a cached lookup of purchase dates, for the SP-API
//! connectors whose facts (returns, feedback, refunds, claims) count on their order's date but
//! do not carry it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kpiflow_schemas::Fulfilment;
use serde::Deserialize;

use crate::IngestError;
use crate::pull::{HttpClient, Request};

/// What getOrder told about an order: when it was placed and how it is fulfilled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderInfo {
    /// `PurchaseDate`.
    pub placed_at: DateTime<Utc>,
    /// From `FulfillmentChannel` (AFN, MFN).
    pub fulfilment: Option<Fulfilment>,
}

/// Purchase dates by order id (orders getOrder does not know are absent).
pub type Orders = HashMap<String, OrderInfo>;

/// Purchase dates kept between syncs: an order is looked up once. Cleared when it reaches
/// this size, so a long-running connector's memory stays bounded.
const ORDER_CACHE: usize = 50_000;

/// getOrder behind a cache, on its own client (and so its own rate limit).
pub struct OrderLookup {
    connector: &'static str,
    api: HttpClient,
    cache: Mutex<Orders>,
}

/// A getOrder answer's `payload` fields kpiflow reads.
#[derive(Deserialize)]
struct OrderPage {
    payload: OrderPayload,
}

#[derive(Deserialize)]
struct OrderPayload {
    #[serde(rename = "PurchaseDate")]
    purchase_date: String,
    #[serde(rename = "FulfillmentChannel")]
    fulfillment_channel: Option<String>,
}

impl OrderLookup {
    /// Looks orders up through `api` (an LWA-authenticated SP-API client with getOrder's
    /// rate limit); `connector` names the source in errors.
    pub fn new(connector: &'static str, api: HttpClient) -> OrderLookup {
        OrderLookup {
            connector,
            api,
            cache: Mutex::default(),
        }
    }

    /// The purchase dates of `ids`, from the cache or getOrder; an order getOrder answers 404
    /// for is left out (the caller dead-letters what needed it).
    pub async fn get(&self, ids: BTreeSet<String>) -> Result<Orders, IngestError> {
        let mut out = Orders::new();
        for id in ids {
            let cached = self.cache().get(&id).copied();
            if let Some(info) = cached {
                out.insert(id, info);
                continue;
            }
            let resp = self
                .api
                .send(
                    &Request::get(format!("orders/v0/orders/{id}"))
                        .accept_status(reqwest::StatusCode::NOT_FOUND),
                )
                .await?;
            if resp.status == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            let page: OrderPage = resp.json(self.connector)?;
            let placed_at = crate::map::parse_time(&page.payload.purchase_date).ok_or_else(|| {
                IngestError::Input {
                    source_name: self.connector.into(),
                    problem: format!(
                        "getOrder {id}: field `payload.PurchaseDate`: expected an ISO 8601 time, got {:?}",
                        page.payload.purchase_date
                    ),
                }
            })?;
            let fulfilment = match page.payload.fulfillment_channel.as_deref() {
                Some("AFN") => Some(Fulfilment::Fba),
                Some("MFN") => Some(Fulfilment::Merchant),
                _ => None,
            };
            let info = OrderInfo {
                placed_at,
                fulfilment,
            };
            let mut cache = self.cache();
            if cache.len() >= ORDER_CACHE {
                cache.clear();
            }
            cache.insert(id.clone(), info);
            out.insert(id, info);
        }
        Ok(out)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Orders> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The order `id` in `orders`, or the reason a fact about it cannot be dated.
pub fn looked_up<'o>(orders: &'o Orders, id: &str) -> Result<&'o OrderInfo, crate::map::MapError> {
    orders.get(id).ok_or_else(|| {
        format!("order {id}: getOrder knows no such order, so its purchase date is unknown")
    })
}
