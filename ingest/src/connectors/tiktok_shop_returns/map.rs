//! One TikTok Shop return order → the canonical events its type and status imply.
//!
//! | `return_type` | `return_status` | events (ids `tiktok_shop:{order_id}:{kind}:{return_id}`) |
//! |---|---|---|
//! | RETURN_AND_REFUND | RETURN_OR_REFUND_REQUEST_SUCCESS (the package was accepted, the refund is under way) | `returned` |
//! | RETURN_AND_REFUND | RETURN_OR_REFUND_REQUEST_COMPLETE | `returned`, `refunded` |
//! | REFUND (refund only, the item stays with the buyer) | RETURN_OR_REFUND_REQUEST_COMPLETE | `refunded` |
//! | RETURN_AND_REFUND, REFUND | RETURN_OR_REFUND_REQUEST_PENDING, AWAITING_BUYER_SHIP, BUYER_SHIPPED_ITEM, AWAITING_BUYER_RESPONSE; REFUND also in …_SUCCESS | none yet (nothing came back, no money went back) |
//! | RETURN_AND_REFUND, REFUND | RETURN_OR_REFUND_REQUEST_REJECT, RETURN_OR_REFUND_REQUEST_CANCEL, REJECT_RECEIVE_PACKAGE | none (refused, withdrawn, or the package was refused: a dispute that ends in a refund comes back as …_COMPLETE) |
//! | REPLACEMENT | any | none (no money goes back; the new item is a re-shipment, not a sale) |
//!
//! `returned` counts the return's `return_line_items` (one unit each, as order line items
//! are), unless `can_buyer_keep_item` is true (refunded, but nothing came back). `refunded`
//! carries `refund_amount.refund_total` in `refund_amount.currency`, an exact decimal (a zero
//! refund gives no event: no money went back). Both are timed at `update_time` (the only time
//! the return says it reached that status) and count on the order's `create_time`, read with
//! Get Order Detail; an order TikTok does not return is dead-lettered. The sku is the
//! lines' `seller_sku` when they all share one.
//!
//! **Seller fault** (carried on `order.refunded`; TikTok Shop's refund rate counts every
//! refund, the catalog reads it only for Walmart): as for `walmart_returns`, a refund is the
//! seller's fault unless its `return_reason` is a buyer-remorse reason ([`BUYER_REASONS`],
//! matched as the reason's ending, since TikTok prefixes the reason name with the order
//! state: `ecom_order_delivered_refund_and_return_reason_…`); absent or unknown reasons
//! count as the seller's (the rate is never understated). A refund the seller opened
//! (`role` SELLER) is the seller's whatever the reason; the buyer or TikTok (`role` BUYER,
//! SYSTEM, OPERATOR) opening it does not decide it.
//!
//! The same return read again (the next sync's overlap, or at a later status) keeps its ids,
//! so it counts once.

use kpiflow_schemas::{EventBody, OrderRefunded, OrderReturned};
use serde_json::Value;

use crate::connectors::amazon_sp_orders::OrderInfo;
use crate::connectors::tiktok_shop_orders::api::secs;
use crate::map::{MapError, Record};
use crate::pull::Fact;

/// The documented `return_type`s.
const TYPES: [&str; 3] = ["REFUND", "RETURN_AND_REFUND", "REPLACEMENT"];

/// The documented `return_status`es.
const STATUSES: [&str; 9] = [
    "RETURN_OR_REFUND_REQUEST_PENDING",
    "RETURN_OR_REFUND_REQUEST_REJECT",
    "AWAITING_BUYER_SHIP",
    "BUYER_SHIPPED_ITEM",
    "REJECT_RECEIVE_PACKAGE",
    "RETURN_OR_REFUND_REQUEST_SUCCESS",
    "RETURN_OR_REFUND_REQUEST_CANCEL",
    "RETURN_OR_REFUND_REQUEST_COMPLETE",
    "AWAITING_BUYER_RESPONSE",
];

