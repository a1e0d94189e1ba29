//! Orders and their lifecycle: placed, paid, cancelled or shipped, delivered, returned,
//! refunded, defects, and the 3PL shipment milestones of orders a warehouse ships.
//!
//! Shares (defaults of a healthy shop, see the reference's marketplace targets): 2% cancelled
//! (60% by the seller), 2% shipped after `ship_by`, 97% valid tracking, 6% delivered after
//! `deliver_by`, 4% of delivered orders returned then refunded, 1% refunded without a return,
//! 0.6% with a defect (negative feedback, A-to-z claim, chargeback) days to weeks later.
//!
//! Each shipment and refund also posts its marketplace fee lines (see [`super::profit`]).
//!
//! Delays as late as reality's: returns 1 to 4 weeks after delivery (refunds 1 to 4 days after
//! that), defects up to 90 days after shipment, and orders of an overseas / 3PL warehouse
//! ship 3 to 5 days after purchase (ship-by 4 to 5 days), seller and FBA orders within 2 days.

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_schemas::{
    CancelledBy, Channel, DefectKind, Event, FeeApplies, Fulfilment, Milestone, OrderCancelled,
    OrderDefect, OrderDelivered, OrderPaid, OrderPlaced, OrderRefunded, OrderReturned,
    OrderShipped, ShipmentMilestone,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::SimulatorConfig;
use super::anomalies::Effects;
use super::calendar::{self, Span};
use super::catalog::{Shop, usd_cents};
use super::profit;
use super::random::{self, Quota, Stream};
use super::stream::Fact;

const CANCEL_RATE: f64 = 0.02;
const SELLER_CANCEL_SHARE: f64 = 0.6;
const LATE_SHIP_RATE: f64 = 0.02;
const VALID_TRACKING_RATE: f64 = 0.97;
const LATE_DELIVERY_RATE: f64 = 0.06;
const RETURN_RATE: f64 = 0.04;
const REFUND_ONLY_RATE: f64 = 0.01;
const DEFECT_RATE: f64 = 0.006;

/// Return reasons, and whether each counts as the seller's fault.
const RETURN_REASONS: [(&str, bool); 5] = [
    ("defective", true),
    ("not as described", true),
    ("arrived damaged", true),
    ("no longer needed", false),
    ("wrong size or fit", false),
];

/// What inventory needs to know about an order.
#[derive(Debug, Clone)]
pub(super) struct OrderLine {
    pub(super) shop: u32,
    pub(super) sku: u32,
    pub(super) location: usize,
    pub(super) placed: DateTime<Utc>,
    pub(super) units: u32,
    /// When it shipped; `None` when cancelled.
    pub(super) shipped: Option<DateTime<Utc>>,
}

/// Every draw one order needs, taken in a fixed order whatever the order's fate, so one
/// order's outcome never shifts the draws of the next.
struct Draws {
    sku: usize,
    units: u32,
    fulfilment: f64,
    order_ref: u64,
    paid_after: TimeDelta,
    ship_by_after: TimeDelta,
    deliver_by_after: TimeDelta,
    cancel: bool,
    cancel_by_seller: bool,
    cancel_after: TimeDelta,
    late: bool,
    spike: f64,
    late_frac: f64,
    handling_frac: f64,
    tracking_valid: bool,
    tracking_missing: bool,
    carrier: usize,
    tracking_ref: u64,
    deliver_late: bool,
    deliver_late_by: TimeDelta,
    transit_frac: f64,
    ret: f64,
    return_after: TimeDelta,
    return_units_frac: f64,
    return_reason: usize,
    refund_after: TimeDelta,
    refund_only: f64,
    refund_only_after: TimeDelta,
    refund_partial: bool,
    refund_partial_frac: f64,
    refund_seller_fault: bool,
    defect: f64,
    defect_kind: f64,
    defect_rating: u8,
    defect_after: TimeDelta,
    received_after: TimeDelta,
    packed_frac: f64,
}

/// The evenly spread outcomes of one shop, for the shares marketplaces hold sellers to.
struct Quotas {
    cancel: Quota,
    late: Quota,
    tracking_invalid: Quota,
    deliver_late: Quota,
}

impl Quotas {
    fn new(rng: &mut ChaCha8Rng) -> Quotas {
        Quotas {
            cancel: Quota::new(rng, CANCEL_RATE),
            late: Quota::new(rng, LATE_SHIP_RATE),
            tracking_invalid: Quota::new(rng, 1.0 - VALID_TRACKING_RATE),
            deliver_late: Quota::new(rng, LATE_DELIVERY_RATE),
        }
    }
}

impl Draws {
    fn take(rng: &mut ChaCha8Rng, shop: &Shop, quotas: &mut Quotas) -> Draws {
        let r = rng;
        Draws {
            sku: random::weighted(r, &shop.sku_cumulative),
            units: match r.random::<f64>() {
                u if u < 0.70 => 1,
                u if u < 0.92 => 2,
                _ => 3,
            },
            fulfilment: r.random(),
            order_ref: r.random_range(0..10_000_000),
            paid_after: random::secs(r, 60, 15 * 60),
            ship_by_after: random::hours(r, 24.0, 48.0),
            deliver_by_after: random::hours(r, 3.0 * 24.0, 5.0 * 24.0),
            cancel: quotas.cancel.hit(),
            cancel_by_seller: r.random_bool(SELLER_CANCEL_SHARE),
            cancel_after: random::hours(r, 0.5, 10.0),
            late: false,
            spike: r.random(),
            late_frac: r.random(),
            handling_frac: r.random(),
            tracking_valid: !quotas.tracking_invalid.hit(),
            tracking_missing: r.random_bool(0.5),
            carrier: r.random_range(0..3),
            tracking_ref: r.random_range(0..1_000_000_000_000),
            deliver_late: quotas.deliver_late.hit(),
            deliver_late_by: random::hours(r, 2.0, 72.0),
            transit_frac: r.random(),
            ret: r.random(),
            return_after: random::hours(r, 7.0 * 24.0, 28.0 * 24.0),
            return_units_frac: r.random(),
            return_reason: r.random_range(0..RETURN_REASONS.len()),
            refund_after: random::hours(r, 24.0, 4.0 * 24.0),
            refund_only: r.random(),
            refund_only_after: random::hours(r, 24.0, 10.0 * 24.0),
            refund_partial: r.random_bool(0.5),
            refund_partial_frac: random::uniform(r, 0.2, 0.5),
            refund_seller_fault: r.random_bool(0.5),
            defect: r.random(),
            defect_kind: r.random(),
            defect_rating: r.random_range(1..=2),
            defect_after: random::hours(r, 24.0, 90.0 * 24.0),
            received_after: random::secs(r, 5 * 60, 60 * 60),
            packed_frac: r.random(),
        }
    }
}

/// Generates every shop's orders over the span; pushes their events onto `facts` and returns
/// what inventory needs.
pub(super) fn generate(
    cfg: &SimulatorConfig,
    span: &Span,
    shops: &[Shop],
    fx: &Effects,
    facts: &mut Vec<Fact>,
) -> Vec<OrderLine> {
    let salt = random::salt(cfg.seed);
    let mut seq = 0u64;
    let mut lines = Vec::new();
    let per_hour = f64::from(cfg.orders_per_shop_per_day) / 24.0;
    let hours = i64::from(cfg.days) * 24;
    for shop in shops {
        let mut rng = random::stream(cfg.seed, Stream::Orders, u64::from(shop.index));
        let mut quotas = Quotas::new(&mut rng);
        let mut drawn: Vec<(DateTime<Utc>, Draws)> = Vec::new();
        for h in 0..hours {
            let from = span.start + TimeDelta::hours(h);
            let mid = from + TimeDelta::minutes(30);
            let lambda = per_hour * calendar::diurnal(calendar::pacific_hour(mid));
            let mut offsets: Vec<i64> = (0..random::poisson(&mut rng, lambda))
                .map(|_| rng.random_range(0..3600))
                .collect();
            offsets.sort_unstable();
            for off in offsets {
                let draws = Draws::take(&mut rng, shop, &mut quotas);
                drawn.push((from + TimeDelta::seconds(off), draws));
            }
        }
        // Late shipments are spread in order of due time, so every stretch of orders due to
        // ship has its share, and no ordinary day drifts over a marketplace threshold.
        let mut by_due: Vec<usize> = (0..drawn.len()).collect();
        by_due.sort_by_key(|&i| drawn[i].0 + drawn[i].1.ship_by_after);
        for i in by_due {
            drawn[i].1.late = quotas.late.hit();
        }
        for (placed, draws) in &drawn {
            seq += 1;
            let order = Order {
                cfg,
                shop,
                fx,
                seq,
                salt,
                placed: *placed,
                d: draws,
            };
            lines.push(order.emit(facts));
        }
    }
    lines
}

/// One order being played through its lifecycle.
struct Order<'a> {
    cfg: &'a SimulatorConfig,
    shop: &'a Shop,
    fx: &'a Effects,
    seq: u64,
    salt: u64,
    placed: DateTime<Utc>,
    d: &'a Draws,
}

