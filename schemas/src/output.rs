//! What the processor publishes (KPI updates, breach events) and what any role dead-letters.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::money::Decimal;
use crate::{Channel, SchemaError};

/// Which shop a KPI value is about.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct Scope {
    /// Shop id.
    pub shop: String,
    /// Sales channel.
    pub channel: Channel,
    /// Marketplace id.
    pub marketplace: String,
    /// Seller SKU, for KPIs grouped by SKU (absent for shop-level values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Ad campaign id, for KPIs grouped by campaign (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

impl Scope {
    /// A shop-level scope (no SKU, no campaign).
    pub fn shop(
        shop: impl Into<String>,
        channel: Channel,
        marketplace: impl Into<String>,
    ) -> Scope {
        Scope {
            shop: shop.into(),
            channel,
            marketplace: marketplace.into(),
            sku: None,
            campaign: None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.channel, self.marketplace, self.shop)?;
        if let Some(sku) = &self.sku {
            write!(f, "/sku={sku}")?;
        }
        if let Some(campaign) = &self.campaign {
            write!(f, "/campaign={campaign}")?;
        }
        Ok(())
    }
}

/// The kind of window a KPI value covers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// A calendar day in the window's time zone (23, 24 or 25 hours long).
    BusinessDay,
    /// A calendar week (Monday to Monday) in the window's time zone.
    Week,
    /// A calendar month in the window's time zone.
    Month,
    /// The last N hours ending at `end` (sliding by one hour).
    Rolling,
    /// N hours ending a fixed lag before the newest hour, e.g. Amazon's on-time delivery
    /// rate: 14 days ending 7 days ago, so deliveries still in transit have landed.
    Lagged,
}

impl WindowKind {
    /// Whether windows of this kind are calendar periods (a day, a week, a month), each a
    /// period of its own rather than one step of a sliding sequence.
    pub fn is_calendar(&self) -> bool {
        matches!(
            self,
            WindowKind::BusinessDay | WindowKind::Week | WindowKind::Month
        )
    }

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            WindowKind::BusinessDay => "business_day",
            WindowKind::Week => "week",
            WindowKind::Month => "month",
            WindowKind::Rolling => "rolling",
            WindowKind::Lagged => "lagged",
        }
    }
}

/// The window a KPI value covers, with its time zone and time basis.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct WindowRef {
    /// Kind of window.
    pub kind: WindowKind,
    /// A short name for the window definition, e.g. `business_day` or `rolling_24h`.
    pub name: String,
    /// Inclusive start, UTC.
    pub start: DateTime<Utc>,
    /// Exclusive end, UTC.
    pub end: DateTime<Utc>,
    /// The IANA zone the window's boundaries were drawn in.
    pub time_zone: String,
    /// Which timestamp of the facts places them in the window, e.g. `placed`, `shipped`, `ad_date`.
    pub basis: String,
}

/// Whether a larger value of a KPI is good or bad news.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger is better (GMV, ROAS).
    HigherIsBetter,
    /// Larger is worse (late shipment rate).
    LowerIsBetter,
}

impl Direction {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::HigherIsBetter => "higher_is_better",
            Direction::LowerIsBetter => "lower_is_better",
        }
    }
}

/// Whether a KPI is one of the few shown first, or supporting detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// One of the 3 to 5 KPIs a team watches first.
    Core,
    /// Detail behind the core KPIs.
    Supporting,
}

impl Priority {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Priority::Core => "core",
            Priority::Supporting => "supporting",
        }
    }
}

/// One KPI value for one scope and window; an upsert keyed by (kpi, scope, window).
///
/// A window is published again whenever late or restated data changes it; readers keep the
/// row with the highest `revision` per key ([`KpiUpdate::key`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KpiUpdate {
    /// KPI id, e.g. `late_shipment_rate`.
    pub kpi: String,
    /// Version of the KPI's definition.
    pub kpi_version: u32,
    /// Unit: `ratio`, `money`, `count`.
    pub unit: String,
    /// Whether larger is better.
    pub direction: Direction,
    /// Team that owns the KPI, e.g. `operations`, `ads`.
    pub owner: String,
    /// Core or supporting.
    pub priority: Priority,
    /// The shop the value is about.
    pub scope: Scope,
    /// The window the value covers.
    pub window: WindowRef,
    /// Exact numerator (or the value itself for sums and counts).
    pub numerator: Decimal,
    /// Exact denominator, for ratios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<Decimal>,
    /// The value: numerator / denominator for ratios; absent when the denominator is zero.
    pub value: Option<f64>,
    /// Currency of money values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Increases each time this key is published; the highest is current.
    pub revision: u64,
    /// The processor's event-time watermark when it published this value.
    pub watermark: DateTime<Utc>,
    /// Wall-clock publish time.
    pub emitted_at: DateTime<Utc>,
    /// The value may still change: facts it counts may still arrive or be restated (late
    /// orders, ad attribution, returns and defects booked on their order's date) until
    /// `final_at`. Judged at `watermark`; a row published while settling stays settling
    /// until a later row of its key says otherwise.
    #[serde(default)]
    pub settling: bool,
    /// When (in event time) the value becomes final: the window's end plus the longest time
    /// the facts it counts may still arrive after their booked time (the lateness allowances
    /// of their kinds, plus `lookback` for facts booked before their own time). Absent for
    /// values that never settle (cross-checks against a marketplace's figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_at: Option<DateTime<Utc>>,
}

