//! What the TikTok Shop Partner API connectors share: the signed request, the
//! `x-tts-access-token` client and the `{code, message, data}` answer envelope.
//!
//! The signature (as understood from "Sign your API request", not recorded traffic): the
//! query parameters except `sign` and `access_token`, sorted by key and written `key` +
//! `value`, after the request path, followed by the body; that string wrapped in the app
//! secret on both sides; HMAC-SHA256 keyed with the app secret, lower-case hex. `timestamp`
//! is Unix seconds (TikTok allows a few minutes of skew; a retry keeps the first attempt's
//! signature). Every answer carries `code` (0 = OK) and `message`; a non-zero code fails the
//! sync naming both. Token refresh (TikTok's own `/api/v2/token/refresh`, not OAuth) is not
//! implemented: refresh the token out of band.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use kpiflow_core::SourceMetrics;
use reqwest::header::HeaderName;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::IngestError;
use crate::map::{MapError, Record};
use crate::pull::{
    HttpClient, Pull, PullSettings, Request, Secret, SecretRef, StaticToken, TokenHeader, Window,
};

fn d_page_size() -> u32 {
    50
}

/// One `[[connectors.tiktok_shop_orders]]` or `[[connectors.tiktok_shop_returns]]` table:
/// one TikTok Shop (shop). Both take the same keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiktokShopConfig {
    /// The shop id events carry (the Kafka key); the same in the shop's orders and returns
    /// tables.
    pub shop: String,
    /// The shop's `shop_cipher` (from Get Authorized Shops).
    pub shop_cipher: String,
    /// Orders or returns per page, 1 to 100. Default `50`.
    #[serde(default = "d_page_size")]
    pub page_size: u32,
    /// The app key (`env:NAME` or `file:/path`).
    pub app_key: SecretRef,
    /// The app secret, the signing key (`env:NAME` or `file:/path`).
    pub app_secret: SecretRef,
    /// The shop's access token (`env:NAME` or `file:/path`).
    pub access_token: SecretRef,
    /// Polling, HTTP and cursor settings (defaults: every 5 minutes, 15 minutes overlap, 5
    /// requests a second).
    #[serde(default)]
    pub pull: PullSettings,
}

/// A signed client of one shop: every call carries `app_key`, `timestamp`, `shop_cipher`
/// and `sign`, the token in `x-tts-access-token`.
pub struct ShopApi {
    connector: &'static str,
    app_key: Secret,
    app_secret: Secret,
    shop_cipher: String,
    http: HttpClient,
}

impl ShopApi {
    /// Checks `keys` (keys named under `section`), reads the credentials and builds the
    /// client of connector `name` with `pull` (its resolved settings); also returns its
    /// metrics.
    pub fn new(
        name: &'static str,
        section: &str,
        keys: &TiktokShopConfig,
        pull: &Pull,
    ) -> Result<(ShopApi, SourceMetrics), IngestError> {
        let key = |k: &str| format!("{section}.{k}");
        crate::pull::settings::non_empty(&key("shop"), &keys.shop)?;
        crate::pull::settings::non_empty(&key("shop_cipher"), &keys.shop_cipher)?;
        if !(1..=100).contains(&keys.page_size) {
            return Err(IngestError::config(
                key("page_size"),
                keys.page_size,
                "must be between 1 and 100",
            ));
        }
        let metrics = SourceMetrics::new(name, &keys.shop);
        let token = keys.access_token.resolve(&key("access_token"))?;
        let http = HttpClient::new(name, pull.http.clone(), metrics.clone())?.with_token(
            Arc::new(StaticToken(token)),
            TokenHeader::Named(HeaderName::from_static("x-tts-access-token")),
        );
        let api = ShopApi {
            connector: name,
            app_key: keys.app_key.resolve(&key("app_key"))?,
            app_secret: keys.app_secret.resolve(&key("app_secret"))?,
            shop_cipher: keys.shop_cipher.clone(),
            http,
        };
        Ok((api, metrics))
    }

