//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
//! partition (this node, on a single node). Transaction coordinators are not served.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};

/// FindCoordinator's `key_type` for a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let check = |key: &str| -> Result<(i32, String, u16), KafkaError> {
        if request.key_type != KEY_TYPE_GROUP {
            return Err(KafkaError::CoordinatorNotAvailable);
        }
        broker.coordinator_node(key)
    };
    if version < 4 {
        let mut response = FindCoordinatorResponse::default().with_error_message(None);
        match check(&request.key) {
            Ok((node_id, host, port)) => {
                response.node_id = BrokerId(node_id);
                response.host = str_bytes(host);
                response.port = i32::from(port);
            }
            Err(error) => {
                response.error_code = error.code();
                response.node_id = BrokerId(-1);
                response.port = -1;
            }
        }
        return response;
    }
    let coordinators = request
        .coordinator_keys
        .iter()
        .map(|key| {
            let coordinator = Coordinator::default()
                .with_key(key.clone())
                .with_error_message(None);
            match check(key) {
                Ok((node_id, host, port)) => coordinator
                    .with_error_code(NONE)
                    .with_node_id(BrokerId(node_id))
                    .with_host(str_bytes(host))
                    .with_port(i32::from(port)),
                Err(error) => coordinator
                    .with_error_code(error.code())
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            }
        })
        .collect();
    FindCoordinatorResponse::default()
        .with_error_message(None)
        .with_coordinators(coordinators)
}
