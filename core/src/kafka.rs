//! How every role talks to Kafka: settings, producers, consumers and topic set-up.

use std::collections::BTreeMap;
use std::time::Duration;

use kpiflow_schemas::{Topic, Topics};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use crate::CoreError;
use crate::error::kafka_retryable;

/// Kafka settings shared by every role (`[kafka]` in the config file).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    #[serde(default = "KafkaConfig::default_bootstrap")]
    pub bootstrap_servers: String,
    /// Prefix of every topic name (`<prefix>.events.orders`, …); letters, digits, `.`, `_`, `-`.
    #[serde(default = "KafkaConfig::default_prefix")]
    pub topic_prefix: String,
    /// Whether to create missing topics at start-up (off when an operator manages topics).
    #[serde(default = "KafkaConfig::default_true")]
    pub create_topics: bool,
    /// Partitions of the topics kpiflow creates; the unit of scale-out.
    #[serde(default = "KafkaConfig::default_partitions")]
    pub partitions: i32,
    /// Replication factor of the topics kpiflow creates (3 in production, 1 on a laptop).
    #[serde(default = "KafkaConfig::default_replication")]
    pub replication_factor: i32,
    /// Extra librdkafka properties given to every client, e.g. `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`. A value `env:NAME` is read from
    /// the environment variable NAME when the client is built, so secrets stay out of files.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

// Secrets may sit in `client`; never print their values.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let client: BTreeMap<&str, &str> = self
            .client
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic_prefix", &self.topic_prefix)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("client", &client)
            .finish()
    }
}

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas"]
        .iter()
        .any(|s| k.contains(s))
}

/// How far a consumer group's committed offset is behind the end of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The group's committed offset (0 when it has committed none).
    pub committed: i64,
    /// The partition's end offset (high watermark).
    pub end: i64,
}

