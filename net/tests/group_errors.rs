//! Consumer-group requests that break the rules get Kafka's error codes over the wire, and the
//! group they were aimed at keeps working: a JoinGroup with another protocol type, a SyncGroup
//! for an old generation, OffsetCommits from an unknown and from a fenced (replaced static)
//! member.

mod common;

use bytes::Bytes;
use common::{round_trip, InProcessBroker};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic, ApiKey, CreateTopicsRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest, RequestKind, ResponseKind,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const GROUP: &str = "rules";
const TOPIC: &str = "rules-topic";
const INSTANCE: &str = "instance-1";

/// Kafka's error codes checked here.
const NONE: i16 = 0;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const FENCED_INSTANCE_ID: i16 = 82;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn join(
    stream: &mut std::net::TcpStream,
    member_id: &str,
    protocol_type: &str,
) -> JoinGroupResponse {
    let request = RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(text(member_id))
            .with_group_instance_id(Some(text(INSTANCE)))
            .with_protocol_type(text(protocol_type))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(Bytes::from_static(b"subscription"))]),
    );
    match round_trip(stream, request, ApiKey::JoinGroup, 7, 1) {
        ResponseKind::JoinGroup(response) => response,
        other => panic!("{other:?}"),
    }
}

fn sync(stream: &mut std::net::TcpStream, member_id: &str, generation: i32) -> i16 {
    let request = RequestKind::SyncGroup(
        SyncGroupRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_generation_id(generation)
            .with_member_id(text(member_id))
            .with_group_instance_id(Some(text(INSTANCE)))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(text(member_id))
                .with_assignment(Bytes::from_static(b"assignment"))]),
    );
    match round_trip(stream, request, ApiKey::SyncGroup, 5, 2) {
        ResponseKind::SyncGroup(response) => response.error_code,
        other => panic!("{other:?}"),
    }
}

fn commit(
    stream: &mut std::net::TcpStream,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> i16 {
    let request = RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(member_id))
            .with_group_instance_id(instance.map(text))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(text(TOPIC)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(0)])]),
    );
    match round_trip(stream, request, ApiKey::OffsetCommit, 8, 3) {
        ResponseKind::OffsetCommit(response) => response.topics[0].partitions[0].error_code,
        other => panic!("{other:?}"),
    }
}

fn heartbeat(stream: &mut std::net::TcpStream, member_id: &str, generation: i32) -> i16 {
    let request = RequestKind::Heartbeat(
        HeartbeatRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_generation_id(generation)
            .with_member_id(text(member_id))
            .with_group_instance_id(Some(text(INSTANCE))),
    );
    match round_trip(stream, request, ApiKey::Heartbeat, 4, 4) {
        ResponseKind::Heartbeat(response) => response.error_code,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rule_breaking_group_requests_get_kafka_errors() {
    let data = tempfile::tempdir().expect("tempdir");
    let broker = InProcessBroker::start(data.path());
    let mut stream = broker.connect();
    let create = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]));
    round_trip(&mut stream, create, ApiKey::CreateTopics, 5, 0);

    // A static member joins (after the group's initial rebalance delay) and leads.
    let first = join(&mut stream, "", "consumer");
    assert_eq!(first.error_code, NONE, "{first:?}");
    let member = first.member_id.to_string();
    let generation = first.generation_id;
    assert_eq!(first.leader.to_string(), member);
    assert_eq!(sync(&mut stream, &member, generation), NONE);

    // Another protocol type for the same group.
    let mut other = broker.connect();
    assert_eq!(
        join(&mut other, "", "connect").error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    // A SyncGroup for an old generation.
    assert_eq!(
        sync(&mut other, &member, generation - 1),
        ILLEGAL_GENERATION
    );
    // A commit from a member the group does not know (a dynamic one: no instance id).
    assert_eq!(
        commit(&mut other, "nobody", None, generation),
        UNKNOWN_MEMBER_ID
    );
    // A commit claiming the static member's instance id with another member id.
    assert_eq!(
        commit(&mut other, "impostor", Some(INSTANCE), generation),
        FENCED_INSTANCE_ID
    );
    // The member itself is undisturbed.
    assert_eq!(heartbeat(&mut stream, &member, generation), NONE);
    assert_eq!(
        commit(&mut stream, &member, Some(INSTANCE), generation),
        NONE
    );

    // The static member restarts: same instance id, new member id, no rebalance; the old
    // member id is fenced.
    let restarted = join(&mut other, "", "consumer");
    assert_eq!(restarted.error_code, NONE, "{restarted:?}");
    assert_ne!(restarted.member_id.to_string(), member);
    assert_eq!(
        restarted.generation_id, generation,
        "no rebalance for a static rejoin"
    );
    assert_eq!(
        commit(&mut stream, &member, Some(INSTANCE), generation),
        FENCED_INSTANCE_ID
    );
    let new_member = restarted.member_id.to_string();
    assert_eq!(
        commit(&mut other, &new_member, Some(INSTANCE), generation),
        NONE
    );
    drop(stream);
    drop(other);
    broker.stop();
}
