//! Breach alerts for on-call: the breaches topic pushed to Alertmanager and signed webhooks.
//!
//! ```text
//!   <prefix>.breaches ──► runner (one consumer group per sink kind: <group_id>.<kind>)
//!                           │ open breaches, rebuilt at start from what this group delivered
//!                           ├─► alertmanager: POST /api/v2/alerts, firing ones re-sent every
//!                           │   resend_interval with endsAt = now + 4 × resend_interval
//!                           └─► webhook: JSON body, HMAC-SHA256 signature + timestamp headers
//! ```
//!
//! Guarantee: **at-least-once, in order per breach**. A breach event's offset is committed only
//! after the receiver accepted it (2xx). While a receiver is down or answers 5xx, 408 or 429,
//! the runner retries the same event with exponential backoff (`retry_initial` doubling up to
//! `retry_max`) for as long as it takes; at shutdown it stops without committing, so the next
//! start delivers the event again. An event the receiver refuses for good (another 4xx: it can
//! never be accepted as it is) is published to the dead-letter topic with the receiver's answer,
//! and the runner moves on. A replay may deliver an event twice: Alertmanager de-duplicates by
//! labels; webhook receivers use the `X-Kpiflow-Delivery` header.
//!
//! Sinks sit behind [`AlertSink`]; [`sinks`] is the one place that builds them from config.

pub mod alertmanager;
pub mod config;
pub mod runner;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use kpiflow_schemas::BreachEvent;

pub use config::{AlertmanagerConfig, AlertsConfig, SignatureEncoding, WebhookConfig};
pub use runner::{AlertStats, run_alerts};

use crate::SinkError;

/// A receiver of breach transitions.
pub trait AlertSink: Send + Sync {
    /// Short name: `alertmanager`, `webhook`; the `sink` metric label and the consumer group
    /// suffix.
    fn kind(&self) -> &'static str;

    /// The component label of this sink's counters, e.g. `alerts.alertmanager`.
    fn component(&self) -> &'static str;

    /// Delivers one breach transition. `opened` is the firing event of the same breach when
    /// `breach` resolves it and the runner knew it was open.
    ///
    /// Errors for which [`SinkError::is_retryable`] holds are retried; others dead-letter the
    /// event.
    fn deliver<'a>(
        &'a self,
        breach: &'a BreachEvent,
        opened: Option<&'a BreachEvent>,
    ) -> BoxFuture<'a, Result<(), SinkError>>;

    /// How often the open breaches must be sent again, for receivers that forget an alert
    /// that is not re-sent (Alertmanager); `None` for receivers that keep what they got.
    fn resend_interval(&self) -> Option<Duration> {
        None
    }

    /// Sends every open breach again (see [`AlertSink::resend_interval`]).
    fn resend<'a>(&'a self, open: Vec<&'a BreachEvent>) -> BoxFuture<'a, Result<(), SinkError>> {
        let _ = open;
        Box::pin(async { Ok(()) })
    }
}

/// The configured sinks: the registry of alert sink kinds.
pub fn sinks(cfg: &AlertsConfig) -> Result<Vec<Box<dyn AlertSink>>, SinkError> {
    cfg.validate()?;
    let mut out: Vec<Box<dyn AlertSink>> = Vec::new();
    if cfg.alertmanager.enabled {
        out.push(Box::new(alertmanager::Alertmanager::new(cfg)?));
    }
    if cfg.webhook.enabled {
        out.push(Box::new(webhook::Webhook::new(cfg)?));
    }
    Ok(out)
}

/// The labels that identify a breach's alert; the same for its firing and resolved events.
///
/// `alertname` (the rule), `severity`, `team` (the KPI's owner), `kpi`, `shop`, `channel`,
/// `marketplace`, `sku` and `campaign` when the breach is about one, `priority`, `rule_kind` and
/// `breach_id`. The id keeps two breaches of one rule and scope apart, so a late replay of an
/// old breach's resolve can never close a newer one.
pub fn labels(b: &BreachEvent) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        // Alertmanager treats an empty value as an absent label.
        if !v.is_empty() {
            l.insert(k.to_string(), v.to_string());
        }
    };
    put("alertname", &b.rule);
    put("severity", b.severity.as_str());
    put("team", &b.owner);
    put("kpi", &b.kpi);
    put("shop", &b.scope.shop);
    put("channel", b.scope.channel.as_str());
    put("marketplace", &b.scope.marketplace);
    if let Some(sku) = &b.scope.sku {
        put("sku", sku);
    }
    if let Some(campaign) = &b.scope.campaign {
        put("campaign", campaign);
    }
    put("priority", b.priority.as_str());
    put("rule_kind", b.rule_kind.as_str());
    put("breach_id", &b.breach_id);
    l
}

