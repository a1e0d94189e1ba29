//! The `[alerts]` section of the config file: receivers, retry and re-send timing.

use std::time::Duration;

use serde::Deserialize;

use crate::SinkError;

/// Alert settings (`[alerts]`). Every receiver is off unless `enabled = true`.
///
/// ```toml
/// [alerts]
/// group_id = "kpiflow-alerts"
/// timeout = "10s"
/// retry_initial = "500ms"
/// retry_max = "1m"
///
/// [alerts.alertmanager]
/// enabled = true
/// url = "http://alertmanager:9093"
/// resend_interval = "1m"
///
/// [alerts.webhook]
/// enabled = true
/// url = "https://chat.example.com/hooks/kpiflow"
/// secret = "env:KPIFLOW_WEBHOOK_SECRET"
/// signature_encoding = "hex"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Consumer group prefix: each receiver kind consumes the breaches topic in its own group,
    /// `<group_id>.<kind>` (e.g. `kpiflow-alerts.alertmanager`), so a receiver that is down
    /// holds back only its own deliveries. Default: `"kpiflow-alerts"`.
    #[serde(default = "AlertsConfig::default_group_id")]
    pub group_id: String,
    /// Longest wait for one HTTP request. Default: `"10s"`.
    #[serde(default = "AlertsConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First wait before retrying a failed delivery; doubles up to `retry_max`. Default: `"500ms"`.
    #[serde(
        default = "AlertsConfig::default_retry_initial",
        with = "humantime_serde"
    )]
    pub retry_initial: Duration,
    /// Longest wait between two retries. Default: `"1m"`.
    #[serde(default = "AlertsConfig::default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// `[alerts.alertmanager]`.
    #[serde(default)]
    pub alertmanager: AlertmanagerConfig,
    /// `[alerts.webhook]`.
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// On SIGTERM / Ctrl-C, `kpiflow alerts` finishes the delivery in flight and commits; it
    /// exits (code 3) this long after the signal whatever it is doing, as after a crash: the
    /// breaches since the last commit are delivered again at the next start (receivers
    /// de-duplicate on the breach id). Between 1s and 10m. Default: `"30s"`.
    #[serde(
        default = "AlertsConfig::default_shutdown_timeout",
        with = "humantime_serde"
    )]
    pub shutdown_timeout: Duration,
}

/// Alertmanager API v2 (`[alerts.alertmanager]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Push breaches to Alertmanager. Default: `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Base URL of Alertmanager (alerts go to `<url>/api/v2/alerts`).
    /// Default: `"http://127.0.0.1:9093"`.
    #[serde(default = "AlertmanagerConfig::default_url")]
    pub url: String,
    /// How often firing alerts are sent again. Alertmanager resolves an alert by itself when
    /// its `endsAt` passes, so each send sets `endsAt = now + 4 × resend_interval`, the way
    /// Prometheus does. Default: `"1m"`.
    #[serde(
        default = "AlertmanagerConfig::default_resend",
        with = "humantime_serde"
    )]
    pub resend_interval: Duration,
    /// `generatorURL` of every alert (e.g. a Grafana breaches dashboard). Default: none.
    #[serde(default)]
    pub generator_url: Option<String>,
}

/// A generic signed webhook (`[alerts.webhook]`), e.g. for a chat tool's incoming webhook.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Post breaches to the webhook. Default: `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Where to POST. Required when enabled; never logged past its host (chat webhooks hold
    /// their token in the path).
    #[serde(default)]
    pub url: String,
    /// The HMAC-SHA256 key; `env:NAME` reads it from the environment variable NAME (the
    /// default, `env:KPIFLOW_WEBHOOK_SECRET`). Never logged.
    #[serde(default = "WebhookConfig::default_secret")]
    pub secret: String,
    /// How the signature header is encoded: `"hex"` or `"base64"`. Default: `"hex"`.
    #[serde(default)]
    pub signature_encoding: SignatureEncoding,
}

