//! One TikTok Shop `order` → the canonical lifecycle events its status implies.
//!
//! | `status` | events (ids `tiktok_shop:{id}:{kind}`) |
//! |---|---|
//! | UNPAID | none yet (not an order until paid) |
//! | ON_HOLD, AWAITING_SHIPMENT, PARTIALLY_SHIPPING, AWAITING_COLLECTION | `placed` |
//! | IN_TRANSIT, DELIVERED, COMPLETED | `placed`, `shipped` |
//! | CANCELLED | `placed` and `cancelled` if it was paid; nothing if it never was (no placement, so no cancellation) |
//!
//! `placed` is timed at `create_time` with `payment.total_amount`; `shipped` at `rts_time`
//! (ready to ship, the hand-over TikTok measures) with `rts_sla_time` as ship-by;
//! `cancelled` at `update_time`, by whom `cancellation_initiator` says. Every fact carries the
//! order's `fulfillment_type` (FBT orders are platform-fulfilled, outside seller-fulfilled scopes).

use chrono::{DateTime, Utc};
use kpiflow_schemas::{
    CancelledBy, EventBody, Fulfilment, OrderCancelled, OrderPlaced, OrderShipped,
};
use serde_json::Value;

use super::api::secs;
use crate::map::{MapError, Record};
use crate::pull::Fact;

const STATUSES: [&str; 9] = [
    "UNPAID",
    "ON_HOLD",
    "AWAITING_SHIPMENT",
    "PARTIALLY_SHIPPING",
    "AWAITING_COLLECTION",
    "IN_TRANSIT",
    "DELIVERED",
    "COMPLETED",
    "CANCELLED",
];

/// `fulfillment_type`: FULFILLMENT_BY_SELLER (or absent) is seller-fulfilled,
/// FULFILLMENT_BY_TIKTOK is FBT; anything else is named.
pub(crate) fn fulfilment(r: &Record<'_>) -> Result<Fulfilment, MapError> {
    match r.opt_str("fulfillment_type")? {
        None | Some("FULFILLMENT_BY_SELLER") => Ok(Fulfilment::Merchant),
        Some("FULFILLMENT_BY_TIKTOK") => Ok(Fulfilment::Fbt),
        Some(other) => Err(format!(
            "field `fulfillment_type`: expected FULFILLMENT_BY_SELLER or FULFILLMENT_BY_TIKTOK, got {other:?}"
        )),
    }
}

/// Maps one `order`; `Err` names the field and value that made it unusable.
pub fn order(v: &Value) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let id = r.str("id")?;
    let at = |e: MapError| format!("order {id}: {e}");
    let status = r.str("status").map_err(at)?;
    if !STATUSES.contains(&status) {
        return Err(at(format!(
            "field `status`: unknown status {status:?} (known: {})",
            STATUSES.join(", ")
        )));
    }
    let placed_at = secs(&r, "create_time")
        .map_err(at)?
        .ok_or_else(|| at("field `create_time` is missing".into()))?;
    let updated_at = secs(&r, "update_time").map_err(at)?.unwrap_or(placed_at);
    let ship_by = secs(&r, "rts_sla_time").map_err(at)?;
    let fulfilment = fulfilment(&r).map_err(at)?;
    let units = match r.get("line_items") {
        Some(Value::Array(items)) if !items.is_empty() => {
            u32::try_from(items.len()).unwrap_or(u32::MAX)
        }
        _ => return Err(at("field `line_items`: expected a non-empty list".into())),
    };
    let paid = r.get("paid_time").is_some() || !matches!(status, "UNPAID" | "CANCELLED");
    let fact = |kind: &str, t: DateTime<Utc>, body: EventBody| {
        Fact::new(format!("tiktok_shop:{id}:{kind}"), t, body)
    };
    let mut facts = Vec::new();
    if status == "UNPAID" {
        return Ok(facts);
    }
    if paid {
        let total = r
            .money("payment.total_amount", "payment.currency")
            .map_err(at)?;
        facts.push(fact(
            "placed",
            placed_at,
            OrderPlaced {
                order_id: id.to_string(),
                total,
                units,
                fulfilment,
                ship_by,
                deliver_by: None,
            }
            .into(),
        ));
    }
    if matches!(status, "IN_TRANSIT" | "DELIVERED" | "COMPLETED") {
        let ship_by = ship_by
            .ok_or_else(|| at("field `rts_sla_time` is missing on a shipped order".into()))?;
        let shipped_at = secs(&r, "rts_time")
            .map_err(at)?
            .unwrap_or(updated_at)
            .max(placed_at);
        let tracking = r
            .opt_str("tracking_number")
            .map_err(at)?
            .map(str::to_string);
        facts.push(fact(
            "shipped",
            shipped_at,
            OrderShipped {
                order_id: id.to_string(),
                placed_at,
                ship_by,
                deliver_by: None,
                units,
                carrier: r
                    .opt_str("shipping_provider")
                    .map_err(at)?
                    .map(str::to_string),
                tracking_valid: tracking.is_some(),
                tracking_id: tracking,
                fulfilment: Some(fulfilment),
            }
            .into(),
        ));
    }
    // An order cancelled before it was paid was never placed (no placement above), so its
    // cancellation must not count either.
    if status == "CANCELLED" && paid {
        let by = match r.opt_str("cancellation_initiator").map_err(at)? {
            Some("BUYER") => CancelledBy::Buyer,
            Some("SYSTEM") => CancelledBy::System,
            _ => CancelledBy::Seller,
        };
        facts.push(fact(
            "cancelled",
            updated_at.max(placed_at),
            OrderCancelled {
                order_id: id.to_string(),
                placed_at,
                cancelled_by: by,
                reason: r.opt_str("cancel_reason").map_err(at)?.map(str::to_string),
                fulfilment: Some(fulfilment),
            }
            .into(),
        ));
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cancelled() -> Value {
        json!({
            "id": "576461413038785754",
            "status": "CANCELLED",
            "create_time": 1795687200,
            "update_time": 1795689000,
            "paid_time": 1795687260,
            "payment": {"currency": "USD", "total_amount": "12.99"},
            "line_items": [{"id": "576461413038785754-0", "seller_sku": "TT-MUG-01"}],
            "fulfillment_type": "FULFILLMENT_BY_TIKTOK",
            "rts_sla_time": 1795860000,
            "cancellation_initiator": "SELLER"
        })
    }

    #[test]
    fn a_paid_cancelled_order_is_placed_and_cancelled_with_its_fulfilment() {
        let facts = order(&cancelled()).unwrap();
        let ids: Vec<_> = facts.iter().map(|f| f.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "tiktok_shop:576461413038785754:placed",
                "tiktok_shop:576461413038785754:cancelled"
            ]
        );
        let EventBody::OrderCancelled(c) = &facts[1].body else {
            panic!("{:?}", facts[1].body)
        };
        assert_eq!(c.cancelled_by, CancelledBy::Seller);
        assert_eq!(c.fulfilment, Some(Fulfilment::Fbt));
    }

    #[test]
    fn an_order_cancelled_before_payment_gives_no_cancellation() {
        let mut v = cancelled();
        v.as_object_mut().unwrap().remove("paid_time");
        assert!(order(&v).unwrap().is_empty());
    }
}