impl KpiUpdate {
    /// The upsert key, also the Kafka record key: `kpi|channel/marketplace/shop|window|start`.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.kpi,
            self.scope,
            self.window.name,
            self.window.start.to_rfc3339()
        )
    }

    /// Decodes a published update.
    pub fn from_json(bytes: &[u8]) -> Result<KpiUpdate, SchemaError> {
        decode("kpi.update", bytes)
    }
}

/// How bad a breach is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Act soon.
    Warning,
    /// Act now; pages on-call.
    Critical,
}

impl Severity {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The comparison a threshold rule makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleOp {
    /// Breached when the value is above the threshold.
    Above,
    /// Breached when the value is below the threshold.
    Below,
}

impl RuleOp {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleOp::Above => "above",
            RuleOp::Below => "below",
        }
    }
}

/// Whether a breach opened or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreachState {
    /// The KPI crossed its rule.
    Firing,
    /// The KPI is back within its rule.
    Resolved,
}

impl BreachState {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreachState::Firing => "firing",
            BreachState::Resolved => "resolved",
        }
    }
}

/// What kind of rule opened a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The value crossed a static threshold.
    Threshold,
    /// The value changed by more than a percentage against an earlier window (WoW, MoM) or a
    /// configured baseline.
    Trend,
    /// A source sent nothing for longer than allowed.
    Staleness,
    /// kpiflow's value of a KPI and the marketplace's own figure for the same days differ by
    /// more than a tolerance (`*_vs_amazon`).
    CrossCheck,
}

impl RuleKind {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleKind::Threshold => "threshold",
            RuleKind::Trend => "trend",
            RuleKind::Staleness => "staleness",
            RuleKind::CrossCheck => "cross_check",
        }
    }
}

/// A breach opened or resolved. Both events of one breach share `breach_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BreachEvent {
    /// Deterministic id: the same rule, scope and opening window always give the same id.
    pub breach_id: String,
    /// Rule id from the configuration.
    pub rule: String,
    /// Threshold, trend, staleness or cross-check.
    pub rule_kind: RuleKind,
    /// Firing or resolved.
    pub state: BreachState,
    /// Severity of the rule.
    pub severity: Severity,
    /// KPI id.
    pub kpi: String,
    /// Version of the KPI's definition.
    pub kpi_version: u32,
    /// Team that owns the KPI (who gets the alert).
    pub owner: String,
    /// Core or supporting.
    pub priority: Priority,
    /// Unit of `value` and `threshold`: `ratio`, `money`, `count`, `days`, `percent` (trend
    /// rules compare a percentage change), `seconds` (staleness).
    pub unit: String,
    /// The shop the breach is about.
    pub scope: Scope,
    /// The window whose value opened (or closed) the breach.
    pub window: WindowRef,
    /// The KPI value at this transition.
    pub value: Option<f64>,
    /// Exact numerator at this transition.
    pub numerator: Decimal,
    /// Exact denominator at this transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<Decimal>,
    /// Comparison the rule makes.
    pub op: RuleOp,
    /// Threshold that opens the breach.
    pub threshold: f64,
    /// Trend rules: the value compared against (the earlier window's value or the baseline);
    /// cross-check rules: the marketplace's own rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// A sentence for humans.
    pub message: String,
    /// Link to the runbook for this rule, if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    /// Event time of the transition (the end of the window that caused it).
    pub at: DateTime<Utc>,
    /// Wall-clock publish time.
    pub emitted_at: DateTime<Utc>,
}

