//! One GAQL result row → `ad.performance` (cost in micros, conversions rounded to orders).

use chrono::{DateTime, Utc};
use kpiflow_schemas::{AdPerformance, Decimal, Money};
use serde_json::Value;

use crate::map::{MapError, Record, local_midnight};
use crate::pull::Fact;

/// What every row of one sync shares.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The customer id (digits).
    pub customer: &'a str,
    /// The account's currency.
    pub currency: &'a str,
    /// The account's zone.
    pub tz: chrono_tz::Tz,
    /// The attribution window label.
    pub window: &'a str,
    /// The version time of this sync's rows.
    pub as_of: DateTime<Utc>,
}

/// Maps one row; `Err` names the field and value that made it unusable. Zero metrics are
/// omitted by the API and read as 0; fractional conversions (data-driven attribution) are
/// rounded to whole orders, half away from zero.
pub fn row(v: &Value, ctx: &Context<'_>) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let campaign = r.int("campaign.id")?.to_string();
    let date = r.date("segments.date")?;
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
    let money = |amount: Decimal| Money {
        amount,
        currency: ctx.currency.to_string(),
    };
    let conversions = if r.get("metrics.conversions").is_some() {
        r.decimal("metrics.conversions")?
    } else {
        Decimal::ZERO
    };
    let orders = u64::try_from(
        conversions
            .0
            .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            .mantissa(),
    )
    .map_err(|_| format!("field `metrics.conversions`: must not be negative, got {conversions}"))?;
    let value = if r.get("metrics.conversionsValue").is_some() {
        r.decimal("metrics.conversionsValue")?
    } else {
        Decimal::ZERO
    };
    let day_start = local_midnight(date, ctx.tz).ok_or_else(|| {
        format!(
            "field `segments.date`: {date} has no midnight in {}",
            ctx.tz
        )
    })?;
    let body = AdPerformance {
        platform: "google_ads".into(),
        account_id: ctx.customer.to_string(),
        campaign_id: campaign.clone(),
        date,
        impressions: r.count_or_zero("metrics.impressions")?,
        clicks: r.count_or_zero("metrics.clicks")?,
        spend: money(Decimal(rust_decimal::Decimal::new(micros, 6).normalize())),
        attributed_orders: orders,
        attributed_sales: money(value),
        attribution_window: ctx.window.to_string(),
        as_of: ctx.as_of,
    };
    Ok(vec![Fact::new(
        format!(
            "google_ads:{}:{campaign}:{date}:{}",
            ctx.customer,
            ctx.as_of.timestamp_millis()
        ),
        day_start,
        body,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::EventBody;
    use serde_json::json;

    fn ctx() -> Context<'static> {
        Context {
            customer: "1234567890",
            currency: "USD",
            tz: chrono_tz::America::New_York,
            window: "30d",
            as_of: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn micros_are_exact_and_omitted_metrics_are_zero() {
        let v = json!({"campaign": {"resourceName": "customers/1234567890/campaigns/17", "id": "17"},
                       "segments": {"date": "2026-11-20"},
                       "metrics": {"impressions": "1520", "costMicros": "24870000", "conversions": 3.5,
                                   "conversionsValue": 103.96}});
        let f = row(&v, &ctx()).unwrap();
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
