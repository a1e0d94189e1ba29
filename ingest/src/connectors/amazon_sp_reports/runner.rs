//! The SP-API report runner (Reports API 2021-06-30), shared by every report type: create,
//! poll, fetch the document, download and gunzip, each operation on its own rate limit.
//!
//! ```text
//!  POST /reports/2021-06-30/reports {reportType, marketplaceIds, dataStartTime, dataEndTime}
//!       └─ {reportId}
//!  GET  /reports/2021-06-30/reports/{reportId}   until processingStatus DONE / CANCELLED / FATAL
//!       └─ DONE: reportDocumentId          CANCELLED: no data (an empty report)   FATAL: error
//!  GET  /reports/2021-06-30/documents/{reportDocumentId} ─► {url, compressionAlgorithm?}
//!  GET  url (pre-signed, no token) ─► gunzip when compressionAlgorithm is GZIP ─► bytes
//! ```
//!
//! Amazon cancels a report by itself when the range holds no data, so CANCELLED reads as an
//! empty document; FATAL fails the sync (its error document is not read: the cursor stays and
//! the next sync asks again).

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::IngestError;
use crate::connectors::amazon_sp_orders::iso;
use crate::pull::{HttpClient, Polled, RateLimit, ReportPoll, Request, Window, gunzip};

/// The documented per-operation rates of the Reports API 2021-06-30 (and getOrder, which
/// dates returns and feedback): requests per second and burst.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRates {
    /// createReport. Default `{ rate = 0.0167, burst = 15 }`.
    #[serde(default = "defaults::create_report")]
    pub create_report: RateLimit,
    /// getReport (status polls). Default `{ rate = 2.0, burst = 15 }`.
    #[serde(default = "defaults::get_report")]
    pub get_report: RateLimit,
    /// getReportDocument. Default `{ rate = 0.0167, burst = 15 }`.
    #[serde(default = "defaults::get_report_document")]
    pub get_report_document: RateLimit,
    /// Orders v0 getOrder (the purchase date of a returned or rated order). Default
    /// `{ rate = 0.5, burst = 30 }`.
    #[serde(default = "defaults::get_order")]
    pub get_order: RateLimit,
}

mod defaults {
    use crate::pull::RateLimit;
    pub(super) fn create_report() -> RateLimit {
        RateLimit {
            rate: 0.0167,
            burst: 15,
        }
    }
    pub(super) fn get_report() -> RateLimit {
        RateLimit {
            rate: 2.0,
            burst: 15,
        }
    }
    pub(super) fn get_report_document() -> RateLimit {
        create_report()
    }
    pub(super) fn get_order() -> RateLimit {
        RateLimit {
            rate: 0.5,
            burst: 30,
        }
    }
}

impl Default for OperationRates {
    fn default() -> Self {
        OperationRates {
            create_report: defaults::create_report(),
            get_report: defaults::get_report(),
            get_report_document: defaults::get_report_document(),
            get_order: defaults::get_order(),
        }
    }
}

impl OperationRates {
    /// Checks each rate; errors name `{section}.rate_limits.<operation>`.
    pub fn validate(&self, section: &str) -> Result<(), IngestError> {
        for (op, limit) in self.each() {
            if let Some(problem) = limit.problem() {
                return Err(IngestError::config(
                    format!("{section}.rate_limits.{op}"),
                    format!("{{ rate = {}, burst = {} }}", limit.rate, limit.burst),
                    problem,
                ));
            }
        }
        Ok(())
    }