    /// The connector the client belongs to (its errors name it).
    pub fn connector(&self) -> &'static str {
        self.connector
    }

    /// `POST path` with the JSON `body` and the extra query `params`; the answer's `data`.
    pub async fn post<T: DeserializeOwned + Default>(
        &self,
        path: &str,
        params: Vec<(String, String)>,
        body: &str,
    ) -> Result<T, IngestError> {
        self.call(
            Request::post(path.trim_start_matches('/')),
            path,
            params,
            body,
        )
        .await
    }

    /// `GET path` with the extra query `params`; the answer's `data`.
    pub async fn get<T: DeserializeOwned + Default>(
        &self,
        path: &str,
        params: Vec<(String, String)>,
    ) -> Result<T, IngestError> {
        self.call(Request::get(path.trim_start_matches('/')), path, params, "")
            .await
    }

    async fn call<T: DeserializeOwned + Default>(
        &self,
        req: Request,
        path: &str,
        extra: Vec<(String, String)>,
        body: &str,
    ) -> Result<T, IngestError> {
        let mut params = vec![
            ("app_key".to_string(), self.app_key.expose().to_string()),
            ("timestamp".into(), Utc::now().timestamp().to_string()),
            ("shop_cipher".into(), self.shop_cipher.clone()),
        ];
        params.extend(extra);
        let sign = sign(&self.app_secret, path, &params, body);
        let mut req = req;
        for (k, v) in params {
            req = req.query(k, v);
        }
        let mut req = req.query("sign", sign);
        if !body.is_empty() {
            req = req.raw_json(body.as_bytes().to_vec());
        }
        let answer: Envelope<T> = self.http.send(&req).await?.json(self.connector)?;
        if answer.code != 0 {
            return Err(IngestError::External {
                system: self.connector.into(),
                detail: format!(
                    "{}: code {}: {}",
                    req.describe(),
                    answer.code,
                    answer.message
                ),
                retryable: false,
            });
        }
        Ok(answer.data.unwrap_or_default())
    }
}

/// A search endpoint read page by page over one window: body `{"update_time_ge": from,
/// "update_time_lt": to}`, query `page_size` and, after the first page, the previous page's
/// `data.next_page_token` as `page_token`, until that token is empty.
pub struct Search {
    path: &'static str,
    list: &'static str,
    body: String,
    page_size: u32,
    token: Option<String>,
    done: bool,
}

#[derive(Deserialize, Default)]
struct SearchData {
    next_page_token: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl Search {
    /// The pages of `path` over `window`, whose rows are `data.<list>[]`.
    pub fn new(path: &'static str, list: &'static str, page_size: u32, window: &Window) -> Search {
        let body = json!({
            "update_time_ge": window.from.timestamp(),
            "update_time_lt": window.to.timestamp(),
        })
        .to_string();
        Search {
            path,
            list,
            body,
            page_size,
            token: None,
            done: false,
        }
    }

    /// The next page's rows as raw JSON (so one bad row is dead-lettered alone), or `None`
    /// after the last page.
    pub async fn next_page(&mut self, api: &ShopApi) -> Result<Option<Vec<Value>>, IngestError> {
        if self.done {
            return Ok(None);
        }
        let mut params = vec![("page_size".to_string(), self.page_size.to_string())];
        if let Some(t) = &self.token {
            params.push(("page_token".into(), t.clone()));
        }
        let mut data: SearchData = api.post(self.path, params, &self.body).await?;
        match data.next_page_token {
            Some(t) if !t.is_empty() => self.token = Some(t),
            _ => self.done = true,
        }
        match data.rest.remove(self.list) {
            Some(Value::Array(rows)) => Ok(Some(rows)),
            None | Some(Value::Null) => Ok(Some(Vec::new())),
            Some(other) => Err(IngestError::External {
                system: api.connector.into(),
                detail: format!("{}: `data.{}` is not a list: {other}", self.path, self.list),
                retryable: false,
            }),
        }
    }
}

/// TikTok Shop's request signature (see the module doc), lower-case hex.
pub fn sign(secret: &Secret, path: &str, params: &[(String, String)], body: &str) -> String {
    let mut sorted: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "sign" && k != "access_token")
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = String::from(path);
    for (k, v) in sorted {
        text.push_str(k);
        text.push_str(v);
    }
    text.push_str(body);
    let wrapped = format!("{0}{text}{0}", secret.expose());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(wrapped.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every answer: `code` 0 and `data`, or a non-zero `code` and its `message`.
#[derive(Deserialize)]
struct Envelope<T> {
    code: i64,
    #[serde(default)]
    message: String,
    data: Option<T>,
}

/// An optional time in Unix seconds (TikTok's every timestamp); `Err` names field and value.
pub fn secs(r: &Record<'_>, path: &str) -> Result<Option<DateTime<Utc>>, MapError> {
    if r.get(path).is_none() {
        return Ok(None);
    }
    let s = r.int(path)?;
    DateTime::from_timestamp(s, 0)
        .map(Some)
        .ok_or_else(|| format!("field `{path}`: {s} is not a time in Unix seconds"))
}
