//! DescribeCluster: the live brokers and the active controller (this broker, on a single node).

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::NONE;

/// `clusterAuthorizedOperations` when the client did not ask for them (Kafka's INT32_MIN).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// `endpointType` 1: brokers (KIP-919).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn handle(
    broker: &Rc<Broker>,
    request: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let _ = request.include_cluster_authorized_operations;
    DescribeClusterResponse::default()
        .with_error_code(NONE)
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(str_bytes(broker.metadata().cluster_id.clone()))
        .with_controller_id(BrokerId(broker.controller_id()))
        .with_brokers(
            broker
                .live_brokers()
                .into_iter()
                .map(|(id, host, port, rack)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(str_bytes(host))
                        .with_port(i32::from(port))
                        .with_rack(rack.map(str_bytes))
                })
                .collect(),
        )
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
