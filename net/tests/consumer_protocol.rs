//! The new consumer group protocol (KIP-848) over the wire against an in-process broker: two
//! members share a topic with the revocation handshake, the group survives a broker restart,
//! commits and fetches check the member epoch, and requests that break the rules get Kafka's
//! error codes without disturbing the group.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;

use common::{
    consumer_heartbeat, create_topic, offset_commit, offset_fetch, round_trip, text,
    InProcessBroker,
};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DescribeGroupsRequest, GroupId,
    JoinGroupRequest, ListGroupsRequest, RequestKind, ResponseKind, TopicName,
};

const GROUP: &str = "kip848";
/// A group with one member that leaves and nothing committed.
const LONE_GROUP: &str = "kip848-lone";
const TOPIC: &str = "kip848-topic";
const PARTITIONS: i32 = 4;

/// Kafka's error codes checked here.
const NONE: i16 = 0;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNSUPPORTED_VERSION: i16 = 35;
const GROUP_ID_NOT_FOUND: i16 = 69;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const STALE_MEMBER_EPOCH: i16 = 113;
const INVALID_REGULAR_EXPRESSION: i16 = 128;

/// One member as a client sees itself.
struct Member {
    id: String,
    epoch: i32,
    owned: BTreeSet<i32>,
    topic_id: uuid::Uuid,
}

impl Member {
    fn new(id: &str, topic_id: uuid::Uuid) -> Member {
        Member {
            id: id.to_string(),
            epoch: 0,
            owned: BTreeSet::new(),
            topic_id,
        }
    }

    fn request(&self) -> ConsumerGroupHeartbeatRequest {
        let joining = self.epoch == 0;
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_member_id(text(&self.id))
            .with_member_epoch(self.epoch)
            .with_rebalance_timeout_ms(if joining { 30_000 } else { -1 })
            .with_subscribed_topic_names(joining.then(|| vec![TopicName(text(TOPIC))]))
            .with_topic_partitions(Some(if self.owned.is_empty() {
                Vec::new()
            } else {
                vec![TopicPartitions::default()
                    .with_topic_id(self.topic_id)
                    .with_partitions(self.owned.iter().copied().collect())]
            }))
    }

    /// Heartbeats and applies the answer, as a client does.
    fn beat(&mut self, stream: &mut TcpStream) -> ConsumerGroupHeartbeatResponse {
        let response = consumer_heartbeat(stream, self.request());
        if response.error_code == NONE {
            self.epoch = response.member_epoch;
            if let Some(assignment) = &response.assignment {
                self.owned.clear();
                for topic in &assignment.topic_partitions {
                    assert_eq!(topic.topic_id, self.topic_id);
                    self.owned.extend(topic.partitions.iter().copied());
                }
            }
        }
        response
    }
}

fn describe(stream: &mut TcpStream) -> ConsumerGroupDescribeResponse {
    describe_group(stream, GROUP)
}