impl Order<'_> {
    fn order_id(&self) -> String {
        let (seq, salt) = (self.seq, self.salt);
        match self.shop.channel {
            // Amazon's 3-7-7 digit form; the middle group is unique per order.
            Channel::Amazon => format!(
                "{:03}-{:07}-{:07}",
                111 + (seq / 10_000_000) % 800,
                seq % 10_000_000,
                (self.d.order_ref + salt) % 10_000_000
            ),
            Channel::Walmart => format!("{}", 108_000_000_000_000 + salt * 100_000_000 + seq),
            Channel::Shopify => format!("{}", 5_100_000_000_000 + salt * 1_000_000_000 + seq),
            Channel::TiktokShop => {
                format!("{}", 576_000_000_000_000_000 + salt * 100_000_000 + seq)
            }
        }
    }

    fn event_id(&self, kind: &str) -> String {
        format!("sim-{}-{}-{kind}", self.cfg.seed, self.seq)
    }

    fn push(
        &self,
        facts: &mut Vec<Fact>,
        kind: &str,
        at: DateTime<Utc>,
        body: impl Into<kpiflow_schemas::EventBody>,
    ) {
        let sku = &self.shop.skus[self.d.sku];
        let header = self.shop.header(self.event_id(kind), Some(sku), at);
        facts.push(Fact::new(at, Event::new(header, body)));
    }

    /// Pushes one `order.fee` per line, posted at `at`; ids `<kind>-<fee type>`.
    #[allow(clippy::too_many_arguments)]
    fn fees(
        &self,
        facts: &mut Vec<Fact>,
        order_id: &str,
        kind: &str,
        at: DateTime<Utc>,
        applies_to: FeeApplies,
        fees: &[profit::Fee],
    ) {
        for fee in fees {
            let id = format!("{kind}-{}", fee.fee_type);
            self.push(facts, &id, at, profit::body(order_id, fee, applies_to));
        }
    }

    /// Pushes every event of the order's life and returns its inventory line.
    fn emit(&self, facts: &mut Vec<Fact>) -> OrderLine {
        let d = self.d;
        let shop = self.shop;
        let sku = &shop.skus[d.sku];
        let order_id = self.order_id();
        let placed = self.placed;
        let fulfilment = shop.fulfilment(d.fulfilment);
        let total_cents = sku.price_cents * i64::from(d.units);
        // An overseas / 3PL warehouse needs days to pick and hand over: its orders are due
        // (and ship) 3 days later than those the seller or a marketplace ships.
        let lead = if fulfilment == Fulfilment::ThirdParty {
            TimeDelta::days(3)
        } else {
            TimeDelta::zero()
        };
        let ship_by = placed + lead + d.ship_by_after;
        let deliver_by = ship_by + d.deliver_by_after;
        let mut line = OrderLine {
            shop: shop.index,
            sku: d.sku as u32,
            location: shop.location_of(fulfilment),
            placed,
            units: d.units,
            shipped: None,
        };

        self.push(
            facts,
            "placed",
            placed,
            OrderPlaced {
                order_id: order_id.clone(),
                total: usd_cents(total_cents),
                units: d.units,
                fulfilment,
                ship_by: Some(ship_by),
                deliver_by: Some(deliver_by),
            },
        );
        let paid = placed + d.paid_after;
        self.push(
            facts,
            "paid",
            paid,
            OrderPaid {
                order_id: order_id.clone(),
                placed_at: placed,
                amount: usd_cents(total_cents),
            },
        );

        // Cancellation: an out-of-stock SKU is always cancelled by the seller.
        let stockout = self.fx.out_of_stock(shop.index, d.sku as u32, placed);
        if stockout || d.cancel {
            let (by, reason, after) = if stockout {
                (
                    CancelledBy::Seller,
                    "out of stock",
                    d.cancel_after.min(TimeDelta::hours(6)),
                )
            } else if d.cancel_by_seller {
                (CancelledBy::Seller, "unable to fulfil", d.cancel_after)
            } else {
                (CancelledBy::Buyer, "buyer requested", d.cancel_after)
            };
            self.push(
                facts,
                "cancelled",
                placed + after,
                OrderCancelled {
                    order_id,
                    placed_at: placed,
                    cancelled_by: by,
                    reason: Some(reason.into()),
                    fulfilment: Some(fulfilment),
                },
            );
            return line;
        }

        let shipped = self.ship_time(ship_by, placed + lead);
        line.shipped = Some(shipped);
        let (carrier, tracking_id) = self.tracking(fulfilment);
        self.push(
            facts,
            "shipped",
            shipped,
            OrderShipped {
                order_id: order_id.clone(),
                placed_at: placed,
                ship_by,
                deliver_by: Some(deliver_by),
                units: d.units,
                carrier: Some(carrier.to_string()),
                tracking_id: tracking_id.clone(),
                tracking_valid: d.tracking_valid,
                fulfilment: Some(fulfilment),
            },
        );

        self.fees(
            facts,
            &order_id,
            "fee",
            shipped,
            FeeApplies::Sale,
            &profit::sale_fees(shop, fulfilment, total_cents, d.units),
        );

        let delivered = if d.deliver_late {
            deliver_by + d.deliver_late_by
        } else {
            // In transit at least 20 hours, delivered at least an hour before the promise.
            let earliest = shipped + TimeDelta::hours(20);
            let room = (deliver_by - TimeDelta::hours(1) - earliest).max(TimeDelta::zero());
            earliest + scale(room, d.transit_frac)
        };
        // The delivery time is known from the carrier's scans; a parcel without valid
        // tracking has none, so its delivery is never reported (returns still follow it).
        if d.tracking_valid {
            self.push(
                facts,
                "delivered",
                delivered,
                OrderDelivered {
                    order_id: order_id.clone(),
                    placed_at: placed,
                    deliver_by,
                    units: d.units,
                    fulfilment: Some(fulfilment),
                },
            );
        }

        if fulfilment == Fulfilment::ThirdParty {
            self.milestones(
                facts,
                &order_id,
                paid,
                shipped,
                delivered,
                carrier,
                tracking_id,
            );
        }

        if d.ret < RETURN_RATE {
            let returned = delivered + d.return_after;
            let units = 1 + ((f64::from(d.units) * d.return_units_frac) as u32).min(d.units - 1);
            let (reason, seller_fault) = RETURN_REASONS[d.return_reason];
            self.push(
                facts,
                "returned",
                returned,
                OrderReturned {
                    order_id: order_id.clone(),
                    placed_at: placed,
                    units,
                    reason: Some(reason.into()),
                    fulfilment: Some(fulfilment),
                },
            );
            let cents = sku.price_cents * i64::from(units);
            self.push(
                facts,
                "refunded",
                returned + d.refund_after,
                OrderRefunded {
                    order_id: order_id.clone(),
                    placed_at: placed,
                    amount: usd_cents(cents),
                    seller_fault,
                    fulfilment: Some(fulfilment),
                },
            );
            let fees = profit::refund_fees(shop, cents);
            self.fees(
                facts,
                &order_id,
                "refund-fee",
                returned + d.refund_after,
                FeeApplies::Refund,
                &fees,
            );
        } else if d.refund_only < REFUND_ONLY_RATE / (1.0 - RETURN_RATE) {
            let cents = if d.refund_partial {
                (total_cents as f64 * d.refund_partial_frac).round() as i64
            } else {
                total_cents
            };
            self.push(
                facts,
                "refunded",
                delivered + d.refund_only_after,
                OrderRefunded {
                    order_id: order_id.clone(),
                    placed_at: placed,
                    amount: usd_cents(cents),
                    seller_fault: d.refund_seller_fault,
                    fulfilment: Some(fulfilment),
                },
            );
            let fees = profit::refund_fees(shop, cents);
            self.fees(
                facts,
                &order_id,
                "refund-fee",
                delivered + d.refund_only_after,
                FeeApplies::Refund,
                &fees,
            );
        }

        if d.defect < DEFECT_RATE {
            let (kind, rating) = match d.defect_kind {
                u if u < 0.5 => (DefectKind::NegativeFeedback, Some(d.defect_rating)),
                u if u < 0.8 => (DefectKind::AToZClaim, None),
                _ => (DefectKind::Chargeback, None),
            };
            self.push(
                facts,
                "defect",
                shipped + d.defect_after,
                OrderDefect {
                    order_id,
                    placed_at: placed,
                    kind,
                    rating,
                    fulfilment: Some(fulfilment),
                },
            );
        }
        line
    }

    /// When the order ships: normally before `ship_by`; late by the base rate or when a
    /// late-shipment spike covers its `ship_by`.
    ///
    /// A late order is ship-confirmed after `ship_by` but on the same Pacific business day
    /// (and inside the spike's period), so each day's late-shipment share, by ship day, counts
    /// the orders due that day.
    fn ship_time(&self, ship_by: DateTime<Utc>, handling_from: DateTime<Utc>) -> DateTime<Utc> {
        let d = self.d;
        let late_before = |limit: DateTime<Utc>, most: TimeDelta| {
            let room = (limit - ship_by - TimeDelta::seconds(2))
                .min(most)
                .max(TimeDelta::zero());
            ship_by + TimeDelta::seconds(1) + scale(room, d.late_frac)
        };
        let day_end = calendar::day_end(ship_by);
        if let Some((window, share)) = self.fx.spike(self.shop.index, ship_by)
            && d.spike < share
        {
            return late_before(window.end.min(day_end), TimeDelta::hours(6));
        }
        if d.late {
            return late_before(day_end, TimeDelta::hours(12));
        }
        // Handling time: at least 2 hours after the warehouse can start, skewed early, at
        // least 30 minutes before ship_by.
        let earliest = handling_from + TimeDelta::hours(2);
        let room = (ship_by - TimeDelta::minutes(30) - earliest).max(TimeDelta::zero());
        earliest + scale(room, d.handling_frac * d.handling_frac)
    }

    fn tracking(&self, f: Fulfilment) -> (&'static str, Option<String>) {
        let d = self.d;
        let carriers: [&str; 3] = match f {
            Fulfilment::Fba => ["AMZL_US", "UPS", "AMZL_US"],
            _ => ["USPS", "UPS", "FedEx"],
        };
        let carrier = carriers[d.carrier];
        let id = match (d.tracking_valid, d.tracking_missing) {
            (true, _) => Some(format!("{}{:012}", &carrier[..2], d.tracking_ref)),
            // An invalid tracking number: either none was uploaded or the carrier never scanned it.
            (false, true) => None,
            (false, false) => Some(format!("XX{:06}", d.tracking_ref % 1_000_000)),
        };
        (carrier, id)
    }

    #[allow(clippy::too_many_arguments)]
    fn milestones(
        &self,
        facts: &mut Vec<Fact>,
        order_id: &str,
        paid: DateTime<Utc>,
        shipped: DateTime<Utc>,
        delivered: DateTime<Utc>,
        carrier: &str,
        tracking_id: Option<String>,
    ) {
        let received = paid + self.d.received_after;
        let room = (shipped - TimeDelta::minutes(1) - received).max(TimeDelta::zero());
        let packed = received + scale(room, self.d.packed_frac);
        let shipment_id = format!("SHP-{}-{}", self.cfg.seed, self.seq);
        for (kind, milestone, at) in [
            ("ms-received", Milestone::Received, received),
            ("ms-packed", Milestone::Packed, packed),
            ("ms-handed", Milestone::HandedToCarrier, shipped),
            ("ms-delivered", Milestone::Delivered, delivered),
        ] {
            self.push(
                facts,
                kind,
                at,
                ShipmentMilestone {
                    shipment_id: shipment_id.clone(),
                    warehouse: self.shop.locations[1].id.clone(),
                    milestone,
                    order_id: Some(order_id.to_string()),
                    carrier: Some(carrier.to_string()),
                    tracking_id: tracking_id.clone(),
                    units: self.d.units,
                },
            );
        }
    }
}

/// `frac` (in `[0, 1]`) of a duration, in whole seconds.
fn scale(d: TimeDelta, frac: f64) -> TimeDelta {
    TimeDelta::seconds((d.num_seconds() as f64 * frac.clamp(0.0, 1.0)) as i64)
}
