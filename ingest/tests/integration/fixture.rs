//! A local HTTP server that answers like a platform API: each test scripts the answers (from
//! the recorded responses under `ingest/fixtures/<connector>/`) and reads back what was asked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kpiflow_ingest::pull::{LwaConfig, PullSettings, RateLimit, RetryPolicy, SecretRef};

/// A request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: BTreeMap<String, String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Req {
    /// A header's value, or "".
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// A query parameter, or "".
    pub(crate) fn q(&self, key: &str) -> &str {
        self.query.get(key).map(String::as_str).unwrap_or_default()
    }

    /// The form fields of an `application/x-www-form-urlencoded` body.
    pub(crate) fn form(&self) -> BTreeMap<String, String> {
        let url = format!("http://x/?{}", String::from_utf8_lossy(&self.body));
        reqwest::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// 200 with a JSON body.
    pub(crate) fn json(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: body.into(),
        }
    }

    /// A status with a JSON body.
    pub(crate) fn status(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            ..Reply::json(body)
        }
    }

    /// Adds a header.
    pub(crate) fn with(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

/// A running fixture server.
pub(crate) struct Server {
    pub(crate) url: String,
    requests: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    /// Serves `handler` on a free local port until the test's runtime ends.
    pub(crate) async fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
        let requests: Arc<Mutex<Vec<Req>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let log = requests.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (handler, log) = (handler.clone(), log.clone());
                async move {
                    let query = reqwest::Url::parse(&format!("http://x{uri}"))
                        .unwrap()
                        .query_pairs()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    let req = Req {
                        method,
                        path: uri.path().to_string(),
                        query,
                        headers,
                        body: body.to_vec(),
                    };
                    let reply = handler(&req);
                    log.lock().unwrap().push(req);
                    let mut resp: Response =
                        (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
                    for (k, v) in reply.headers {
                        resp.headers_mut().insert(k, v.parse().unwrap());
                    }
                    resp
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { url, requests }
    }

    /// Every request so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests to `path`.
    pub(crate) fn requests_to(&self, path: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// A recorded response: `ingest/fixtures/<connector>/<name>`.
pub(crate) fn fixture(connector: &str, name: &str) -> Vec<u8> {
    // `ingest/fixtures`, whether these tests run in the ingest crate or in the workspace's
    // end-to-end test (which includes this file).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = if root.join("fixtures").is_dir() {
        root.join("fixtures")
    } else {
        root.join("ingest/fixtures")
    };
    let path = dir.join(connector).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A recorded response as text, with `{key}` placeholders filled in.
pub(crate) fn fixture_with(connector: &str, name: &str, vars: &[(&str, &str)]) -> Vec<u8> {
    let mut text = String::from_utf8(fixture(connector, name)).unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    text.into_bytes()
}

/// Pull settings pointing at `server`, with fast retries and a client-side limit too generous
/// to matter, storing cursors under `cursor_dir`.
pub(crate) fn pull_settings(server: &Server, cursor_dir: &std::path::Path) -> PullSettings {
    PullSettings {
        base_url: Some(server.url.clone()),
        cursor_dir: Some(cursor_dir.to_path_buf()),
        rate_limit: Some(RateLimit {
            rate: 1000.0,
            burst: 1000,
        }),
        retry: Some(RetryPolicy {
            max_attempts: 4,
            initial_backoff: std::time::Duration::from_millis(20),
            max_backoff: std::time::Duration::from_millis(100),
            ..RetryPolicy::default()
        }),
        ..PullSettings::default()
    }
}

/// A fresh 2048-bit RSA private key (PKCS#8 PEM, `BEGIN PRIVATE KEY`) made by `openssl` for
/// this run, so no private key is committed (Walmart Connect's request signatures).
pub(crate) fn rsa_private_key() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Writes `value` to `dir/name` and returns a `file:` reference to it (tests cannot set
/// environment variables: `unsafe` is forbidden).
pub(crate) fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> SecretRef {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    SecretRef::File(path)
}

pub(crate) const LWA_CLIENT_ID: &str = "amzn1.application-oa2-client.test";
pub(crate) const LWA_CLIENT_SECRET: &str = "test-client-secret";
pub(crate) const LWA_REFRESH_TOKEN: &str = "Atzr|test-refresh-token";

/// LWA credentials in files under `dir`; the token endpoint is `server`'s `/auth/o2/token`.
pub(crate) fn lwa(server: &Server, dir: &std::path::Path) -> LwaConfig {
    LwaConfig {
        token_url: Some(format!("{}/auth/o2/token", server.url)),
        client_id: secret_file(dir, "client_id", LWA_CLIENT_ID),
        client_secret: secret_file(dir, "client_secret", LWA_CLIENT_SECRET),
        refresh_token: secret_file(dir, "refresh_token", LWA_REFRESH_TOKEN),
        refresh_margin: std::time::Duration::from_secs(60),
    }
}

/// Answers an LWA token request with `fixtures/lwa/token.json`, the n-th token being
/// `Atza|token-n`; checks the grant on the way.
pub(crate) fn lwa_token(req: &Req, n: usize) -> Reply {
    let form = req.form();
    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("refresh_token").map(String::as_str) == Some(LWA_REFRESH_TOKEN)
        && form.get("client_id").map(String::as_str) == Some(LWA_CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(LWA_CLIENT_SECRET);
    if !ok {
        return Reply::status(400, fixture("lwa", "invalid-grant.json"));
    }
    token_json("lwa", "Atza|token-", n)
}

/// `fixtures/<connector>/token.json` handing out the n-th token, `<prefix><n>`.
pub(crate) fn token_json(connector: &str, prefix: &str, n: usize) -> Reply {
    Reply::json(fixture_with(
        connector,
        "token.json",
        &[("token", &format!("{prefix}{n}"))],
    ))
}

/// A fresh shop id, so each test's per-shop metric series start at zero.
pub(crate) fn shop() -> String {
    format!("shop-{}", uuid::Uuid::new_v4())
}

/// The ids of the business events (heartbeats left out), in publish order.
pub(crate) fn ids(events: &[kpiflow_schemas::Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.schema() != "source.heartbeat")
        .map(|e| e.header.event_id.clone())
        .collect()
}

/// The `ad.performance` events with their ids, in publish order.
pub(crate) fn ad_rows(
    events: &[kpiflow_schemas::Event],
) -> Vec<(String, kpiflow_schemas::AdPerformance)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            kpiflow_schemas::EventBody::AdPerformance(a) => {
                Some((e.header.event_id.clone(), a.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The `ad.performance` events alone, in publish order.
pub(crate) fn ads(events: &[kpiflow_schemas::Event]) -> Vec<kpiflow_schemas::AdPerformance> {
    ad_rows(events).into_iter().map(|(_, a)| a).collect()
}

/// Whether `req` carries TikTok Shop's signature made with `secret`: the server's own check,
/// written from the documented recipe (see `tiktok_shop_orders::api`), not the connector's.
pub(crate) fn tiktok_signature_ok(req: &Req, secret: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let mut params: Vec<(&String, &String)> = req
        .query
        .iter()
        .filter(|(k, _)| *k != "sign" && *k != "access_token")
        .collect();
    params.sort();
    let mut text = req.path.clone();
    for (k, v) in params {
        text.push_str(k);
        text.push_str(v);
    }
    text.push_str(&String::from_utf8_lossy(&req.body));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{secret}{text}{secret}").as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    req.q("sign") == want
}

/// TikTok Shop's Get Order Detail (`GET /order/202309/orders?ids=a,b`) over the orders of
/// `tiktok_shop_returns/orders-detail.json`: those whose id was asked for, the others left
/// out (as TikTok leaves out ids it does not know).
pub(crate) fn tiktok_order_detail(req: &Req) -> Reply {
    let asked: Vec<&str> = req.q("ids").split(',').collect();
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("tiktok_shop_returns", "orders-detail.json")).unwrap();
    v["data"]["orders"]
        .as_array_mut()
        .unwrap()
        .retain(|o| asked.contains(&o["id"].as_str().unwrap()));
    Reply::json(v.to_string())
}
