//! Topic names and record keys, defined once for every role.

/// The logical topics of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Order lifecycle events (`order.*`), keyed by shop.
    Orders,
    /// Ad performance rows (`ad.*`), keyed by shop.
    Ads,
    /// Inventory snapshots and shipment milestones, keyed by shop.
    Logistics,
    /// Connector heartbeats (`source.heartbeat`) and the marketplaces' own account-health
    /// figures (`account.health_metric`), keyed by shop: signs of life and reference values,
    /// not facts, so they neither drive the processor's watermark nor have a lateness clock.
    Health,
    /// KPI values, keyed by [`crate::KpiUpdate::key`] (an upsert stream: compaction-friendly).
    KpiUpdates,
    /// Breach events, keyed by breach id.
    Breaches,
    /// Records a role could not use, with the reason; keyed like the original record.
    DeadLetter,
}

impl Topic {
    /// All topics, in a stable order.
    pub const ALL: [Topic; 7] = [
        Topic::Orders,
        Topic::Ads,
        Topic::Logistics,
        Topic::Health,
        Topic::KpiUpdates,
        Topic::Breaches,
        Topic::DeadLetter,
    ];

    /// The topics canonical events travel on.
    pub const EVENTS: [Topic; 4] = [Topic::Orders, Topic::Ads, Topic::Logistics, Topic::Health];

    /// The name after the prefix.
    pub fn suffix(&self) -> &'static str {
        match self {
            Topic::Orders => "events.orders",
            Topic::Ads => "events.ads",
            Topic::Logistics => "events.logistics",
            Topic::Health => "events.health",
            Topic::KpiUpdates => "kpi.updates",
            Topic::Breaches => "breaches",
            Topic::DeadLetter => "deadletter",
        }
    }
}

/// Topic names under one prefix (`kpiflow` by default), so several pipelines or test runs can
/// share a cluster without seeing each other's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new(Topics::DEFAULT_PREFIX)
    }
}

impl Topics {
    /// The prefix used when none is configured.
    pub const DEFAULT_PREFIX: &'static str = "kpiflow";

    /// Topic names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full topic name, e.g. `kpiflow.events.orders`.
    pub fn name(&self, topic: Topic) -> String {
        format!("{}.{}", self.prefix, topic.suffix())
    }

    /// Which logical topic a full name is, if any.
    pub fn parse(&self, name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| self.name(*t) == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let t = Topics::new("test-1");
        for topic in Topic::ALL {
            assert_eq!(t.parse(&t.name(topic)), Some(topic));
        }
        assert_eq!(t.name(Topic::Orders), "test-1.events.orders");
        assert_eq!(t.parse("kpiflow.events.orders"), None);
    }
}
