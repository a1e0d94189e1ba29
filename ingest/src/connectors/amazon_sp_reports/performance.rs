//! `GET_V2_SELLER_PERFORMANCE_REPORT` (a JSON document) → one `account.health_metric`
//! reference value per Account Health metric of the shop's marketplace.
//!
//! | report field (in `performanceMetrics[]` of `marketplaceId`) | metric | numerator / denominator |
//! |---|---|---|
//! | `orderDefectRate.afn` | `order_defect_rate_afn` | `orderWithDefects.count` / `orderCount` |
//! | `orderDefectRate.mfn` | `order_defect_rate_mfn` | `orderWithDefects.count` / `orderCount` |
//! | `lateShipmentRate` | `late_shipment_rate` | `lateShipmentCount` / `orderCount` |
//! | `preFulfillmentCancellationRate` | `pre_fulfilment_cancel_rate` | `cancellationCount` / `orderCount` |
//! | `validTrackingRate` | `valid_tracking_rate` | `validTrackingCount` / `shipmentCount` |
//! | `onTimeDeliveryRate` | `on_time_delivery_rate` | `onTimeDeliveryCount` / `shipmentCountWithValidTracking` |
//!
//! Each metric object also carries `reportingDateRange` (`reportingDateFrom`,
//! `reportingDateTo`), `status` (`GOOD`, `BAD`, `NONE`), `rate`, `targetValue` and
//! `targetCondition` (`LESS_THAN`, `GREATER_THAN`, `EQUALS`).
//!
//! **Shape.** The top level (`accountStatuses[]`, `performanceMetrics[]`), the metric names
//! and `reportingDateRange`, `status`, `targetValue`, `targetCondition`, `rate` are
//! domain.md §6's. The count fields, the `afn` / `mfn` objects' layout and the date format
//! follow Amazon's published JSON Schema of the report (`accountHealthReport-2020-11-18.json`
//! in amzn/selling-partner-api-models), **not confirmed against a real document**. That
//! schema's own example spells the cancel metric `prefulfillmentCancelRate` where its
//! properties say `preFulfillmentCancellationRate`: both are read. Counts are optional (the
//! event then carries none); a metric the document lacks is not published. Other metrics
//! (`unitOnTimeDeliveryRate`, `invoiceDefectRate`, policy violations, `accountHealthRating`)
//! and other marketplaces' entries are not read.
//!
//! **Days.** Amazon writes a range as `"2026-09-23T00:00Z"` … `"2026-11-21T23:59Z"`: the dates
//! name Amazon's business days (US Pacific, `time_zone`), first and last inclusive; the times
//! and the `Z` are read as labels of whole days (unconfirmed: Amazon's schema calls them "in
//! UTC", but its ranges are whole days). A value is published with
//! `event_time` = the start of the day after the range.
//!
//! **Ids** are `amazon_health:{marketplace}:{metric}:{from}:{to}:{numerator}:{denominator}:{rate}`:
//! the same figures read again are duplicates; a restated figure for the same range is a new
//! event, and the processor keeps the one ingested last.

use chrono::NaiveDate;
use kpiflow_schemas::{AccountHealthMetric, Decimal, HealthMetric, HealthStatus, TargetCondition};
use serde_json::Value;

use crate::map::{MapError, Record, local_midnight, raw, whole};
use crate::pull::Fact;
use crate::pull::Mapped;

/// The report type.
pub const REPORT_TYPE: &str = "GET_V2_SELLER_PERFORMANCE_REPORT";

/// (report path, the alternative spelling, metric, numerator, denominator), in report order.
const METRICS: [(&str, Option<&str>, HealthMetric, &str, &str); 6] = [
    (
        "orderDefectRate.afn",
        None,
        HealthMetric::OrderDefectRateAfn,
        "orderWithDefects.count",
        "orderCount",
    ),
    (
        "orderDefectRate.mfn",
        None,
        HealthMetric::OrderDefectRateMfn,
        "orderWithDefects.count",
        "orderCount",
    ),
    (
        "lateShipmentRate",
        None,
        HealthMetric::LateShipmentRate,
        "lateShipmentCount",
        "orderCount",
    ),
    (
        "preFulfillmentCancellationRate",
        Some("prefulfillmentCancelRate"),
        HealthMetric::PreFulfilmentCancelRate,
        "cancellationCount",
        "orderCount",
    ),
    (
        "validTrackingRate",
        None,
        HealthMetric::ValidTrackingRate,
        "validTrackingCount",
        "shipmentCount",
    ),
    (
        "onTimeDeliveryRate",
        None,
        HealthMetric::OnTimeDeliveryRate,
        "onTimeDeliveryCount",
        "shipmentCountWithValidTracking",
    ),
];

