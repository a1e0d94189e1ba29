//! What report APIs share (Amazon Ads v3, SP-API Reports): poll a requested report until it
//! is done, failed or out of time, and gunzip its document.
//!
//! ```text
//!  create ─► id ─► ReportPoll::wait(check) ─ Pending: sleep(interval), again until timeout
//!                                          ├ Done(T)  ─► download ─► gunzip (when compressed)
//!                                          └ Failed   ─► retryable error: the next sync asks again
//! ```

use std::future::Future;
use std::io::Read;
use std::time::Duration;

use crate::IngestError;

/// How often and how long a connector waits for a requested report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportPoll {
    /// Time between two status checks of a pending report.
    pub interval: Duration,
    /// A report not done after this long fails the sync (the next one asks again).
    pub timeout: Duration,
}

/// One status check's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled<T> {
    /// Done: what the caller needs to download it.
    Done(T),
    /// Still queued or processing; the platform's status, for the timeout message.
    Pending(String),
    /// The platform gave up on the report; its status and reason.
    Failed(String),
}

impl ReportPoll {
    /// Checks the pair before any I/O; errors name `{section}.poll_timeout` and both values.
    pub fn validate(&self, section: &str) -> Result<(), IngestError> {
        if self.interval.is_zero() || self.timeout < self.interval {
            return Err(IngestError::config(
                format!("{section}.poll_timeout"),
                format!("{:?}", humantime::format_duration(self.timeout).to_string()),
                format!(
                    "must be at least poll_interval ({}), which must be positive",
                    humantime::format_duration(self.interval)
                ),
            ));
        }
        Ok(())
    }

    /// Calls `check` every `interval` until it says done (its value) or failed, or `timeout`
    /// passes; failures and timeouts are retryable errors of `system` naming report `id`.
    pub async fn wait<T, F, Fut>(
        &self,
        system: &str,
        id: &str,
        mut check: F,
    ) -> Result<T, IngestError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Polled<T>, IngestError>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let external = |detail: String| IngestError::External {
            system: system.to_string(),
            detail,
            retryable: true,
        };
        loop {
            let status = match check().await? {
                Polled::Done(t) => return Ok(t),
                Polled::Failed(why) => return Err(external(format!("report {id} {why}"))),
                Polled::Pending(status) => status,
            };
            if tokio::time::Instant::now() + self.interval > deadline {
                return Err(external(format!(
                    "report {id} still {status} after poll_timeout ({})",
                    humantime::format_duration(self.timeout)
                )));
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

/// The bytes of a gzip file; `Err` says why they are not one.
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut text)
        .map_err(|e| format!("the report file is not gzip: {e}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_timeout_must_cover_one_interval() {
        let p = ReportPoll {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        };
        assert_eq!(
            p.validate("connectors.x").unwrap_err().to_string(),
            "bad config: `connectors.x.poll_timeout` = \"10s\": must be at least poll_interval (30s), which must be positive"
        );
    }

    #[tokio::test]
    async fn waits_until_done_and_names_a_failure() {
        let p = ReportPoll {
            interval: Duration::from_millis(1),
            timeout: Duration::from_secs(5),
        };
        let mut n = 0;
        let got = p
            .wait("x", "r1", || {
                n += 1;
                let v = if n < 3 {
                    Polled::Pending("IN_QUEUE".into())
                } else {
                    Polled::Done(n)
                };
                async move { Ok(v) }
            })
            .await
            .unwrap();
        assert_eq!(got, 3);
        let err = p
            .wait("x", "r2", || async {
                Ok(Polled::<()>::Failed("FATAL".into()))
            })
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), "x: report r2 FATAL");
        let short = ReportPoll {
            interval: Duration::from_millis(5),
            timeout: Duration::from_millis(5),
        };
        let err = short
            .wait("x", "r3", || async {
                Ok(Polled::<()>::Pending("IN_PROGRESS".into()))
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("report r3 still IN_PROGRESS after poll_timeout"),
            "{err}"
        );
    }

    #[test]
    fn gunzip_reads_gzip_and_refuses_plain_text() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"a\tb\n").unwrap();
        assert_eq!(gunzip(&gz.finish().unwrap()).unwrap(), b"a\tb\n");
        assert!(
            gunzip(b"a\tb\n")
                .unwrap_err()
                .starts_with("the report file is not gzip")
        );
    }
}
