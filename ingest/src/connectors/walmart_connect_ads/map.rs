//! One snapshot report row → `ad.performance`, a version of (walmart_connect_ads, advertiser,
//! campaign, date) as of when the snapshot was seen done.

use serde_json::Value;

use crate::map::{AdContext, MapError, ReportColumns, campaign_day};
use crate::pull::Fact;

/// Maps one row; `orders` and `sales` are the columns of the attribution window (e.g.
/// `attributedOrders14days`, `attributedSales14days`). `Err` names the field and value
/// that made it unusable.
pub fn row(
    v: &Value,
    ctx: &AdContext<'_>,
    orders: &str,
    sales: &str,
) -> Result<Vec<Fact>, MapError> {
    campaign_day(
        v,
        ctx,
        ReportColumns {
            spend: "adSpend",
            orders,
            sales,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::EventBody;
    use serde_json::json;

    fn ctx() -> AdContext<'static> {
        AdContext {
            platform: "walmart_connect_ads",
            account: "600001",
            currency: "USD",
            tz: chrono_tz::America::Los_Angeles,
            window: "14d",
            as_of: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn rows_become_versions_dated_in_the_advertiser_zone() {
        let v = json!({"date": "2026-11-20", "campaignId": 51001, "impressions": 2000,
                       "clicks": 40, "adSpend": 30.00, "attributedOrders14days": 3,
                       "attributedSales14days": 120.00, "attributedSales3days": 90.00});
        let facts = row(
            &v,
            &ctx(),
            "attributedOrders14days",
            "attributedSales14days",
        )
        .unwrap();
        // 2026-11-27T10:00:00Z is 1795773600000 ms after the epoch.
        assert_eq!(
            facts[0].event_id,
            "walmart_connect_ads:600001:51001:2026-11-20:1795773600000"
        );
        // Pacific midnight of Nov 20 is 08:00 UTC (PST, UTC-8).
        assert_eq!(
            facts[0].event_time.to_rfc3339(),
            "2026-11-20T08:00:00+00:00"
        );
        let EventBody::AdPerformance(a) = &facts[0].body else {
            panic!("an ad row")
        };
        assert_eq!(a.spend.amount.to_string(), "30");
        assert_eq!(a.attributed_sales.amount.to_string(), "120");
        assert_eq!(a.attributed_orders, 3);
        assert_eq!(a.clicks, 40);
    }

    #[test]
    fn a_bad_row_names_the_field_and_value() {
        let v = json!({"date": "2026-11-20", "campaignId": 1, "impressions": 1,
                       "clicks": 1, "adSpend": "lots"});
        assert_eq!(
            row(
                &v,
                &ctx(),
                "attributedOrders14days",
                "attributedSales14days"
            )
            .unwrap_err(),
            "field `adSpend`: expected a decimal such as \"12.34\", got \"lots\""
        );
    }
}
