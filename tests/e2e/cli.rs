//! The `kpiflow` binary without a broker: `check-config` refusing bad connector tables the way
//! `ingest` would, `backfill` serving /metrics on the port `--metrics-listen` gives it, and
//! `query` naming (or with `--skip-unreadable`, skipping) a damaged Parquet file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::crash::KillOnDrop;

/// The LWA credentials the tables below reference, and the values the tests give them.
const LWA_ENV: [(&str, &str); 3] = [
    (
        "KPIFLOW_TEST_CLI_LWA_ID",
        "amzn1.application-oa2-client.test",
    ),
    ("KPIFLOW_TEST_CLI_LWA_SECRET", "test-secret"),
    ("KPIFLOW_TEST_CLI_LWA_REFRESH", "Atzr|test-refresh"),
];

/// A valid `[[connectors.amazon_sp_orders]]` table; each test breaks one thing in it.
const GOOD_TABLE: &str = r#"
[[connectors.amazon_sp_orders]]
shop = "shop-001"
[connectors.amazon_sp_orders.pull]
base_url = "http://127.0.0.1:9/"
interval = "5m"
[connectors.amazon_sp_orders.auth]
client_id = "env:KPIFLOW_TEST_CLI_LWA_ID"
client_secret = "env:KPIFLOW_TEST_CLI_LWA_SECRET"
refresh_token = "env:KPIFLOW_TEST_CLI_LWA_REFRESH"
"#;

pub(crate) fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("kpiflow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `kpiflow` with `args` and only the LWA variables of this test set (the override
/// variables of the caller's shell removed).
pub(crate) fn kpiflow(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kpiflow"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("KPIFLOW_BOOTSTRAP")
        .env_remove("KPIFLOW_METRICS_LISTEN")
        .env_remove("KPIFLOW_TEST_CLI_UNSET")
        .envs(LWA_ENV);
    cmd
}

/// Runs `kpiflow check-config` on `text`: (success, stdout, stderr).
fn check_config(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), text);
    let Output {
        status,
        stdout,
        stderr,
    } = kpiflow(&config, &["check-config"]).output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Asserts `check-config` fails on `text` with `expected` in its error line.
fn assert_refused(text: &str, expected: &str) {
    let (ok, stdout, stderr) = check_config(text);
    assert!(!ok, "accepted:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("configuration OK"), "{stdout}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

#[test]
fn check_config_accepts_a_good_connector_table() {
    let (ok, stdout, stderr) = check_config(GOOD_TABLE);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "configuration OK (1 connector tables checked)\n");
}

#[test]
fn check_config_refuses_an_unknown_key_naming_it() {
    assert_refused(
        &GOOD_TABLE.replace("interval = \"5m\"", "intervall = \"5m\""),
        "error: building connectors.amazon_sp_orders[0]: bad config: \
         `connectors.amazon_sp_orders.pull.intervall` = (not read): unknown field `intervall`, \
         expected one of",
    );
}

#[test]
fn check_config_refuses_a_misspelt_shop_naming_it() {
    assert_refused(
        &GOOD_TABLE.replace("shop = \"shop-001\"", "shpo = \"shop-001\""),
        "error: building connectors.amazon_sp_orders[0]: bad config: \
         `connectors.amazon_sp_orders.shpo` = (not read): unknown field `shpo`, expected one of \
         `shop`,",
    );
}

#[test]
fn check_config_refuses_a_url_without_a_scheme_quoting_it() {
    assert_refused(
        &GOOD_TABLE.replace("http://127.0.0.1:9/", "sellingpartnerapi-na.amazon.com"),
        "error: building connectors.amazon_sp_orders[0]: bad config: \
         `connectors.amazon_sp_orders.pull.base_url` = \"sellingpartnerapi-na.amazon.com\": \
         not a URL: relative URL without a base",
    );
}

#[test]
fn check_config_refuses_an_unset_env_secret_naming_the_variable() {
    assert_refused(
        &GOOD_TABLE.replace(
            "env:KPIFLOW_TEST_CLI_LWA_SECRET",
            "env:KPIFLOW_TEST_CLI_UNSET",
        ),
        "error: building connectors.amazon_sp_orders[0]: bad config: \
         `connectors.amazon_sp_orders.auth.client_secret` = \"env:KPIFLOW_TEST_CLI_UNSET\": \
         environment variable KPIFLOW_TEST_CLI_UNSET is not set",
    );
    // The webhook receivers read their secret only when they bind; ingest checks it when the
    // table is built, so check-config sees it too.
    assert_refused(
        r#"
[[connectors.shopify_webhook]]
client_secret = "env:KPIFLOW_TEST_CLI_UNSET"
[connectors.shopify_webhook.shops."acme.myshopify.com"]
shop = "shop-003"
"#,
        "error: building connectors.shopify_webhook[0]: bad config: \
         `connectors.shopify_webhook.client_secret` = \"env:KPIFLOW_TEST_CLI_UNSET\": \
         environment variable KPIFLOW_TEST_CLI_UNSET is not set",
    );
}

/// A port nothing listens on (bound, read, released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0: the whole response, or `None` while nothing answers.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Everything an exited `child` (spawned with a piped stderr) wrote to stderr.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// A 200 answer.
fn ok(response: &str) -> bool {
    response
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("HTTP/1.") && l.ends_with(" 200 OK"))
}

