//! An offsets partition that grows past its checkpoint threshold is rewritten to its live
//! records (latest committed offsets and group snapshots) with everything before them dropped,
//! and nothing committed is lost, before or after a restart.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{round_trip, InProcessBroker};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic, ApiKey, ConsumerGroupDescribeRequest,
    ConsumerGroupHeartbeatRequest, CreateTopicsRequest, GroupId, ListOffsetsRequest,
    OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringlog_net::groups::storage::{partition_for, OFFSETS_TOPIC};

const TOPIC: &str = "checkpointed";
const GROUP: &str = "checkpoint-group";
const COMMITS: i64 = 150;
/// Far below the production threshold, so a few hundred commits trigger a checkpoint.
const CHECKPOINT_RECORDS_MIN: u64 = 100;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn commit(stream: &mut TcpStream, offset: i64) {
    commit_to(stream, GROUP, 2, offset);
}

/// A simple commit of `offset + index` to partitions `0..partitions` for `group`.
fn commit_to(stream: &mut TcpStream, group: &str, partitions: i32, offset: i64) {
    let partitions = partitions.max(1);
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partitions(
                (0..partitions)
                    .map(|index| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(index)
                            .with_committed_offset(offset + i64::from(index))
                    })
                    .collect(),
            )]);
    match round_trip(
        stream,
        RequestKind::OffsetCommit(request),
        ApiKey::OffsetCommit,
        8,
        1,
    ) {
        ResponseKind::OffsetCommit(response) => {
            for partition in &response.topics[0].partitions {
                assert_eq!(partition.error_code, 0, "{response:?}");
            }
        }
        other => panic!("{other:?}"),
    }
}

/// The committed offsets of [`GROUP`].
fn fetch(stream: &mut TcpStream) -> Vec<i64> {
    fetch_from(stream, GROUP)
}

