//! What the profit KPIs need beside orders: each SKU's landed cost (`cost.changed`) and the
//! marketplaces' fee lines (`order.fee`) on shipments and refunds.
//!
//! Costs: every SKU costs 47% of its price (38% purchase, 6% first-mile freight, 3% duties)
//! from the run's first day, recorded at its start; the shop's first SKU gets dearer by 10%
//! from the middle day on, a correction recorded a day after it took effect, so it reprices
//! a day of orders already booked.
//!
//! Fees, posted when the order ships (a refund's when it is refunded), rounded half up to
//! cents: Amazon a 15% referral fee and, for FBA, 3.22 per unit; Walmart a 15% commission
//! and, for WFS, 3.45 per unit; TikTok Shop a 6% commission; Shopify Payments 2.9% + 0.30.
//! A refund gives back the referral or commission on the refunded amount (Amazon keeps a
//! refund administration fee of 20% of it, at most 5.00); Shopify keeps its processing fee.
//!
//! No random draws: the other facts of a seed stay exactly as they were.

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_schemas::{Channel, CostChanged, Event, FeeApplies, FeeKind, Fulfilment, OrderFee};

use super::SimulatorConfig;
use super::calendar::Span;
use super::catalog::{Shop, usd_cents};
use super::stream::Fact;

/// `cents * percent / 100`, rounded half up (amounts are never negative here).
fn share(cents: i64, per_mille: i64) -> i64 {
    (cents * per_mille + 500) / 1000
}

/// The landed cost of one unit, in cents: (purchase, freight, duties).
pub(super) fn unit_cost(price_cents: i64, dearer: bool) -> (i64, i64, i64) {
    let base = (
        share(price_cents, 380),
        share(price_cents, 60),
        share(price_cents, 30),
    );
    if dearer {
        (
            share(base.0, 1100),
            share(base.1, 1100),
            share(base.2, 1100),
        )
    } else {
        base
    }
}

/// Pushes every SKU's cost, and the first SKU's correction from the middle day.
pub(super) fn costs(cfg: &SimulatorConfig, span: &Span, shops: &[Shop], facts: &mut Vec<Fact>) {
    for shop in shops {
        for (k, sku) in shop.skus.iter().enumerate() {
            let mut push = |kind: &str, from: u32, recorded: DateTime<Utc>, dearer: bool| {
                let (purchase, freight, duties) = unit_cost(sku.price_cents, dearer);
                let id = format!("sim-{}-cost-{}-{kind}", cfg.seed, sku.id);
                let header = shop.header(id, Some(sku), recorded);
                let body = CostChanged {
                    effective_from: span.date(from),
                    purchase: usd_cents(purchase),
                    freight: Some(usd_cents(freight)),
                    duties: Some(usd_cents(duties)),
                };
                facts.push(Fact::new(recorded, Event::new(header, body)));
            };
            push("initial", 0, span.start, false);
            let middle = cfg.days / 2;
            if k == 0 && middle > 0 {
                push(
                    "raised",
                    middle,
                    span.day_start(middle) + TimeDelta::days(1),
                    true,
                );
            }
        }
    }
}

/// One fee line of an order.
pub(super) struct Fee {
    pub(super) kind: FeeKind,
    pub(super) fee_type: &'static str,
    pub(super) cents: i64,
}

/// The fees of a shipped order of `total_cents` and `units`.
pub(super) fn sale_fees(
    shop: &Shop,
    fulfilment: Fulfilment,
    total_cents: i64,
    units: u32,
) -> Vec<Fee> {
    let units = i64::from(units);
    let referral = |fee_type, per_mille| Fee {
        kind: FeeKind::Referral,
        fee_type,
        cents: share(total_cents, per_mille),
    };
    let per_unit = |fee_type, cents: i64| Fee {
        kind: FeeKind::FbaFulfilment,
        fee_type,
        cents: cents * units,
    };
    match (shop.channel, fulfilment) {
        (Channel::Amazon, Fulfilment::Fba) => vec![
            referral("Commission", 150),
            per_unit("FBAPerUnitFulfillmentFee", 322),
        ],
        (Channel::Amazon, _) => vec![referral("Commission", 150)],
        (Channel::Walmart, Fulfilment::Wfs) => vec![
            referral("Commission", 150),
            per_unit("WFSFulfillmentFee", 345),
        ],
        (Channel::Walmart, _) => vec![referral("Commission", 150)],
        (Channel::TiktokShop, _) => vec![referral("PlatformCommission", 60)],
        (Channel::Shopify, _) => vec![Fee {
            kind: FeeKind::PaymentProcessing,
            fee_type: "ShopifyPayments",
            cents: share(total_cents, 29) + 30,
        }],
    }
}

