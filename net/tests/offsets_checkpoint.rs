//! An offsets partition that grows past its checkpoint threshold is rewritten to its live
//! records (latest committed offsets and group snapshots) with everything before them dropped,
//! and nothing committed is lost, before or after a restart.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    consumer_heartbeat, consumer_join, create_topic, offset_commit, offset_fetch, round_trip, text,
    InProcessBroker,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, GroupId, ListOffsetsRequest, RequestKind, ResponseKind,
    TopicName,
};
use ringlog_net::groups::storage::{partition_for, OFFSETS_TOPIC};

const TOPIC: &str = "checkpointed";
const GROUP: &str = "checkpoint-group";
const COMMITS: i64 = 150;
/// Far below the production threshold, so a few hundred commits trigger a checkpoint.
const CHECKPOINT_RECORDS_MIN: u64 = 100;
/// COORDINATOR_LOAD_IN_PROGRESS, while an offsets partition replays.
const LOADING: i16 = 14;

/// A simple commit of `offset + index` to partitions `0..partitions` for `group`.
fn commit(stream: &mut TcpStream, group: &str, partitions: i32, offset: i64) {
    let offsets: Vec<(i32, i64)> = (0..partitions)
        .map(|index| (index, offset + i64::from(index)))
        .collect();
    let errors = offset_commit(stream, 8, group, ("", -1), TOPIC, &offsets);
    assert!(errors.iter().all(|code| *code == 0), "{errors:?}");
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
    create_topic(&mut stream, TOPIC, 2);
    let neighbour = neighbour_group();
    let joined = consumer_heartbeat(
        &mut stream,
        consumer_join(&neighbour, "checkpoint-member", &[TOPIC]),
    );
    assert_eq!((joined.error_code, joined.member_epoch), (0, 1));
    let members = describe_consumer_group(&mut stream, &neighbour);
    assert_eq!(members[0].2, vec![0, 1]);
    let quiet = quiet_group();
    commit(&mut stream, &quiet, 1, 42);

    for offset in 0..COMMITS {
        commit(&mut stream, GROUP, 2, offset * 10);
    }
    let last = (COMMITS - 1) * 10;
    let latest = Ok(BTreeMap::from([(0, last), (1, last + 1)]));
    assert_eq!(offset_fetch(&mut stream, GROUP, None), latest);

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
    assert_eq!(offset_fetch(&mut stream, GROUP, None), latest);

    // After a restart the records from the log start on rebuild everything.
    drop(stream);
    broker.stop();
    let broker = InProcessBroker::start_with(data.path(), adjust);
    let mut stream = broker.connect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while offset_fetch(&mut stream, GROUP, None) == Err(LOADING) {
        assert!(
            Instant::now() < deadline,
            "the offsets partition did not load"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(offset_fetch(&mut stream, GROUP, None), latest);
    assert_eq!(describe_consumer_group(&mut stream, &neighbour), members);
    assert_eq!(
        offset_fetch(&mut stream, &quiet, None),
        Ok(BTreeMap::from([(0, 42)]))
    );
    // (The restarted coordinator may already have checkpointed again: the commits after the
    // first checkpoint are past the threshold too.)
    assert!(offsets_partition_range(&mut stream).0 >= start);
    drop(stream);
    broker.stop();
}
