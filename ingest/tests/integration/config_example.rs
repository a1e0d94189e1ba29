//! The documented example config: its commented-out connector tables, uncommented, parse and
//! validate, so the documentation cannot drift from the code.

use kpiflow_ingest::connector::parse_section;
use kpiflow_ingest::connectors::{
    amazon_ads, amazon_fba_inventory, amazon_sp_finances, amazon_sp_orders, amazon_sp_reports,
    google_ads, meta_ads, tiktok_ads, tiktok_shop_orders, tiktok_shop_returns, walmart_connect_ads,
    walmart_orders, walmart_returns, walmart_wfs_inventory,
};

/// The `[[connectors.*]]` examples of deploy/config/kpiflow.toml with their `# ` removed.
fn uncommented_connectors() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/kpiflow.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("# ─── Pull connectors")
        .expect("the connectors part");
    let toml: String = text[start..]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || is_assignment(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let v: toml::Value = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    serde_json::to_value(v).unwrap()
}

/// `name = …` with a lower-case key at the start of the line.
fn is_assignment(l: &str) -> bool {
    l.split_once(" = ").is_some_and(|(k, _)| {
        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    })
}

#[test]
fn every_documented_connector_key_parses_and_validates() {
    let v = uncommented_connectors();
    let c = &v["connectors"];
    let one = |name: &str| c[name][0].clone();
    let o: amazon_sp_orders::AmazonOrdersConfig =
        parse_section(amazon_sp_orders::SECTION, one("amazon_sp_orders")).unwrap();
    o.validate().unwrap();
    let pull = o
        .pull
        .resolve(amazon_sp_orders::SECTION, &amazon_sp_orders::DEFAULTS)
        .unwrap();
    assert_eq!(pull.http.rate_limit.unwrap().burst, 20);
    assert_eq!(pull.http.retry.max_attempts, 6);
    let i: amazon_fba_inventory::FbaInventoryConfig =
        parse_section(amazon_fba_inventory::SECTION, one("amazon_fba_inventory")).unwrap();
    i.pull
        .resolve(
            amazon_fba_inventory::SECTION,
            &amazon_fba_inventory::DEFAULTS,
        )
        .unwrap();
    let r: amazon_sp_reports::AmazonReportsConfig =
        parse_section(amazon_sp_reports::SECTION, one("amazon_sp_reports")).unwrap();
    r.validate().unwrap();
    assert_eq!(r.reports, amazon_sp_reports::ReportKind::ALL);
    assert_eq!(
        r.rate_limits,
        amazon_sp_reports::OperationRates::default(),
        "the example shows the defaults"
    );
    r.pull
        .resolve(amazon_sp_reports::SECTION, &amazon_sp_reports::DEFAULTS)
        .unwrap();
    let f: amazon_sp_finances::AmazonFinancesConfig =
        parse_section(amazon_sp_finances::SECTION, one("amazon_sp_finances")).unwrap();
    f.validate().unwrap();
    assert_eq!(
        (f.max_results_per_page, f.get_order_rate_limit.burst),
        (100, 30),
        "the example shows the defaults"
    );
    let fp = f
        .pull
        .resolve(amazon_sp_finances::SECTION, &amazon_sp_finances::DEFAULTS)
        .unwrap();
    assert_eq!(fp.http.rate_limit.unwrap().rate, 0.5);
    let a = amazon_ads::AmazonAdsConfig::parse(one("amazon_ads")).unwrap();
    a.validate().unwrap();
    assert_eq!(a.attribution_window, "7d");
    a.pull
        .resolve(amazon_ads::SECTION, &amazon_ads::DEFAULTS)
        .unwrap();
    let w: walmart_orders::WalmartOrdersConfig =
        parse_section(walmart_orders::SECTION, one("walmart_orders")).unwrap();
    w.pull
        .resolve(walmart_orders::SECTION, &walmart_orders::DEFAULTS)
        .unwrap();
    let wr: walmart_returns::WalmartReturnsConfig =
        parse_section(walmart_returns::SECTION, one("walmart_returns")).unwrap();
    assert_eq!((wr.shop.as_str(), wr.limit), ("shop-002", 100));
    wr.pull
        .resolve(walmart_returns::SECTION, &walmart_orders::DEFAULTS)
        .unwrap();
    let wi: walmart_wfs_inventory::WalmartWfsInventoryConfig =
        parse_section(walmart_wfs_inventory::SECTION, one("walmart_wfs_inventory")).unwrap();
    assert_eq!(
        (wi.shop.as_str(), wi.limit, wi.location.as_str()),
        ("shop-002", 100, "WFS-US")
    );
    wi.pull
        .resolve(
            walmart_wfs_inventory::SECTION,
            &walmart_wfs_inventory::DEFAULTS,
        )
        .unwrap();
    let g = google_ads::GoogleAdsConfig::parse(one("google_ads")).unwrap();
    g.validate().unwrap();
    assert_eq!(g.platform.channel, kpiflow_schemas::Channel::Shopify);
    g.pull
        .resolve(google_ads::SECTION, &google_ads::DEFAULTS)
        .unwrap();
    let m = meta_ads::MetaAdsConfig::parse(one("meta_ads")).unwrap();
    m.validate().unwrap();
    assert_eq!(
        m.platform.purchase_action_type,
        "offsite_conversion.fb_pixel_purchase"
    );
    m.pull
        .resolve(meta_ads::SECTION, &meta_ads::DEFAULTS)
        .unwrap();
    let t = tiktok_ads::TiktokAdsConfig::parse(one("tiktok_ads")).unwrap();
    t.validate().unwrap();
    assert_eq!(t.platform.channel, kpiflow_schemas::Channel::TiktokShop);
    t.pull
        .resolve(tiktok_ads::SECTION, &tiktok_ads::DEFAULTS)
        .unwrap();
    let s: tiktok_shop_orders::TiktokShopOrdersConfig =
        parse_section(tiktok_shop_orders::SECTION, one("tiktok_shop_orders")).unwrap();
    s.pull
        .resolve(tiktok_shop_orders::SECTION, &tiktok_shop_orders::DEFAULTS)
        .unwrap();
    let tr: tiktok_shop_returns::TiktokShopReturnsConfig =
        parse_section(tiktok_shop_returns::SECTION, one("tiktok_shop_returns")).unwrap();
    assert_eq!((tr.shop.as_str(), tr.page_size), ("shop-004", 50));
    assert_eq!(
        tr.shop_cipher, s.shop_cipher,
        "the shop's orders and returns tables"
    );
    tr.pull
        .resolve(tiktok_shop_returns::SECTION, &tiktok_shop_orders::DEFAULTS)
        .unwrap();
    let w =
        walmart_connect_ads::WalmartConnectAdsConfig::parse(one("walmart_connect_ads")).unwrap();
    w.validate().unwrap();
    assert_eq!(
        (
            w.platform.advertiser_id.as_str(),
            w.attribution_window.as_str()
        ),
        ("600001", "14d")
    );
    w.pull
        .resolve(walmart_connect_ads::SECTION, &walmart_connect_ads::DEFAULTS)
        .unwrap();
    let documented: Vec<&String> = c.as_object().unwrap().keys().collect();
    assert_eq!(
        documented,
        [
            "amazon_ads",
            "amazon_fba_inventory",
            "amazon_sp_finances",
            "amazon_sp_orders",
            "amazon_sp_reports",
            "google_ads",
            "meta_ads",
            "tiktok_ads",
            "tiktok_shop_orders",
            "tiktok_shop_returns",
            "walmart_connect_ads",
            "walmart_orders",
            "walmart_returns",
            "walmart_wfs_inventory"
        ]
    );
}

#[test]
fn a_missing_credential_names_its_key_not_its_value() {
    let mut section = uncommented_connectors()["connectors"]["walmart_orders"][0].clone();
    section["auth"]["client_secret"] = "env:KPIFLOW_TEST_UNSET_WALMART_SECRET".into();
    let err = kpiflow_ingest::connector::build("walmart_orders", section)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("bad config: `connectors.walmart_orders.auth.client_id`")
            || err.starts_with("bad config: `connectors.walmart_orders.auth.client_secret`"),
        "{err}"
    );
    assert!(err.contains("is not set"), "{err}");
}