// The secret must never reach a log line.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.secret.starts_with("env:") {
            self.secret.as_str()
        } else {
            "<redacted>"
        };
        f.debug_struct("WebhookConfig")
            .field("enabled", &self.enabled)
            .field("url", &"<redacted>")
            .field("secret", &secret)
            .field("signature_encoding", &self.signature_encoding)
            .finish()
    }
}

/// Encoding of the webhook signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lower-case hex, 64 characters.
    #[default]
    Hex,
    /// Standard base64 with padding, 44 characters.
    Base64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            group_id: Self::default_group_id(),
            timeout: Self::default_timeout(),
            retry_initial: Self::default_retry_initial(),
            retry_max: Self::default_retry_max(),
            alertmanager: AlertmanagerConfig::default(),
            webhook: WebhookConfig::default(),
            shutdown_timeout: Self::default_shutdown_timeout(),
        }
    }
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            enabled: false,
            url: Self::default_url(),
            resend_interval: Self::default_resend(),
            generator_url: None,
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enabled: false,
            url: String::new(),
            secret: Self::default_secret(),
            signature_encoding: SignatureEncoding::default(),
        }
    }
}

impl AlertmanagerConfig {
    fn default_url() -> String {
        "http://127.0.0.1:9093".into()
    }
    fn default_resend() -> Duration {
        Duration::from_secs(60)
    }
}

impl WebhookConfig {
    fn default_secret() -> String {
        "env:KPIFLOW_WEBHOOK_SECRET".into()
    }

    /// The key: the literal value, or the environment variable an `env:NAME` value names.
    pub fn resolve_secret(&self) -> Result<Vec<u8>, SinkError> {
        let value = match self.secret.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| SinkError::Config {
                key: "alerts.webhook.secret".into(),
                value: format!("{:?}", self.secret),
                problem: format!("environment variable {var} is not set"),
            })?,
            None => self.secret.clone(),
        };
        if value.len() < 16 {
            return Err(SinkError::Config {
                key: "alerts.webhook.secret".into(),
                value: if self.secret.starts_with("env:") {
                    format!("{:?}", self.secret)
                } else {
                    "<redacted>".into()
                },
                problem: "the key must be at least 16 bytes long".into(),
            });
        }
        Ok(value.into_bytes())
    }
}

