//! The few admin calls a benchmark run makes: metadata (partition leaders and their
//! addresses), creating and deleting its topics, and the earliest/latest offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsRequest,
    MetadataRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::wire::Connection;

/// Kafka error codes the admin calls treat specially.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;

/// How long a new topic may take to show leaders for all its partitions.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC_READY_POLL: Duration = Duration::from_millis(100);
/// The timeout CreateTopics and DeleteTopics ask the broker for.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// ListOffsets timestamps meaning "earliest" and "latest".
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

/// A Kafka error code as its name.
pub fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or_else(
        || format!("error code {code}"),
        |error| format!("{error:?}"),
    )
}

pub fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Where each partition of some topics lives.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// host:port of each broker by node id.
    pub brokers: BTreeMap<i32, String>,
    /// (topic, partition) → leader node id.
    pub leaders: BTreeMap<(String, i32), i32>,
}

impl Layout {
    pub fn leader_address(&self, topic: &str, partition: i32) -> anyhow::Result<&str> {
        let leader = self
            .leaders
            .get(&(topic.to_string(), partition))
            .ok_or_else(|| anyhow!("no leader known for {topic}-{partition}"))?;
        self.brokers
            .get(leader)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("leader {leader} of {topic}-{partition} is not in metadata"))
    }
}

/// Metadata for `topics`; fails on a topic error, so a missing topic is reported by name.
pub fn layout(connection: &mut Connection, topics: &[String]) -> anyhow::Result<Layout> {
    let request = MetadataRequest::default().with_topics(Some(
        topics
            .iter()
            .map(|topic| MetadataRequestTopic::default().with_name(Some(TopicName(text(topic)))))
            .collect(),
    ));
    let (_, response) =
        connection.call(ApiKey::Metadata, 1..=12, RequestKind::Metadata(request))?;
    let ResponseKind::Metadata(response) = response else {
        bail!("Metadata answered with another response kind");
    };
    let mut layout = Layout {
        brokers: response
            .brokers
            .iter()
            .map(|broker| (broker.node_id.0, format!("{}:{}", broker.host, broker.port)))
            .collect(),
        leaders: BTreeMap::new(),
    };
    for topic in &response.topics {
        let name = topic.name.as_ref().map_or("?", |name| name.0.as_str());
        if topic.error_code != 0 {
            bail!("topic {name}: {}", error_name(topic.error_code));
        }
        for partition in &topic.partitions {
            if partition.error_code != 0 || partition.leader_id.0 < 0 {
                bail!(
                    "{name}-{}: {}",
                    partition.partition_index,
                    error_name(partition.error_code.max(LEADER_NOT_AVAILABLE))
                );
            }
            layout.leaders.insert(
                (name.to_string(), partition.partition_index),
                partition.leader_id.0,
            );
        }
    }
    Ok(layout)
}

/// Metadata for `topics`, retried until every partition has a leader (a new topic can take a
/// moment) or the timeout passes.
pub fn wait_for_layout(connection: &mut Connection, topics: &[String]) -> anyhow::Result<Layout> {
    let started = Instant::now();
    loop {
        match layout(connection, topics) {
            Ok(layout) => return Ok(layout),
            Err(error) if started.elapsed() < TOPIC_READY_TIMEOUT => {
                let _ = error;
                std::thread::sleep(TOPIC_READY_POLL);
            }
            Err(error) => return Err(error).context("waiting for the topics to have leaders"),
        }
    }
}

/// Creates `topics`, each with `partitions` partitions and `replicas` replicas and the given
/// topic configs. A topic that already exists is an error unless `reuse` is set.
pub fn create_topics(
    connection: &mut Connection,
    topics: &[String],
    partitions: i32,
    replicas: i16,
    configs: &[(String, String)],
    reuse: bool,
) -> anyhow::Result<()> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(
            topics
                .iter()
                .map(|topic| {
                    CreatableTopic::default()
                        .with_name(TopicName(text(topic)))
                        .with_num_partitions(partitions)
                        .with_replication_factor(replicas)
                        .with_configs(
                            configs
                                .iter()
                                .map(|(name, value)| {
                                    CreatableTopicConfig::default()
                                        .with_name(text(name))
                                        .with_value(Some(text(value)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let (_, response) = connection.call(
        ApiKey::CreateTopics,
        2..=7,
        RequestKind::CreateTopics(request),
    )?;
    let ResponseKind::CreateTopics(response) = response else {
        bail!("CreateTopics answered with another response kind");
    };
    for topic in &response.topics {
        match topic.error_code {
            0 => {}
            TOPIC_ALREADY_EXISTS if reuse => {}
            code => bail!(
                "creating topic {}: {}{}",
                topic.name.0,
                error_name(code),
                topic
                    .error_message
                    .as_ref()
                    .map(|message| format!(" ({message})"))
                    .unwrap_or_default()
            ),
        }
    }
    Ok(())
}

/// Deletes `topics`; a topic that does not exist is not an error.
pub fn delete_topics(connection: &mut Connection, topics: &[String]) -> anyhow::Result<()> {
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topic_names(topics.iter().map(|topic| TopicName(text(topic))).collect());
    let (_, response) = connection.call(
        ApiKey::DeleteTopics,
        1..=5,
        RequestKind::DeleteTopics(request),
    )?;
    let ResponseKind::DeleteTopics(response) = response else {
        bail!("DeleteTopics answered with another response kind");
    };
    for topic in &response.responses {
        if topic.error_code != 0 && topic.error_code != UNKNOWN_TOPIC_OR_PARTITION {
            bail!(
                "deleting topic {}: {}",
                topic.name.as_ref().map_or("?", |name| name.0.as_str()),
                error_name(topic.error_code)
            );
        }
    }
    Ok(())
}

/// The offset at `timestamp` (`EARLIEST`, `LATEST`) of each partition of `topic`, asked of the
/// partition's leader through `connection`.
pub fn offsets(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|partition| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let (_, response) = connection.call(
        ApiKey::ListOffsets,
        1..=7,
        RequestKind::ListOffsets(request),
    )?;
    let ResponseKind::ListOffsets(response) = response else {
        bail!("ListOffsets answered with another response kind");
    };
    let mut found = BTreeMap::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            if partition.error_code != 0 {
                bail!(
                    "ListOffsets {topic}-{}: {}",
                    partition.partition_index,
                    error_name(partition.error_code),
                    topic = topic.name.0
                );
            }
            found.insert(partition.partition_index, partition.offset);
        }
    }
    Ok(found)
}
