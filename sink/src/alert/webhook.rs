//! A generic webhook: the breach as JSON, signed with HMAC-SHA256 against replay and forgery.
//!
//! Each delivery is one `POST` with:
//!
//! | header                 | value                                                         |
//! |------------------------|---------------------------------------------------------------|
//! | `Content-Type`         | `application/json`                                            |
//! | `X-Kpiflow-Timestamp`  | Unix seconds when the request was signed                      |
//! | `X-Kpiflow-Signature`  | `sha256=` + HMAC-SHA256(key, `"<timestamp>.<body>"`), hex or base64 (`signature_encoding`) |
//! | `X-Kpiflow-Delivery`   | `<breach_id>:<state>`, the same on a replay: a de-duplication key |
//!
//! and the body `{"id": "<breach_id>:<state>", "text": "<one line>", "breach": {…}}`, where
//! `breach` is the [`BreachEvent`] exactly as on the breaches topic and `text` suits chat tools
//! that show a `text` field.
//!
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body bytes, compares it
//! in constant time, and refuses timestamps more than a few minutes from its clock, so a
//! captured request cannot be replayed later ([`verify`] does all three).

use chrono::Utc;
use futures::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use kpiflow_schemas::{BreachEvent, BreachState};
use serde::Serialize;
use sha2::Sha256;

use super::{AlertSink, AlertsConfig, SignatureEncoding, http_client, post_json, redacted};
use crate::SinkError;

/// Header with the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Kpiflow-Timestamp";
/// Header with the signature, `sha256=<hex or base64>`.
pub const SIGNATURE_HEADER: &str = "X-Kpiflow-Signature";
/// Header with the delivery's de-duplication key, `<breach_id>:<state>`.
pub const DELIVERY_HEADER: &str = "X-Kpiflow-Delivery";

type HmacSha256 = Hmac<Sha256>;

/// The signature header's value for `body` signed at `timestamp`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8], encoding: SignatureEncoding) -> String {
    let mac = mac(key, timestamp, body).finalize().into_bytes();
    let encoded = match encoding {
        SignatureEncoding::Hex => hex::encode(mac),
        SignatureEncoding::Base64 => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(mac)
        }
    };
    format!("sha256={encoded}")
}

fn mac(key: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a receiver refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp header is not a number.
    #[error("timestamp header {0:?} is not Unix seconds")]
    BadTimestamp(String),
    /// The request was signed too long ago (or too far ahead): a replay or a skewed clock.
    #[error("timestamp {timestamp} is {skew}s away from now (at most {tolerance}s allowed)")]
    Stale {
        /// The request's timestamp.
        timestamp: i64,
        /// Seconds between it and now.
        skew: i64,
        /// The allowed skew.
        tolerance: i64,
    },
    /// The signature is malformed or does not match.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a request as a receiver should: timestamp within `tolerance_secs` of `now_secs`,
/// signature matching in constant time.
pub fn verify(
    key: &[u8],
    encoding: SignatureEncoding,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(timestamp_header.to_string()))?;
    let skew = (now_secs - timestamp).abs();
    if skew > tolerance_secs {
        return Err(VerifyError::Stale {
            timestamp,
            skew,
            tolerance: tolerance_secs,
        });
    }
    let encoded = signature_header
        .strip_prefix("sha256=")
        .ok_or(VerifyError::Mismatch)?;
    let expected = match encoding {
        SignatureEncoding::Hex => hex::decode(encoded).map_err(|_| VerifyError::Mismatch)?,
        SignatureEncoding::Base64 => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| VerifyError::Mismatch)?
        }
    };
    mac(key, timestamp, body)
        .verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

/// The JSON body of one delivery.
#[derive(Debug, Serialize)]
struct Body<'a> {
    id: String,
    text: String,
    breach: &'a BreachEvent,
}

/// The delivery id of a breach transition, `<breach_id>:<state>`.
pub fn delivery_id(b: &BreachEvent) -> String {
    format!("{}:{}", b.breach_id, b.state.as_str())
}

/// One line for a chat: `[FIRING critical] late_shipment_rate_high amazon/…: <message>`.
pub fn text(b: &BreachEvent) -> String {
    let state = match b.state {
        BreachState::Firing => "FIRING",
        BreachState::Resolved => "RESOLVED",
    };
    let mut line = format!(
        "[{state} {}] {} {}: {}",
        b.severity.as_str(),
        b.rule,
        b.scope,
        b.message
    );
    if let Some(url) = &b.runbook_url {
        line.push_str(&format!(" (runbook: {url})"));
    }
    line
}

