//! The Kafka layer's per-shard measurements: bytes and records produced and fetched, requests by
//! API and error code, produce and fetch latency. Counted on the shard serving the client's
//! connection (the bytes crossed its socket), as plain `Cell` counters; the admin server gathers
//! a [`BrokerMetricsSnapshot`] from every shard over the bus.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ResponseKind};
use ringlog_engine::metrics::{Counter, Histogram, HistogramSnapshot};

use crate::codes::{KafkaError, NONE};

/// Slots of the error-free request counters, indexed by API key. Kafka's API keys run from 0 to
/// under 100 today; 128 leaves room, and a key past it is counted with the errors instead.
const API_KEY_SLOTS: usize = 128;

/// What the Kafka layer counts on one shard.
///
/// One per shard.
#[derive(Debug)]
pub struct BrokerMetrics {
    /// Record batch bytes of Produce requests appended (Kafka's BytesInPerSec).
    pub bytes_in: Counter,
    /// Records of those batches (Kafka's MessagesInPerSec).
    pub records_in: Counter,
    /// Record batch bytes sent in Fetch responses (Kafka's BytesOutPerSec).
    pub bytes_out: Counter,
    /// Records of those batches.
    pub records_out: Counter,
    /// Requests answered without a top-level or partition error, by API key: the common case,
    /// counted without a map lookup.
    requests_ok: [Counter; API_KEY_SLOTS],
    /// Requests by (API key, error code) for the rest: rare, so a map is fine.
    requests_failed: RefCell<BTreeMap<(i16, i16), u64>>,
    /// Produce requests from decoding to response, including the wait for durability.
    pub produce_latency: Histogram,
    /// Fetch requests from decoding to response, including a long poll's wait (as Kafka's
    /// FetchConsumer TotalTimeMs does).
    pub fetch_latency: Histogram,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        BrokerMetrics {
            bytes_in: Counter::default(),
            records_in: Counter::default(),
            bytes_out: Counter::default(),
            records_out: Counter::default(),
            requests_ok: std::array::from_fn(|_| Counter::default()),
            requests_failed: RefCell::default(),
            produce_latency: Histogram::default(),
            fetch_latency: Histogram::default(),
        }
    }
}

impl BrokerMetrics {
    /// Counts one answered request (or an acks=0 Produce, which gets no answer) and, for
    /// Produce and Fetch, how long it took.
    pub fn record_request(&self, api_key: ApiKey, error_code: i16, elapsed: Duration) {
        self.count_request(api_key as i16, error_code);
        match api_key {
            ApiKey::Produce => self.produce_latency.record(elapsed),
            ApiKey::Fetch => self.fetch_latency.record(elapsed),
            _ => {}
        }
    }

    pub fn count_request(&self, api_key: i16, error_code: i16) {
        match usize::try_from(api_key) {
            Ok(slot) if slot < API_KEY_SLOTS && error_code == NONE => self.requests_ok[slot].inc(),
            _ => {
                *self
                    .requests_failed
                    .borrow_mut()
                    .entry((api_key, error_code))
                    .or_default() += 1;
            }
        }
    }

    pub fn snapshot(&self) -> BrokerMetricsSnapshot {
        let mut requests: BTreeMap<(i16, i16), u64> = self.requests_failed.borrow().clone();
        for (api_key, counter) in self.requests_ok.iter().enumerate() {
            if counter.get() > 0 {
                requests.insert((api_key as i16, NONE), counter.get());
            }
        }
        BrokerMetricsSnapshot {
            bytes_in: self.bytes_in.get(),
            records_in: self.records_in.get(),
            bytes_out: self.bytes_out.get(),
            records_out: self.records_out.get(),
            requests: requests
                .into_iter()
                .map(|((api_key, error_code), count)| (api_key, error_code, count))
                .collect(),
            produce_latency: self.produce_latency.snapshot(),
            fetch_latency: self.fetch_latency.snapshot(),
        }
    }
}

