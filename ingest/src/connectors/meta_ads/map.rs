//! One insights row → `ad.performance`, counting only the configured purchase action type.

use kpiflow_schemas::Decimal;
use serde_json::Value;

use crate::map::{AdContext, AdRow, MapError, Record, whole};
use crate::pull::Fact;

/// Maps one row, counting `purchase` (one action type) from `actions` and `action_values`;
/// `Err` names the field and value that made it unusable.
pub fn row(v: &Value, ctx: &AdContext<'_>, purchase: &str) -> Result<Vec<Fact>, MapError> {
    let r = Record(v);
    let date = r.date("date_start")?;
    let stop = r.date("date_stop")?;
    if stop != date {
        return Err(format!(
            "field `date_stop`: expected one day per row (time_increment=1), got {date}..{stop}"
        ));
    }
    ctx.fact(AdRow {
        campaign: r.str("campaign_id")?.to_string(),
        date,
        impressions: r.count_or_zero("impressions")?,
        clicks: r.count_or_zero("clicks")?,
        spend: r.decimal("spend")?,
        orders: whole(sum_of(&r, "actions", purchase)?, "actions")?,
        sales: sum_of(&r, "action_values", purchase)?,
    })
}

/// The value of `action_type` in the `field` list (`actions` or `action_values`); 0 when the
/// row has none.
fn sum_of(r: &Record<'_>, field: &str, action_type: &str) -> Result<Decimal, MapError> {
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
        let ctx = AdContext {
            platform: "meta_ads",
            account: "1234",
            currency: "USD",
            tz: chrono_tz::America::Los_Angeles,
            window: "7d_click_1d_view",
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
        let f = row(&v, &ctx, "offsite_conversion.fb_pixel_purchase").unwrap();
        let EventBody::AdPerformance(a) = &f[0].body else {
            panic!()
        };
        assert_eq!(a.attributed_orders, 4);
        assert_eq!(a.attributed_sales.amount.to_string(), "103.96");
        assert_eq!(a.spend.amount.to_string(), "24.87");
    }
}