#[test]
fn backfill_serves_metrics_on_the_port_metrics_listen_gives_it() {
    // A "broker" that accepts connections and never answers: the backfill blocks creating
    // its topics, running, for as long as the test needs it.
    let broker = TcpListener::bind("127.0.0.1:0").unwrap();
    // `[metrics] listen` is taken (another role of the host): without the override the
    // backfill could not bind it and would exit.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n[metrics]\nlisten = \"{}\"\n{GOOD_TABLE}",
            broker.local_addr().unwrap(),
            taken.local_addr().unwrap()
        ),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = addr.to_string();
    let mut child = KillOnDrop(
        kpiflow(
            &config,
            &[
                "backfill",
                "amazon_sp_orders",
                "--shop",
                "shop-001",
                "--from",
                "2026-11-01",
                "--to",
                "2026-11-02",
                "--metrics-listen",
                &listen,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = stderr_of(&mut child);
            panic!("the backfill exited ({status}) before serving /metrics:\n{err}");
        }
        // /metrics answers as soon as the endpoint is bound. /readyz waits for the publisher
        // (set up a moment later) and for the broker, which never answers: await the answer
        // naming the broker alone, the publisher being ready.
        if let (Some(m), Some(r)) = (get(addr, "/metrics"), get(addr, "/readyz"))
            && r.ends_with("\r\n\r\nnot ready: kafka\n")
        {
            break (m, r);
        }
        assert!(
            Instant::now() < deadline,
            "no /metrics and no /readyz waiting for the broker alone on {addr} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (metrics, ready) = metrics;
    drop(child);
    assert!(ok(&metrics), "{metrics}");
    assert!(
        metrics.contains(
            "kpiflow_source_records_published_total{connector=\"amazon_sp_orders\",shop=\"shop-001\"} 0"
        ),
        "{metrics}"
    );
    assert!(
        ready.starts_with("HTTP/1.") && ready.contains(" 503 "),
        "{ready}"
    );
    drop((broker, taken));
}

/// SIGTERM is answered within `<role>.shutdown_timeout` whatever the stage is doing — here
/// waiting for a broker that accepts connections and never answers, which the processor and
/// the sink would wait for 60 s before failing (the sink took 56 s to answer SIGTERM).
#[test]
fn stages_stuck_on_a_silent_broker_exit_within_shutdown_timeout_of_sigterm() {
    let broker = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let stages = [
        (
            "process",
            format!(
                "[processor]\nshutdown_timeout = \"2s\"\n[processor.checkpoint]\ndir = \"{}\"\n",
                state.display()
            ),
        ),
        (
            "sink",
            format!(
                "[sink]\nshutdown_timeout = \"2s\"\ndir = \"{}\"\n",
                dir.path().join("tables").display()
            ),
        ),
        (
            "alerts",
            "[alerts]\nshutdown_timeout = \"2s\"\n[alerts.alertmanager]\nenabled = true\n".into(),
        ),
    ];
    for (command, section) in stages {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = write_config(
            dir.path(),
            &format!(
                "[kafka]\nbootstrap_servers = \"{}\"\n[metrics]\nlisten = \"{addr}\"\n{section}",
                broker.local_addr().unwrap(),
            ),
        );
        let mut child = KillOnDrop(
            kpiflow(&config, &[command])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // /metrics is served once the signal handler is installed (it is set up first).
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(addr, "/metrics").is_none_or(|m| !ok(&m)) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "kpiflow {command} exited"
            );
            assert!(
                Instant::now() < deadline,
                "kpiflow {command}: no /metrics on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let signalled = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if signalled.elapsed() > Duration::from_secs(15) {
                panic!(
                    "kpiflow {command} still running 15 s after SIGTERM, with shutdown_timeout 2s"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = signalled.elapsed();
        let err = stderr_of(&mut child);
        let key = if command == "process" {
            "processor"
        } else {
            command
        };
        assert_eq!(status.code(), Some(3), "kpiflow {command}: {err}");
        assert!(
            took >= Duration::from_secs(2),
            "kpiflow {command} exited after {took:?}"
        );
        assert!(
            err.contains(&format!(
                "not stopped within {key}.shutdown_timeout of the signal"
            )),
            "kpiflow {command}: {err}"
        );
    }
    drop(broker);
}

#[test]
fn ingest_help_lists_every_connector_a_table_may_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_kpiflow"))
        .args(["ingest", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    // Written out, not read from the registry: a connector dropped from the help fails here.
    for name in [
        "simulator",
        "amazon_sp_orders",
        "amazon_fba_inventory",
        "amazon_sp_reports",
        "amazon_sp_finances",
        "amazon_ads",
        "google_ads",
        "meta_ads",
        "tiktok_ads",
        "walmart_orders",
        "walmart_returns",
        "walmart_wfs_inventory",
        "walmart_connect_ads",
        "shopify_webhook",
        "shopify_orders",
        "shopify_returns",
        "tiktok_shop_orders",
        "tiktok_shop_returns",
        "threepl",
        "aftership_webhook",
        "track17_webhook",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} "))),
            "{name} missing from `kpiflow ingest --help`:\n{help}"
        );
    }
}

#[test]
fn query_names_an_unreadable_file_and_skips_it_with_skip_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let tables = dir.path().join("tables");
    let gmv = super::gmv_fixture();
    // One sound file (the gmv fixture row, revision 3) and one that is not Parquet at all.
    kpiflow_sink::parquet::write_rows(&tables, &[gmv], kpiflow_sink::Compression::Zstd).unwrap();
    let bad = tables.join("kpi_values/date=2025-03-14/part-bad.parquet");
    std::fs::write(&bad, b"PAR1 cut short").unwrap();
    let bad = std::path::absolute(&bad).unwrap().display().to_string();
    let sql = "SELECT kpi, revision FROM kpi_values";
    let dir_arg = tables.to_str().unwrap();

    let out = kpiflow(
        &config,
        &["query", "--dir", dir_arg, "--format", "csv", sql],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot read 1 Parquet file: {bad} (")),
        "{stderr}"
    );
    assert!(stderr.contains("--skip-unreadable"), "{stderr}");

    let out = kpiflow(
        &config,
        &[
            "query",
            "--dir",
            dir_arg,
            "--format",
            "csv",
            "--skip-unreadable",
            sql,
        ],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    // The CSV stays clean on stdout (println adds the last newline); the note is on stderr.
    assert_eq!(stdout, "kpi,revision\ngmv,3\n\n");
    assert!(
        stderr.contains(&format!(
            "skipped 1 unreadable Parquet file (their rows are missing from this answer): {bad} ("
        )),
        "{stderr}"
    );
}
