//! Metadata and admin calls of the blocking client: where partitions live, creating and deleting
//! topics, and partition offsets. Shared by the `ringlog` CLI and the benchmark.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsRequest,
    MetadataRequest, RequestKind, ResponseKind, TopicName,
};

use super::{text, wrong_kind, Connection};
use crate::error::{Error, Result};

/// Kafka error codes the admin calls treat specially.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;

/// How long a new topic may take to show leaders for all its partitions: a controller answers
/// CreateTopics before every broker has applied it, but a healthy cluster takes well under this.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC_READY_POLL: Duration = Duration::from_millis(100);
/// The timeout CreateTopics and DeleteTopics ask the broker for: Kafka's admin client default
/// `default.api.timeout.ms` is 60 s; half of it keeps a stuck call from looking like a hang.
pub const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// ListOffsets timestamps meaning "earliest" and "latest".
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

/// Where each partition of some topics lives.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// host:port of each broker by node id.
    pub brokers: BTreeMap<i32, String>,
    /// (topic, partition) → leader node id.
    pub leaders: BTreeMap<(String, i32), i32>,
}

impl Layout {
    pub fn leader_address(&self, topic: &str, partition: i32) -> Result<&str> {
        let leader = self
            .leaders
            .get(&(topic.to_string(), partition))
            .ok_or_else(|| Error::Peer(format!("no leader known for {topic}-{partition}")))?;
        self.brokers.get(leader).map(String::as_str).ok_or_else(|| {
            Error::Peer(format!(
                "leader {leader} of {topic}-{partition} is not in metadata"
            ))
        })
    }
}

/// Metadata for `topics`; fails on a topic error, so a missing topic is reported by name.
pub fn layout(connection: &mut Connection, topics: &[String]) -> Result<Layout> {
    let request = MetadataRequest::default().with_topics(Some(
        topics
            .iter()
            .map(|topic| MetadataRequestTopic::default().with_name(Some(TopicName(text(topic)))))
            .collect(),
    ));
    let (_, response) =
        connection.call(ApiKey::Metadata, 1..=12, RequestKind::Metadata(request))?;
    let ResponseKind::Metadata(response) = response else {
        return Err(wrong_kind(ApiKey::Metadata));
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
            return Err(Error::Kafka {
                op: format!("topic {name}"),
                code: topic.error_code,
                message: None,
            });
        }
        for partition in &topic.partitions {
            if partition.error_code != 0 || partition.leader_id.0 < 0 {
                return Err(Error::Kafka {
                    op: format!("{name}-{}", partition.partition_index),
                    code: if partition.error_code == 0 {
                        LEADER_NOT_AVAILABLE
                    } else {
                        partition.error_code
                    },
                    message: None,
                });
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
pub fn wait_for_layout(connection: &mut Connection, topics: &[String]) -> Result<Layout> {
    let started = Instant::now();
    loop {
        match layout(connection, topics) {
            Ok(layout) => return Ok(layout),
            // A broker that cannot be reached will not come back within the poll.
            Err(error @ Error::Io { .. }) => return Err(error),
            Err(_) if started.elapsed() < TOPIC_READY_TIMEOUT => {
                std::thread::sleep(TOPIC_READY_POLL);
            }
            Err(error) => return Err(error),
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
) -> Result<()> {
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
        return Err(wrong_kind(ApiKey::CreateTopics));
    };
    for topic in &response.topics {
        match topic.error_code {
            0 => {}
            TOPIC_ALREADY_EXISTS if reuse => {}
            code => {
                return Err(Error::Kafka {
                    op: format!("creating topic {}", topic.name.0),
                    code,
                    message: topic
                        .error_message
                        .as_ref()
                        .map(|message| message.to_string()),
                })
            }
        }
    }
    Ok(())
}

/// Deletes `topics`; a topic that does not exist is not an error.
pub fn delete_topics(connection: &mut Connection, topics: &[String]) -> Result<()> {
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topic_names(topics.iter().map(|topic| TopicName(text(topic))).collect());
    let (_, response) = connection.call(
        ApiKey::DeleteTopics,
        1..=5,
        RequestKind::DeleteTopics(request),
    )?;
    let ResponseKind::DeleteTopics(response) = response else {
        return Err(wrong_kind(ApiKey::DeleteTopics));
    };
    for topic in &response.responses {
        if topic.error_code != 0 && topic.error_code != UNKNOWN_TOPIC_OR_PARTITION {
            return Err(Error::Kafka {
                op: format!(
                    "deleting topic {}",
                    topic.name.as_ref().map_or("?", |name| name.0.as_str())
                ),
                code: topic.error_code,
                message: topic
                    .error_message
                    .as_ref()
                    .map(|message| message.to_string()),
            });
        }
    }
    Ok(())
}

/// The offset at `timestamp` (`EARLIEST`, `LATEST`, or milliseconds since the epoch) of each
/// partition of `topic`, asked of the partition's leader through `connection`. A partition
/// with no record at or after the timestamp maps to -1, as in Kafka.
pub fn offsets(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>> {
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
        return Err(wrong_kind(ApiKey::ListOffsets));
    };
    let mut found = BTreeMap::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            if partition.error_code != 0 {
                return Err(Error::Kafka {
                    op: format!("ListOffsets {}-{}", topic.name.0, partition.partition_index),
                    code: partition.error_code,
                    message: None,
                });
            }
            found.insert(partition.partition_index, partition.offset);
        }
    }
    Ok(found)
}
