//! One report row → `ad.performance`, a version of (amazon_ads, profile, campaign, date) as
//! of the report's completion.

use chrono::{DateTime, Utc};
use kpiflow_schemas::{AdPerformance, Money};
use serde_json::Value;

use crate::map::{MapError, Record, local_midnight};
use crate::pull::Fact;

/// What every row of one report shares.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The profile id.
    pub account_id: &'a str,
    /// The profile's currency.
    pub currency: &'a str,
    /// The profile's zone.
    pub tz: chrono_tz::Tz,
    /// `7d` or `14d`.
    pub window: &'a str,
    /// The orders column, e.g. `purchases7d`.
    pub purchases: &'a str,
    /// The sales column, e.g. `sales7d`.
    pub sales: &'a str,
    /// The report's `completedAt`.
    pub as_of: DateTime<Utc>,
}

/// Maps one row; `Err` names the field and value that made it unusable.
pub fn row(v: &Value, ctx: &Context<'_>) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let campaign = match r.get("campaignId") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => return Err(format!("field `campaignId`: expected an id, got {other}")),
        None => return Err("field `campaignId` is missing".into()),
    };
    let date = r.date("date")?;
    let impressions = r.count("impressions")?;
    let clicks = r.count("clicks")?;
    let money = |field: &str| -> Result<Money, MapError> {
        let amount = if r.get(field).is_none() {
            kpiflow_schemas::Decimal::ZERO
        } else {
            r.decimal(field)?
        };
        Ok(Money {
            amount,
            currency: ctx.currency.to_string(),
        })
    };
    let spend = money("cost")?;
    let sales = money(ctx.sales)?;
    let orders = r.count_or_zero(ctx.purchases)?;
    let day_start = local_midnight(date, ctx.tz)
        .ok_or_else(|| format!("field `date`: {date} has no midnight in {}", ctx.tz))?;
    let body = AdPerformance {
        platform: "amazon_ads".into(),
        account_id: ctx.account_id.to_string(),
        campaign_id: campaign.clone(),
        date,
        impressions,
        clicks,
        spend,
        attributed_orders: orders,
        attributed_sales: sales,
        attribution_window: ctx.window.to_string(),
        as_of: ctx.as_of,
    };
    Ok(vec![Fact::new(
        format!(
            "amazon_ads:{}:{campaign}:{date}:{}",
            ctx.account_id,
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
            account_id: "3245645645645",
            currency: "USD",
            tz: chrono_tz::America::Los_Angeles,
            window: "7d",
            purchases: "purchases7d",
            sales: "sales7d",
            as_of: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn rows_become_versions_dated_in_the_profile_zone() {
        let v = json!({"date": "2026-11-20", "campaignId": 1234567890123_i64, "impressions": 1520,
                       "clicks": 31, "cost": 24.87, "purchases7d": 4, "sales7d": 103.96,
                       "purchases14d": 5, "sales14d": 129.95});
        let facts = row(&v, &ctx()).unwrap();
        assert_eq!(
            facts[0].event_id,
            "amazon_ads:3245645645645:1234567890123:2026-11-20:1795773600000"
        );
        // Pacific midnight of Nov 20 is 08:00 UTC (PST).
        assert_eq!(
            facts[0].event_time.to_rfc3339(),
            "2026-11-20T08:00:00+00:00"
        );
        let EventBody::AdPerformance(a) = &facts[0].body else {
            panic!()
        };
        assert_eq!(a.spend.amount.to_string(), "24.87");
        assert_eq!(a.attributed_sales.amount.to_string(), "103.96");
        assert_eq!(a.attributed_orders, 4);
    }

    #[test]
    fn a_bad_row_names_the_field() {
        let v = json!({"date": "20/11/2026", "campaignId": 1, "impressions": 1, "clicks": 0});
        assert_eq!(
            row(&v, &ctx()).unwrap_err(),
            "field `date`: expected a date such as \"2026-11-02\", got \"20/11/2026\""
        );
    }
}
