//! One integrated-report row (`dimensions` + `metrics`) → `ad.performance`.

use chrono::NaiveDate;
use serde_json::Value;

use crate::map::{AdContext, AdRow, MapError, Record};
use crate::pull::Fact;

/// Maps one row; `Err` names the field and value that made it unusable.
pub fn row(v: &Value, ctx: &AdContext<'_>) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let day = r.str("dimensions.stat_time_day")?;
    let date = day
        .get(..10)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .ok_or_else(|| {
            format!(
                "field `dimensions.stat_time_day`: expected \"2026-11-20 00:00:00\", got {day:?}"
            )
        })?;
    ctx.fact(AdRow {
        campaign: r.str("dimensions.campaign_id")?.to_string(),
        date,
        impressions: r.count_or_zero("metrics.impressions")?,
        clicks: r.count_or_zero("metrics.clicks")?,
        spend: r.decimal("metrics.spend")?,
        orders: r.count_or_zero("metrics.complete_payment")?,
        sales: r.decimal("metrics.total_complete_payment_rate")?,
    })
}
