//! [`Emitter`]: how a source hands over what it read — events checked before publishing,
//! unusable records dead-lettered with the reason — and what one sync published.

use chrono::{DateTime, Utc};
use kpiflow_core::{ComponentMetrics, SourceMetrics};
use kpiflow_schemas::{Channel, Event, EventBody, EventHeader, SourceTz};

use crate::{IngestError, Publish};

/// Who the events of a source are about: the header fields every event of it shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The shop (the Kafka key).
    pub shop: String,
    /// The sales channel the shop sells through (for ad accounts: the channel they advertise).
    pub channel: Channel,
    /// Marketplace id, e.g. `ATVPDKIKX0DER`.
    pub marketplace: String,
    /// The source's zone (Amazon: US Pacific; an ad account's zone).
    pub source_tz: SourceTz,
}

/// One canonical fact read from a platform record, before the shared header fields are added.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// Deterministic id: the same platform record and state always give the same id
    /// (e.g. `amazon:113-1234567-1234567:placed`), so re-reading a window is harmless.
    pub event_id: String,
    /// When the fact happened (UTC).
    pub event_time: DateTime<Utc>,
    /// Seller SKU, where the fact concerns one.
    pub sku: Option<String>,
    /// Marketplace id of the record, where it differs from the source's.
    pub marketplace: Option<String>,
    /// The schema-specific part.
    pub body: EventBody,
}

impl Fact {
    /// A fact without SKU or marketplace override.
    pub fn new(event_id: String, event_time: DateTime<Utc>, body: impl Into<EventBody>) -> Fact {
        Fact {
            event_id,
            event_time,
            sku: None,
            marketplace: None,
            body: body.into(),
        }
    }
}

/// One platform record read: its facts (or why it could not be mapped) and its raw form.
pub type Mapped = (Result<Vec<Fact>, String>, Vec<u8>);

/// What one sync handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Events published.
    pub published: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Newest `event_time` among the published events.
    pub newest_event_time: Option<DateTime<Utc>>,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.published += other.published;
        self.dead_lettered += other.dead_lettered;
        self.newest_event_time = self.newest_event_time.max(other.newest_event_time);
    }
}

/// Where a source puts what it read during one sync.
pub struct Emitter<'p> {
    publisher: &'p dyn Publish,
    connector: &'static str,
    stage: &'static str,
    origin: &'p Origin,
    ingest_time: DateTime<Utc>,
    counts: Counts,
    component: &'p ComponentMetrics,
    source: &'p SourceMetrics,
}

impl<'p> Emitter<'p> {
    /// An emitter for one sync of `connector` (`stage` is its metrics component and
    /// dead-letter stage, e.g. `ingest.amazon_sp_orders`).
    pub fn new(
        publisher: &'p dyn Publish,
        connector: &'static str,
        stage: &'static str,
        origin: &'p Origin,
        component: &'p ComponentMetrics,
        source: &'p SourceMetrics,
    ) -> Emitter<'p> {
        Emitter {
            publisher,
            connector,
            stage,
            origin,
            ingest_time: Utc::now(),
            counts: Counts::default(),
            component,
            source,
        }
    }

    /// The header of an event of this source: `event_id` must be deterministic (the same
    /// platform record and state always give the same id), so re-reading a window is harmless.
    pub fn header(
        &self,
        event_id: String,
        event_time: DateTime<Utc>,
        sku: Option<String>,
    ) -> EventHeader {
        EventHeader {
            event_id,
            source: self.connector.to_string(),
            shop: self.origin.shop.clone(),
            channel: self.origin.channel,
            marketplace: self.origin.marketplace.clone(),
            sku,
            event_time,
            source_tz: self.origin.source_tz,
            ingest_time: self.ingest_time,
        }
    }

    /// Who the events are about.
    pub fn origin(&self) -> &Origin {
        self.origin
    }

    /// Publishes `body` under `header` after checking it; one that breaks a schema rule is
    /// dead-lettered with the rule instead (`raw` is the platform's record).
    pub async fn emit(
        &mut self,
        header: EventHeader,
        body: impl Into<EventBody>,
        raw: &[u8],
    ) -> Result<(), IngestError> {
        let event = Event::new(header, body);
        if let Err(e) = event.validate() {
            return self.dead_letter(&e.to_string(), raw).await;
        }
        self.publisher.publish(&event).await?;
        self.counts.published += 1;
        self.counts.newest_event_time = self
            .counts
            .newest_event_time
            .max(Some(event.header.event_time));
        self.source.records.inc();
        Ok(())
    }

    /// Publishes the facts mapped from one platform record, or dead-letters the record with
    /// the reason mapping failed; `raw` is the record as the platform sent it.
    pub async fn record(
        &mut self,
        mapped: Result<Vec<Fact>, String>,
        raw: &[u8],
    ) -> Result<(), IngestError> {
        self.received();
        match mapped {
            Ok(facts) => {
                for f in facts {
                    let mut header = self.header(f.event_id, f.event_time, f.sku);
                    if let Some(m) = f.marketplace {
                        header.marketplace = m;
                    }
                    self.emit(header, f.body, raw).await?;
                }
                Ok(())
            }
            Err(reason) => self.dead_letter(&reason, raw).await,
        }
    }

    /// Hands over every record of a read in event-time order (a record by its earliest fact;
    /// unmappable records first). The processor judges lateness per source by the newest fact
    /// read, so a source that reads several lists or reports of one window must not let one
    /// make another's facts, or its own earlier ones, late.
    pub async fn records_in_time_order(
        &mut self,
        mut mapped: Vec<Mapped>,
    ) -> Result<(), IngestError> {
        mapped.sort_by_key(|m| {
            m.0.as_ref()
                .ok()
                .and_then(|f| f.iter().map(|f| f.event_time).min())
        });
        for (facts, raw) in mapped {
            self.record(facts, &raw).await?;
        }
        Ok(())
    }

    /// Counts one platform record read (before mapping).
    pub fn received(&self) {
        self.component.received.inc();
    }

    /// Sends a record that cannot be mapped to the dead-letter topic; `reason` names the field
    /// and the value, `raw` is the record as the platform sent it.
    pub async fn dead_letter(&mut self, reason: &str, raw: &[u8]) -> Result<(), IngestError> {
        tracing::warn!(connector = self.connector, shop = %self.origin.shop, reason, "record dead-lettered");
        self.publisher
            .dead_letter(self.stage, "invalid", reason, raw)
            .await?;
        self.counts.dead_lettered += 1;
        Ok(())
    }

    /// What this sync handed over so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}
