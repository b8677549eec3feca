//! DescribeLogDirs: not yet implemented (being written).

use std::rc::Rc;

use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use crate::broker::Broker;

pub async fn handle(
    _broker: &Rc<Broker>,
    _request: DescribeLogDirsRequest,
    _version: i16,
) -> DescribeLogDirsResponse {
    DescribeLogDirsResponse::default()
}
