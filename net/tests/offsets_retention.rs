//! Offset retention (`offsets.retention.minutes`, here lowered to seconds): the committed
//! offsets of a group without members expire and the group goes with them, durably; a group
//! with a member keeps its offsets.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{round_trip, InProcessBroker};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic, ApiKey, ConsumerGroupHeartbeatRequest,
    CreateTopicsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "retained";
const EXPIRING: &str = "retention-empty-group";
const KEPT: &str = "retention-member-group";
const RETENTION_MS: i64 = 1_500;
const CHECK_INTERVAL_MS: i64 = 200;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn commit(stream: &mut TcpStream, group: &str, member: &str, epoch: i32, offset: i64) {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_member_id(text(member))
        .with_generation_id_or_member_epoch(epoch)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    match round_trip(
        stream,
        RequestKind::OffsetCommit(request),
        ApiKey::OffsetCommit,
        9,
        1,
    ) {
        ResponseKind::OffsetCommit(response) => {
            assert_eq!(
                response.topics[0].partitions[0].error_code, 0,
                "{response:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// The committed offset of partition 0 (-1: none), or the group's error code.
fn committed(stream: &mut TcpStream, group: &str) -> Result<i64, i16> {
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
            if group.error_code != 0 {
                return Err(group.error_code);
            }
            Ok(group
                .topics
                .iter()
                .flat_map(|topic| &topic.partitions)
                .find(|partition| partition.partition_index == 0)
                .map_or(-1, |partition| partition.committed_offset))
        }
        other => panic!("{other:?}"),
    }
}

fn listed(stream: &mut TcpStream) -> Vec<String> {
    match round_trip(
        stream,
        RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::ListGroups,
        5,
        3,
    ) {
        ResponseKind::ListGroups(response) => response
            .groups
            .iter()
            .map(|group| group.group_id.0.to_string())
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// Polls until `check` holds (the coordinator's timer does the work), failing after 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_empty_groups_offsets_expire_and_a_members_do_not() {
    let data = tempfile::tempdir().expect("tempdir");
    let adjust = |config: &mut ringlog_net::BrokerConfig| {
        config.offsets_retention_ms = RETENTION_MS;
        config.offsets_retention_check_interval_ms = CHECK_INTERVAL_MS;
    };
    let broker = InProcessBroker::start_with(data.path(), adjust);
    let mut stream = broker.connect();
    let create = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]));
    round_trip(&mut stream, create, ApiKey::CreateTopics, 7, 0);

    // A consumer-protocol member (its session, 45 s, outlasts this test) commits as a member.
    let join = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text(KEPT)))
        .with_member_id(text("retained-member"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(text(TOPIC))]))
        .with_topic_partitions(Some(Vec::new()));
    let epoch = match round_trip(
        &mut stream,
        RequestKind::ConsumerGroupHeartbeat(join),
        ApiKey::ConsumerGroupHeartbeat,
        1,
        4,
    ) {
        ResponseKind::ConsumerGroupHeartbeat(response) => response.member_epoch,
        other => panic!("{other:?}"),
    };
    commit(&mut stream, KEPT, "retained-member", epoch, 11);
    // A simple commit: a group with no members.
    commit(&mut stream, EXPIRING, "", -1, 22);
    let started = Instant::now();
    assert_eq!(committed(&mut stream, EXPIRING), Ok(22));

    eventually("the empty group's offsets to expire", || {
        committed(&mut stream, EXPIRING) == Ok(-1)
    });
    assert!(
        started.elapsed() >= Duration::from_millis(RETENTION_MS as u64),
        "expired before the retention"
    );
    assert!(!listed(&mut stream).contains(&EXPIRING.to_string()));
    assert_eq!(committed(&mut stream, KEPT), Ok(11));

    // The expiry is durable; the member's group and offsets survive the restart too.
    drop(stream);
    broker.stop();
    let broker = InProcessBroker::start_with(data.path(), |config| {
        // Long enough that nothing expires during the checks below.
        config.offsets_retention_ms = 3_600_000;
    });
    let mut stream = broker.connect();
    // COORDINATOR_LOAD_IN_PROGRESS (14) while the offsets partitions replay.
    eventually("the offsets partitions to load", || {
        committed(&mut stream, KEPT) != Err(14)
    });
    assert_eq!(committed(&mut stream, KEPT), Ok(11));
    assert_eq!(committed(&mut stream, EXPIRING), Ok(-1));
    let groups = listed(&mut stream);
    assert!(groups.contains(&KEPT.to_string()), "{groups:?}");
    assert!(!groups.contains(&EXPIRING.to_string()), "{groups:?}");
    drop(stream);
    broker.stop();
}