/// Posts signed breach events to one URL.
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    target: String,
    key: Vec<u8>,
    encoding: SignatureEncoding,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A client for `cfg.webhook` (validated by the caller); reads the secret now.
    pub fn new(cfg: &AlertsConfig) -> Result<Self, SinkError> {
        let wh = &cfg.webhook;
        let url = reqwest::Url::parse(&wh.url).map_err(|e| SinkError::Config {
            key: "alerts.webhook.url".into(),
            value: "<redacted>".into(),
            problem: format!("not a URL ({e})"),
        })?;
        let client = http_client(cfg)?;
        Ok(Webhook {
            client,
            target: format!("webhook {}", redacted(&url)),
            url,
            key: wh.resolve_secret()?,
            encoding: wh.signature_encoding,
        })
    }
}

impl AlertSink for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn component(&self) -> &'static str {
        "alerts.webhook"
    }

    fn deliver<'a>(
        &'a self,
        breach: &'a BreachEvent,
        _opened: Option<&'a BreachEvent>,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let id = delivery_id(breach);
            let body = serde_json::to_vec(&Body {
                id: id.clone(),
                text: text(breach),
                breach,
            })
            .map_err(|e| SinkError::Internal(format!("encoding a webhook body: {e}")))?;
            // Signed per attempt: a retry after a long outage must not carry a stale stamp.
            let timestamp = Utc::now().timestamp();
            let request = self
                .client
                .post(self.url.clone())
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(
                    SIGNATURE_HEADER,
                    sign(&self.key, timestamp, &body, self.encoding),
                )
                .header(DELIVERY_HEADER, id);
            post_json(request, &self.target, body).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::tests::breach_fixtures;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn known_answer_hex_and_base64() {
        // Reference values from `printf '1700000000.{}' | openssl dgst -sha256 -hmac <KEY>`
        // (and `-binary | base64`).
        let hex = sign(KEY, 1_700_000_000, b"{}", SignatureEncoding::Hex);
        assert_eq!(
            hex,
            "sha256=417adf36b901772f658597a76d329694e335e65fc0849d7715c3ca33406309b5"
        );
        let b64 = sign(KEY, 1_700_000_000, b"{}", SignatureEncoding::Base64);
        assert_eq!(b64, "sha256=QXrfNrkBdy9lhZenbTKWlOM15l/AhJ13FcPKM0BjCbU=");
    }

    #[test]
    fn verify_accepts_fresh_and_refuses_tampered_or_stale() {
        let body = br#"{"id":"x"}"#;
        for enc in [SignatureEncoding::Hex, SignatureEncoding::Base64] {
            let sig = sign(KEY, 1000, body, enc);
            assert_eq!(verify(KEY, enc, "1000", &sig, body, 1100, 300), Ok(()));
            assert_eq!(
                verify(KEY, enc, "1000", &sig, br#"{"id":"y"}"#, 1100, 300),
                Err(VerifyError::Mismatch)
            );
            assert_eq!(
                verify(
                    b"another key of sixteen",
                    enc,
                    "1000",
                    &sig,
                    body,
                    1100,
                    300
                ),
                Err(VerifyError::Mismatch)
            );
            // The timestamp is signed: moving it forward breaks the signature.
            assert_eq!(
                verify(KEY, enc, "1100", &sig, body, 1100, 300),
                Err(VerifyError::Mismatch)
            );
            assert!(matches!(
                verify(KEY, enc, "1000", &sig, body, 2000, 300),
                Err(VerifyError::Stale { skew: 1000, .. })
            ));
        }
        assert!(matches!(
            verify(
                KEY,
                SignatureEncoding::Hex,
                "soon",
                "sha256=00",
                body,
                0,
                300
            ),
            Err(VerifyError::BadTimestamp(_))
        ));
    }

    #[test]
    fn text_and_delivery_id() {
        let fx = breach_fixtures();
        assert!(text(&fx[0]).starts_with("[FIRING critical] lsr-above-4pct amazon/"));
        assert!(text(&fx[1]).starts_with("[RESOLVED critical]"));
        assert!(delivery_id(&fx[1]).ends_with(":resolved"));
    }
}