/// Endings of the return reasons the buyer is answerable for (unconfirmed: the reason names
/// TikTok lists for US shops); any other reason (damaged, defective, wrong or missing item,
/// not as described, late, unknown) counts as the seller's fault.
pub const BUYER_REASONS: [&str; 5] = [
    "no_longer_needed",
    "changed_mind",
    "change_of_mind",
    "ordered_by_mistake",
    "better_price_available",
];

/// What a return will publish, from its type and status alone.
fn publishes(kind: &str, status: &str) -> (bool, bool) {
    let returned = kind == "RETURN_AND_REFUND"
        && matches!(
            status,
            "RETURN_OR_REFUND_REQUEST_SUCCESS" | "RETURN_OR_REFUND_REQUEST_COMPLETE"
        );
    let refunded = matches!(kind, "REFUND" | "RETURN_AND_REFUND")
        && status == "RETURN_OR_REFUND_REQUEST_COMPLETE";
    (returned, refunded)
}

/// The order whose placement time `v` needs: its `order_id` when it publishes anything.
pub(super) fn needs_order(v: &Value) -> Option<String> {
    let r = Record(v);
    let (kind, status) = (r.str("return_type").ok()?, r.str("return_status").ok()?);
    let (returned, refunded) = publishes(kind, status);
    (returned || refunded)
        .then(|| r.str("order_id").ok().map(str::to_string))
        .flatten()
}

/// Maps one return order; `order(id)` gives an order's placement time and fulfilment, `None`
/// when Get Order Detail did not return it. `Err` names the field and value.
pub(super) fn return_order(
    v: &Value,
    order: &dyn Fn(&str) -> Option<OrderInfo>,
) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let id = r.str("return_id")?;
    let at = |e: MapError| format!("return {id}: {e}");
    let order_id = r.str("order_id").map_err(at)?;
    let kind = one_of(&r, "return_type", &TYPES).map_err(at)?;
    let status = one_of(&r, "return_status", &STATUSES).map_err(at)?;
    let (returned, refunded) = publishes(kind, status);
    if !returned && !refunded {
        return Ok(Vec::new());
    }
    let created = secs(&r, "create_time").map_err(at)?;
    let updated_at = secs(&r, "update_time")
        .map_err(at)?
        .or(created)
        .ok_or_else(|| at("field `update_time` is missing".into()))?;
    let Some(info) = order(order_id) else {
        return Err(at(format!(
            "field `order_id`: order {order_id} is unknown to Get Order Detail (GET /order/202309/orders?ids={order_id} did not return it); a return counts on its order's date"
        )));
    };
    let (units, sku) = lines(&r).map_err(at)?;
    let keeps_item = matches!(r.get("can_buyer_keep_item"), Some(Value::Bool(true)));
    let reason = r.opt_str("return_reason").map_err(at)?;
    let fact = |kind: &str, body: EventBody| Fact {
        event_id: format!("tiktok_shop:{order_id}:{kind}:{id}"),
        // A return is never before its order (a skewed clock would book it early).
        event_time: updated_at.max(info.placed_at),
        sku: sku.clone(),
        marketplace: None,
        body,
    };
    let mut out = Vec::new();
    if returned && !keeps_item {
        out.push(fact(
            "returned",
            OrderReturned {
                order_id: order_id.to_string(),
                placed_at: info.placed_at,
                units,
                reason: reason.map(str::to_string),
                fulfilment: info.fulfilment,
            }
            .into(),
        ));
    }
    if refunded {
        let amount = r
            .money("refund_amount.refund_total", "refund_amount.currency")
            .map_err(at)?;
        if amount.amount.0.is_sign_negative() {
            return Err(at(format!(
                "field `refund_amount.refund_total`: a refund is not negative, got {:?}",
                amount.amount.0.to_string()
            )));
        }
        if !amount.amount.0.is_zero() {
            let by_seller = r.opt_str("role").map_err(at)? == Some("SELLER");
            let remorse = reason.is_some_and(|x| BUYER_REASONS.iter().any(|b| x.ends_with(b)));
            out.push(fact(
                "refund",
                OrderRefunded {
                    order_id: order_id.to_string(),
                    placed_at: info.placed_at,
                    amount,
                    seller_fault: by_seller || !remorse,
                    fulfilment: info.fulfilment,
                }
                .into(),
            ));
        }
    }
    Ok(out)
}

