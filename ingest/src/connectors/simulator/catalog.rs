//! The simulated world that does not change during a run: shops, SKUs, stock locations and
//! ad campaigns.

use chrono::{DateTime, Utc};
use kpiflow_schemas::{Channel, Decimal, EventHeader, Fulfilment, LocationKind, Money, SourceTz};
use rand::Rng;

use super::SimulatorConfig;
use super::random::{self, Stream};

/// The `source` of every simulated event.
pub(super) const SOURCE: &str = "simulator";

/// Amazon's US marketplace id; the other channels report `US`.
const AMAZON_US: &str = "ATVPDKIKX0DER";

/// Money from a whole number of cents.
pub(super) fn usd_cents(cents: i64) -> Money {
    Money {
        amount: Decimal(rust_decimal::Decimal::new(cents, 2)),
        currency: "USD".into(),
    }
}

/// One SKU of a shop.
#[derive(Debug, Clone)]
pub(super) struct Sku {
    pub(super) id: String,
    pub(super) price_cents: i64,
    /// Share of the shop's orders (the shares of a shop sum to 1).
    pub(super) share: f64,
}

/// Where a shop holds stock.
#[derive(Debug, Clone)]
pub(super) struct Location {
    pub(super) id: String,
    pub(super) kind: LocationKind,
}

/// One ad campaign of a shop, with the figures its daily reports vary around.
#[derive(Debug, Clone)]
pub(super) struct Campaign {
    /// Global campaign number: its random stream.
    pub(super) number: u64,
    pub(super) platform: &'static str,
    pub(super) account_id: String,
    pub(super) campaign_id: String,
    pub(super) attribution_window: &'static str,
    pub(super) impressions_per_day: f64,
    pub(super) ctr: f64,
    pub(super) cpc_cents: f64,
    pub(super) roas: f64,
}

/// One simulated shop.
#[derive(Debug, Clone)]
pub(super) struct Shop {
    pub(super) index: u32,
    pub(super) id: String,
    pub(super) channel: Channel,
    pub(super) marketplace: &'static str,
    pub(super) skus: Vec<Sku>,
    /// Cumulative SKU shares, for weighted picks.
    pub(super) sku_cumulative: Vec<f64>,
    /// Two locations; [`Shop::location_of`] maps a fulfilment to one of them.
    pub(super) locations: [Location; 2],
    pub(super) campaigns: Vec<Campaign>,
    pub(super) avg_price_cents: f64,
}

impl Shop {
    /// A header for a fact of this shop; `ingest_time` is set when the stream is assembled.
    pub(super) fn header(
        &self,
        event_id: String,
        sku: Option<&Sku>,
        event_time: DateTime<Utc>,
    ) -> EventHeader {
        EventHeader {
            event_id,
            source: SOURCE.to_string(),
            shop: self.id.clone(),
            channel: self.channel,
            marketplace: self.marketplace.to_string(),
            sku: sku.map(|s| s.id.clone()),
            event_time,
            source_tz: SourceTz::US_PACIFIC,
            ingest_time: event_time,
        }
    }

    /// How an order is fulfilled, from a uniform draw in `[0, 1)`: Amazon shops mostly FBA,
    /// Walmart shops partly WFS (exempt from Walmart's seller scores), the others from their
    /// own warehouse or a 3PL.
    pub(super) fn fulfilment(&self, u: f64) -> Fulfilment {
        let (first, first_share, second) = match self.channel {
            Channel::Amazon => (Fulfilment::Fba, 0.85, Fulfilment::Merchant),
            Channel::Walmart => (Fulfilment::Wfs, 0.40, Fulfilment::ThirdParty),
            Channel::Shopify => (Fulfilment::Merchant, 0.50, Fulfilment::ThirdParty),
            Channel::TiktokShop => (Fulfilment::Merchant, 0.30, Fulfilment::ThirdParty),
        };
        if u < first_share { first } else { second }
    }

    /// The share of orders fulfilled from location `i`.
    pub(super) fn location_share(&self, i: usize) -> f64 {
        let first = match self.channel {
            Channel::Amazon => 0.85,
            Channel::Walmart => 0.40,
            Channel::Shopify => 0.50,
            Channel::TiktokShop => 0.30,
        };
        if i == 0 { first } else { 1.0 - first }
    }

    /// Which of the shop's two locations ships a fulfilment.
    pub(super) fn location_of(&self, f: Fulfilment) -> usize {
        match f {
            Fulfilment::Fba | Fulfilment::Wfs | Fulfilment::Fbt => 0,
            Fulfilment::Merchant => usize::from(self.channel == Channel::Amazon),
            Fulfilment::ThirdParty => 1,
        }
    }
}

/// Builds every shop of the run from the catalogue stream.
pub(super) fn shops(cfg: &SimulatorConfig) -> Vec<Shop> {
    let mut campaign_number = 0u64;
    (0..cfg.shops)
        .map(|index| shop(cfg, index, &mut campaign_number))
        .collect()
}