/// The committed offsets of `group`, by partition.
fn fetch_from(stream: &mut TcpStream, group: &str) -> Vec<i64> {
    let request =
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(None)]);
    match round_trip(
        stream,
        RequestKind::OffsetFetch(request),
        ApiKey::OffsetFetch,
        9,
        2,
    ) {
        ResponseKind::OffsetFetch(response) => {
            let group = &response.groups[0];
            assert_eq!(group.error_code, 0, "{response:?}");
            let mut offsets: Vec<(i32, i64)> = group
                .topics
                .iter()
                .flat_map(|topic| &topic.partitions)
                .map(|partition| (partition.partition_index, partition.committed_offset))
                .collect();
            offsets.sort_unstable();
            offsets.into_iter().map(|(_, offset)| offset).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// (log start offset, log end offset) of the group's offsets partition.
fn offsets_partition_range(stream: &mut TcpStream) -> (i64, i64) {
    let partition = partition_for(GROUP);
    let mut at = |timestamp: i64| {
        let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(text(OFFSETS_TOPIC)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
        match round_trip(
            stream,
            RequestKind::ListOffsets(request),
            ApiKey::ListOffsets,
            7,
            3,
        ) {
            ResponseKind::ListOffsets(response) => response.topics[0].partitions[0].offset,
            other => panic!("{other:?}"),
        }
    };
    (at(-2), at(-1))
}

/// A group id starting with `prefix` that lives in the same offsets partition as [`GROUP`].
fn same_partition_group(prefix: &str) -> String {
    (0..)
        .map(|index| format!("{prefix}-{index}"))
        .find(|candidate| partition_for(candidate) == partition_for(GROUP))
        .expect("some id hashes there")
}

/// A consumer-protocol group whose snapshot is written once, before the commits.
fn neighbour_group() -> String {
    same_partition_group("checkpoint-neighbour")
}

/// A group that commits once, before the others' commits.
fn quiet_group() -> String {
    same_partition_group("checkpoint-quiet")
}

fn join_consumer_group(stream: &mut TcpStream, group: &str) -> i32 {
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_member_id(text("checkpoint-member"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(text(TOPIC))]))
        .with_topic_partitions(Some(Vec::new()));
    match round_trip(
        stream,
        RequestKind::ConsumerGroupHeartbeat(request),
        ApiKey::ConsumerGroupHeartbeat,
        1,
        4,
    ) {
        ResponseKind::ConsumerGroupHeartbeat(response) => {
            assert_eq!(response.error_code, 0, "{response:?}");
            response.member_epoch
        }
        other => panic!("{other:?}"),
    }
}

/// (member id, member epoch, assigned partitions) of the consumer group's members.
fn describe_consumer_group(stream: &mut TcpStream, group: &str) -> Vec<(String, i32, Vec<i32>)> {
    let request =
        ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(text(group))]);
    match round_trip(
        stream,
        RequestKind::ConsumerGroupDescribe(request),
        ApiKey::ConsumerGroupDescribe,
        1,
        5,
    ) {
        ResponseKind::ConsumerGroupDescribe(response) => {
            assert_eq!(response.groups[0].error_code, 0, "{response:?}");
            response.groups[0]
                .members
                .iter()
                .map(|member| {
                    let partitions = member
                        .assignment
                        .topic_partitions
                        .iter()
                        .flat_map(|topic| topic.partitions.iter().copied())
                        .collect();
                    (
                        member.member_id.to_string(),
                        member.member_epoch,
                        partitions,
                    )
                })
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_grown_offsets_partition_is_checkpointed_and_loses_nothing() {
    let data = tempfile::tempdir().expect("tempdir");
    let adjust = |config: &mut ringlog_net::BrokerConfig| {
        config.offsets_checkpoint_records_min = CHECKPOINT_RECORDS_MIN;
    };
    let broker = InProcessBroker::start_with(data.path(), adjust);
    let mut stream = broker.connect();
    let create = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_num_partitions(2)
            .with_replication_factor(1),
    ]));
    round_trip(&mut stream, create, ApiKey::CreateTopics, 7, 0);
    let neighbour = neighbour_group();
    assert_eq!(join_consumer_group(&mut stream, &neighbour), 1);
    let members = describe_consumer_group(&mut stream, &neighbour);
    assert_eq!(members[0].2, vec![0, 1]);
    let quiet = quiet_group();
    commit_to(&mut stream, &quiet, 0, 42);

    for offset in 0..COMMITS {
        commit(&mut stream, offset * 10);
    }
    let last = (COMMITS - 1) * 10;
    assert_eq!(fetch(&mut stream), vec![last, last + 1]);

    // The coordinator's timer notices the growth within a tick or two. The neighbour's
    // snapshot and the quiet group's offset were written first, at offsets 0 and 1: once the
    // log starts past them, only the checkpoint's copies of them are left.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (start, end) = loop {
        let (start, end) = offsets_partition_range(&mut stream);
        if start > 0 || Instant::now() > deadline {
            break (start, end);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(start > 2, "not checkpointed: {start}..{end}");
    assert!(end >= 2 * COMMITS, "{end}");
    assert!(
        end - start < 2 * COMMITS,
        "the checkpoint dropped nothing: {start}..{end}"
    );
    assert_eq!(fetch(&mut stream), vec![last, last + 1]);

    // After a restart the live records alone rebuild everything.
    drop(stream);
    broker.stop();
    let broker = InProcessBroker::start_with(data.path(), adjust);
    let mut stream = broker.connect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let offsets = loop {
        let request =
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(text(GROUP)))
                .with_topics(None)]);
        let loaded = match round_trip(
            &mut stream,
            RequestKind::OffsetFetch(request),
            ApiKey::OffsetFetch,
            9,
            6,
        ) {
            // COORDINATOR_LOAD_IN_PROGRESS (14) while the partition replays.
            ResponseKind::OffsetFetch(response) => response.groups[0].error_code != 14,
            other => panic!("{other:?}"),
        };
        if loaded || Instant::now() > deadline {
            break fetch(&mut stream);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(offsets, vec![last, last + 1]);
    assert_eq!(describe_consumer_group(&mut stream, &neighbour), members);
    assert_eq!(fetch_from(&mut stream, &quiet), vec![42]);
    assert_eq!(offsets_partition_range(&mut stream).0, start);
    drop(stream);
    broker.stop();
}