/// A copy of one shard's [`BrokerMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerMetricsSnapshot {
    pub bytes_in: u64,
    pub records_in: u64,
    pub bytes_out: u64,
    pub records_out: u64,
    /// (API key, error code, requests), sorted.
    pub requests: Vec<(i16, i16, u64)>,
    pub produce_latency: HistogramSnapshot,
    pub fetch_latency: HistogramSnapshot,
}

/// Kafka's name of an API (`Produce`, `ApiVersions`), as in its request metrics; `unknown`
/// for a key this broker has no name for.
pub fn api_name(api_key: i16) -> String {
    ApiKey::try_from(api_key).map_or_else(|()| "unknown".to_string(), |key| format!("{key:?}"))
}

/// Kafka's name of an error code, as `Errors.java` spells it (`NONE`,
/// `UNKNOWN_TOPIC_OR_PARTITION`); `UNKNOWN_<code>` for a code this broker does not know.
pub fn error_name(error_code: i16) -> String {
    match KafkaError::try_from_code(error_code) {
        None => "NONE".to_string(),
        Some(KafkaError::Unknown(code)) => format!("UNKNOWN_{code}"),
        Some(error) => screaming_snake_case(&format!("{error:?}")),
    }
}

fn screaming_snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            out.push('_');
        }
        out.push(character.to_ascii_uppercase());
    }
    out
}

