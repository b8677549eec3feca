//! One handler per Kafka API. Each takes the decoded request and its version and returns the
//! response to encode (`None` only for a Produce with acks=0, which Kafka never answers).

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_log_dirs;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;

use std::rc::Rc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::codec::Request;

/// Runs the handler for `request`.
pub async fn dispatch(broker: &Rc<Broker>, request: Request) -> Option<ResponseKind> {
    let version = request.api_version;
    let response = match request.body {
        RequestKind::ApiVersions(body) => {
            ResponseKind::ApiVersions(api_versions::handle(body, version))
        }
        RequestKind::Metadata(body) => {
            ResponseKind::Metadata(metadata::handle(broker, body, version).await)
        }
        RequestKind::Produce(body) => {
            ResponseKind::Produce(produce::handle(broker, body, version).await?)
        }
        RequestKind::Fetch(body) => ResponseKind::Fetch(fetch::handle(broker, body, version).await),
        RequestKind::ListOffsets(body) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, body, version).await)
        }
        RequestKind::CreateTopics(body) => {
            ResponseKind::CreateTopics(create_topics::handle(broker, body, version).await)
        }
        RequestKind::DeleteTopics(body) => {
            ResponseKind::DeleteTopics(delete_topics::handle(broker, body, version).await)
        }
        RequestKind::CreatePartitions(body) => {
            ResponseKind::CreatePartitions(create_partitions::handle(broker, body, version).await)
        }
        RequestKind::DescribeConfigs(body) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, body, version).await)
        }
        RequestKind::AlterConfigs(body) => {
            ResponseKind::AlterConfigs(alter_configs::handle(broker, body, version).await)
        }
        RequestKind::IncrementalAlterConfigs(body) => ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs::handle(broker, body, version).await,
        ),
        RequestKind::DeleteRecords(body) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, body, version).await)
        }
        RequestKind::OffsetForLeaderEpoch(body) => ResponseKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch::handle(broker, body, version).await,
        ),
        RequestKind::DescribeLogDirs(body) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(broker, body, version).await)
        }
        RequestKind::DescribeCluster(body) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(broker, body, version))
        }
        RequestKind::InitProducerId(body) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, body, version).await)
        }
        other => {
            // The codec only lets through what `apis::SERVED_APIS` lists, and every entry there
            // has a handler above.
            unreachable!("no handler for a served API: {other:?}")
        }
    };
    Some(response)
}

/// A `StrBytes` from a `String`.
pub fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// The topic id type of the protocol from Ringlog's 128-bit ids.
pub fn uuid(topic_id: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(topic_id)
}
