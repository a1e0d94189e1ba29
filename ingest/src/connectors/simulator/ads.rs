//! Daily ad performance per campaign, first reported the next morning and restated for 14 days.
//!
//! For report date D (a Pacific date) revision 1 arrives at about 06:00 Pacific on D+1,
//! revisions 2 to 5 on D+2, D+3, D+7 and D+14 (connectors re-pull a trailing 14-day window):
//! attributed sales and orders grow as attribution catches up, clicks shrink a little as
//! invalid clicks are removed (and spend with them). Only rows reported by the end of the span
//! are emitted. The event time of a row is the start of D.

use chrono::{Days, TimeDelta};
use kpiflow_schemas::{AdPerformance, Event};
use rand::Rng;

use super::SimulatorConfig;
use super::anomalies::Effects;
use super::calendar::{self, Span};
use super::catalog::{Shop, usd_cents};
use super::random::{self, Stream};
use super::stream::Fact;

/// The days after D each revision of a row is reported on.
pub(super) const REVISION_DAYS: [u64; 5] = [1, 2, 3, 7, 14];
const REVISIONS: usize = REVISION_DAYS.len();

/// Pushes every campaign's reports over the span onto `facts`.
pub(super) fn generate(
    cfg: &SimulatorConfig,
    span: &Span,
    shops: &[Shop],
    fx: &Effects,
    facts: &mut Vec<Fact>,
) {
    for shop in shops {
        for campaign in &shop.campaigns {
            let mut rng = random::stream(cfg.seed, Stream::Ads, campaign.number);
            let aov_cents = shop.avg_price_cents * 1.38;
            for date in span.dates() {
                // Every draw is taken whether or not the row is emitted, so the span's end
                // never changes earlier rows.
                let impressions = (campaign.impressions_per_day
                    * random::uniform(&mut rng, 0.7, 1.3))
                .round() as u64;
                let clicks =
                    ((impressions as f64) * campaign.ctr * random::uniform(&mut rng, 0.8, 1.2))
                        .round() as u64;
                let cpc = campaign.cpc_cents * random::uniform(&mut rng, 0.9, 1.1);
                let roas = (campaign.roas * random::uniform(&mut rng, 0.75, 1.25)).clamp(1.5, 7.0);
                let factor = fx.roas_factor(shop.index, date);
                let final_spend = clicks as f64 * cpc;
                let final_sales = final_spend * roas * factor;
                let invalid_clicks =
                    (clicks as f64 * random::uniform(&mut rng, 0.0, 0.04)).round() as u64;
                // (share of the final attributed sales, share of the invalid clicks still in).
                let shares = [
                    (random::uniform(&mut rng, 0.70, 0.88), 1.0),
                    (
                        random::uniform(&mut rng, 0.88, 0.94),
                        random::uniform(&mut rng, 0.0, 0.5),
                    ),
                    (random::uniform(&mut rng, 0.94, 0.97), 0.0),
                    (random::uniform(&mut rng, 0.97, 0.995), 0.0),
                    (1.0, 0.0),
                ];
                let minutes: Vec<i64> = (0..REVISIONS).map(|_| rng.random_range(0..45)).collect();

                for ((r, after), ((sales_share, invalid_share), minute)) in (1..)
                    .zip(REVISION_DAYS)
                    .zip(shares.into_iter().zip(minutes))
                {
                    let Some(report_date) = date.checked_add_days(Days::new(after)) else {
                        continue;
                    };
                    let as_of = calendar::at_local(report_date, 6, 0) + TimeDelta::minutes(minute);
                    if as_of > span.end {
                        continue;
                    }
                    let clicks = clicks + (invalid_clicks as f64 * invalid_share).round() as u64;
                    let spend_cents = (clicks as f64 * cpc).round() as i64;
                    let sales_cents = (final_sales * sales_share).round() as i64;
                    let orders = if sales_cents > 0 {
                        ((sales_cents as f64 / aov_cents).round() as u64).max(1)
                    } else {
                        0
                    };
                    let event_id =
                        format!("sim-{}-ad-{}-{date}-r{r}", cfg.seed, campaign.campaign_id);
                    let day_start = calendar::at_local(date, 0, 0);
                    let header = shop.header(event_id, None, day_start);
                    let body = AdPerformance {
                        platform: campaign.platform.to_string(),
                        account_id: campaign.account_id.clone(),
                        campaign_id: campaign.campaign_id.clone(),
                        date,
                        impressions,
                        clicks: clicks.min(impressions),
                        spend: usd_cents(spend_cents),
                        attributed_orders: orders,
                        attributed_sales: usd_cents(sales_cents),
                        attribution_window: campaign.attribution_window.to_string(),
                        as_of,
                    };
                    facts.push(Fact::new(as_of, Event::new(header, body)));
                }
            }
        }
    }
}
