//! One Walmart `returnOrder` → `order.returned` per line and, where the line's refund is
//! complete, `order.refunded`.
//!
//! Ids: `walmart:{purchaseOrderId}:returned:{returnOrderId}:{returnOrderLineNumber}` and
//! `walmart:{purchaseOrderId}:refund:{returnOrderId}:{returnOrderLineNumber}`: the same line
//! read again by the next sync's overlap is a duplicate. `order_id` is the purchase order id,
//! as `walmart_orders` keys the order's other facts.

use chrono::{DateTime, Utc};
use kpiflow_schemas::{EventBody, Fulfilment, Money, OrderRefunded, OrderReturned};
use serde_json::Value;

use crate::map::{MapError, Record, parse_time};
use crate::pull::Fact;

/// What the order of a return line is, read with getOrder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderInfo {
    /// `orderDate`: returns and refunds count on it.
    pub placed_at: DateTime<Utc>,
    /// From `shipNode.type` (WFS orders are exempt from Walmart's refund rate).
    pub fulfilment: Fulfilment,
}

/// Refund statuses (`currentRefundStatus`) and whether the buyer has the money back.
const REFUND_STATUSES: [(&str, bool); 4] = [
    ("REFUND_COMPLETED", true),
    ("REFUND_INITIATED", false),
    ("REFUND_PENDING", false),
    ("REFUND_FAILED", false),
];

/// Return reasons the buyer is answerable for; any other reason (damaged, defective, wrong or
/// missing item, not as described, arrived late, unknown) counts as the seller's fault, so
/// Walmart's seller-fault refund rate is never understated.
const BUYER_REASONS: [&str; 5] = [
    "CHANGED_MIND",
    "NO_LONGER_NEEDED",
    "BETTER_PRICE_AVAILABLE",
    "ORDERED_WRONG_ITEM",
    "GIFT_UNWANTED",
];

