//! One insights row → `ad.performance`, counting only the configured purchase action type.

use chrono::{DateTime, Utc};
use kpiflow_schemas::{AdPerformance, Decimal, Money};
use serde_json::Value;

use crate::map::{MapError, Record, local_midnight};
use crate::pull::Fact;

/// What every row of one sync shares.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The ad account id (digits).
    pub account: &'a str,
    /// The account's currency.
    pub currency: &'a str,
    /// The account's zone.
    pub tz: chrono_tz::Tz,
    /// The attribution setting label.
    pub window: &'a str,
    /// The one action type counted as a purchase.
    pub purchase: &'a str,
    /// The version time of this sync's rows.
    pub as_of: DateTime<Utc>,
}

/// Maps one row; `Err` names the field and value that made it unusable.
pub fn row(v: &Value, ctx: &Context<'_>) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let campaign = r.str("campaign_id")?;
    let date = r.date("date_start")?;
    let stop = r.date("date_stop")?;
    if stop != date {
        return Err(format!(
            "field `date_stop`: expected one day per row (time_increment=1), got {date}..{stop}"
        ));
    }
    let money = |amount: Decimal| Money {
        amount,
        currency: ctx.currency.to_string(),
    };
    let orders = purchase(&r, "actions", ctx.purchase)?;
    let orders = u64::try_from(
        orders
            .0
            .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            .mantissa(),
    )
    .map_err(|_| format!("field `actions`: {} purchases is not a count", ctx.purchase))?;
    let day_start = local_midnight(date, ctx.tz)
        .ok_or_else(|| format!("field `date_start`: {date} has no midnight in {}", ctx.tz))?;
    let body = AdPerformance {
        platform: "meta_ads".into(),
        account_id: ctx.account.to_string(),
        campaign_id: campaign.to_string(),
        date,
        impressions: r.count_or_zero("impressions")?,
        clicks: r.count_or_zero("clicks")?,
        spend: money(r.decimal("spend")?),
        attributed_orders: orders,
        attributed_sales: money(purchase(&r, "action_values", ctx.purchase)?),
        attribution_window: ctx.window.to_string(),
        as_of: ctx.as_of,
    };
    Ok(vec![Fact::new(
        format!(
            "meta_ads:{}:{campaign}:{date}:{}",
            ctx.account,
            ctx.as_of.timestamp_millis()
        ),
        day_start,
        body,
    )])
}

/// The value of `action_type` in the `field` list (`actions` or `action_values`); 0 when the
/// row has none.
fn purchase(r: &Record<'_>, field: &str, action_type: &str) -> Result<Decimal, MapError> {
    let Some(list) = r.get(field) else {
        return Ok(Decimal::ZERO);
    };
    let Value::Array(items) = list else {
        return Err(format!("field `{field}`: expected a list, got {list}"));
    };
    let mut total = Decimal::ZERO;
    for (i, item) in items.iter().enumerate() {
        let it = Record(item);
        if it
            .str("action_type")
            .map_err(|e| format!("{field}[{i}]: {e}"))?
            == action_type
        {
            total += it
                .decimal("value")
                .map_err(|e| format!("{field}[{i}]: {e}"))?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::EventBody;
    use serde_json::json;

    #[test]
    fn only_the_chosen_purchase_type_counts() {
        let ctx = Context {
            account: "1234",
            currency: "USD",
            tz: chrono_tz::America::Los_Angeles,
            window: "7d_click_1d_view",
            purchase: "offsite_conversion.fb_pixel_purchase",
            as_of: "2026-11-27T10:00:00Z".parse().unwrap(),
        };
        let v = json!({"campaign_id": "238", "date_start": "2026-11-20", "date_stop": "2026-11-20",
            "spend": "24.87", "impressions": "1520", "clicks": "31",
            "actions": [{"action_type": "link_click", "value": "31"},
                        {"action_type": "offsite_conversion.fb_pixel_purchase", "value": "4"},
                        {"action_type": "omni_purchase", "value": "4"},
                        {"action_type": "purchase", "value": "4"}],
            "action_values": [{"action_type": "offsite_conversion.fb_pixel_purchase", "value": "103.96"},
                              {"action_type": "purchase", "value": "103.96"}]});
        let f = row(&v, &ctx).unwrap();
        let EventBody::AdPerformance(a) = &f[0].body else {
            panic!()
        };
        assert_eq!(a.attributed_orders, 4);
        assert_eq!(a.attributed_sales.amount.to_string(), "103.96");
        assert_eq!(a.spend.amount.to_string(), "24.87");
    }
}