impl BreachEvent {
    /// Decodes a published breach event.
    pub fn from_json(bytes: &[u8]) -> Result<BreachEvent, SchemaError> {
        decode("breach", bytes)
    }
}

/// A record some role could not use, with the reason; published to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// The role that gave up on the record, e.g. `processor`, `ingest.simulator`.
    pub stage: String,
    /// Short machine-readable reason class, e.g. `invalid`, `late`, `currency`.
    pub reason_kind: String,
    /// The full reason, naming field, value and rule.
    pub reason: String,
    /// Topic the record came from, if it came from Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Partition it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Offset it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The record key, as text (lossy if it was not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The raw record, as text (lossy if it was not UTF-8); only its start when
    /// `payload_truncated`.
    pub payload: String,
    /// `true` when the record was too large to carry whole (see [`DeadLetter::MAX_PAYLOAD_BYTES`]):
    /// `payload` holds its start, `payload_bytes` and `payload_sha256` describe all of it, and
    /// `topic`/`partition`/`offset` say where to read it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
    /// Size of the whole raw record in bytes, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    /// SHA-256 of the whole raw record (lower-case hex), when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
}

impl DeadLetter {
    /// Most bytes of the raw record a dead letter carries. A larger record keeps its start,
    /// size and hash: its letter must fit the broker's message limit (librdkafka's
    /// `message.max.bytes` and the broker's `max.message.bytes` are about 1 MB by default),
    /// or publishing it fails and the stage would read, refuse and fail on it forever.
    pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
    /// Most bytes of a whole encoded dead letter, under the 1 MB defaults with room for the
    /// key and the record's framing.
    pub const MAX_JSON_BYTES: usize = 900 * 1024;
    /// Most bytes of the reason and of the key a letter carries (a reason may quote a value).
    const MAX_TEXT_BYTES: usize = 8 * 1024;

    /// A dead letter for `raw`, refused by `stage` for `reason` (class `reason_kind`), now.
    pub fn new(
        stage: &str,
        reason_kind: &str,
        reason: impl Into<String>,
        raw: &[u8],
    ) -> DeadLetter {
        let mut letter = DeadLetter {
            stage: stage.to_string(),
            reason_kind: reason_kind.to_string(),
            reason: reason.into(),
            topic: None,
            partition: None,
            offset: None,
            key: None,
            payload: String::new(),
            payload_truncated: false,
            payload_bytes: None,
            payload_sha256: None,
            at: Utc::now(),
        };
        truncate(&mut letter.reason, Self::MAX_TEXT_BYTES);
        if raw.len() > Self::MAX_PAYLOAD_BYTES {
            letter.payload_truncated = true;
            letter.payload_bytes = Some(raw.len() as u64);
            letter.payload_sha256 = Some(sha256_hex(raw));
            letter.payload = String::from_utf8_lossy(&raw[..Self::MAX_PAYLOAD_BYTES]).into_owned();
            // A multi-byte character cut at the end became U+FFFD: drop it.
            if letter.payload.ends_with('\u{FFFD}') {
                letter.payload.pop();
            }
        } else {
            letter.payload = String::from_utf8_lossy(raw).into_owned();
        }
        letter
    }

    /// Records where the refused record was read from.
    pub fn from_record(
        mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
    ) -> DeadLetter {
        self.topic = Some(topic.to_string());
        self.partition = Some(partition);
        self.offset = Some(offset);
        self.key = key.map(|k| {
            let mut k = String::from_utf8_lossy(k).into_owned();
            truncate(&mut k, Self::MAX_TEXT_BYTES);
            k
        });
        self
    }