/// The purchase order ids `v`'s lines return (for getOrder), in line order.
pub(super) fn purchase_orders(v: &Value) -> Vec<String> {
    let r = Record(v);
    match r.get("returnOrderLines") {
        Some(Value::Array(lines)) => lines
            .iter()
            .filter_map(|l| Record(l).str("purchaseOrderId").ok().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// Maps one `returnOrder`; `order(po)` gives a purchase order's date and fulfilment, `None`
/// when Walmart does not know it. `Err` names the field and value.
pub(super) fn return_order(
    v: &Value,
    order: &dyn Fn(&str) -> Option<OrderInfo>,
) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let ro = r.str("returnOrderId")?;
    let at = |e: MapError| format!("return order {ro}: {e}");
    let returned_at = time(&r, "returnOrderDate").map_err(at)?;
    let lines = match r.get("returnOrderLines") {
        Some(Value::Array(lines)) if !lines.is_empty() => lines,
        _ => {
            return Err(at(
                "field `returnOrderLines`: expected a non-empty list".into()
            ));
        }
    };
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let l = Record(line);
        let in_line = |e: MapError| at(format!("returnOrderLines[{i}]: {e}"));
        let po = l.str("purchaseOrderId").map_err(in_line)?;
        let n = l.int("returnOrderLineNumber").map_err(in_line)?;
        let units = l.count("quantity.measurementValue").map_err(in_line)?;
        let units = u32::try_from(units)
            .ok()
            .filter(|u| *u > 0)
            .ok_or_else(|| {
                in_line(format!(
                    "field `quantity.measurementValue`: expected 1 or more units, got {units}"
                ))
            })?;
        let sku = l.opt_str("item.sku").map_err(in_line)?.map(str::to_string);
        let reason = l.opt_str("returnReason").map_err(in_line)?;
        let Some(info) = order(po) else {
            return Err(in_line(format!(
                "field `purchaseOrderId`: order {po} is unknown to getOrder (GET /v3/orders/{po} answered 404); a return counts on its order's date"
            )));
        };
        out.push(Fact {
            event_id: format!("walmart:{po}:returned:{ro}:{n}"),
            event_time: returned_at,
            sku: sku.clone(),
            marketplace: None,
            body: EventBody::OrderReturned(OrderReturned {
                order_id: po.to_string(),
                placed_at: info.placed_at,
                units,
                reason: reason.map(str::to_string),
                fulfilment: Some(info.fulfilment),
            }),
        });
        let refunded = match l.opt_str("currentRefundStatus").map_err(in_line)? {
            None => false,
            Some(s) => match REFUND_STATUSES.iter().find(|(w, _)| *w == s) {
                Some((_, done)) => *done,
                None => {
                    return Err(in_line(format!(
                        "field `currentRefundStatus`: unknown status {s:?} (known: {})",
                        REFUND_STATUSES.map(|(w, _)| w).join(", ")
                    )));
                }
            },
        };
        if refunded {
            let price = l
                .money("unitPrice.currencyAmount", "unitPrice.currencyUnit")
                .map_err(in_line)?;
            out.push(Fact {
                event_id: format!("walmart:{po}:refund:{ro}:{n}"),
                event_time: returned_at,
                sku,
                marketplace: None,
                body: EventBody::OrderRefunded(OrderRefunded {
                    order_id: po.to_string(),
                    placed_at: info.placed_at,
                    amount: Money {
                        amount: kpiflow_schemas::Decimal(
                            price.amount.0 * rust_decimal::Decimal::from(units),
                        ),
                        currency: price.currency,
                    },
                    seller_fault: reason.is_none_or(|r| !BUYER_REASONS.contains(&r)),
                    fulfilment: Some(info.fulfilment),
                }),
            });
        }
    }
    Ok(out)
}

/// A time as ISO 8601 with an offset, or epoch milliseconds (Walmart's orders use those).
fn time(r: &Record<'_>, path: &str) -> Result<DateTime<Utc>, MapError> {
    match r.get(path) {
        Some(Value::String(s)) => parse_time(s).ok_or_else(|| {
            format!("field `{path}`: expected an ISO 8601 time such as \"2026-11-20T18:22:41.000Z\" or epoch milliseconds, got {s:?}")
        }),
        _ => r.epoch_ms(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/fixtures/walmart_returns/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn known(po: &str) -> Option<OrderInfo> {
        // orderDate 1795192171000 ms = 2026-11-20T16:29:31Z (022, seller-fulfilled); 023 WFS.
        match po {
            "1796277083022" => Some(OrderInfo {
                placed_at: DateTime::from_timestamp_millis(1795192171000).unwrap(),
                fulfilment: Fulfilment::Merchant,
            }),
            "1796277083023" => Some(OrderInfo {
                placed_at: DateTime::from_timestamp_millis(1795222923000).unwrap(),
                fulfilment: Fulfilment::Wfs,
            }),
            _ => None,
        }
    }

    #[test]
    fn a_refunded_damaged_line_is_a_seller_fault_refund_of_price_times_units() {
        let page = fixture("returns-page-1.json");
        let ro = &page["returnOrders"][0];
        let facts = return_order(ro, &known).unwrap();
        let ids: Vec<_> = facts.iter().map(|f| f.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "walmart:1796277083022:returned:RO-9001:1",
                "walmart:1796277083022:refund:RO-9001:1"
            ]
        );
        assert_eq!(
            facts[0].event_time.to_rfc3339(),
            "2026-11-24T18:22:41+00:00"
        );
        let EventBody::OrderReturned(r) = &facts[0].body else {
            panic!()
        };
        assert_eq!((r.units, r.reason.as_deref()), (1, Some("DAMAGED")));
        assert_eq!(r.placed_at.to_rfc3339(), "2026-11-20T16:29:31+00:00");
        let EventBody::OrderRefunded(f) = &facts[1].body else {
            panic!()
        };
        // 1 unit at 24.99 USD.
        assert_eq!(f.amount, Money::usd("24.99"));
        assert!(f.seller_fault);
        assert_eq!(f.fulfilment, Some(Fulfilment::Merchant));
    }

    #[test]
    fn a_buyer_remorse_refund_is_not_the_sellers_fault() {
        let page = fixture("returns-page-1.json");
        let facts = return_order(&page["returnOrders"][1], &known).unwrap();
        let EventBody::OrderRefunded(f) = &facts[1].body else {
            panic!("{facts:?}")
        };
        // 2 units at 12.50 USD = 25.00.
        assert_eq!(f.amount, Money::usd("25.00"));
        assert!(!f.seller_fault);
        assert_eq!(f.fulfilment, Some(Fulfilment::Wfs));
    }

    #[test]
    fn bad_fields_and_unknown_orders_are_named() {
        let page = fixture("returns-page-2.json");
        let err = return_order(&page["returnOrders"][1], &known).unwrap_err();
        assert_eq!(
            err,
            "return order RO-9004: returnOrderLines[0]: field `quantity.measurementValue`: expected an integer, got \"two\""
        );
        let err = return_order(&page["returnOrders"][2], &known).unwrap_err();
        assert!(
            err.starts_with("return order RO-9005: returnOrderLines[0]: field `purchaseOrderId`: order 1796277083099 is unknown"),
            "{err}"
        );
        let mut odd = page["returnOrders"][0].clone();
        odd["returnOrderLines"][0]["currentRefundStatus"] = "MAYBE".into();
        let err = return_order(&odd, &|_| known("1796277083022")).unwrap_err();
        assert!(
            err.contains("unknown status \"MAYBE\" (known: REFUND_COMPLETED"),
            "{err}"
        );
    }
}
