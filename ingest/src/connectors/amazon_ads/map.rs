//! One report row → `ad.performance`, a version of (amazon_ads, profile, campaign, date) as
//! of the report's completion.

use serde_json::Value;

use crate::map::{AdContext, MapError, ReportColumns, campaign_day};
use crate::pull::Fact;

/// Maps one row; `purchases` and `sales` are the columns of the attribution window (e.g.
/// `purchases7d`, `sales7d`). `Err` names the field and value that made it unusable.
pub fn row(
    v: &Value,
    ctx: &AdContext<'_>,
    purchases: &str,
    sales: &str,
) -> Result<Vec<Fact>, MapError> {
    campaign_day(
        v,
        ctx,
        ReportColumns {
            spend: "cost",
            orders: purchases,
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
            platform: "amazon_ads",
            account: "3245645645645",
            currency: "USD",
            tz: chrono_tz::America::Los_Angeles,
            window: "7d",
            as_of: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn rows_become_versions_dated_in_the_profile_zone() {
        let v = json!({"date": "2026-11-20", "campaignId": 1234567890123_i64, "impressions": 1520,
                       "clicks": 31, "cost": 24.87, "purchases7d": 4, "sales7d": 103.96,
                       "purchases14d": 5, "sales14d": 129.95});
        let facts = row(&v, &ctx(), "purchases7d", "sales7d").unwrap();
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
            row(&v, &ctx(), "purchases7d", "sales7d").unwrap_err(),
            "field `date`: expected a date such as \"2026-11-02\", got \"20/11/2026\""
        );
    }
}