/// The error code a request is counted under: its top-level error if it has one, else the
/// first error of any topic, partition, group or resource in it, else NONE. Kafka counts every
/// error code of a response; one per request keeps `requests_total` a count of requests.
pub fn response_error_code(response: &ResponseKind) -> i16 {
    fn first(codes: impl IntoIterator<Item = i16>) -> i16 {
        codes.into_iter().find(|&code| code != NONE).unwrap_or(NONE)
    }
    match response {
        ResponseKind::Produce(body) => first(
            body.responses
                .iter()
                .flat_map(|topic| topic.partition_responses.iter())
                .map(|partition| partition.error_code),
        ),
        ResponseKind::Fetch(body) => first(
            std::iter::once(body.error_code).chain(
                body.responses
                    .iter()
                    .flat_map(|topic| topic.partitions.iter())
                    .map(|partition| partition.error_code),
            ),
        ),
        ResponseKind::ListOffsets(body) => first(
            body.topics
                .iter()
                .flat_map(|topic| topic.partitions.iter())
                .map(|partition| partition.error_code),
        ),
        ResponseKind::Metadata(body) => first(std::iter::once(body.error_code).chain(
            body.topics.iter().flat_map(|topic| {
                std::iter::once(topic.error_code).chain(
                    topic
                        .partitions
                        .iter()
                        .map(|partition| partition.error_code),
                )
            }),
        )),
        ResponseKind::ApiVersions(body) => body.error_code,
        ResponseKind::CreateTopics(body) => first(body.topics.iter().map(|topic| topic.error_code)),
        ResponseKind::DeleteTopics(body) => {
            first(body.responses.iter().map(|topic| topic.error_code))
        }
        ResponseKind::DeleteRecords(body) => first(
            body.topics
                .iter()
                .flat_map(|topic| topic.partitions.iter())
                .map(|partition| partition.error_code),
        ),
        ResponseKind::InitProducerId(body) => body.error_code,
        ResponseKind::OffsetForLeaderEpoch(body) => first(
            body.topics
                .iter()
                .flat_map(|topic| topic.partitions.iter())
                .map(|partition| partition.error_code),
        ),
        ResponseKind::DescribeConfigs(body) => {
            first(body.results.iter().map(|result| result.error_code))
        }
        ResponseKind::AlterConfigs(body) => {
            first(body.responses.iter().map(|resource| resource.error_code))
        }
        ResponseKind::IncrementalAlterConfigs(body) => {
            first(body.responses.iter().map(|resource| resource.error_code))
        }
        ResponseKind::DescribeLogDirs(body) => first(
            std::iter::once(body.error_code)
                .chain(body.results.iter().map(|result| result.error_code)),
        ),
        ResponseKind::CreatePartitions(body) => {
            first(body.results.iter().map(|result| result.error_code))
        }
        ResponseKind::DescribeCluster(body) => body.error_code,
        ResponseKind::FindCoordinator(body) => first(
            std::iter::once(body.error_code).chain(
                body.coordinators
                    .iter()
                    .map(|coordinator| coordinator.error_code),
            ),
        ),
        ResponseKind::JoinGroup(body) => body.error_code,
        ResponseKind::SyncGroup(body) => body.error_code,
        ResponseKind::Heartbeat(body) => body.error_code,
        ResponseKind::LeaveGroup(body) => first(
            std::iter::once(body.error_code)
                .chain(body.members.iter().map(|member| member.error_code)),
        ),
        ResponseKind::OffsetCommit(body) => first(
            body.topics
                .iter()
                .flat_map(|topic| topic.partitions.iter())
                .map(|partition| partition.error_code),
        ),
        ResponseKind::OffsetFetch(body) => first(
            std::iter::once(body.error_code)
                .chain(
                    body.topics
                        .iter()
                        .flat_map(|topic| topic.partitions.iter())
                        .map(|partition| partition.error_code),
                )
                .chain(body.groups.iter().flat_map(|group| {
                    std::iter::once(group.error_code).chain(
                        group
                            .topics
                            .iter()
                            .flat_map(|topic| topic.partitions.iter())
                            .map(|partition| partition.error_code),
                    )
                })),
        ),
        ResponseKind::ListGroups(body) => body.error_code,
        ResponseKind::DescribeGroups(body) => {
            first(body.groups.iter().map(|group| group.error_code))
        }
        ResponseKind::DeleteGroups(body) => {
            first(body.results.iter().map(|result| result.error_code))
        }
        ResponseKind::OffsetDelete(body) => first(
            std::iter::once(body.error_code).chain(
                body.topics
                    .iter()
                    .flat_map(|topic| topic.partitions.iter())
                    .map(|partition| partition.error_code),
            ),
        ),
        ResponseKind::ConsumerGroupHeartbeat(body) => body.error_code,
        ResponseKind::ConsumerGroupDescribe(body) => {
            first(body.groups.iter().map(|group| group.error_code))
        }
        // Every served API is listed above; one added later is counted as error-free until
        // it is listed too.
        _ => NONE,
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{HeartbeatResponse, ProduceResponse};

    use super::*;

    #[test]
    fn error_free_and_failed_requests_are_counted_apart() {
        let metrics = BrokerMetrics::default();
        metrics.record_request(ApiKey::Produce, NONE, Duration::from_millis(1));
        metrics.record_request(ApiKey::Produce, NONE, Duration::from_millis(2));
        metrics.record_request(ApiKey::Fetch, 3, Duration::from_millis(5));
        metrics.count_request(ApiKey::ApiVersions as i16, 35);
        metrics.count_request(999, NONE);
        let snapshot = metrics.snapshot();
        assert_eq!(
            snapshot.requests,
            vec![(0, NONE, 2), (1, 3, 1), (18, 35, 1), (999, NONE, 1)]
        );
        assert_eq!(snapshot.produce_latency.count(), 2);
        assert_eq!(snapshot.produce_latency.sum_us, 3_000);
        assert_eq!(snapshot.fetch_latency.count(), 1);
    }

    #[test]
    fn names_follow_kafka() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(18), "ApiVersions");
        assert_eq!(api_name(-5), "unknown");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(32_000), "UNKNOWN_32000");
    }

    #[test]
    fn a_partition_error_is_the_request_error() {
        let ok = PartitionProduceResponse::default();
        let failed = PartitionProduceResponse::default().with_error_code(6);
        let response = ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default().with_partition_responses(vec![ok.clone()]),
            TopicProduceResponse::default().with_partition_responses(vec![ok, failed]),
        ]);
        assert_eq!(response_error_code(&ResponseKind::Produce(response)), 6);
        let heartbeat = HeartbeatResponse::default().with_error_code(27);
        assert_eq!(response_error_code(&ResponseKind::Heartbeat(heartbeat)), 27);
        assert_eq!(
            response_error_code(&ResponseKind::Produce(ProduceResponse::default())),
            NONE
        );
    }
}
