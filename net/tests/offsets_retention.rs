//! Offset retention (`offsets.retention.minutes`, here lowered to seconds): the committed
//! offsets of a group without members expire and the group goes with them, durably; a group
//! with a member keeps its offsets.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    consumer_heartbeat, consumer_join, create_topic, offset_commit, offset_fetch, round_trip,
    InProcessBroker,
};
use kafka_protocol::messages::{ApiKey, ListGroupsRequest, RequestKind, ResponseKind};

const TOPIC: &str = "retained";
const EXPIRING: &str = "retention-empty-group";
const KEPT: &str = "retention-member-group";
const MEMBER: &str = "retained-member";
const RETENTION_MS: i64 = 1_500;
const CHECK_INTERVAL_MS: i64 = 200;
/// COORDINATOR_LOAD_IN_PROGRESS, while an offsets partition replays.
const LOADING: i16 = 14;

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
    create_topic(&mut stream, TOPIC, 1);

    // A consumer-protocol member (its session, 45 s, outlasts this test) commits as a member.
    let joined = consumer_heartbeat(&mut stream, consumer_join(KEPT, MEMBER, &[TOPIC]));
    let member = (MEMBER, joined.member_epoch);
    let committed = offset_commit(&mut stream, 9, KEPT, member, TOPIC, &[(0, 11)]);
    assert_eq!(committed, vec![0]);
    // A simple commit: a group with no members.
    let committed = offset_commit(&mut stream, 9, EXPIRING, ("", -1), TOPIC, &[(0, 22)]);
    assert_eq!(committed, vec![0]);
    let started = Instant::now();
    let nothing = Ok(BTreeMap::new());
    assert_eq!(
        offset_fetch(&mut stream, EXPIRING, None),
        Ok(BTreeMap::from([(0, 22)]))
    );

    eventually("the empty group's offsets to expire", || {
        offset_fetch(&mut stream, EXPIRING, None) == nothing
    });
    assert!(
        started.elapsed() >= Duration::from_millis(RETENTION_MS as u64),
        "expired before the retention"
    );
    assert!(!listed(&mut stream).contains(&EXPIRING.to_string()));
    let kept = Ok(BTreeMap::from([(0, 11)]));
    assert_eq!(offset_fetch(&mut stream, KEPT, Some(member)), kept);

    // The expiry is durable; the member's group and offsets survive the restart too.
    drop(stream);
    broker.stop();
    let broker = InProcessBroker::start_with(data.path(), |config| {
        // Long enough that nothing expires during the checks below.
        config.offsets_retention_ms = 3_600_000;
    });
    let mut stream = broker.connect();
    eventually("the offsets partitions to load", || {
        offset_fetch(&mut stream, KEPT, None) != Err(LOADING)
    });
    assert_eq!(offset_fetch(&mut stream, KEPT, Some(member)), kept);
    assert_eq!(offset_fetch(&mut stream, EXPIRING, None), nothing);
    let groups = listed(&mut stream);
    assert!(groups.contains(&KEPT.to_string()), "{groups:?}");
    assert!(!groups.contains(&EXPIRING.to_string()), "{groups:?}");
    drop(stream);
    broker.stop();
}