/// The fee lines of a refund of `refund_cents`: the commission given back (negative), and
/// Amazon's refund administration fee.
pub(super) fn refund_fees(shop: &Shop, refund_cents: i64) -> Vec<Fee> {
    let back = |fee_type, per_mille| {
        let cents = share(refund_cents, per_mille);
        (
            cents,
            Fee {
                kind: FeeKind::Referral,
                fee_type,
                cents: -cents,
            },
        )
    };
    match shop.channel {
        Channel::Amazon => {
            let (given_back, fee) = back("Commission", 150);
            vec![
                fee,
                Fee {
                    kind: FeeKind::RefundAdministration,
                    fee_type: "RefundCommission",
                    cents: share(given_back, 200).min(500),
                },
            ]
        }
        Channel::Walmart => vec![back("Commission", 150).1],
        Channel::TiktokShop => vec![back("PlatformCommission", 60).1],
        Channel::Shopify => Vec::new(),
    }
}

/// The fee line's body.
pub(super) fn body(order_id: &str, fee: &Fee, applies_to: FeeApplies) -> OrderFee {
    OrderFee {
        order_id: Some(order_id.to_string()),
        kind: fee.kind,
        fee_type: fee.fee_type.to_string(),
        amount: usd_cents(fee.cents),
        applies_to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::EventBody;

    fn cents(fees: &[Fee]) -> Vec<(&str, i64)> {
        fees.iter().map(|f| (f.fee_type, f.cents)).collect()
    }

    #[test]
    fn fees_and_costs_follow_the_stated_rates() {
        let cfg = SimulatorConfig::default();
        let shops = super::super::catalog::shops(&cfg);
        let amazon = &shops[0];
        assert_eq!(amazon.channel, Channel::Amazon);
        // 2 x 25.99 = 51.98: 15% = 7.797 -> 7.80; 2 x 3.22.
        assert_eq!(
            cents(&sale_fees(amazon, Fulfilment::Fba, 5198, 2)),
            [("Commission", 780), ("FBAPerUnitFulfillmentFee", 644)]
        );
        // A refund of 25.99 gives back 3.8985 -> 3.90 and keeps 20% of it, 0.78.
        assert_eq!(
            cents(&refund_fees(amazon, 2599)),
            [("Commission", -390), ("RefundCommission", 78)]
        );
        let shopify = shops
            .iter()
            .find(|s| s.channel == Channel::Shopify)
            .unwrap();
        // 2.9% of 51.98 = 1.50742 -> 1.51, + 0.30.
        assert_eq!(
            cents(&sale_fees(shopify, Fulfilment::Merchant, 5198, 2)),
            [("ShopifyPayments", 181)]
        );
        assert!(refund_fees(shopify, 2599).is_empty());
        // 25.99: 38% = 9.8762 -> 9.88, 6% = 1.5594 -> 1.56, 3% = 0.7797 -> 0.78; then +10%.
        assert_eq!(unit_cost(2599, false), (988, 156, 78));
        assert_eq!(unit_cost(2599, true), (1087, 172, 86));
    }

    #[test]
    fn every_sku_has_a_cost_from_the_first_day_and_the_first_sku_a_raise_recorded_late() {
        let cfg = SimulatorConfig {
            shops: 2,
            days: 4,
            ..SimulatorConfig::default()
        };
        let start: DateTime<Utc> = "2026-11-02T08:00:00Z".parse().unwrap();
        let costs: Vec<Event> = super::super::generate(&cfg, start)
            .into_iter()
            .filter(|e| matches!(e.body, EventBody::CostChanged(_)))
            .collect();
        // 2 shops x 8 SKUs, plus one raise per shop; duplicates of the stream count once.
        let mut ids: Vec<&str> = costs.iter().map(|e| e.header.event_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 18);
        let raise = costs
            .iter()
            .find(|e| e.header.event_id == "sim-42-cost-SKU-001-001-raised")
            .unwrap();
        let EventBody::CostChanged(c) = &raise.body else {
            unreachable!()
        };
        // From Pacific day 2 (Nov 4), recorded a day later.
        assert_eq!(c.effective_from.to_string(), "2026-11-04");
        assert_eq!(
            raise.header.event_time.to_rfc3339(),
            "2026-11-05T08:00:00+00:00"
        );
    }
}
