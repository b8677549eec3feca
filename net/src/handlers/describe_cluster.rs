//! DescribeCluster: this broker, as the whole cluster and its controller.

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
    let (host, port) = broker.advertised();
    let node_id = BrokerId(broker.config.node_id);
    let _ = request.include_cluster_authorized_operations;
    DescribeClusterResponse::default()
        .with_error_code(NONE)
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(str_bytes(broker.metadata().cluster_id.clone()))
        .with_controller_id(node_id)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node_id)
            .with_host(str_bytes(host))
            .with_port(i32::from(port))
            .with_rack(None)])
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