/// Reads a seller performance document: one entry per metric of `marketplace`'s
/// `performanceMetrics[]` entry. An empty document (a CANCELLED report) has none; a document
/// that is not the report's JSON is one dead letter naming what is wrong.
pub fn seller_performance(bytes: &[u8], marketplace: &str, tz: chrono_tz::Tz) -> Vec<Mapped> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let whole_doc = || bytes.to_vec();
    let doc: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return vec![(Err(format!("not a JSON document: {e}")), whole_doc())],
    };
    let Some(entries) = doc.get("performanceMetrics").and_then(Value::as_array) else {
        return vec![(
            Err("field `performanceMetrics`: expected an array of marketplaces' metrics".into()),
            whole_doc(),
        )];
    };
    let Some(entry) = entries
        .iter()
        .find(|e| e.get("marketplaceId").and_then(Value::as_str) == Some(marketplace))
    else {
        // The seller has no figures for this marketplace (yet): nothing to compare with.
        return Vec::new();
    };
    let r = Record(entry);
    let mut out = Vec::new();
    for (path, alias, metric, numerator, denominator) in METRICS {
        let (path, object) = match (r.get(path), alias.and_then(|a| r.get(a).map(|v| (a, v)))) {
            (Some(v), _) => (path, v),
            (None, Some((a, v))) => (a, v),
            (None, None) => continue,
        };
        let mapped = one(
            Record(object),
            marketplace,
            metric,
            (numerator, denominator),
            tz,
        )
        .map(|f| vec![f])
        .map_err(|e| format!("{path}: {e}"));
        out.push((mapped, raw(object)));
    }
    out
}

fn one(
    r: Record<'_>,
    marketplace: &str,
    metric: HealthMetric,
    (numerator, denominator): (&str, &str),
    tz: chrono_tz::Tz,
) -> Result<Fact, MapError> {
    let from = day(&r, "reportingDateRange.reportingDateFrom")?;
    let to = day(&r, "reportingDateRange.reportingDateTo")?;
    if to < from {
        return Err(format!(
            "field `reportingDateRange.reportingDateTo`: {to} is before reportingDateFrom {from}"
        ));
    }
    let numerator = opt_count(&r, numerator)?;
    let denominator = opt_count(&r, denominator)?;
    let rate = fraction(&r, "rate")?;
    let target_value = fraction(&r, "targetValue")?;
    let target_condition = one_of(
        &r,
        "targetCondition",
        &[
            ("LESS_THAN", TargetCondition::LessThan),
            ("GREATER_THAN", TargetCondition::GreaterThan),
            ("EQUALS", TargetCondition::Equals),
        ],
    )?;
    let status = one_of(
        &r,
        "status",
        &[
            ("GOOD", HealthStatus::Good),
            ("BAD", HealthStatus::Bad),
            ("NONE", HealthStatus::Unrated),
        ],
    )?;
    let end = to
        .succ_opt()
        .and_then(|d| local_midnight(d, tz))
        .ok_or_else(|| {
            format!("field `reportingDateRange.reportingDateTo`: {to} has no next day")
        })?;
    let shown = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    let id = format!(
        "amazon_health:{marketplace}:{}:{from}:{to}:{}:{}:{rate}",
        metric.as_str(),
        shown(numerator),
        shown(denominator),
    );
    let body = AccountHealthMetric {
        metric,
        window_from: from,
        window_to: to,
        numerator,
        denominator,
        rate,
        target_value,
        target_condition,
        status,
    };
    Ok(Fact::new(id, end, body))
}

/// One of Amazon's enumerated words; an error lists them.
fn one_of<T: Copy>(r: &Record<'_>, path: &str, choices: &[(&str, T)]) -> Result<T, MapError> {
    let s = r.str(path)?;
    choices
        .iter()
        .find(|(word, _)| *word == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
            format!(
                "field `{path}`: expected one of {}, got {s:?}",
                words.join(", ")
            )
        })
}