    /// Encodes to the wire JSON, at most [`DeadLetter::MAX_JSON_BYTES`]: a payload whose JSON
    /// escapes (control characters become six bytes each) would pass that is cut further.
    pub fn to_json(&self) -> Vec<u8> {
        // Owned strings and numbers into a Vec: serializing cannot fail.
        let json = serde_json::to_vec(self).expect("dead letters serialize");
        if json.len() <= Self::MAX_JSON_BYTES {
            return json;
        }
        let mut cut = self.clone();
        if !cut.payload_truncated {
            let raw = self.payload.as_bytes();
            cut.payload_truncated = true;
            cut.payload_bytes = Some(raw.len() as u64);
            cut.payload_sha256 = Some(sha256_hex(raw));
        }
        let payload = std::mem::take(&mut cut.payload);
        let overhead = serde_json::to_vec(&cut)
            .expect("dead letters serialize")
            .len();
        cut.payload = payload;
        loop {
            let json = serde_json::to_vec(&cut).expect("dead letters serialize");
            if json.len() <= Self::MAX_JSON_BYTES || cut.payload.is_empty() {
                return json;
            }
            // Keep the share of the payload that fits at its average JSON cost per byte
            // (escapes make some bytes cost six); a cut inside a character or an uneven mix
            // takes another round, each smaller than the last.
            let (len, cost) = (cut.payload.len(), json.len() - overhead);
            let budget = Self::MAX_JSON_BYTES.saturating_sub(overhead);
            let keep = (len as u128 * budget as u128 / cost as u128) as usize;
            truncate(&mut cut.payload, keep.min(len - 1));
        }
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn decode<T: serde::de::DeserializeOwned>(schema: &str, bytes: &[u8]) -> Result<T, SchemaError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        SchemaError::Field {
            schema: schema.to_string(),
            field,
            problem: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_too_large_for_the_broker_keeps_its_start_size_and_hash() {
        // 5 MB: the broker accepted it on the input topic (raised max.message.bytes), but a
        // letter carrying all of it fails librdkafka's 1 MB message.max.bytes.
        let raw = vec![b'x'; 5_000_000];
        let letter = DeadLetter::new("processor", "invalid", "not JSON", &raw).from_record(
            "kpiflow.events.orders",
            1,
            42,
            Some(b"shop-1"),
        );
        let json = letter.to_json();
        assert!(json.len() <= 900 * 1024, "{} bytes", json.len());
        let back: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(back["payload_truncated"], true);
        assert_eq!(back["payload_bytes"], 5_000_000);
        // `sha256sum` of five million `x` bytes, computed outside this code.
        assert_eq!(
            back["payload_sha256"],
            "03a7bd518f3e4ecac11f2e77f7437928ba5d80ac0b2b26a523d90e7628bfd59b"
        );
        assert_eq!(back["payload"].as_str().unwrap().len(), 256 * 1024);
        assert_eq!(back["offset"], 42);
        assert_eq!(back["reason"], "not JSON");
    }

    #[test]
    fn a_payload_whose_json_escapes_would_exceed_the_limit_is_cut_further() {
        // 200,000 control characters: under the payload cap, but six bytes each in JSON.
        let raw = vec![1u8; 200_000];
        let json = DeadLetter::new("processor", "invalid", "not JSON", &raw).to_json();
        assert!(json.len() <= 900 * 1024, "{} bytes", json.len());
        let back: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(back["payload_truncated"], true);
        assert_eq!(back["payload_bytes"], 200_000);
        assert_eq!(
            back["payload_sha256"],
            "6015fcd09f3f14b7da9d89cb95f1e4ee007948bc7cf9a59be8163c3460e4f954"
        );
        let kept = back["payload"].as_str().unwrap().len();
        assert!(kept > 100_000 && kept < 200_000, "{kept} characters kept");
    }

    #[test]
    fn an_ordinary_letter_is_whole_and_says_nothing_of_truncation() {
        let json = DeadLetter::new("processor", "late", "late", br#"{"a":1}"#).to_json();
        let back: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(back["payload"], r#"{"a":1}"#);
        for absent in ["payload_truncated", "payload_bytes", "payload_sha256"] {
            assert!(back.get(absent).is_none(), "{absent} in {back}");
        }
    }

    /// Asserts that `as_str` is serde's wire name for every listed variant; the match makes
    /// a variant added later fail to compile here until it is listed.
    macro_rules! assert_wire_names {
        ($ty:ident: $($variant:ident),+ $(,)?) => {
            for v in [$($ty::$variant),+] {
                match v {
                    $($ty::$variant)|+ => {}
                }
                assert_eq!(
                    serde_json::to_value(v).unwrap(),
                    serde_json::Value::String(v.as_str().to_string()),
                    "{}::{v:?}",
                    stringify!($ty)
                );
            }
        };
    }

    #[test]
    fn as_str_is_the_serde_wire_name_of_every_variant() {
        assert_wire_names!(Direction: HigherIsBetter, LowerIsBetter);
        assert_wire_names!(WindowKind: BusinessDay, Week, Month, Rolling, Lagged);
        assert_wire_names!(Priority: Core, Supporting);
        assert_wire_names!(RuleKind: Threshold, Trend, Staleness, CrossCheck);
        assert_wire_names!(RuleOp: Above, Below);
        assert_wire_names!(BreachState: Firing, Resolved);
        assert_wire_names!(Severity: Info, Warning, Critical);
    }
}