impl AlertsConfig {
    fn default_shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_group_id() -> String {
        "kpiflow-alerts".into()
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_retry_initial() -> Duration {
        Duration::from_millis(500)
    }
    fn default_retry_max() -> Duration {
        Duration::from_secs(60)
    }

    /// Whether any receiver is enabled.
    pub fn any_enabled(&self) -> bool {
        self.alertmanager.enabled || self.webhook.enabled
    }

    /// Checks every value before any I/O; errors quote key and value, e.g.
    /// `bad config: alerts.alertmanager.url = "ftp://x": must be an http:// or https:// URL`.
    pub fn validate(&self) -> Result<(), SinkError> {
        let bad = |key: &str, value: String, problem: &str| SinkError::Config {
            key: format!("alerts.{key}"),
            value,
            problem: problem.to_string(),
        };
        let dur = |d: Duration| format!("\"{}\"", humantime::format_duration(d));
        if self.group_id.trim().is_empty() {
            return Err(bad(
                "group_id",
                format!("{:?}", self.group_id),
                "must not be empty",
            ));
        }
        crate::config::validate_shutdown_timeout("alerts", self.shutdown_timeout)?;
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(300) {
            return Err(bad(
                "timeout",
                dur(self.timeout),
                "must be between 100ms and 5m",
            ));
        }
        if self.retry_initial < Duration::from_millis(10) {
            return Err(bad(
                "retry_initial",
                dur(self.retry_initial),
                "must be at least 10ms",
            ));
        }
        if self.retry_max < self.retry_initial || self.retry_max > Duration::from_secs(3600) {
            return Err(bad(
                "retry_max",
                dur(self.retry_max),
                "must be at least retry_initial and at most 1h",
            ));
        }
        let am = &self.alertmanager;
        if am.enabled {
            check_url(&am.url).map_err(|p| bad("alertmanager.url", format!("{:?}", am.url), &p))?;
        }
        if am.resend_interval < Duration::from_secs(1)
            || am.resend_interval > Duration::from_secs(3600)
        {
            return Err(bad(
                "alertmanager.resend_interval",
                dur(am.resend_interval),
                "must be between 1s and 1h",
            ));
        }
        let wh = &self.webhook;
        if wh.enabled {
            // The URL may hold a token: name the problem, not the value.
            check_url(&wh.url).map_err(|p| bad("webhook.url", "<redacted>".into(), &p))?;
            if wh.secret.is_empty() {
                return Err(bad(
                    "webhook.secret",
                    "\"\"".into(),
                    "set a key, or env:NAME to read it from the environment",
                ));
            }
        }
        Ok(())
    }
}

fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err("must be an http:// or https:// URL with a host".into()),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> AlertsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let c = cfg("");
        assert_eq!(c, AlertsConfig::default());
        assert!(!c.any_enabled());
        assert_eq!(c.alertmanager.resend_interval, Duration::from_secs(60));
        c.validate().unwrap();
    }

    #[test]
    fn errors_quote_key_and_value() {
        let msg = |t: &str| cfg(t).validate().unwrap_err().to_string();
        assert_eq!(
            msg("[alertmanager]\nenabled = true\nurl = \"ftp://x\""),
            "bad config: alerts.alertmanager.url = \"ftp://x\": \
             must be an http:// or https:// URL with a host"
        );
        assert_eq!(
            msg("shutdown_timeout = \"1h\""),
            "bad config: alerts.shutdown_timeout = \"1h\": must be between 1s and 10m"
        );
        assert_eq!(
            msg("retry_initial = \"1s\"\nretry_max = \"500ms\""),
            "bad config: alerts.retry_max = \"500ms\": must be at least retry_initial and at most 1h"
        );
        assert_eq!(
            msg("[alertmanager]\nresend_interval = \"10ms\""),
            "bad config: alerts.alertmanager.resend_interval = \"10ms\": must be between 1s and 1h"
        );
        let m = msg("[webhook]\nenabled = true\nurl = \"https://h.example/T0K3N\"\nsecret = \"\"");
        assert!(m.starts_with("bad config: alerts.webhook.secret"), "{m}");
        let m = msg("[webhook]\nenabled = true\nurl = \"not a url with T0K3N\"");
        assert!(
            m.starts_with("bad config: alerts.webhook.url = <redacted>") && !m.contains("T0K3N"),
            "{m}"
        );
    }

    #[test]
    fn secrets_resolve_from_the_environment_and_never_print() {
        let c = cfg("[webhook]\nsecret = \"a-literal-key-of-32-bytes-length\"");
        assert!(!format!("{c:?}").contains("literal"));
        assert_eq!(
            c.webhook.resolve_secret().unwrap(),
            b"a-literal-key-of-32-bytes-length"
        );
        let c = cfg("[webhook]\nsecret = \"env:KPIFLOW_TEST_NO_SUCH_SECRET\"");
        let err = c.webhook.resolve_secret().unwrap_err().to_string();
        assert!(
            err.contains("KPIFLOW_TEST_NO_SUCH_SECRET is not set"),
            "{err}"
        );
        let c = cfg("[webhook]\nsecret = \"short\"");
        let err = c.webhook.resolve_secret().unwrap_err().to_string();
        assert!(
            err.contains("at least 16 bytes") && !err.contains("short"),
            "{err}"
        );
        assert!(toml::from_str::<AlertsConfig>("[webhook]\nsignature_encoding = \"b32\"").is_err());
    }
}
