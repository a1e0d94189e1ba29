//! A local SP-API for `amazon_sp_finances` (Finances v0 listFinancialEvents, getOrder, LWA),
//! answering with the recorded shapes under `fixtures/amazon_sp_finances/`; shared by the
//! connector's tests and the end-to-end test. Two pages: the first asked by date range, the
//! second by its NextToken alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::fixture::{Reply, Req, Server, fixture, fixture_with, lwa_token};

pub(crate) const C: &str = "amazon_sp_finances";
pub(crate) const TOKEN: &str = "/auth/o2/token";
pub(crate) const EVENTS: &str = "/finances/v0/financialEvents";
/// The NextToken page 1 hands out.
pub(crate) const NEXT: &str = "2YgYW55IGNhcm5hbCBwbGVhc3VyZS4";

/// A fault to inject: given the request and the count of API calls so far, maybe answer it.
type Fault = dyn Fn(&Req, usize) -> Option<Reply> + Send + Sync;

/// The orders getOrder knows: id, purchase date, fulfilment channel.
pub(crate) const ORDERS: [(&str, &str, &str); 4] = [
    ("113-3000001-0000001", "2026-11-02T17:03:00Z", "AFN"),
    ("113-3000002-0000002", "2026-11-03T01:30:00Z", "MFN"),
    ("113-3000003-0000003", "2026-11-04T16:00:00Z", "AFN"),
    ("113-3000004-0000004", "2026-11-05T06:45:00Z", "MFN"),
];

/// Serves the API; `fault` may answer any call but the token endpoint first.
pub(crate) async fn server(
    fault: impl Fn(&Req, usize) -> Option<Reply> + Send + Sync + 'static,
) -> Server {
    let tokens = AtomicUsize::new(0);
    let calls = AtomicUsize::new(0);
    let fault: Arc<Fault> = Arc::new(fault);
    Server::start(move |req| {
        if req.path == TOKEN {
            return lwa_token(req, tokens.fetch_add(1, Ordering::SeqCst) + 1);
        }
        if let Some(reply) = fault(req, calls.fetch_add(1, Ordering::SeqCst)) {
            return reply;
        }
        assert!(
            req.header("x-amz-access-token").starts_with("Atza|token-"),
            "{} {:?}",
            req.path,
            req.headers
        );
        if req.path == EVENTS {
            return match req.q("NextToken") {
                "" => {
                    for k in ["PostedAfter", "PostedBefore", "MaxResultsPerPage"] {
                        assert!(!req.q(k).is_empty(), "{k} missing: {:?}", req.query);
                    }
                    Reply::json(fixture_with(
                        C,
                        "financial-events-page-1.json",
                        &[("next", NEXT)],
                    ))
                }
                NEXT => {
                    assert_eq!(req.query.len(), 1, "the token alone: {:?}", req.query);
                    Reply::json(fixture(C, "financial-events-page-2.json"))
                }
                other => Reply::status(400, format!("unknown NextToken {other:?}")),
            };
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
