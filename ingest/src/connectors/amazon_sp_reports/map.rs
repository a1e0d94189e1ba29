//! Report rows → canonical facts: the tab-separated document read into rows, and one mapper
//! per report type. Pure functions over the rows and the purchase dates looked up.
//!
//! | report | row → fact (deterministic id) |
//! |---|---|
//! | FBA customer returns | `order.returned` at `return-date`, `quantity` units (`amazon_fba_return:{order-id}:{sku}:{return-date}:{license-plate-number}`) |
//! | merchant returns | `order.returned` at `Return request date`, `Return quantity` units (`amazon_mfn_return:{Order ID}:{Merchant SKU}:{Amazon RMA ID}`) |
//! | seller feedback | `Rating` 1 or 2: `order.defect` kind `negative_feedback` at `Date` (`amazon:{Order ID}:negative_feedback`); 3 to 5: nothing |
//! | FBA shipments | all rows of one `amazon-order-id`: one `order.shipped` (`amazon:{amazon-order-id}:shipped`) |

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use kpiflow_schemas::{DefectKind, Fulfilment, OrderDefect, OrderReturned, OrderShipped};
use serde_json::{Map, Value};

use crate::map::{MapError, Record, local_midnight, parse_time};
use crate::pull::Fact;

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

/// One mapped record (or why it could not be), with its raw form for the dead-letter topic.
pub type Mapped = (Result<Vec<Fact>, MapError>, Vec<u8>);

/// A document read: its rows as JSON objects of column → value, and the lines that do not fit
/// the header (with the reason and the line, for the dead-letter topic).
#[derive(Debug, Default)]
pub struct Rows {
    /// One object per line, keyed by the header's column names.
    pub rows: Vec<Value>,
    /// Lines with another number of fields than the header has.
    pub bad: Vec<(MapError, Vec<u8>)>,
}

/// Reads a tab-separated report: the first line names the columns. An empty document (a
/// CANCELLED report) has no rows. Reports are UTF-8, or Windows-1252 in older flat files: a
/// document that is not UTF-8 is read byte by byte as Latin-1 so no row is lost.
pub fn tsv(bytes: &[u8]) -> Rows {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Rows::default();
    };
    let columns: Vec<&str> = header.split('\t').map(str::trim).collect();
    let mut out = Rows::default();
    for (i, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != columns.len() {
            out.bad.push((
                format!(
                    "row {}: {} tab-separated fields where the header has {} ({})",
                    i + 1,
                    fields.len(),
                    columns.len(),
                    columns.join(", ")
                ),
                line.as_bytes().to_vec(),
            ));
            continue;
        }
        let row: Map<String, Value> = columns
            .iter()
            .zip(fields)
            .map(|(c, f)| ((*c).to_string(), Value::String(f.trim().to_string())))
            .collect();
        out.rows.push(Value::Object(row));
    }
    out
}

/// A report time: ISO 8601 with an offset (`2026-11-03T10:15:31+00:00`), or a date alone
/// (`2026-11-03`, `11/03/2026`, `11/03/26`) read as the start of that day in `tz` (the
/// marketplace's day: the seller feedback report dates feedback by day).
pub(crate) fn report_time(
    r: &Record<'_>,
    col: &str,
    tz: chrono_tz::Tz,
) -> Result<DateTime<Utc>, MapError> {
    let s = r.str(col)?;
    if let Some(t) = parse_time(s) {
        return Ok(t);
    }
    // `%Y` would read the `26` of `11/20/26` as the year 26: the year's digits pick the form.
    let us = match s.rsplit('/').next().map(str::len) {
        Some(2) => "%m/%d/%y",
        _ => "%m/%d/%Y",
    };
    ["%Y-%m-%d", us]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
        .and_then(|d| local_midnight(d, tz))
        .ok_or_else(|| {
            format!(
                "field `{col}`: expected an ISO 8601 time such as \"2026-11-03T10:15:31+00:00\" or a date such as \"2026-11-03\" or \"11/03/2026\", got {s:?}"
            )
        })
}

/// A whole number of units at least 1.
fn units(r: &Record<'_>, col: &str) -> Result<u32, MapError> {
    let n = r.count(col)?;
    match u32::try_from(n) {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("field `{col}`: expected at least 1 unit, got {n}")),
    }
}

fn looked_up<'o>(orders: &'o Orders, id: &str) -> Result<&'o OrderInfo, MapError> {
    orders.get(id).ok_or_else(|| {
        format!("order {id}: getOrder knows no such order, so its purchase date is unknown")
    })
}

/// The `Rating` of a feedback row, 1 to 5.
pub(crate) fn rating(r: &Record<'_>) -> Result<u8, MapError> {
    let n = r.int("Rating")?;
    u8::try_from(n)
        .ok()
        .filter(|n| (1..=5).contains(n))
        .ok_or_else(|| format!("field `Rating`: expected 1 to 5 stars, got {n}"))
}