/// What a human reads: `summary` (the processor's sentence), `value`, `threshold`, `baseline`
/// (trend rules), `unit`, `window`, `numerator`, `denominator`, `runbook_url` when configured.
pub fn annotations(b: &BreachEvent) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".into(), b.message.clone());
    a.insert(
        "value".into(),
        b.value.map_or_else(|| "n/a".to_string(), |v| v.to_string()),
    );
    a.insert("threshold".into(), b.threshold.to_string());
    if let Some(baseline) = b.baseline {
        a.insert("baseline".into(), baseline.to_string());
    }
    a.insert("unit".into(), b.unit.clone());
    a.insert("op".into(), b.op.as_str().into());
    a.insert(
        "window".into(),
        format!(
            "{} {}/{} ({})",
            b.window.name,
            b.window.start.to_rfc3339(),
            b.window.end.to_rfc3339(),
            b.window.time_zone
        ),
    );
    a.insert("numerator".into(), b.numerator.to_string());
    if let Some(d) = b.denominator {
        a.insert("denominator".into(), d.to_string());
    }
    if let Some(url) = &b.runbook_url {
        a.insert("runbook_url".into(), url.clone());
    }
    a
}

/// `scheme://host[:port]` of a URL: enough to say where a delivery went without printing a
/// path or query that may hold a token (chat webhooks put their secret in the path).
pub(crate) fn redacted(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => format!("{}://…", url.scheme()),
    }
}

/// The HTTP client of a receiver: `cfg.timeout` per request.
pub(crate) fn http_client(cfg: &AlertsConfig) -> Result<reqwest::Client, SinkError> {
    reqwest::Client::builder()
        .timeout(cfg.timeout)
        .build()
        .map_err(|e| SinkError::Internal(format!("building the HTTP client: {e}")))
}

/// Sends a JSON body and classifies the answer: 2xx accepted; 408, 429, 5xx and transport
/// errors retryable ([`SinkError::AlertUnavailable`]); other statuses refused for good
/// ([`SinkError::AlertRejected`]).
pub(crate) async fn post_json(
    request: reqwest::RequestBuilder,
    target: &str,
    body: Vec<u8>,
) -> Result<(), SinkError> {
    let response = request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| SinkError::AlertUnavailable {
            target: target.to_string(),
            // The URL may hold a token; the error names the target instead.
            reason: e.without_url().to_string(),
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut text = response.text().await.unwrap_or_default();
    text.truncate(500);
    let text = text.trim().to_string();
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Err(SinkError::AlertUnavailable {
            target: target.to_string(),
            reason: format!("HTTP {status}: {text}"),
        })
    } else {
        Err(SinkError::AlertRejected {
            target: target.to_string(),
            status: status.as_u16(),
            body: text,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parquet::tests::breach_fixtures;

    #[test]
    fn labels_and_annotations_carry_the_breach() {
        let b = &breach_fixtures()[0];
        let l = labels(b);
        assert_eq!(l["alertname"], b.rule);
        assert_eq!(l["severity"], b.severity.as_str());
        assert_eq!(l["team"], b.owner);
        assert_eq!(l["kpi"], b.kpi);
        assert_eq!(l["shop"], b.scope.shop);
        assert_eq!(l["channel"], b.scope.channel.as_str());
        assert_eq!(l["marketplace"], b.scope.marketplace);
        assert_eq!(l["breach_id"], b.breach_id);
        assert_eq!(l.contains_key("sku"), b.scope.sku.is_some());
        let a = annotations(b);
        assert_eq!(a["summary"], b.message);
        assert_eq!(a["threshold"], b.threshold.to_string());
        assert!(a["window"].starts_with(&b.window.name), "{}", a["window"]);
        assert_eq!(a.get("runbook_url"), b.runbook_url.as_ref());
    }

    #[test]
    fn sku_and_campaign_become_labels_when_present() {
        let mut b = breach_fixtures().remove(0);
        b.scope.sku = Some("SKU-7".into());
        b.scope.campaign = Some("cmp-1".into());
        let l = labels(&b);
        assert_eq!(l["sku"], "SKU-7");
        assert_eq!(l["campaign"], "cmp-1");
    }

    #[test]
    fn redaction_keeps_only_scheme_host_and_port() {
        let u: reqwest::Url = "https://hooks.example.com/services/T000/SECRET?token=x"
            .parse()
            .unwrap();
        assert_eq!(redacted(&u), "https://hooks.example.com");
        let u: reqwest::Url = "http://127.0.0.1:9093/".parse().unwrap();
        assert_eq!(redacted(&u), "http://127.0.0.1:9093");
    }
}
