//! Financial events → canonical facts. Pure functions over one event (read with
//! [`crate::map::exact_numbers`], so every `CurrencyAmount` is the decimal Amazon wrote) and the
//! purchase dates getOrder gave.
//!
//! | list | event → facts (deterministic ids) |
//! |---|---|
//! | `ShipmentEventList` | one `order.fee` (sale) per non-zero fee line of `ShipmentItemList[].ItemFeeList`, `ShipmentFeeList`, `OrderFeeList` (`amazon:{order}:fee:sale:{PostedDate}:{OrderItemId}:{FeeType}`) |
//! | `RefundEventList` | `order.refunded` of the charges given back (`amazon:{order}:refund:{PostedDate}`), one `order.fee` (refund) per non-zero line of `ShipmentItemAdjustmentList[].ItemFeeAdjustmentList`, `ShipmentFeeAdjustmentList`, `OrderFeeAdjustmentList` |
//! | `GuaranteeClaimEventList` | `order.defect` kind `a_to_z_claim` (`amazon:{order}:a_to_z_claim`) |
//! | `ChargebackEventList` | `order.defect` kind `chargeback` (`amazon:{order}:chargeback`) |
//! | `ServiceFeeEventList` | one `order.fee` (account) per non-zero line of `FeeList` (`amazon:fee:account:{content hash}:{n}`) |
//!
//! **Signs.** Amazon writes amounts as the seller sees them: a fee charged is negative
//! (`Commission: -3.00`), a fee given back positive; refunded charges are negative
//! (`Principal: -19.99`). `order.fee` carries what the fee costs the seller, the opposite sign
//! (`3.00`, and `-2.40` for a commission given back); `order.refunded` carries the money that
//! went back to the buyer, the negated sum of the refund's charge adjustments (principal, tax,
//! shipping …), and is left out when that sum is not negative (nothing went back). Zero fee
//! lines (Amazon lists `0.00` fees) are left out.
//!
//! **Counted once.** A claim or chargeback has one id per order and kind: a second event of
//! the same order (a claim posted, reversed and posted again) is a duplicate, and ODR counts
//! the order once whatever its defects (the catalog's `once = ["order_id"]`). A claim appears
//! in Finances only when Amazon debits the seller for it, so a denied claim never does: every
//! claim here is one ODR counts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{
    DefectKind, FeeApplies, FeeKind, Money, OrderDefect, OrderFee, OrderRefunded,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::connectors::amazon_sp_orders::{Orders, looked_up};
use crate::map::{MapError, Record};
use crate::pull::Fact;

/// The canonical kind of an Amazon `FeeType`.
pub fn fee_kind(fee_type: &str) -> FeeKind {
    match fee_type {
        "Commission" => FeeKind::Referral,
        "VariableClosingFee" | "FixedClosingFee" => FeeKind::Closing,
        "FBAPerUnitFulfillmentFee" | "FBAPerOrderFulfillmentFee" | "FBAWeightBasedFee" => {
            FeeKind::FbaFulfilment
        }
        "FBAStorageFee" | "FBALongTermStorageFee" => FeeKind::Storage,
        "RefundCommission" => FeeKind::RefundAdministration,
        "ShippingChargeback" => FeeKind::ShippingLabel,
        "DigitalServicesFee" => FeeKind::DigitalServices,
        _ => FeeKind::Other,
    }
}

/// Names `path` inside `prefix` in an error from a nested record: ``field `FeeAmount` …`` of
/// item 1 reads ``field `ShipmentItemList[1].FeeAmount` …``.
fn inside(prefix: &str, e: MapError) -> MapError {
    e.replacen("field `", &format!("field `{prefix}."), 1)
}

/// The list at `path` (absent is empty); anything but an array names the field.
fn list<'a>(r: &Record<'a>, path: &str) -> Result<&'a [Value], MapError> {
    match r.get(path) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(format!("field `{path}`: expected a list, got {v}")),
    }
}

/// A `{CurrencyCode, CurrencyAmount}` at `path`.
fn currency(r: &Record<'_>, path: &str) -> Result<Money, MapError> {
    r.money(
        &format!("{path}.CurrencyAmount"),
        &format!("{path}.CurrencyCode"),
    )
}

/// The fee lines of `lists` (paths to `FeeComponent` lists inside `r`), each with the SKU and
/// the id part of the item it belongs to.
struct FeeLine {
    fee_type: String,
    /// What it costs the seller: Amazon's amount negated.
    cost: Money,
    sku: Option<String>,
    item: String,
}