/// A range bound: `2026-11-21T23:59Z` or `2026-11-21`, read as the day it names.
fn day(r: &Record<'_>, path: &str) -> Result<NaiveDate, MapError> {
    let s = r.str(path)?;
    let date = s
        .get(..10)
        .filter(|_| s.len() == 10 || s[10..].starts_with('T'));
    date.and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .ok_or_else(|| {
            format!(
                "field `{path}`: expected a date such as \"2026-11-21T23:59Z\" or \"2026-11-21\", got {s:?}"
            )
        })
}

/// A count where the report gives one: an integer (or an integral number: Amazon's schema
/// types `shipmentCountWithValidTracking` as a number).
fn opt_count(r: &Record<'_>, path: &str) -> Result<Option<u64>, MapError> {
    if r.get(path).is_none() {
        return Ok(None);
    }
    let d = r.decimal(path)?;
    if d.is_negative() || d.0.fract() != rust_decimal::Decimal::ZERO {
        return Err(format!("field `{path}`: expected a count, got {d}"));
    }
    whole(d, path).map(Some)
}

/// A rate or target as a fraction, not negative.
fn fraction(r: &Record<'_>, path: &str) -> Result<Decimal, MapError> {
    let d = r.decimal(path)?;
    if d.is_negative() {
        return Err(format!("field `{path}`: must not be negative, got {d}"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use kpiflow_schemas::EventBody;

    const LA: chrono_tz::Tz = chrono_tz::America::Los_Angeles;
    const US: &str = "ATVPDKIKX0DER";

    fn golden() -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/amazon_sp_reports/seller-performance.json");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn body(m: &Mapped) -> (&Fact, &AccountHealthMetric) {
        let f = &m.0.as_ref().unwrap()[0];
        let EventBody::AccountHealthMetric(b) = &f.body else {
            panic!("{f:?}")
        };
        (f, b)
    }

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn every_metric_of_the_marketplace_is_one_reference_value() {
        let out = seller_performance(&golden(), US, LA);
        assert_eq!(out.len(), 6, "five metrics and one dead letter");
        let (f, b) = body(&out[0]);
        assert_eq!(
            f.event_id,
            "amazon_health:ATVPDKIKX0DER:order_defect_rate_afn:2026-09-23:2026-11-21:1:3:0.3333"
        );
        // The day after 2026-11-21 starts at 08:00 UTC (PST).
        assert_eq!(f.event_time, t("2026-11-22T08:00:00Z"));
        assert_eq!(b.metric, HealthMetric::OrderDefectRateAfn);
        assert_eq!(
            (b.window_from, b.window_to),
            (
                NaiveDate::from_ymd_opt(2026, 9, 23).unwrap(),
                NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
            )
        );
        assert_eq!((b.numerator, b.denominator), (Some(1), Some(3)));
        assert_eq!((b.rate, b.target_value), (d("0.3333"), d("0.01")));
        assert_eq!(b.target_condition, TargetCondition::LessThan);
        assert_eq!(b.status, HealthStatus::Bad);
        let (_, b) = body(&out[1]);
        assert_eq!(b.metric, HealthMetric::OrderDefectRateMfn);
        assert_eq!(
            (b.numerator, b.denominator, b.rate),
            (Some(0), Some(1), d("0"))
        );
        let (_, b) = body(&out[2]);
        assert_eq!(b.metric, HealthMetric::LateShipmentRate);
        assert_eq!((b.numerator, b.denominator), (Some(0), Some(0)));
        assert_eq!(b.status, HealthStatus::Unrated);
        let (f, b) = body(&out[3]);
        assert_eq!(b.metric, HealthMetric::PreFulfilmentCancelRate);
        assert_eq!(
            (b.window_from.to_string(), b.window_to.to_string()),
            ("2026-11-01".into(), "2026-11-07".into())
        );
        assert_eq!((b.numerator, b.denominator), (Some(0), Some(1)));
        assert_eq!(b.target_value, d("0.025"));
        assert_eq!(f.event_time, t("2026-11-08T08:00:00Z"));
        let (_, b) = body(&out[4]);
        assert_eq!(b.metric, HealthMetric::ValidTrackingRate);
        assert_eq!(b.target_condition, TargetCondition::GreaterThan);
        assert_eq!(b.target_value, d("0.95"));
        // onTimeDeliveryRate has a null rate: dead-lettered with its own JSON.
        assert_eq!(
            out[5].0.as_ref().unwrap_err(),
            "onTimeDeliveryRate: field `rate` is missing"
        );
        assert!(String::from_utf8_lossy(&out[5].1).contains("shipmentCountWithValidTracking"));
    }

    #[test]
    fn other_marketplaces_and_empty_documents_give_nothing() {
        assert!(seller_performance(&golden(), "A2EUQ1WTGCTBG2", LA).is_empty());
        assert!(seller_performance(b"", US, LA).is_empty());
        let bad = seller_performance(b"{\"accountStatuses\": []}", US, LA);
        assert_eq!(
            bad[0].0.as_ref().unwrap_err(),
            "field `performanceMetrics`: expected an array of marketplaces' metrics"
        );
        assert!(
            seller_performance(b"<html>", US, LA)[0]
                .0
                .as_ref()
                .unwrap_err()
                .starts_with("not a JSON document")
        );
    }

    #[test]
    fn the_example_spelling_of_the_cancel_rate_and_bad_values_are_named() {
        let doc = serde_json::json!({"accountStatuses": [], "performanceMetrics": [{
            "marketplaceId": US,
            "prefulfillmentCancelRate": {
                "reportingDateRange": {"reportingDateFrom": "2026-11-12", "reportingDateTo": "2026-11-18"},
                "orderCount": 200, "cancellationCount": 1, "status": "GOOD",
                "rate": 0.005, "targetValue": 0.025, "targetCondition": "LESS_THAN"},
            "lateShipmentRate": {
                "reportingDateRange": {"reportingDateFrom": "2026-11-12T00:00Z", "reportingDateTo": "11/18/2026"},
                "orderCount": 200, "lateShipmentCount": 1, "status": "GOOD",
                "rate": 0.005, "targetValue": 0.04, "targetCondition": "LESS_THAN"},
            "validTrackingRate": {
                "reportingDateRange": {"reportingDateFrom": "2026-11-12T00:00Z", "reportingDateTo": "2026-11-18T23:59Z"},
                "shipmentCount": 20, "validTrackingCount": 19.5, "status": "GOOD",
                "rate": 0.975, "targetValue": 0.95, "targetCondition": "AT_LEAST"},
            "onTimeDeliveryRate": {
                "reportingDateRange": {"reportingDateFrom": "2026-11-12T00:00Z", "reportingDateTo": "2026-11-18T23:59Z"},
                "status": "OK", "rate": 0.9, "targetValue": 0.9, "targetCondition": "GREATER_THAN"}
        }]});
        let out = seller_performance(&serde_json::to_vec(&doc).unwrap(), US, LA);
        let errors: Vec<&str> = out
            .iter()
            .filter_map(|m| m.0.as_ref().err().map(String::as_str))
            .collect();
        assert_eq!(
            errors,
            [
                "lateShipmentRate: field `reportingDateRange.reportingDateTo`: expected a date such as \"2026-11-21T23:59Z\" or \"2026-11-21\", got \"11/18/2026\"",
                "validTrackingRate: field `validTrackingCount`: expected a count, got 19.5",
                "onTimeDeliveryRate: field `status`: expected one of GOOD, BAD, NONE, got \"OK\"",
            ]
        );
        let (f, b) = body(&out[1]);
        assert_eq!(b.metric, HealthMetric::PreFulfilmentCancelRate);
        assert_eq!((b.numerator, b.denominator), (Some(1), Some(200)));
        assert_eq!(f.event_time, t("2026-11-19T08:00:00Z"));
        // Counts are optional: without them the rate alone is published.
        let mut doc = doc;
        let otd = &mut doc["performanceMetrics"][0]["onTimeDeliveryRate"];
        otd["status"] = "GOOD".into();
        let out = seller_performance(&serde_json::to_vec(&doc).unwrap(), US, LA);
        let (f, b) = body(out.last().unwrap());
        assert_eq!((b.numerator, b.denominator), (None, None));
        assert_eq!(
            f.event_id,
            "amazon_health:ATVPDKIKX0DER:on_time_delivery_rate:2026-11-12:2026-11-18:-:-:0.9"
        );
    }
}