impl PartitionLag {
    /// Records the group has not committed yet.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

/// Properties kpiflow sets itself because its delivery guarantees depend on them.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    // Per processor member: `processor.instance_id`, never one value for every client.
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "isolation.level",
];

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: Self::default_bootstrap(),
            topic_prefix: Self::default_prefix(),
            create_topics: true,
            partitions: Self::default_partitions(),
            replication_factor: Self::default_replication(),
            client: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    fn default_bootstrap() -> String {
        "127.0.0.1:9092".into()
    }
    fn default_prefix() -> String {
        Topics::DEFAULT_PREFIX.into()
    }
    fn default_true() -> bool {
        true
    }
    fn default_partitions() -> i32 {
        3
    }
    fn default_replication() -> i32 {
        1
    }

    /// Checks every value before any connection is made; errors quote key and value.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, problem: &str| CoreError::Config {
            key: format!("kafka.{key}"),
            value: value.to_string(),
            problem: problem.to_string(),
        };
        if self.bootstrap_servers.trim().is_empty() {
            return Err(bad(
                "bootstrap_servers",
                &self.bootstrap_servers,
                "must list at least one host:port",
            ));
        }
        for server in self.bootstrap_servers.split(',') {
            let server = server.trim();
            let port_ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(bad(
                    "bootstrap_servers",
                    &self.bootstrap_servers,
                    &format!("entry {server:?} is not host:port"),
                ));
            }
        }
        let prefix_ok = !self.topic_prefix.is_empty()
            && self.topic_prefix.len() <= 200
            && self
                .topic_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !prefix_ok {
            return Err(bad(
                "topic_prefix",
                &self.topic_prefix,
                "use 1-200 letters, digits, '.', '_' or '-'",
            ));
        }
        if self.partitions < 1 {
            return Err(bad("partitions", &self.partitions, "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(bad(
                "replication_factor",
                &self.replication_factor,
                "must be at least 1",
            ));
        }
        for key in self.client.keys() {
            if RESERVED.contains(&key.as_str()) {
                return Err(bad(
                    &format!("client.\"{key}\""),
                    &"…",
                    "kpiflow sets this property itself (its delivery guarantees depend on it); \
                     remove it (bootstrap servers go in kafka.bootstrap_servers)",
                ));
            }
        }
        Ok(())
    }

    /// The base client settings: bootstrap servers plus the pass-through properties.
    pub fn client_config(&self) -> Result<ClientConfig, CoreError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.client {
            let value = match value.strip_prefix("env:") {
                Some(var) => std::env::var(var).map_err(|_| CoreError::Config {
                    key: format!("kafka.client.\"{key}\""),
                    value: value.clone(),
                    problem: format!("environment variable {var} is not set"),
                })?,
                None => value.clone(),
            };
            cfg.set(key, value);
        }
        Ok(cfg)
    }

    /// An idempotent producer: retries never duplicate or reorder a partition's records.
    /// Keyed records go where Java clients and Kafka Connect put them ([`shop_partition`]).
    pub fn producer(&self) -> Result<FutureProducer, CoreError> {
        let mut cfg = self.client_config()?;
        cfg.set("partitioner", PARTITIONER)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.kbytes", "262144");
        cfg.create()
            .map_err(|e| CoreError::kafka("creating producer", e))
    }

    /// A consumer in `group` that never commits by itself: callers commit offsets only after
    /// what the records produced is safe.
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer, CoreError> {
        let mut cfg = self.client_config()?;
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false");
        cfg.create()
            .map_err(|e| CoreError::kafka(format!("creating consumer for group {group}"), e))
    }

    /// The committed offset of `group` against the end of every partition of `topics`.
    ///
    /// Blocking (a few broker round-trips): call it from `spawn_blocking` or `block_in_place`
    /// in async code. A fresh broker may answer "not coordinator" for a while; callers that
    /// wait for a group to catch up treat an error as "not yet".
    pub fn group_lag(
        &self,
        group: &str,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Vec<PartitionLag>, CoreError> {
        let mut cfg = self.client_config()?;
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false");
        let consumer: rdkafka::consumer::BaseConsumer = cfg
            .create()
            .map_err(|e| CoreError::kafka("creating an offsets client", e))?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for topic in topics {
            let md = consumer
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| CoreError::kafka(format!("reading metadata of {topic}"), e))?;
            for p in md.topics().iter().flat_map(|t| t.partitions()) {
                let (_, end) = consumer
                    .fetch_watermarks(topic, p.id(), timeout)
                    .map_err(|e| {
                        CoreError::kafka(format!("reading the end of {topic}/{}", p.id()), e)
                    })?;
                tpl.add_partition(topic, p.id());
                ends.push((topic.clone(), p.id(), end));
            }
        }
        let committed = consumer
            .committed_offsets(tpl, timeout)
            .map_err(|e| CoreError::kafka(format!("reading offsets of group {group}"), e))?;
        Ok(ends
            .into_iter()
            .map(|(topic, partition, end)| {
                let committed = match committed
                    .find_partition(&topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                };
                PartitionLag {
                    topic,
                    partition,
                    committed,
                    end,
                }
            })
            .collect())
    }

    /// Waits until a broker answers a metadata request, or `timeout` passes.
    pub async fn wait_until_reachable(&self, timeout: Duration) -> Result<(), CoreError> {
        let consumer: rdkafka::consumer::BaseConsumer = self
            .client_config()?
            .create()
            .map_err(|e| CoreError::kafka("creating metadata client", e))?;
        let deadline = std::time::Instant::now() + timeout;
        tokio::task::spawn_blocking(move || {
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match consumer.fetch_metadata(None, left.min(Duration::from_secs(5))) {
                    Ok(_) => return Ok(()),
                    Err(e) if left.is_zero() => {
                        return Err(CoreError::kafka(
                            format!("no broker answered within {timeout:?}"),
                            e,
                        ));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })
        .await
        .map_err(|e| CoreError::KafkaAdmin(format!("metadata task failed: {e}")))?
    }

    /// The topic names under the configured prefix.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }

    /// Creates every pipeline topic that is missing (no-op when `create_topics` is off).
    /// The KPI update topic is compacted: it is an upsert stream, so only the latest value per
    /// key needs to be kept.
    pub async fn ensure_topics(&self) -> Result<(), CoreError> {
        let names = self.topics();
        let topics: Vec<(String, bool)> = Topic::ALL
            .iter()
            .map(|t| (names.name(*t), *t == Topic::KpiUpdates))
            .collect();
        if !self.create_topics {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()?
            .create()
            .map_err(|e| CoreError::kafka("creating admin client", e))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, compacted)| {
                let t = NewTopic::new(
                    name,
                    self.partitions,
                    TopicReplication::Fixed(self.replication_factor),
                );
                if *compacted {
                    t.set("cleanup.policy", "compact")
                } else {
                    t
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        // A broker that answered a moment ago may be restarting (a rolling upgrade, a blip):
        // transient failures are retried for a minute instead of stopping the stage.
        let deadline = std::time::Instant::now() + ENSURE_TOPICS_RETRY;
        loop {
            let problem = match admin.create_topics(&new, &opts).await {
                Err(e) if kafka_retryable(&e) => CoreError::kafka("creating topics", e),
                Err(e) => return Err(CoreError::kafka("creating topics", e)),
                Ok(results) => {
                    let mut transient = None;
                    for r in results {
                        match r {
                            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((name, code)) if transient_admin_code(code) => {
                                transient = Some(CoreError::KafkaAdmin(format!(
                                    "could not create topic {name}: {code}"
                                )));
                            }
                            Err((name, code)) => {
                                return Err(CoreError::KafkaAdmin(format!(
                                    "could not create topic {name}: {code}"
                                )));
                            }
                        }
                    }
                    match transient {
                        None => return Ok(()),
                        Some(problem) => problem,
                    }
                }
            };
            if std::time::Instant::now() >= deadline {
                return Err(problem);
            }
            tracing::warn!(error = %problem, "creating topics failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// How long [`KafkaConfig::ensure_topics`] retries transient failures.
const ENSURE_TOPICS_RETRY: Duration = Duration::from_secs(60);

/// Per-topic answers of a create request that a later request may not get: the cluster is
/// electing or restarting.
fn transient_admin_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NotController
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::OperationTimedOut
    )
}

/// librdkafka's name for Kafka's default partitioner, the one kpiflow's producers use: murmur2
/// of the key (random partitions for records without one). librdkafka's own default
/// (`consistent_random`, CRC32) puts keys elsewhere than Java clients and Kafka Connect do.
pub const PARTITIONER: &str = "murmur2_random";

/// The partition of a topic with `partitions` partitions that owns `shop`'s events: where
/// Kafka's default partitioner puts a record keyed by the shop id (murmur2 with Kafka's seed,
/// sign bit cleared, modulo the partition count). The contract for anyone producing canonical
/// events; the processor dead-letters an event read from any other partition.
pub fn shop_partition(shop: &str, partitions: i32) -> i32 {
    let hash = murmur2::murmur2(shop.as_bytes(), murmur2::KAFKA_SEED) & 0x7fff_ffff;
    // Both fit in i32: the hash has its sign bit cleared, the remainder is below `partitions`.
    let owner = u64::from(hash) % u64::from(partitions.max(1).unsigned_abs());
    i32::try_from(owner).unwrap_or(0)
}

/// How often a role asks whether a broker answers, for `/readyz` ([`spawn_broker_probe`]).
pub const BROKER_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long one such question may take before the broker counts as unreachable.
pub const BROKER_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Keeps `ready` true while a broker answers a metadata request, asking every `every` with
/// `timeout` (a request that fails or does not answer in time makes it false), until
/// `shutdown`. Each change is logged once. The question names one kpiflow topic, so a cluster
/// with many topics is not asked for all of them; a missing topic still proves a broker
/// answered.
pub fn spawn_broker_probe(
    kafka: &KafkaConfig,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    every: Duration,
    timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, CoreError> {
    let mut cfg = kafka.client_config()?;
    // Back quickly after an outage: librdkafka's default backoff grows to 10s between attempts.
    cfg.set("reconnect.backoff.max.ms", "1000");
    let client: rdkafka::consumer::BaseConsumer = cfg
        .create()
        .map_err(|e| CoreError::kafka("creating the broker probe", e))?;
    let client = std::sync::Arc::new(client);
    let topic = kafka.topics().name(Topic::Orders);
    let bootstrap = kafka.bootstrap_servers.clone();
    Ok(tokio::spawn(async move {
        let mut was: Option<bool> = None;
        loop {
            let (c, t) = (client.clone(), topic.clone());
            let answer =
                tokio::task::spawn_blocking(move || c.fetch_metadata(Some(&t), timeout)).await;
            let ok = matches!(answer, Ok(Ok(_)));
            ready.store(ok, std::sync::atomic::Ordering::Relaxed);
            if was != Some(ok) {
                match (ok, answer) {
                    (true, _) => tracing::info!(%bootstrap, "broker reachable: ready"),
                    (false, Ok(Err(e))) => {
                        tracing::warn!(%bootstrap, error = %e, "broker unreachable: not ready")
                    }
                    (false, _) => tracing::warn!(%bootstrap, "broker unreachable: not ready"),
                }
                was = Some(ok);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }))
}

/// How often [`spawn_lag_reporter`] publishes consumer lag.
pub const LAG_INTERVAL: Duration = Duration::from_secs(15);

/// Publishes `group`'s lag on `topics` as `kpiflow_consumer_lag{component,topic,partition}`
/// every [`LAG_INTERVAL`] until `shutdown` (look-up failures are skipped: lag is a hint).
pub fn spawn_lag_reporter(
    kafka: KafkaConfig,
    group: String,
    topics: Vec<String>,
    metrics: crate::metrics::ComponentMetrics,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LAG_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let (k, g, t) = (kafka.clone(), group.clone(), topics.clone());
            let lags =
                tokio::task::spawn_blocking(move || k.group_lag(&g, &t, Duration::from_secs(5)))
                    .await;
            match lags {
                Ok(Ok(lags)) => metrics.consumer_lag(&lags),
                Ok(Err(e)) => tracing::debug!(error = %e, "consumer lag look-up failed"),
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> KafkaConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn shops_go_to_the_partition_kafkas_default_partitioner_picks() {
        // Java's murmur2 of these keys, from librdkafka's rdmurmur2.c unit test (written from
        // the Java client's results): "kafka" 0xd067cf64, "giberish123456789" 0x8f552b0c,
        // "" 0x106e08d9. Sign bit cleared: 0x5067cf64 = 1348980580, 0x0f552b0c = 257239820,
        // 0x106e08d9 = 275646681.
        // 1348980580 = 2·674490290 = 3·449660193 + 1 = 4·337245145.
        assert_eq!(shop_partition("kafka", 1), 0);
        assert_eq!(shop_partition("kafka", 2), 0);
        assert_eq!(shop_partition("kafka", 3), 1);
        // 257239820 = 3·85746606 + 2.
        assert_eq!(shop_partition("giberish123456789", 3), 2);
        // 275646681 is odd; = 4·68911670 + 1.
        assert_eq!(shop_partition("", 2), 1);
        assert_eq!(shop_partition("", 4), 1);
    }

    #[test]
    fn defaults_are_valid() {
        KafkaConfig::default().validate().unwrap();
        cfg("").validate().unwrap();
    }

    #[test]
    fn errors_quote_key_and_value() {
        let err = cfg(r#"bootstrap_servers = "localhost""#)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"bad config: `kafka.bootstrap_servers` = "localhost": entry "localhost" is not host:port"#
        );
        let err = cfg(r#"topic_prefix = "a b""#).validate().unwrap_err();
        assert!(
            err.to_string().contains("`kafka.topic_prefix` = \"a b\""),
            "{err}"
        );
        let err = cfg("[client]\n\"enable.auto.commit\" = \"true\"")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("enable.auto.commit"), "{err}");
        assert!(toml::from_str::<KafkaConfig>("bootstrap = \"x:1\"").is_err());
    }

    #[test]
    fn secrets_are_redacted_and_env_values_resolved() {
        let c = cfg(
            "[client]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"env:KPIFLOW_TEST_NO_SUCH_VAR\"",
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        let err = c.client_config().unwrap_err().to_string();
        assert!(err.contains("KPIFLOW_TEST_NO_SUCH_VAR is not set"), "{err}");
    }
}
