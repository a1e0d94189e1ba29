//! Every metric the Grafana dashboards and Prometheus rules use is one kpiflow exports.
//!
//! Called at the end of the end-to-end run, when the simulator, the processor and the sink
//! have all reported into this process's registry: the names come from a real scrape of
//! kpiflow's `/metrics` endpoint, not from the list of definitions.

use std::collections::BTreeSet;
use std::path::Path;

use kpiflow_core::metrics::{self, Readiness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Metric names in a Prometheus text exposition (histograms give `_bucket`, `_sum`, `_count`).
fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// `kpiflow_…` and `kpiflow:…` names in a query, outside quoted strings.
fn referenced(query: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quote: Option<char> = None;
    for c in query.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => unquoted.push(c),
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("kpiflow_") || t.starts_with("kpiflow:"))
        .map(str::to_string)
        .collect()
}

fn strings_under(v: &serde_json::Value, keys: &[&str], out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) if keys.contains(&k.as_str()) => {
                        out.push(s.clone())
                    }
                    _ => strings_under(v, keys, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings_under(v, keys, out)),
        _ => {}
    }
}

async fn scrape() -> String {
    let stop = CancellationToken::new();
    let (addr, task) = metrics::serve(
        ([127, 0, 0, 1], 0).into(),
        Readiness::default(),
        stop.clone(),
    )
    .await
    .unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    stop.cancel();
    task.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Panics naming every dashboard or rule reference to a metric kpiflow did not export.
pub(crate) async fn assert_deploy_uses_exported_metrics() {
    let exported = exposed_names(&scrape().await);
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let rules_text = std::fs::read_to_string(deploy.join("prometheus/rules.yml")).unwrap();
    let recorded: BTreeSet<String> = rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_string())
        .collect();
    assert!(!recorded.is_empty(), "rules.yml records nothing?");
    let known = |name: &str| exported.contains(name) || recorded.contains(name);

    let mut sources: Vec<(String, String)> = rules_text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim_start().starts_with("- record:"))
        .map(|l| ("prometheus/rules.yml".to_string(), l.to_string()))
        .collect();
    let mut boards = 0;
    for entry in std::fs::read_dir(deploy.join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut queries = Vec::new();
        strings_under(&board, &["expr", "query", "definition"], &mut queries);
        let name = format!(
            "grafana/dashboards/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        sources.extend(queries.into_iter().map(|q| (name.clone(), q)));
        boards += 1;
    }
    assert!(boards >= 6, "only {boards} dashboards");
    let mut used = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for (file, query) in &sources {
        for name in referenced(query) {
            if !known(&name) {
                missing.insert(format!("{file}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/ uses metrics kpiflow does not export:\n{}\nexported: {exported:?}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
    // Not vacuous: the KPI gauges and the pipeline counters are among those checked.
    for must in [
        "kpiflow_kpi_value",
        "kpiflow_events_received_total",
        "kpiflow_breaches_open",
    ] {
        assert!(used.contains(must), "no dashboard uses {must}");
    }
}

/// The values a query matches `label` exactly against (`label="value"`; `=~` regexes and
/// Grafana variables are not literal names).
fn literal_label_values(query: &str, label: &str) -> Vec<String> {
    let needle = format!("{label}=\"");
    query
        .match_indices(&needle)
        .filter(|(at, _)| {
            // Not the tail of a longer label name (`sub_kpi="…"`).
            query[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
        })
        .filter_map(|(at, _)| query[at + needle.len()..].split('"').next())
        .filter(|v| !v.starts_with('$'))
        .map(str::to_string)
        .collect()
}

/// Every KPI and window a dashboard names literally is one the processor publishes: a
/// catalog KPI or window, or an Amazon account-health cross-check (`<kpi>_vs_amazon` over
/// `amazon_reporting_range`). A misspelt KPI draws an empty panel, which no one notices.
#[test]
fn dashboards_name_kpis_and_windows_the_processor_publishes() {
    use kpiflow_processor::catalog::Catalog;
    use kpiflow_processor::rule::crosscheck;
    let catalog = Catalog::builtin();
    let mut kpis: BTreeSet<String> = catalog.kpis.iter().map(|k| k.id.clone()).collect();
    kpis.extend(
        crosscheck::CHECKED_KPIS
            .iter()
            .map(|k| format!("{k}{}", crosscheck::SUFFIX)),
    );
    let mut windows: BTreeSet<String> = catalog.windows.iter().map(|w| w.name.clone()).collect();
    windows.insert(crosscheck::WINDOW.to_string());

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards");
    let mut named = BTreeSet::new();
    let mut unknown = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut queries = Vec::new();
        strings_under(&board, &["expr", "query", "definition"], &mut queries);
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for q in &queries {
            for (label, known) in [("kpi", &kpis), ("window", &windows)] {
                for v in literal_label_values(q, label) {
                    if !known.contains(&v) {
                        unknown.push(format!("{file}: {label}=\"{v}\""));
                    }
                    named.insert(v);
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "dashboards name what the processor never publishes:\n{}",
        unknown.join("\n")
    );
    // The account-health row has a panel for every cross-check family.
    for k in crosscheck::CHECKED_KPIS {
        let id = format!("{k}_vs_amazon");
        assert!(named.contains(&id), "no panel for {id}");
    }
    assert!(named.contains("amazon_reporting_range"));
}

#[test]
fn literal_label_values_skip_regexes_variables_and_longer_names() {
    let q = r#"kpiflow_kpi_value{kpi="gmv", window=~"$window", sub_kpi="x"} or on() kpiflow_kpi_value{kpi="$kpi",window="business_day"}"#;
    assert_eq!(literal_label_values(q, "kpi"), ["gmv"]);
    assert_eq!(literal_label_values(q, "window"), ["business_day"]);
}

#[test]
fn names_are_read_outside_quotes() {
    let q = r#"sum by (kpi) (kpiflow_kpi_value{job="kpiflow_x", kpi=~'kpiflow_y'}) / kpiflow:kpi_ratio:by_channel"#;
    let got: Vec<String> = referenced(q).into_iter().collect();
    assert_eq!(got, ["kpiflow:kpi_ratio:by_channel", "kpiflow_kpi_value"]);
    let text = "# HELP a b\nkpiflow_a{x=\"1\"} 2\nkpiflow_b_bucket{le=\"1\"} 3\nkpiflow_c 1\n";
    let names: Vec<String> = exposed_names(text).into_iter().collect();
    assert_eq!(names, ["kpiflow_a", "kpiflow_b_bucket", "kpiflow_c"]);
}
