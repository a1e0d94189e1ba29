//! The Shopify, 3PL and carrier tracking part of the documented example config: its commented-out tables,
//! uncommented, build into connectors, so the documentation cannot drift from the code.

/// The `[[connectors.*]]` examples between the Shopify/3PL marker and the pull marker, with
/// their `# ` removed.
fn uncommented() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/kpiflow.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("# ─── Shopify and 3PL connectors")
        .expect("the Shopify and 3PL part");
    let end = text.find("# ─── Pull connectors").expect("the pull part");
    let toml: String = text[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with('[')
                || l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let v: toml::Value = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    serde_json::to_value(v).unwrap()
}

/// `v` with every `env:NAME` credential reference replaced by `file:<secret>`.
fn with_secret_file(v: &mut serde_json::Value, secret: &std::path::Path) {
    match v {
        serde_json::Value::String(s) if s.starts_with("env:") => {
            *s = format!("file:{}", secret.display());
        }
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| with_secret_file(x, secret)),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| with_secret_file(x, secret)),
        _ => {}
    }
}

#[test]
fn every_documented_shopify_and_3pl_key_builds() {
    let mut v = uncommented();
    // Building checks that each credential can be read (and binds nothing): point the
    // documented `env:` references at a file instead of setting variables.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    with_secret_file(&mut v, &secret);
    let c = v["connectors"].as_object().unwrap();
    let names: Vec<&String> = c.keys().collect();
    assert_eq!(
        names,
        [
            "aftership_webhook",
            "shopify_orders",
            "shopify_returns",
            "shopify_webhook",
            "threepl",
            "track17_webhook"
        ]
    );
    for (name, tables) in c {
        let tables = tables.as_array().expect("[[connectors.<name>]] tables");
        assert_eq!(tables.len(), 1, "{name}");
        let built = kpiflow_ingest::connector::build(name, tables[0].clone())
            .unwrap_or_else(|e| panic!("connectors.{name}: {e}"));
        assert_eq!(built.name(), name);
    }
    let hook = &c["shopify_webhook"][0];
    assert_eq!(hook["ack_deadline"], "4s");
    assert_eq!(
        hook["shops"]["acme-ceramics.myshopify.com"]["shop"],
        "shop-003"
    );
    assert_eq!(
        hook["shops"]["acme-ceramics.myshopify.com"]["delivery_time"],
        "5days"
    );
    assert_eq!(c["shopify_orders"][0]["delivery_time"], "5days");
    assert_eq!(c["threepl"][0]["drop"]["settle_time"], "10s");
    assert_eq!(c["shopify_orders"][0]["page_size"], 250);
    let r =
        kpiflow_ingest::connectors::shopify::ReturnsConfig::from_value(&c["shopify_returns"][0])
            .unwrap();
    assert_eq!(
        (r.page_size, r.returns_per_order, r.lines_per_return),
        (10, 5, 10),
        "the example shows the defaults"
    );
    assert_eq!(
        c["aftership_webhook"][0]["signature_header"],
        "aftership-hmac-sha256"
    );
    assert_eq!(c["track17_webhook"][0]["fulfilment"], "third_party");
}
