//! InitProducerId for the idempotent producer: a new producer id from the controller, or, when
//! a producer asks to bump its epoch (KIP-360, v3+), the same id with the next epoch.
//! Transactional ids are refused: transactions are not implemented.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::create_topics::CONTROLLER_SHARD;
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::{BrokerRequest, BrokerResponse, ControllerRequest, ControllerResponse};

pub async fn handle(
    broker: &Rc<Broker>,
    request: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let failed = |error: KafkaError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return failed(KafkaError::TransactionalIdAuthorizationFailed);
    }
    let bump = request.producer_id.0 >= 0 && request.producer_epoch >= 0;
    if bump && request.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_error_code(NONE)
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    let request = BrokerRequest::Controller(ControllerRequest::AllocateProducerId);
    match broker.call(CONTROLLER_SHARD, request).await {
        Some(BrokerResponse::Controller(ControllerResponse::ProducerId(Ok(id)))) => {
            InitProducerIdResponse::default()
                .with_error_code(NONE)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0)
        }
        Some(BrokerResponse::Controller(ControllerResponse::ProducerId(Err(error)))) => {
            failed(error)
        }
        _ => failed(KafkaError::CoordinatorNotAvailable),
    }
}