fn describe_group(stream: &mut TcpStream, group: &str) -> ConsumerGroupDescribeResponse {
    let request =
        ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(text(group))]);
    match round_trip(
        stream,
        RequestKind::ConsumerGroupDescribe(request),
        ApiKey::ConsumerGroupDescribe,
        1,
        2,
    ) {
        ResponseKind::ConsumerGroupDescribe(response) => response,
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_members_share_a_topic_across_a_restart_and_bad_requests_are_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    let broker = InProcessBroker::start(data.path());
    let mut stream = broker.connect();
    let topic_id = create_topic(&mut stream, TOPIC, PARTITIONS);
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();

    // The first member gets everything at epoch 1.
    let mut a = Member::new("member-a", topic_id);
    let response = a.beat(&mut stream);
    assert_eq!(response.error_code, NONE, "{response:?}");
    assert_eq!(response.member_epoch, 1);
    assert!(response.heartbeat_interval_ms > 0);
    assert_eq!(a.owned, all);

    // The second gets nothing until the first gives half up.
    let mut b = Member::new("member-b", topic_id);
    assert_eq!(b.beat(&mut stream).member_epoch, 2);
    assert!(b.owned.is_empty());
    assert_eq!(a.beat(&mut stream).member_epoch, 1, "revoking at its epoch");
    assert_eq!(a.owned.len(), 2);
    assert_eq!(a.beat(&mut stream).member_epoch, 2);
    b.beat(&mut stream);
    assert_eq!(b.owned.len(), 2);
    assert!(a.owned.is_disjoint(&b.owned));

    // Requests that break the rules.
    let refused = consumer_heartbeat(
        &mut stream,
        Member::new("member-c", topic_id)
            .request()
            .with_server_assignor(Some(text("roundrobin"))),
    );
    assert_eq!(refused.error_code, UNSUPPORTED_ASSIGNOR);
    assert!(refused.error_message.is_some());
    let refused = consumer_heartbeat(
        &mut stream,
        Member::new("member-c", topic_id)
            .request()
            .with_subscribed_topic_names(None)
            .with_subscribed_topic_regex(Some(text("kip848-(("))),
    );
    assert_eq!(refused.error_code, INVALID_REGULAR_EXPRESSION);
    let refused = consumer_heartbeat(&mut stream, b.request().with_member_epoch(99));
    assert_eq!(refused.error_code, FENCED_MEMBER_EPOCH);
    let classic = RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(text(""))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default().with_name(text("range"))
            ]),
    );
    match round_trip(&mut stream, classic, ApiKey::JoinGroup, 9, 5) {
        ResponseKind::JoinGroup(response) => {
            assert_eq!(response.error_code, INCONSISTENT_GROUP_PROTOCOL)
        }
        other => panic!("{other:?}"),
    }
    let classic_describe = RequestKind::DescribeGroups(
        DescribeGroupsRequest::default().with_groups(vec![GroupId(text(GROUP))]),
    );
    match round_trip(&mut stream, classic_describe, ApiKey::DescribeGroups, 5, 6) {
        ResponseKind::DescribeGroups(response) => {
            assert_eq!(response.groups[0].error_code, GROUP_ID_NOT_FOUND)
        }
        other => panic!("{other:?}"),
    }

    // Commits and fetches check the member epoch.
    let commit = |stream: &mut TcpStream, epoch: i32, version: i16| {
        offset_commit(stream, version, GROUP, (&a.id, epoch), TOPIC, &[(0, 7)])[0]
    };
    assert_eq!(commit(&mut stream, a.epoch, 9), NONE);
    assert_eq!(commit(&mut stream, a.epoch - 1, 9), STALE_MEMBER_EPOCH);
    assert_eq!(commit(&mut stream, a.epoch, 8), UNSUPPORTED_VERSION);
    let committed = Ok(BTreeMap::from([(0, 7)]));
    assert_eq!(
        offset_fetch(&mut stream, GROUP, Some((&a.id, a.epoch))),
        committed
    );
    assert_eq!(
        offset_fetch(&mut stream, GROUP, Some((&a.id, a.epoch + 1))),
        Err(STALE_MEMBER_EPOCH)
    );

    // Undisturbed: nothing new for either member, and the group is Stable.
    assert_eq!(a.beat(&mut stream).assignment, None);
    assert_eq!(b.beat(&mut stream).assignment, None);
    let described = describe(&mut stream);
    let group = &described.groups[0];
    assert_eq!(group.error_code, NONE);
    assert_eq!(group.group_state.to_string(), "Stable");
    assert_eq!(group.assignor_name.to_string(), "uniform");
    assert_eq!(group.members.len(), 2);
    let listed = match round_trip(
        &mut stream,
        RequestKind::ListGroups(
            ListGroupsRequest::default().with_types_filter(vec![text("consumer")]),
        ),
        ApiKey::ListGroups,
        5,
        7,
    ) {
        ResponseKind::ListGroups(response) => response,
        other => panic!("{other:?}"),
    };
    let entry = listed
        .groups
        .iter()
        .find(|group| group.group_id.0.to_string() == GROUP)
        .expect("listed");
    assert_eq!(entry.group_type.to_string(), "consumer");
    assert_eq!(entry.group_state.to_string(), "Stable");

    // A restart keeps the group: same members, epochs and assignments.
    drop(stream);
    broker.stop();
    let broker = InProcessBroker::start(data.path());
    let mut stream = broker.connect();
    let restored = loop {
        let described = describe(&mut stream);
        // COORDINATOR_LOAD_IN_PROGRESS (14) while the offsets partition replays.
        if described.groups[0].error_code != 14 {
            break described;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(restored.groups[0].error_code, NONE);
    assert_eq!(restored.groups[0].members, group.members);
    let response = a.beat(&mut stream);
    assert_eq!(response.error_code, NONE, "{response:?}");
    assert_eq!(response.member_epoch, 2);
    assert_eq!(
        offset_fetch(&mut stream, GROUP, Some((&a.id, a.epoch))),
        committed
    );

    // A leaves; b gets everything.
    let left = consumer_heartbeat(&mut stream, a.request().with_member_epoch(-1));
    assert_eq!((left.error_code, left.member_epoch), (NONE, -1));
    b.beat(&mut stream);
    assert_eq!(b.owned, all);
    assert_eq!(b.epoch, 3);

    // A group whose last member leaves stays, Empty, as in Kafka (offset retention removes
    // it), even with nothing committed.
    let mut lone = Member::new("lone-member", topic_id);
    let joined = consumer_heartbeat(
        &mut stream,
        lone.request().with_group_id(GroupId(text(LONE_GROUP))),
    );
    assert_eq!(joined.error_code, NONE);
    lone.epoch = joined.member_epoch;
    let left = consumer_heartbeat(
        &mut stream,
        lone.request()
            .with_group_id(GroupId(text(LONE_GROUP)))
            .with_member_epoch(-1),
    );
    assert_eq!(left.error_code, NONE);
    let described = describe_group(&mut stream, LONE_GROUP);
    assert_eq!(described.groups[0].error_code, NONE, "{described:?}");
    assert_eq!(described.groups[0].group_state.to_string(), "Empty");
    assert!(described.groups[0].members.is_empty());
    drop(stream);
    broker.stop();
}
