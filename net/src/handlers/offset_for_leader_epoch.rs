//! OffsetForLeaderEpoch: not yet implemented (being written).

use std::rc::Rc;

use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;

pub async fn handle(
    _broker: &Rc<Broker>,
    _request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    OffsetForLeaderEpochResponse::default()
}
