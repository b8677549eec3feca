//! DeleteTopics: by name (v0-5) or by name or id (v6+).

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::{str_bytes, uuid};
use crate::broker::Broker;
use crate::codes::{KafkaError, NONE};
use crate::messages::ControllerRequest;

pub async fn handle(
    broker: &Rc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let image = broker.metadata();
    // (name if known, id, error found before asking the controller)
    let mut wanted: Vec<(Option<String>, u128, Option<KafkaError>)> = Vec::new();
    if version >= 6 {
        for topic in request.topics {
            match topic.name {
                Some(name) => {
                    let name = name.0.to_string();
                    let id = image.topic(&name).map_or(0, |topic| topic.topic_id);
                    wanted.push((Some(name), id, None));
                }
                None => {
                    let id = topic.topic_id.as_u128();
                    match image.topic_by_id(id) {
                        Some((name, _)) => wanted.push((Some(name.clone()), id, None)),
                        None => wanted.push((None, id, Some(KafkaError::UnknownTopicId))),
                    }
                }
            }
        }
    } else {
        for name in request.topic_names {
            let name = name.0.to_string();
            let id = image.topic(&name).map_or(0, |topic| topic.topic_id);
            wanted.push((Some(name), id, None));
        }
    }
    let names: Vec<String> = wanted
        .iter()
        .filter(|(_, _, error)| error.is_none())
        .filter_map(|(name, _, _)| name.clone())
        .collect();
    let count = names.len();
    let mut outcomes =
        super::ask_controller_per_topic(broker, ControllerRequest::DeleteTopics { names }, count)
            .await
            .into_iter();
    let responses = wanted
        .into_iter()
        .map(|(name, id, early)| {
            let (code, message) = match early {
                Some(error) => (error.code(), Some(error.to_string())),
                None => match outcomes.next() {
                    Some(Ok(())) => (NONE, None),
                    Some(Err(refusal)) => (refusal.error.code(), Some(refusal.message)),
                    None => (KafkaError::UnknownServerError.code(), None),
                },
            };
            DeletableTopicResult::default()
                .with_name(name.map(|name| TopicName(str_bytes(name))))
                .with_topic_id(uuid(id))
                .with_error_code(code)
                .with_error_message(message.map(str_bytes))
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
