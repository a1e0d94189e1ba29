//! One GAQL result row → `ad.performance` (cost in micros, conversions rounded to orders).

use kpiflow_schemas::Decimal;
use serde_json::Value;

use crate::map::{AdContext, AdRow, MapError, Record, whole};
use crate::pull::Fact;

/// Maps one row; `Err` names the field and value that made it unusable. Zero metrics are
/// omitted by the API and read as 0; fractional conversions (data-driven attribution) are
/// rounded to whole orders, half away from zero.
pub fn row(v: &Value, ctx: &AdContext<'_>) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let or_zero = |field: &str| -> Result<Decimal, MapError> {
        if r.get(field).is_none() {
            Ok(Decimal::ZERO)
        } else {
            r.decimal(field)
        }
    };
    let micros = if r.get("metrics.costMicros").is_some() {
        r.int("metrics.costMicros")?
    } else {
        0
    };
    if micros < 0 {
        return Err(format!(
            "field `metrics.costMicros`: must not be negative, got {micros}"
        ));
    }
    ctx.fact(AdRow {
        campaign: r.int("campaign.id")?.to_string(),
        date: r.date("segments.date")?,
        impressions: r.count_or_zero("metrics.impressions")?,
        clicks: r.count_or_zero("metrics.clicks")?,
        spend: Decimal(rust_decimal::Decimal::new(micros, 6).normalize()),
        orders: whole(or_zero("metrics.conversions")?, "metrics.conversions")?,
        sales: or_zero("metrics.conversionsValue")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::EventBody;
    use serde_json::json;

    #[test]
    fn micros_are_exact_and_omitted_metrics_are_zero() {
        let ctx = AdContext {
            platform: "google_ads",
            account: "1234567890",
            currency: "USD",
            tz: chrono_tz::America::New_York,
            window: "30d",
            as_of: "2026-11-27T10:00:00Z".parse().unwrap(),
        };
        let v = json!({"campaign": {"resourceName": "customers/1234567890/campaigns/17", "id": "17"},
                       "segments": {"date": "2026-11-20"},
                       "metrics": {"impressions": "1520", "costMicros": "24870000", "conversions": 3.5,
                                   "conversionsValue": 103.96}});
        let f = row(&v, &ctx).unwrap();
        let EventBody::AdPerformance(a) = &f[0].body else {
            panic!()
        };
        assert_eq!(a.spend.amount.to_string(), "24.87");
        assert_eq!((a.clicks, a.impressions, a.attributed_orders), (0, 1520, 4));
        assert_eq!(a.attributed_sales.amount.to_string(), "103.96");
        // New York midnight (EST) is 05:00 UTC.
        assert_eq!(f[0].event_time.to_rfc3339(), "2026-11-20T05:00:00+00:00");
    }
}