/// One row of `GET_FBA_FULFILLMENT_CUSTOMER_RETURNS_DATA`.
pub fn fba_return(v: &Value, orders: &Orders) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let order = r.str("order-id")?;
    let at = |e: MapError| format!("order {order}: {e}");
    let sku = r.str("sku").map_err(at)?;
    let returned_at = r.time("return-date").map_err(at)?;
    let units = units(&r, "quantity").map_err(at)?;
    let info = looked_up(orders, order)?;
    let lpn = r.opt_str("license-plate-number").map_err(at)?.unwrap_or("");
    let body = OrderReturned {
        order_id: order.to_string(),
        placed_at: info.placed_at,
        units,
        reason: r.opt_str("reason").map_err(at)?.map(str::to_string),
        fulfilment: Some(Fulfilment::Fba),
    };
    let id = format!(
        "amazon_fba_return:{order}:{sku}:{}:{lpn}",
        r.str("return-date").map_err(at)?
    );
    let mut fact = Fact::new(id, returned_at, body);
    fact.sku = Some(sku.to_string());
    Ok(vec![fact])
}

/// One row of `GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE` (merchant-fulfilled returns); the
/// row carries its order's date, so no lookup is needed.
pub fn merchant_return(v: &Value, tz: chrono_tz::Tz) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let order = r.str("Order ID")?;
    let at = |e: MapError| format!("order {order}: {e}");
    let sku = r.str("Merchant SKU").map_err(at)?;
    let rma = r.str("Amazon RMA ID").map_err(at)?;
    let placed_at = report_time(&r, "Order date", tz).map_err(at)?;
    // A request dated by day only may read earlier than a same-day order's time.
    let requested_at = report_time(&r, "Return request date", tz)
        .map_err(at)?
        .max(placed_at);
    let body = OrderReturned {
        order_id: order.to_string(),
        placed_at,
        units: units(&r, "Return quantity").map_err(at)?,
        reason: r.opt_str("Return reason").map_err(at)?.map(str::to_string),
        fulfilment: Some(Fulfilment::Merchant),
    };
    let mut fact = Fact::new(
        format!("amazon_mfn_return:{order}:{sku}:{rma}"),
        requested_at,
        body,
    );
    fact.sku = Some(sku.to_string());
    Ok(vec![fact])
}

/// One row of `GET_SELLER_FEEDBACK_DATA`: 1 or 2 stars is negative feedback, an ODR defect.
pub fn feedback(v: &Value, orders: &Orders, tz: chrono_tz::Tz) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let order = r.str("Order ID")?;
    let at = |e: MapError| format!("order {order}: {e}");
    let stars = rating(&r).map_err(at)?;
    let left_at = report_time(&r, "Date", tz).map_err(at)?;
    if stars > 2 {
        return Ok(Vec::new());
    }
    let info = looked_up(orders, order)?;
    let body = OrderDefect {
        order_id: order.to_string(),
        placed_at: info.placed_at,
        kind: DefectKind::NegativeFeedback,
        rating: Some(stars),
        fulfilment: info.fulfilment,
    };
    // Feedback is dated by day: on the order's own day its midnight precedes the order.
    Ok(vec![Fact::new(
        format!("amazon:{order}:negative_feedback"),
        left_at.max(info.placed_at),
        body,
    )])
}