fn shop(cfg: &SimulatorConfig, index: u32, campaign_number: &mut u64) -> Shop {
    let mut rng = random::stream(cfg.seed, Stream::Catalog, u64::from(index));
    let number = index + 1;
    let id = format!("shop-{number:03}");
    let channel = Channel::ALL[index as usize % Channel::ALL.len()];
    let marketplace = if channel == Channel::Amazon {
        AMAZON_US
    } else {
        "US"
    };

    let skus: Vec<Sku> = {
        let mut raw: Vec<(String, i64, f64)> = (0..cfg.skus_per_shop)
            .map(|k| {
                // Retail price points: whole dollars ending in .99, .49, .95 or .00.
                let dollars = rng.random_range(8..=79i64);
                let cents = [99, 49, 95, 0][rng.random_range(0..4usize)];
                // A long tail: a few SKUs sell most of the units.
                let popularity =
                    1.0 / f64::from(k + 1).powf(0.8) * random::uniform(&mut rng, 0.7, 1.3);
                (
                    format!("SKU-{number:03}-{:03}", k + 1),
                    dollars * 100 + cents,
                    popularity,
                )
            })
            .collect();
        let total: f64 = raw.iter().map(|s| s.2).sum();
        raw.drain(..)
            .map(|(id, price_cents, p)| Sku {
                id,
                price_cents,
                share: p / total,
            })
            .collect()
    };
    let mut acc = 0.0;
    let sku_cumulative = skus
        .iter()
        .map(|s| {
            acc += s.share;
            acc
        })
        .collect();
    let avg_price_cents = skus
        .iter()
        .map(|s| s.share * s.price_cents as f64)
        .sum::<f64>();

    let own = Location {
        id: format!("WH-{number:03}"),
        kind: LocationKind::Own,
    };
    let locations = match channel {
        Channel::Amazon => [
            Location {
                id: "FBA-US".into(),
                kind: LocationKind::Fba,
            },
            own,
        ],
        Channel::Walmart => [
            Location {
                id: "WFS-US".into(),
                kind: LocationKind::Wfs,
            },
            Location {
                id: "3PL-ONT8".into(),
                kind: LocationKind::ThirdParty,
            },
        ],
        _ => [
            own,
            Location {
                id: "3PL-ONT8".into(),
                kind: LocationKind::ThirdParty,
            },
        ],
    };

    let n_campaigns = rng.random_range(2..=4u32);
    let campaigns = (0..n_campaigns)
        .map(|c| {
            let platform = match channel {
                Channel::Amazon => "amazon_ads",
                Channel::Walmart => "walmart_connect",
                Channel::Shopify if c % 2 == 0 => "google_ads",
                Channel::Shopify => "meta_ads",
                Channel::TiktokShop => "tiktok_ads",
            };
            let attribution_window = match platform {
                "walmart_connect" => "14d",
                "google_ads" => "30d",
                _ => "7d",
            };
            *campaign_number += 1;
            Campaign {
                number: *campaign_number,
                platform,
                account_id: format!("{platform}-acct-{number:03}"),
                campaign_id: format!("{platform}-{number:03}-{:02}", c + 1),
                attribution_window,
                impressions_per_day: random::uniform(&mut rng, 4_000.0, 40_000.0),
                ctr: random::uniform(&mut rng, 0.004, 0.015),
                cpc_cents: random::uniform(&mut rng, 35.0, 160.0),
                roas: random::uniform(&mut rng, 2.6, 4.8),
            }
        })
        .collect();

    Shop {
        index,
        id,
        channel,
        marketplace,
        skus,
        sku_cumulative,
        locations,
        campaigns,
        avg_price_cents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shops_follow_the_channel_rotation() {
        let cfg = SimulatorConfig {
            shops: 5,
            ..SimulatorConfig::default()
        };
        let shops = shops(&cfg);
        let ids: Vec<_> = shops.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["shop-001", "shop-002", "shop-003", "shop-004", "shop-005"]
        );
        assert_eq!(shops[0].channel, Channel::Amazon);
        assert_eq!(shops[0].marketplace, "ATVPDKIKX0DER");
        assert_eq!(shops[3].channel, Channel::TiktokShop);
        assert_eq!(shops[3].marketplace, "US");
        assert_eq!(shops[4].channel, Channel::Amazon);
        for shop in &shops {
            assert_eq!(shop.skus.len(), 8);
            assert!((2..=4).contains(&shop.campaigns.len()));
            assert!((shop.sku_cumulative.last().unwrap() - 1.0).abs() < 1e-9);
            for sku in &shop.skus {
                assert!((800..=7999).contains(&sku.price_cents), "{sku:?}");
            }
            for c in &shop.campaigns {
                let fits = match shop.channel {
                    Channel::Amazon => c.platform == "amazon_ads",
                    Channel::Walmart => c.platform == "walmart_connect",
                    Channel::Shopify => ["google_ads", "meta_ads"].contains(&c.platform),
                    Channel::TiktokShop => c.platform == "tiktok_ads",
                };
                assert!(fits, "{} on {}", c.platform, shop.channel);
            }
        }
    }

    #[test]
    fn fulfilment_maps_to_the_shop_locations() {
        let shops = shops(&SimulatorConfig::default());
        let amazon = &shops[0];
        assert_eq!(amazon.fulfilment(0.1), Fulfilment::Fba);
        assert_eq!(
            amazon.locations[amazon.location_of(Fulfilment::Fba)].kind,
            LocationKind::Fba
        );
        assert_eq!(
            amazon.locations[amazon.location_of(Fulfilment::Merchant)].kind,
            LocationKind::Own
        );
        let walmart = &shops[1];
        assert_eq!(walmart.fulfilment(0.1), Fulfilment::Wfs);
        assert_eq!(
            walmart.locations[walmart.location_of(Fulfilment::Wfs)].kind,
            LocationKind::Wfs
        );
        assert_eq!(walmart.fulfilment(0.9), Fulfilment::ThirdParty);
        assert_eq!(
            walmart.locations[walmart.location_of(Fulfilment::ThirdParty)].kind,
            LocationKind::ThirdParty
        );
        assert_eq!(usd_cents(2598).amount.to_string(), "25.98");
    }
}