    fn each(&self) -> [(&'static str, RateLimit); 4] {
        [
            ("create_report", self.create_report),
            ("get_report", self.get_report),
            ("get_report_document", self.get_report_document),
            ("get_order", self.get_order),
        ]
    }
}

/// Creates, waits for and downloads reports for one seller account.
pub struct ReportRunner {
    connector: &'static str,
    create: HttpClient,
    status: HttpClient,
    document: HttpClient,
    // Pre-signed URLs: the pull table's own rate limit, no token.
    download: HttpClient,
    marketplace: String,
    poll: ReportPoll,
}

/// A downloaded report: its id and the document's bytes (empty when Amazon CANCELLED it).
#[derive(Debug, Clone)]
pub struct Document {
    /// The report id.
    pub report_id: String,
    /// The document, gunzipped.
    pub bytes: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    report_id: String,
}

/// The fields kpiflow reads of a `Report` (`reportId`, `reportType`, `dataStartTime`,
/// `dataEndTime`, `marketplaceIds`, `processingStatus`, `createdTime`, `processingStartTime`,
/// `processingEndTime`, `reportDocumentId`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    processing_status: String,
    report_document_id: Option<String>,
}

/// A `ReportDocument`: `reportDocumentId`, `url`, and `compressionAlgorithm` when compressed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportDocument {
    url: String,
    compression_algorithm: Option<String>,
}

impl ReportRunner {
    /// A runner over `api` (the LWA-authenticated SP-API client) with a client per operation.
    pub fn new(
        connector: &'static str,
        api: &HttpClient,
        marketplace: String,
        rates: &OperationRates,
        poll: ReportPoll,
    ) -> ReportRunner {
        ReportRunner {
            connector,
            create: api.clone().with_rate_limit(Some(rates.create_report)),
            status: api.clone().with_rate_limit(Some(rates.get_report)),
            document: api.clone().with_rate_limit(Some(rates.get_report_document)),
            download: api.clone(),
            marketplace,
            poll,
        }
    }

    fn input(&self, report: &str, problem: impl std::fmt::Display) -> IngestError {
        IngestError::Input {
            source_name: self.connector.into(),
            problem: format!("report {report}: {problem}"),
        }
    }

    /// Runs `report_type` over `window` and returns its document.
    pub async fn run(&self, report_type: &str, window: Window) -> Result<Document, IngestError> {
        let body = json!({
            "reportType": report_type,
            "marketplaceIds": [self.marketplace],
            "dataStartTime": iso(window.from),
            "dataEndTime": iso(window.to),
        });
        let created: Created = self
            .create
            .send(&Request::post("reports/2021-06-30/reports").json(&body))
            .await?
            .json(self.connector)?;
        let id = created.report_id;
        let status = Request::get(format!("reports/2021-06-30/reports/{id}"));
        let done = self
            .poll
            .wait(self.connector, &id, || async {
                let r: Report = self.status.send(&status).await?.json(self.connector)?;
                Ok(match r.processing_status.as_str() {
                    "DONE" => Polled::Done(Some(r.report_document_id)),
                    "CANCELLED" => Polled::Done(None),
                    "FATAL" => Polled::Failed(format!("{report_type} FATAL")),
                    _ => Polled::Pending(r.processing_status),
                })
            })
            .await?;
        let document_id = match done {
            None => {
                tracing::info!(connector = self.connector, report = %id, report_type, "report CANCELLED: no data in the range");
                return Ok(Document {
                    report_id: id,
                    bytes: Vec::new(),
                });
            }
            Some(Some(d)) => d,
            Some(None) => return Err(self.input(&id, "a DONE report has no `reportDocumentId`")),
        };
        let doc: ReportDocument = self
            .document
            .send(&Request::get(format!(
                "reports/2021-06-30/documents/{document_id}"
            )))
            .await?
            .json(self.connector)?;
        let file = self
            .download
            .send(&Request::get(doc.url).without_token())
            .await?;
        let bytes = match doc.compression_algorithm.as_deref() {
            None => file.body,
            Some("GZIP") => gunzip(&file.body).map_err(|e| self.input(&id, e))?,
            Some(other) => {
                return Err(self.input(
                    &id,
                    format!("unknown compressionAlgorithm {other:?} (known: GZIP)"),
                ));
            }
        };
        tracing::info!(connector = self.connector, report = %id, report_type, bytes = bytes.len(), "report downloaded");
        Ok(Document {
            report_id: id,
            bytes,
        })
    }
}