fn fee_lines(
    r: &Record<'_>,
    at: &str,
    sku: Option<&str>,
    item: &str,
    lists: &[&str],
    out: &mut Vec<FeeLine>,
) -> Result<(), MapError> {
    for path in lists {
        for (i, fee) in list(r, path)?.iter().enumerate() {
            let where_ = format!("{at}{path}[{i}]");
            let f = Record(fee);
            let fee_type = f.str("FeeType").map_err(|e| inside(&where_, e))?;
            let amount = currency(&f, "FeeAmount").map_err(|e| inside(&where_, e))?;
            if amount.amount.0.is_zero() {
                continue;
            }
            out.push(FeeLine {
                fee_type: fee_type.to_string(),
                cost: Money {
                    amount: kpiflow_schemas::Decimal(-amount.amount.0),
                    currency: amount.currency,
                },
                sku: sku.map(str::to_string),
                item: item.to_string(),
            });
        }
    }
    Ok(())
}

/// Every fee line of a shipment or refund event: the items' lists (`items` with
/// `item_fees`), then the event's own (`order_fees`).
fn event_fees(
    r: &Record<'_>,
    items: &str,
    item_fees: &str,
    order_fees: &[&str],
) -> Result<Vec<FeeLine>, MapError> {
    let mut out = Vec::new();
    for (i, item) in list(r, items)?.iter().enumerate() {
        let at = format!("{items}[{i}].");
        let it = Record(item);
        let sku = it
            .opt_str("SellerSKU")
            .map_err(|e| inside(&at[..at.len() - 1], e))?;
        // The adjustment's own id, else the order item's, else the SKU: stable across reads.
        let id = ["OrderAdjustmentItemId", "OrderItemId"]
            .iter()
            .find_map(|k| it.opt_str(k).ok().flatten())
            .or(sku)
            .ok_or_else(|| format!("field `{at}OrderItemId` is missing (and no SellerSKU)"))?;
        fee_lines(&it, &at, sku, id, &[item_fees], &mut out)?;
    }
    fee_lines(r, "", None, "order", order_fees, &mut out)?;
    Ok(out)
}

/// The `order.fee` facts of `lines`; a fee type repeated on one item gets `:2`, `:3` ….
fn fee_facts(
    order: Option<&str>,
    lines: Vec<FeeLine>,
    applies_to: FeeApplies,
    id_prefix: &str,
    posted: DateTime<Utc>,
) -> Vec<Fact> {
    let mut seen: HashMap<(String, String), u32> = HashMap::new();
    lines
        .into_iter()
        .map(|l| {
            let n = seen
                .entry((l.item.clone(), l.fee_type.clone()))
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let mut id = format!("{id_prefix}:{}:{}", l.item, l.fee_type);
            if *n > 1 {
                id.push_str(&format!(":{n}"));
            }
            let body = OrderFee {
                order_id: order.map(str::to_string),
                kind: fee_kind(&l.fee_type),
                fee_type: l.fee_type,
                amount: l.cost,
                applies_to,
            };
            let mut fact = Fact::new(id, posted, body);
            fact.sku = l.sku;
            fact
        })
        .collect()
}

/// One `ShipmentEventList` item: its fee lines (the sale itself is `amazon_sp_orders`').
pub fn shipment(v: &Value) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let order = r.str("AmazonOrderId")?;
    let at = |e: MapError| format!("order {order}: {e}");
    let posted = r.time("PostedDate").map_err(at)?;
    let lines = event_fees(
        &r,
        "ShipmentItemList",
        "ItemFeeList",
        &["ShipmentFeeList", "OrderFeeList"],
    )
    .map_err(at)?;
    let prefix = format!(
        "amazon:{order}:fee:sale:{}",
        r.str("PostedDate").map_err(at)?
    );
    Ok(fee_facts(
        Some(order),
        lines,
        FeeApplies::Sale,
        &prefix,
        posted,
    ))
}

