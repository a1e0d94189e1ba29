//! One integrated-report row (`dimensions` + `metrics`) → `ad.performance`.

use chrono::{DateTime, NaiveDate, Utc};
use kpiflow_schemas::{AdPerformance, Money};
use serde_json::Value;

use crate::map::{MapError, Record, local_midnight};
use crate::pull::Fact;

/// What every row of one sync shares.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The advertiser id.
    pub advertiser: &'a str,
    /// The advertiser's currency.
    pub currency: &'a str,
    /// The advertiser's zone.
    pub tz: chrono_tz::Tz,
    /// The attribution setting label.
    pub window: &'a str,
    /// The version time of this sync's rows.
    pub as_of: DateTime<Utc>,
}

/// Maps one row; `Err` names the field and value that made it unusable.
pub fn row(v: &Value, ctx: &Context<'_>) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let campaign = r.str("dimensions.campaign_id")?;
    let day = r.str("dimensions.stat_time_day")?;
    let date = day
        .get(..10)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .ok_or_else(|| {
            format!(
                "field `dimensions.stat_time_day`: expected \"2026-11-20 00:00:00\", got {day:?}"
            )
        })?;
    let money = |field: &str| -> Result<Money, MapError> {
        Ok(Money {
            amount: r.decimal(field)?,
            currency: ctx.currency.to_string(),
        })
    };
    let day_start = local_midnight(date, ctx.tz).ok_or_else(|| {
        format!(
            "field `dimensions.stat_time_day`: {date} has no midnight in {}",
            ctx.tz
        )
    })?;
    let body = AdPerformance {
        platform: "tiktok_ads".into(),
        account_id: ctx.advertiser.to_string(),
        campaign_id: campaign.to_string(),
        date,
        impressions: r.count_or_zero("metrics.impressions")?,
        clicks: r.count_or_zero("metrics.clicks")?,
        spend: money("metrics.spend")?,
        attributed_orders: r.count_or_zero("metrics.complete_payment")?,
        attributed_sales: money("metrics.total_complete_payment_rate")?,
        attribution_window: ctx.window.to_string(),
        as_of: ctx.as_of,
    };
    Ok(vec![Fact::new(
        format!(
            "tiktok_ads:{}:{campaign}:{date}:{}",
            ctx.advertiser,
            ctx.as_of.timestamp_millis()
        ),
        day_start,
        body,
    )])
}