/// A required string that must be one of `known`.
fn one_of<'a>(r: &Record<'a>, path: &str, known: &[&str]) -> Result<&'a str, MapError> {
    let v = r.str(path)?;
    if known.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "field `{path}`: unknown value {v:?} (known: {})",
            known.join(", ")
        ))
    }
}

/// The units (`return_line_items`, one unit each) and their common `seller_sku`, if any.
fn lines(r: &Record<'_>) -> Result<(u32, Option<String>), MapError> {
    let items = match r.get("return_line_items") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(v) => {
            return Err(format!(
                "field `return_line_items`: expected a non-empty list, got {v}"
            ));
        }
        None => return Err("field `return_line_items` is missing".into()),
    };
    let mut skus = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let l = Record(item);
        l.str("return_line_item_id")
            .map_err(|e| format!("return_line_items[{i}]: {e}"))?;
        skus.push(
            l.opt_str("seller_sku")
                .map_err(|e| format!("return_line_items[{i}]: {e}"))?,
        );
    }
    let sku = match skus.first() {
        Some(Some(first)) if skus.iter().all(|s| s == &Some(*first)) => Some(first.to_string()),
        _ => None,
    };
    Ok((u32::try_from(items.len()).unwrap_or(u32::MAX), sku))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use kpiflow_schemas::{Fulfilment, Money};
    use serde_json::json;

    /// Order 576461413038785752, placed 1795680000 = 2026-11-26T08:00:00Z, seller-fulfilled.
    fn known(id: &str) -> Option<OrderInfo> {
        (id == "576461413038785752").then(|| OrderInfo {
            placed_at: DateTime::from_timestamp(1795680000, 0).unwrap(),
            fulfilment: Some(Fulfilment::Merchant),
        })
    }

    fn completed_return() -> Value {
        json!({
            "return_id": "4035318291",
            "order_id": "576461413038785752",
            "return_type": "RETURN_AND_REFUND",
            "return_status": "RETURN_OR_REFUND_REQUEST_COMPLETE",
            "role": "BUYER",
            "create_time": 1796000000,
            "update_time": 1796200000,
            "return_reason": "ecom_order_delivered_refund_and_return_reason_damaged",
            "return_reason_text": "Package or item damaged",
            "refund_amount": {
                "currency": "USD",
                "refund_subtotal": "25.98",
                "refund_shipping_fee": "0.00",
                "refund_tax": "2.08",
                "refund_total": "28.06"
            },
            "return_line_items": [
                {"return_line_item_id": "4035318291-1", "order_line_item_id": "576461413038785752-0",
                 "sku_id": "1729", "seller_sku": "TT-MUG-01",
                 "refund_amount": {"currency": "USD", "refund_total": "14.03"}},
                {"return_line_item_id": "4035318291-2", "order_line_item_id": "576461413038785752-1",
                 "sku_id": "1729", "seller_sku": "TT-MUG-01",
                 "refund_amount": {"currency": "USD", "refund_total": "14.03"}}
            ]
        })
    }

    #[test]
    fn a_completed_return_is_two_units_back_and_its_refund_total_on_the_orders_date() {
        let facts = return_order(&completed_return(), &known).unwrap();
        let ids: Vec<_> = facts.iter().map(|f| f.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "tiktok_shop:576461413038785752:returned:4035318291",
                "tiktok_shop:576461413038785752:refund:4035318291"
            ]
        );
        // update_time 1796200000 = 2026-12-02T08:26:40Z.
        assert_eq!(
            facts[0].event_time.to_rfc3339(),
            "2026-12-02T08:26:40+00:00"
        );
        assert_eq!(facts[0].sku.as_deref(), Some("TT-MUG-01"));
        let EventBody::OrderReturned(r) = &facts[0].body else {
            panic!("{:?}", facts[0].body)
        };
        // Two return line items, one unit each.
        assert_eq!(r.units, 2);
        assert_eq!(r.placed_at.to_rfc3339(), "2026-11-26T08:00:00+00:00");
        let EventBody::OrderRefunded(f) = &facts[1].body else {
            panic!("{:?}", facts[1].body)
        };
        // refund_total 28.06 (25.98 subtotal + 2.08 tax), exactly.
        assert_eq!(f.amount, Money::usd("28.06"));
        // Damaged is not the buyer's doing.
        assert!(f.seller_fault);
        assert_eq!(f.fulfilment, Some(Fulfilment::Merchant));
    }

    #[test]
    fn what_publishes_goes_by_type_and_status() {
        let with = |kind: &str, status: &str| {
            let mut v = completed_return();
            v["return_type"] = kind.into();
            v["return_status"] = status.into();
            let kinds: Vec<String> = return_order(&v, &known)
                .unwrap()
                .iter()
                .map(|f| f.event_id.split(':').nth(2).unwrap().to_string())
                .collect();
            (kinds, needs_order(&v).is_some())
        };
        let none = (Vec::<String>::new(), false);
        assert_eq!(
            with("RETURN_AND_REFUND", "RETURN_OR_REFUND_REQUEST_SUCCESS"),
            (vec!["returned".to_string()], true)
        );
        assert_eq!(
            with("REFUND", "RETURN_OR_REFUND_REQUEST_COMPLETE"),
            (vec!["refund".to_string()], true)
        );
        assert_eq!(with("REFUND", "RETURN_OR_REFUND_REQUEST_SUCCESS"), none);
        assert_eq!(with("RETURN_AND_REFUND", "BUYER_SHIPPED_ITEM"), none);
        assert_eq!(with("RETURN_AND_REFUND", "REJECT_RECEIVE_PACKAGE"), none);
        assert_eq!(
            with("RETURN_AND_REFUND", "RETURN_OR_REFUND_REQUEST_CANCEL"),
            none
        );
        assert_eq!(
            with("REPLACEMENT", "RETURN_OR_REFUND_REQUEST_COMPLETE"),
            none
        );
    }

    #[test]
    fn a_kept_item_is_refunded_not_returned_and_remorse_is_the_buyers_unless_the_seller_opened_it()
    {
        let mut v = completed_return();
        v["can_buyer_keep_item"] = true.into();
        v["return_reason"] =
            "ecom_order_delivered_refund_and_return_reason_no_longer_needed".into();
        let facts = return_order(&v, &known).unwrap();
        assert_eq!(facts.len(), 1);
        let EventBody::OrderRefunded(f) = &facts[0].body else {
            panic!("{:?}", facts[0].body)
        };
        assert!(!f.seller_fault);
        v["role"] = "SELLER".into();
        let EventBody::OrderRefunded(f) = &return_order(&v, &known).unwrap()[0].body else {
            panic!()
        };
        assert!(f.seller_fault);
    }

    #[test]
    fn bad_fields_and_unknown_orders_are_named() {
        let mut v = completed_return();
        v["refund_amount"]["refund_total"] = "28.O6".into();
        assert_eq!(
            return_order(&v, &known).unwrap_err(),
            "return 4035318291: field `refund_amount.refund_total`: expected a decimal such as \"12.34\", got \"28.O6\""
        );
        let mut v = completed_return();
        v["return_status"] = "TELEPORTED".into();
        let err = return_order(&v, &known).unwrap_err();
        assert!(
            err.starts_with("return 4035318291: field `return_status`: unknown value \"TELEPORTED\" (known: RETURN_OR_REFUND_REQUEST_PENDING"),
            "{err}"
        );
        let mut v = completed_return();
        v["return_line_items"] = json!([]);
        assert_eq!(
            return_order(&v, &known).unwrap_err(),
            "return 4035318291: field `return_line_items`: expected a non-empty list, got []"
        );
        let mut v = completed_return();
        v["order_id"] = "576461413038785799".into();
        let err = return_order(&v, &known).unwrap_err();
        assert!(
            err.starts_with("return 4035318291: field `order_id`: order 576461413038785799 is unknown to Get Order Detail"),
            "{err}"
        );
    }
}
