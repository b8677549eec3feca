//! Metadata: this broker as the cluster, and the requested topics (all when the request says
//! so), auto-creating unknown ones when both the broker and the request allow it.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{create_topics, str_bytes, uuid};
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};

/// `*AuthorizedOperations` when the client did not ask for them (Kafka's INT32_MIN).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// The leader epoch of every partition of a single-node cluster: leadership never changes.
pub const SINGLE_NODE_LEADER_EPOCH: i32 = 0;

pub async fn handle(
    broker: &Rc<Broker>,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 has no null: an empty list there means every topic.
    let wanted: Option<Vec<(Option<String>, u128)>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .map(|topic| {
                    (
                        topic.name.map(|name| name.0.to_string()),
                        topic.topic_id.as_u128(),
                    )
                })
                .collect(),
        ),
    };
    let auto_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    if let (Some(wanted), true) = (&wanted, auto_create) {
        let image = broker.metadata();
        let missing: Vec<String> = wanted
            .iter()
            .filter_map(|(name, _)| name.clone())
            .filter(|name| image.topic(name).is_none())
            .collect();
        if !missing.is_empty() {
            create_topics::auto_create(broker, missing).await;
        }
    }
    let image = broker.metadata();
    let brokers = broker.live_brokers();
    let topic_entry = |name: &str, error: Option<KafkaError>| -> MetadataResponseTopic {
        let topic = image.topic(name);
        let partitions = match (topic, error) {
            (Some(topic), None) => (0..topic.partition_count)
                .map(|index| {
                    let view = broker.partition_view(&image, name, index);
                    let offline: Vec<BrokerId> = view
                        .replicas
                        .iter()
                        .filter(|replica| !brokers.iter().any(|(id, ..)| id == *replica))
                        .map(|replica| BrokerId(*replica))
                        .collect();
                    let error = if view.leader < 0 {
                        KafkaError::LeaderNotAvailable.code()
                    } else {
                        NONE
                    };
                    let nodes = |ids: &[i32]| ids.iter().map(|id| BrokerId(*id)).collect();
                    MetadataResponsePartition::default()
                        .with_error_code(error)
                        .with_partition_index(index)
                        .with_leader_id(BrokerId(view.leader))
                        .with_leader_epoch(view.leader_epoch)
                        .with_replica_nodes(nodes(&view.replicas))
                        .with_isr_nodes(nodes(&view.isr))
                        .with_offline_replicas(offline)
                })
                .collect(),
            _ => Vec::new(),
        };
        let error = error.or(topic
            .is_none()
            .then_some(KafkaError::UnknownTopicOrPartition));
        MetadataResponseTopic::default()
            .with_error_code(error.map_or(NONE, |error| error.code()))
            .with_name(Some(TopicName(str_bytes(name))))
            .with_topic_id(uuid(topic.map_or(0, |topic| topic.topic_id)))
            .with_is_internal(name == crate::groups::storage::OFFSETS_TOPIC)
            .with_partitions(partitions)
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
    };
    let topics = match wanted {
        None => image
            .topics
            .keys()
            .map(|name| topic_entry(name, None))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|(name, topic_id)| match name {
                Some(name) => {
                    let invalid = ringlog_cluster::metadata::validate_topic_name(&name).is_err();
                    topic_entry(&name, invalid.then_some(KafkaError::InvalidTopicException))
                }
                None => match image.topic_by_id(topic_id) {
                    Some((name, _)) => topic_entry(name, None),
                    None => MetadataResponseTopic::default()
                        .with_error_code(KafkaError::UnknownTopicId.code())
                        .with_name(None)
                        .with_topic_id(uuid(topic_id))
                        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                },
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(
            brokers
                .into_iter()
                .map(|(id, host, port, rack)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(str_bytes(host))
                        .with_port(i32::from(port))
                        .with_rack(rack.map(str_bytes))
                })
                .collect(),
        )
        .with_cluster_id(Some(str_bytes(image.cluster_id.clone())))
        .with_controller_id(BrokerId(broker.controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        .with_error_code(NONE)
}
