//! The 3PL webhook: the same records as the CSV files, as JSON, signed with a shared secret.
//!
//! `POST <path>` (default `/webhooks/threepl`) with
//! `{"shipments": [{…}, …], "stock": [{…}, …]}` (either list may be absent), each object
//! carrying the CSV columns as fields (strings or numbers), and the header
//! `X-Threepl-Hmac-Sha256: base64(HMAC-SHA256(body, secret))`. An optional
//! `X-Threepl-Delivery-Id` lets a retry be acknowledged without publishing again.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::Utc;
use serde_json::Value;

use super::NAME;
use super::config::ThreeplShop;
use super::records::{Kind, map};
use crate::push::queue::{Delivery, Rejected};
use crate::push::receiver::{Mapped, PushMapper, header};

/// The header carrying the sender's delivery id.
pub const DELIVERY_ID: &str = "x-threepl-delivery-id";

/// The 3PL's half of the receiver.
pub struct ThreeplMapper {
    /// Shops by id.
    pub shops: Arc<BTreeMap<String, ThreeplShop>>,
}

fn scalar(v: &Value) -> Option<Option<String>> {
    match v {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s.clone())),
        Value::Number(n) => Some(Some(n.to_string())),
        _ => None,
    }
}

impl PushMapper for ThreeplMapper {
    fn delivery_id(&self, h: &HeaderMap) -> Option<String> {
        header(h, DELIVERY_ID).map(str::to_string)
    }

    fn map(&self, _: &HeaderMap, body: &[u8]) -> Mapped {
        let whole = |reason: String| Mapped::invalid(reason, body);
        let doc: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return whole(format!("3pl webhook: not JSON: {e}")),
        };
        let Some(obj) = doc.as_object() else {
            return whole(
                "3pl webhook: expected an object with `shipments` and/or `stock` lists".into(),
            );
        };
        if !obj.contains_key("shipments") && !obj.contains_key("stock") {
            return whole("3pl webhook: neither a `shipments` nor a `stock` list".into());
        }
        let now = Utc::now();
        let mut out = Delivery::default();
        for (list, kind) in [("shipments", Kind::Shipment), ("stock", Kind::Stock)] {
            let items = match obj.get(list) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(a)) => a,
                Some(other) => {
                    return whole(format!(
                        "3pl webhook: field `{list}`: expected a list, got {other}"
                    ));
                }
            };
            for (i, item) in items.iter().enumerate() {
                let raw = item.to_string().into_bytes();
                let mut dead = |reason: String| {
                    out.dead_letters.push(Rejected {
                        kind: "invalid",
                        reason,
                        raw: raw.clone(),
                    });
                };
                let Some(fields) = item.as_object() else {
                    dead(format!(
                        "3pl webhook: {list}[{i}]: expected an object, got {item}"
                    ));
                    continue;
                };
                let mut row = BTreeMap::new();
                let mut bad = None;
                for (k, v) in fields {
                    match scalar(v) {
                        Some(Some(s)) => {
                            row.insert(k.clone(), s);
                        }
                        Some(None) => {}
                        None => {
                            bad = Some(format!(
                                "3pl webhook: {list}[{i}], field `{k}` = {v}: expected a string or a number"
                            ))
                        }
                    }
                }
                if let Some(reason) = bad {
                    dead(reason);
                    continue;
                }
                match map(kind, &row, &self.shops, NAME, now) {
                    Ok(e) => out.events.push(e),
                    Err(fe) => dead(format!("3pl webhook: {list}[{i}], field {fe}")),
                }
            }
        }
        Mapped::Publish(out)
    }
}
