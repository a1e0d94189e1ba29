//! A local SP-API for `amazon_sp_reports` (Reports 2021-06-30, getOrder, LWA), answering with
//! the recorded shapes under `fixtures/amazon_sp_reports/`; shared by the connector's tests
//! and the end-to-end test. Report n completes on its third status check; FBA reports'
//! documents are gzip, the others (the seller performance JSON too) plain.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::fixture::{Reply, Req, Server, fixture, fixture_with, lwa_token};

pub(crate) const C: &str = "amazon_sp_reports";
pub(crate) const TOKEN: &str = "/auth/o2/token";
pub(crate) const REPORTS: &str = "/reports/2021-06-30/reports";

/// A fault to inject: given the request and the count of API calls so far, maybe answer it.
type Fault = dyn Fn(&Req, usize) -> Option<Reply> + Send + Sync;

/// The orders getOrder knows: id, purchase date, fulfilment channel.
pub(crate) const ORDERS: [(&str, &str, &str); 4] = [
    ("113-1000001-0000001", "2026-11-02T17:03:00Z", "AFN"),
    ("113-1000002-0000002", "2026-11-03T01:30:00Z", "AFN"),
    ("113-2000001-0000001", "2026-11-04T16:00:00Z", "MFN"),
    ("113-2000002-0000002", "2026-11-05T06:45:00Z", "AFN"),
];

/// The document of a report type, and whether it is served gzip.
fn document(report_type: &str) -> (&'static str, bool) {
    match report_type {
        "GET_AMAZON_FULFILLED_SHIPMENTS_DATA_GENERAL" => ("fba-shipments.tsv", true),
        "GET_FBA_FULFILLMENT_CUSTOMER_RETURNS_DATA" => ("fba-returns.tsv", true),
        "GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE" => ("merchant-returns.tsv", false),
        "GET_SELLER_FEEDBACK_DATA" => ("seller-feedback.tsv", false),
        "GET_V2_SELLER_PERFORMANCE_REPORT" => ("seller-performance.json", false),
        other => panic!("unexpected reportType {other:?}"),
    }
}

/// Serves the API; `fault` may answer any call but the token endpoint first.
pub(crate) async fn server(
    fault: impl Fn(&Req, usize) -> Option<Reply> + Send + Sync + 'static,
) -> Server {
    let tokens = AtomicUsize::new(0);
    let calls = AtomicUsize::new(0);
    let polls: Mutex<BTreeMap<String, usize>> = Mutex::default();
    let created: Mutex<Vec<serde_json::Value>> = Mutex::default();
    let fault: Arc<Fault> = Arc::new(fault);
    Server::start(move |req| {
        if req.path == TOKEN {
            return lwa_token(req, tokens.fetch_add(1, Ordering::SeqCst) + 1);
        }
        if let Some(reply) = fault(req, calls.fetch_add(1, Ordering::SeqCst)) {
            return reply;
        }
        let host = req.header("host").to_string();
        let report_type = |n: usize| -> String {
            created.lock().unwrap()[n - 1]["reportType"]
                .as_str()
                .unwrap()
                .to_string()
        };
        if let Some(doc) = req.path.strip_prefix("/download/doc-") {
            assert_eq!(
                req.header("x-amz-access-token"),
                "",
                "pre-signed URLs get no token"
            );
            let (file, gzip) = document(&report_type(doc.parse().unwrap()));
            let body = fixture(C, file);
            let body = if gzip {
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&body).unwrap();
                gz.finish().unwrap()
            } else {
                body
            };
            return Reply {
                status: 200,
                headers: vec![("content-type", "text/plain; charset=UTF-8".into())],
                body,
            };
        }
        assert!(
            req.header("x-amz-access-token").starts_with("Atza|token-"),
            "{} {:?}",
            req.path,
            req.headers
        );
        if req.method.as_str() == "POST" && req.path == REPORTS {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let mut created = created.lock().unwrap();
            created.push(body);
            let id = format!("rep-{}", created.len());
            // createReport answers 202 Accepted.
            return Reply::status(
                202,
                fixture_with(C, "create-report.json", &[("report", &id)]),
            );
        }
        if let Some(id) = req.path.strip_prefix(&format!("{REPORTS}/")) {
            let n: usize = id.trim_start_matches("rep-").parse().unwrap();
            let body = created.lock().unwrap()[n - 1].clone();
            let mut polls = polls.lock().unwrap();
            let seen = polls.entry(id.to_string()).or_default();
            *seen += 1;
            let name = match *seen {
                1 => "report-in-queue.json",
                2 => "report-in-progress.json",
                _ => "report-done.json",
            };
            return report(name, id, &body);
        }
        if let Some(doc) = req.path.strip_prefix("/reports/2021-06-30/documents/") {
            let n: usize = doc.trim_start_matches("doc-").parse().unwrap();
            let name = if document(&report_type(n)).1 {
                "document-gzip.json"
            } else {
                "document-plain.json"
            };
            let url = format!("http://{host}/download/{doc}");
            return Reply::json(fixture_with(C, name, &[("document", doc), ("url", &url)]));
        }
        if let Some(order) = req.path.strip_prefix("/orders/v0/orders/") {
            return match ORDERS.iter().find(|(id, _, _)| *id == order) {
                Some((id, at, channel)) => Reply::json(fixture_with(
                    C,
                    "order.json",
                    &[("order", id), ("purchaseDate", at), ("channel", channel)],
                )),
                None => Reply::status(404, fixture(C, "error-404.json")),
            };
        }
        Reply::status(404, format!("no route {}", req.path))
    })
    .await
}

/// A getReport answer from fixture `name` for report `id` created with `body`.
pub(crate) fn report(name: &str, id: &str, body: &serde_json::Value) -> Reply {
    let doc = id.replace("rep-", "doc-");
    let s = |k: &str| body[k].as_str().unwrap().to_string();
    Reply::json(fixture_with(
        C,
        name,
        &[
            ("report", id),
            ("document", &doc),
            ("reportType", &s("reportType")),
            ("dataStartTime", &s("dataStartTime")),
            ("dataEndTime", &s("dataEndTime")),
        ],
    ))
}