/// One `RefundEventList` item: the refund (on its order's date) and its fee lines.
pub fn refund(v: &Value, orders: &Orders) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let order = r.str("AmazonOrderId")?;
    let at = |e: MapError| format!("order {order}: {e}");
    let posted_text = r.str("PostedDate").map_err(at)?;
    let posted = r.time("PostedDate").map_err(at)?;
    let items = "ShipmentItemAdjustmentList";
    let mut charged: Option<Money> = None;
    for (i, item) in list(&r, items).map_err(at)?.iter().enumerate() {
        let it = Record(item);
        for (j, c) in list(&it, "ItemChargeAdjustmentList")
            .map_err(|e| at(inside(&format!("{items}[{i}]"), e)))?
            .iter()
            .enumerate()
        {
            let where_ = format!("{items}[{i}].ItemChargeAdjustmentList[{j}]");
            let m = currency(&Record(c), "ChargeAmount").map_err(|e| at(inside(&where_, e)))?;
            charged = Some(match charged {
                None => m,
                Some(sum) if sum.currency == m.currency => Money {
                    amount: sum.amount + m.amount,
                    currency: sum.currency,
                },
                Some(sum) => {
                    return Err(at(format!(
                        "field `{where_}.ChargeAmount.CurrencyCode`: {:?} differs from {:?} in the same refund",
                        m.currency, sum.currency
                    )));
                }
            });
        }
    }
    let lines = event_fees(
        &r,
        items,
        "ItemFeeAdjustmentList",
        &["ShipmentFeeAdjustmentList", "OrderFeeAdjustmentList"],
    )
    .map_err(at)?;
    let info = looked_up(orders, order)?;
    let mut facts = Vec::new();
    if let Some(m) = charged.filter(|m| m.amount.is_negative()) {
        let body = OrderRefunded {
            order_id: order.to_string(),
            placed_at: info.placed_at,
            amount: Money {
                amount: kpiflow_schemas::Decimal(-m.amount.0),
                currency: m.currency,
            },
            // Finances does not say whose fault a refund is; only Walmart's rate asks.
            seller_fault: false,
            fulfilment: info.fulfilment,
        };
        facts.push(Fact::new(
            format!("amazon:{order}:refund:{posted_text}"),
            posted.max(info.placed_at),
            body,
        ));
    }
    let prefix = format!("amazon:{order}:fee:refund:{posted_text}");
    facts.extend(fee_facts(
        Some(order),
        lines,
        FeeApplies::Refund,
        &prefix,
        posted,
    ));
    Ok(facts)
}

/// One `GuaranteeClaimEventList` (`kind` A-to-z claim) or `ChargebackEventList` (chargeback)
/// item: an ODR defect on its order's date.
pub fn claim(v: &Value, orders: &Orders, kind: DefectKind) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let order = r.str("AmazonOrderId")?;
    let posted = r
        .time("PostedDate")
        .map_err(|e| format!("order {order}: {e}"))?;
    let info = looked_up(orders, order)?;
    let body = OrderDefect {
        order_id: order.to_string(),
        placed_at: info.placed_at,
        kind,
        rating: None,
        fulfilment: info.fulfilment,
    };
    Ok(vec![Fact::new(
        format!("amazon:{order}:{}", kind.as_str()),
        posted.max(info.placed_at),
        body,
    )])
}