/// The rows of one `amazon-order-id` in `GET_AMAZON_FULFILLED_SHIPMENTS_DATA_GENERAL` (one
/// row per shipped item) → one `order.shipped`: units summed, shipped at the first
/// `shipment-date`, promised by the latest `estimated-arrival-date`, carrier and tracking
/// number of the first row that has them.
pub fn fba_shipment(rows: &[&Value]) -> Result<Vec<Fact>, MapError> {
    let first = Record(rows.first().ok_or("an order without rows")?);
    let order = first.str("amazon-order-id")?;
    let at = |e: MapError| format!("order {order}: {e}");
    let placed_at = first.time("purchase-date").map_err(at)?;
    let (mut shipped_at, mut deliver_by): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (None, None);
    let (mut total, mut carrier, mut tracking, mut skus) = (0u32, None, None, Vec::new());
    let mut fulfilment = None;
    for v in rows {
        let r = Record(v);
        let t = r.time("shipment-date").map_err(at)?;
        shipped_at = Some(shipped_at.map_or(t, |s| s.min(t)));
        if let Some(eta) = r.opt_time("estimated-arrival-date").map_err(at)? {
            deliver_by = Some(deliver_by.map_or(eta, |d| d.max(eta)));
        }
        total = total.saturating_add(units(&r, "quantity-shipped").map_err(at)?);
        carrier = carrier.or(r.opt_str("carrier").map_err(at)?);
        tracking = tracking.or(r.opt_str("tracking-number").map_err(at)?);
        let sku = r.str("sku").map_err(at)?;
        if !skus.contains(&sku) {
            skus.push(sku);
        }
        fulfilment = Some(match r.str("fulfillment-channel").map_err(at)? {
            "AFN" => Fulfilment::Fba,
            "MFN" => Fulfilment::Merchant,
            other => {
                return Err(at(format!(
                    "field `fulfillment-channel`: expected \"AFN\" or \"MFN\", got {other:?}"
                )));
            }
        });
    }
    let shipped_at = shipped_at.unwrap_or(placed_at);
    let body = OrderShipped {
        order_id: order.to_string(),
        placed_at,
        // The report has no promised ship date, and Amazon ships FBA orders: FBA is outside
        // the late-shipment scope, so the ship date stands in for the promise.
        ship_by: shipped_at,
        deliver_by,
        units: total,
        carrier: carrier.map(str::to_string),
        tracking_id: tracking.map(str::to_string),
        tracking_valid: carrier.is_some() && tracking.is_some(),
        fulfilment,
    };
    let mut fact = Fact::new(format!("amazon:{order}:shipped"), shipped_at, body);
    if let [sku] = skus.as_slice() {
        fact.sku = Some((*sku).to_string());
    }
    Ok(vec![fact])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::EventBody;

    const LA: chrono_tz::Tz = chrono_tz::America::Los_Angeles;

    fn golden(name: &str) -> Rows {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/amazon_sp_reports")
            .join(name);
        tsv(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn orders() -> Orders {
        [
            (
                "113-1000001-0000001",
                "2026-11-02T17:03:00Z",
                Fulfilment::Fba,
            ),
            (
                "113-1000002-0000002",
                "2026-11-03T01:30:00Z",
                Fulfilment::Fba,
            ),
            (
                "113-2000001-0000001",
                "2026-11-04T16:00:00Z",
                Fulfilment::Merchant,
            ),
            (
                "113-2000002-0000002",
                "2026-11-05T06:45:00Z",
                Fulfilment::Fba,
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

    #[test]
    fn fba_returns_are_returned_units_on_the_order_date() {
        let rows = golden("fba-returns.tsv");
        assert_eq!(rows.rows.len(), 3);
        assert!(rows.bad.is_empty());
        let f = fba_return(&rows.rows[0], &orders()).unwrap();
        assert_eq!(
            f[0].event_id,
            "amazon_fba_return:113-1000001-0000001:KF-MUG-01:2026-11-20T18:12:44+00:00:LPNRR1234567"
        );
        assert_eq!(f[0].event_time, t("2026-11-20T18:12:44Z"));
        assert_eq!(f[0].sku.as_deref(), Some("KF-MUG-01"));
        let EventBody::OrderReturned(b) = &f[0].body else {
            panic!("{f:?}")
        };
        assert_eq!(b.placed_at, t("2026-11-02T17:03:00Z"));
        assert_eq!((b.units, b.reason.as_deref()), (1, Some("DEFECTIVE")));
        assert_eq!(b.fulfilment, Some(Fulfilment::Fba));
        let EventBody::OrderReturned(b) = &fba_return(&rows.rows[1], &orders()).unwrap()[0].body
        else {
            panic!()
        };
        assert_eq!(b.units, 2);
        // The third row's order is unknown to getOrder.
        assert_eq!(
            fba_return(&rows.rows[2], &orders()).unwrap_err(),
            "order 113-9999999-9999999: getOrder knows no such order, so its purchase date is unknown"
        );
    }

    #[test]
    fn merchant_returns_carry_their_order_date() {
        let rows = golden("merchant-returns.tsv");
        let f = merchant_return(&rows.rows[0], LA).unwrap();
        assert_eq!(
            f[0].event_id,
            "amazon_mfn_return:113-2000001-0000001:KF-LAMP-02:DmZ8q1RMA"
        );
        assert_eq!(f[0].event_time, t("2026-11-18T21:05:10Z"));
        let EventBody::OrderReturned(b) = &f[0].body else {
            panic!()
        };
        assert_eq!(b.placed_at, t("2026-11-04T16:00:00Z"));
        assert_eq!(b.units, 1);
        assert_eq!(b.fulfilment, Some(Fulfilment::Merchant));
        assert_eq!(b.reason.as_deref(), Some("NOT_AS_DESCRIBED"));
    }

    #[test]
    fn one_and_two_stars_are_negative_feedback_three_to_five_nothing() {
        let rows = golden("seller-feedback.tsv");
        let o = orders();
        let f = feedback(&rows.rows[0], &o, LA).unwrap();
        assert_eq!(
            f[0].event_id,
            "amazon:113-2000001-0000001:negative_feedback"
        );
        // 11/21/2026 is a Pacific day: it starts at 08:00 UTC (PST).
        assert_eq!(f[0].event_time, t("2026-11-21T08:00:00Z"));
        let EventBody::OrderDefect(d) = &f[0].body else {
            panic!()
        };
        assert_eq!(d.kind, DefectKind::NegativeFeedback);
        assert_eq!(d.rating, Some(1));
        assert_eq!(d.placed_at, t("2026-11-04T16:00:00Z"));
        assert_eq!(d.fulfilment, Some(Fulfilment::Merchant));
        assert!(
            feedback(&rows.rows[1], &o, LA).unwrap().is_empty(),
            "5 stars"
        );
        let EventBody::OrderDefect(d) = &feedback(&rows.rows[2], &o, LA).unwrap()[0].body else {
            panic!()
        };
        assert_eq!(d.rating, Some(2));
        let mut bad = rows.rows[0].clone();
        bad["Rating"] = "six".into();
        assert_eq!(
            feedback(&bad, &o, LA).unwrap_err(),
            "order 113-2000001-0000001: field `Rating`: expected an integer, got \"six\""
        );
        bad["Rating"] = "0".into();
        assert_eq!(
            feedback(&bad, &o, LA).unwrap_err(),
            "order 113-2000001-0000001: field `Rating`: expected 1 to 5 stars, got 0"
        );
    }

    #[test]
    fn feedback_on_the_day_of_the_order_is_not_before_it() {
        let o = orders();
        let v = serde_json::json!({"Date": "11/04/2026", "Rating": "1", "Comments": "",
                                   "Order ID": "113-2000001-0000001"});
        // Pacific midnight of the 4th is 08:00 UTC, before the order at 16:00 UTC.
        assert_eq!(
            feedback(&v, &o, LA).unwrap()[0].event_time,
            t("2026-11-04T16:00:00Z")
        );
    }

    #[test]
    fn an_order_shipped_in_two_rows_is_one_shipment_with_tracking() {
        let rows = golden("fba-shipments.tsv");
        assert_eq!(rows.rows.len(), 3);
        let two: Vec<&Value> = rows.rows[..2].iter().collect();
        let f = fba_shipment(&two).unwrap();
        assert_eq!(f[0].event_id, "amazon:113-1000001-0000001:shipped");
        assert_eq!(f[0].event_time, t("2026-11-03T04:10:00Z"));
        assert_eq!(f[0].sku, None, "two SKUs");
        let EventBody::OrderShipped(s) = &f[0].body else {
            panic!()
        };
        assert_eq!(s.units, 3);
        assert_eq!(s.placed_at, t("2026-11-02T17:03:00Z"));
        assert_eq!(s.deliver_by, Some(t("2026-11-06T03:00:00Z")));
        assert_eq!(
            (
                s.carrier.as_deref(),
                s.tracking_id.as_deref(),
                s.tracking_valid
            ),
            (Some("AMZN_US"), Some("TBA123456789000"), true)
        );
        assert_eq!(s.fulfilment, Some(Fulfilment::Fba));
        let EventBody::OrderShipped(s) = &fba_shipment(&[&rows.rows[2]]).unwrap()[0].body else {
            panic!()
        };
        assert!(!s.tracking_valid, "no tracking number");
        assert_eq!(s.deliver_by, None);
    }

    #[test]
    fn lines_that_do_not_fit_the_header_are_named() {
        let rows = tsv(b"order-id\tsku\tquantity\n113-1\tA\t1\n113-2\tB\n\n");
        assert_eq!(rows.rows.len(), 1);
        assert_eq!(
            rows.bad[0].0,
            "row 2: 2 tab-separated fields where the header has 3 (order-id, sku, quantity)"
        );
        assert_eq!(rows.bad[0].1, b"113-2\tB");
        assert!(tsv(b"").rows.is_empty());
        // Windows-1252 bytes are not lost.
        let rows = tsv(b"c\nCaf\xe9\n");
        assert_eq!(rows.rows[0]["c"], "Caf\u{e9}");
    }

    #[test]
    fn report_times_name_the_field_and_value() {
        let v = serde_json::json!({"d": "20.11.2026"});
        assert_eq!(
            report_time(&Record(&v), "d", LA).unwrap_err(),
            "field `d`: expected an ISO 8601 time such as \"2026-11-03T10:15:31+00:00\" or a date such as \"2026-11-03\" or \"11/03/2026\", got \"20.11.2026\""
        );
        let v = serde_json::json!({"d": "11/20/26"});
        assert_eq!(
            report_time(&Record(&v), "d", LA).unwrap(),
            t("2026-11-20T08:00:00Z")
        );
    }
}