/// One `ServiceFeeEventList` item: one account fee per non-zero `FeeList` line, at its
/// `PostedDate` if it has one, else at `read_from` (the documented `ServiceFeeEvent` has no
/// date: it was posted within the window read, which starts there). `occurrence` counts the
/// identical events read before it in the same window (two months of the same storage fee),
/// since nothing else tells them apart.
pub fn service_fee(
    v: &Value,
    read_from: DateTime<Utc>,
    occurrence: u32,
) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let order = r.opt_str("AmazonOrderId")?;
    let posted = r.opt_time("PostedDate")?.unwrap_or(read_from);
    let mut lines = Vec::new();
    let sku = r.opt_str("SellerSKU")?;
    fee_lines(&r, "", sku, "account", &["FeeList"], &mut lines)?;
    // serde_json's maps are sorted: the same event always hashes the same.
    let digest = Sha256::digest(v.to_string().as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let prefix = format!("amazon:fee:account:{hash}:{occurrence}");
    Ok(fee_facts(
        order,
        lines,
        FeeApplies::Account,
        &prefix,
        posted,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::amazon_sp_orders::OrderInfo;
    use crate::map::exact_numbers;
    use kpiflow_schemas::{EventBody, Fulfilment};

    fn golden() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/amazon_sp_finances/financial-events-page-1.json");
        let text = std::fs::read_to_string(&path).unwrap();
        exact_numbers(&text).unwrap()["payload"]["FinancialEvents"].clone()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn orders() -> Orders {
        [
            (
                "113-3000001-0000001",
                "2026-11-02T17:03:00Z",
                Fulfilment::Fba,
            ),
            (
                "113-3000002-0000002",
                "2026-11-03T01:30:00Z",
                Fulfilment::Merchant,
            ),
        ]
        .into_iter()
        .map(|(id, at, f)| {
            (
                id.to_string(),
                OrderInfo {
                    placed_at: t(at),
                    fulfilment: Some(f),
                },
            )
        })
        .collect()
    }

    fn fee(f: &Fact) -> (&str, Option<&str>, FeeKind, &str, String, FeeApplies) {
        let EventBody::OrderFee(b) = &f.body else {
            panic!("{f:?}")
        };
        (
            f.event_id.as_str(),
            f.sku.as_deref(),
            b.kind,
            b.fee_type.as_str(),
            b.amount.amount.to_string(),
            b.applies_to,
        )
    }

    #[test]
    fn a_shipment_gives_one_fee_per_non_zero_line_costs_positive() {
        let ev = golden();
        let f = shipment(&ev["ShipmentEventList"][0]).unwrap();
        let p = "amazon:113-3000001-0000001:fee:sale:2026-11-04T10:15:31Z";
        // Commission -3.00 and FBAPerUnitFulfillmentFee -3.22 are costs 3.00 and 3.22; the
        // 0.0 FBAPerOrderFulfillmentFee is left out.
        assert_eq!(
            f.iter().map(fee).collect::<Vec<_>>(),
            [
                (
                    format!("{p}:51234567890123:Commission").as_str(),
                    Some("KF-MUG-01"),
                    FeeKind::Referral,
                    "Commission",
                    "3.00".to_string(),
                    FeeApplies::Sale
                ),
                (
                    format!("{p}:51234567890123:FBAPerUnitFulfillmentFee").as_str(),
                    Some("KF-MUG-01"),
                    FeeKind::FbaFulfilment,
                    "FBAPerUnitFulfillmentFee",
                    "3.22".to_string(),
                    FeeApplies::Sale
                ),
            ]
        );
        assert!(f.iter().all(|f| f.event_time == t("2026-11-04T10:15:31Z")));
        let EventBody::OrderFee(b) = &f[0].body else {
            panic!()
        };
        assert_eq!(b.order_id.as_deref(), Some("113-3000001-0000001"));
        assert_eq!(b.amount.currency, "USD");
    }

    #[test]
    fn a_refund_is_the_charges_given_back_on_the_order_date_and_its_fees_reverse() {
        let ev = golden();
        let f = refund(&ev["RefundEventList"][0], &orders()).unwrap();
        assert_eq!(
            f[0].event_id,
            "amazon:113-3000001-0000001:refund:2026-11-20T18:12:44Z"
        );
        assert_eq!(f[0].event_time, t("2026-11-20T18:12:44Z"));
        let EventBody::OrderRefunded(r) = &f[0].body else {
            panic!("{f:?}")
        };
        // Principal -19.99 + Tax -1.60 = -21.59 went back to the buyer.
        assert_eq!(r.amount.amount.to_string(), "21.59");
        assert_eq!(r.placed_at, t("2026-11-02T17:03:00Z"));
        assert_eq!(r.fulfilment, Some(Fulfilment::Fba));
        assert!(!r.seller_fault);
        let p = "amazon:113-3000001-0000001:fee:refund:2026-11-20T18:12:44Z:61234567890123";
        // Commission +3.00 given back is a cost of -3.00; RefundCommission -0.60 costs 0.60.
        assert_eq!(
            f[1..].iter().map(fee).collect::<Vec<_>>(),
            [
                (
                    format!("{p}:Commission").as_str(),
                    Some("KF-MUG-01"),
                    FeeKind::Referral,
                    "Commission",
                    "-3.00".to_string(),
                    FeeApplies::Refund
                ),
                (
                    format!("{p}:RefundCommission").as_str(),
                    Some("KF-MUG-01"),
                    FeeKind::RefundAdministration,
                    "RefundCommission",
                    "0.60".to_string(),
                    FeeApplies::Refund
                ),
            ]
        );
    }

    #[test]
    fn claims_and_chargebacks_are_defects_once_per_order_on_its_date() {
        let ev = golden();
        let f = claim(
            &ev["GuaranteeClaimEventList"][0],
            &orders(),
            DefectKind::AToZClaim,
        )
        .unwrap();
        assert_eq!(f[0].event_id, "amazon:113-3000002-0000002:a_to_z_claim");
        assert_eq!(f[0].event_time, t("2026-11-25T08:00:00Z"));
        let EventBody::OrderDefect(d) = &f[0].body else {
            panic!()
        };
        assert_eq!(
            (d.kind, d.placed_at, d.fulfilment, d.rating),
            (
                DefectKind::AToZClaim,
                t("2026-11-03T01:30:00Z"),
                Some(Fulfilment::Merchant),
                None
            )
        );
        let f = claim(
            &ev["ChargebackEventList"][0],
            &orders(),
            DefectKind::Chargeback,
        )
        .unwrap();
        assert_eq!(f[0].event_id, "amazon:113-3000001-0000001:chargeback");
        // An order getOrder does not know cannot be dated.
        let mut v = ev["ChargebackEventList"][0].clone();
        v["AmazonOrderId"] = "113-9999999-9999999".into();
        assert_eq!(
            claim(&v, &orders(), DefectKind::Chargeback).unwrap_err(),
            "order 113-9999999-9999999: getOrder knows no such order, so its purchase date is unknown"
        );
    }

    #[test]
    fn service_fees_are_account_fees_with_ids_from_their_content() {
        let ev = golden();
        let from = t("2026-11-01T00:00:00Z");
        let f = service_fee(&ev["ServiceFeeEventList"][0], from, 0).unwrap();
        assert_eq!(f.len(), 1);
        let (id, sku, kind, ty, amount, applies) = fee(&f[0]);
        assert!(id.starts_with("amazon:fee:account:"), "{id}");
        assert!(id.ends_with(":0:account:FBAStorageFee"), "{id}");
        // FBAStorageFee -12.48 costs 12.48.
        assert_eq!(
            (sku, kind, ty, amount.as_str(), applies),
            (
                Some("KF-MUG-01"),
                FeeKind::Storage,
                "FBAStorageFee",
                "12.48",
                FeeApplies::Account
            )
        );
        assert_eq!(f[0].event_time, from, "no PostedDate: the window's start");
        let again = service_fee(&ev["ServiceFeeEventList"][0], t("2026-11-02T00:00:00Z"), 0);
        assert_eq!(
            again.unwrap()[0].event_id,
            f[0].event_id,
            "stable across reads"
        );
        let second = service_fee(&ev["ServiceFeeEventList"][0], from, 1).unwrap();
        assert_ne!(second[0].event_id, f[0].event_id);
    }

    #[test]
    fn malformed_events_name_the_field_and_value() {
        let ev = golden();
        let mut v = ev["ShipmentEventList"][0].clone();
        v["ShipmentItemList"][0]["ItemFeeList"][1]["FeeAmount"]["CurrencyAmount"] = "3,22".into();
        assert_eq!(
            shipment(&v).unwrap_err(),
            "order 113-3000001-0000001: field `ShipmentItemList[0].ItemFeeList[1].FeeAmount.CurrencyAmount`: expected a decimal such as \"12.34\", got \"3,22\""
        );
        let mut v = ev["RefundEventList"][0].clone();
        v["PostedDate"] = "20/11/2026".into();
        assert_eq!(
            refund(&v, &orders()).unwrap_err(),
            "order 113-3000001-0000001: field `PostedDate`: expected an ISO 8601 time with offset such as \"2026-11-02T17:03:00Z\", got \"20/11/2026\""
        );
        let mut v = ev["RefundEventList"][0].clone();
        v["ShipmentItemAdjustmentList"][0]["ItemChargeAdjustmentList"][1]["ChargeAmount"]["CurrencyCode"] =
            "CAD".into();
        assert_eq!(
            refund(&v, &orders()).unwrap_err(),
            "order 113-3000001-0000001: field `ShipmentItemAdjustmentList[0].ItemChargeAdjustmentList[1].ChargeAmount.CurrencyCode`: \"CAD\" differs from \"USD\" in the same refund"
        );
        let mut v = ev["ShipmentEventList"][0].clone();
        v.as_object_mut().unwrap().remove("AmazonOrderId");
        assert_eq!(
            shipment(&v).unwrap_err(),
            "field `AmazonOrderId` is missing"
        );
    }

    #[test]
    fn fee_types_map_to_a_closed_set() {
        for (t, k) in [
            ("Commission", FeeKind::Referral),
            ("FixedClosingFee", FeeKind::Closing),
            ("FBAWeightBasedFee", FeeKind::FbaFulfilment),
            ("FBALongTermStorageFee", FeeKind::Storage),
            ("RefundCommission", FeeKind::RefundAdministration),
            ("ShippingChargeback", FeeKind::ShippingLabel),
            ("DigitalServicesFee", FeeKind::DigitalServices),
            ("GiftwrapChargeback", FeeKind::Other),
        ] {
            assert_eq!(fee_kind(t), k, "{t}");
        }
    }
}
