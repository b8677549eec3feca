//! A classic consumer-group member for the blocking client: JoinGroup/SyncGroup (this
//! client's own round-robin assignment when it leads), Heartbeat, OffsetFetch, OffsetCommit,
//! LeaveGroup. Speaks the classic protocol so it works against any Kafka broker. Shared by the
//! `ringlog` CLI and the benchmark.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest,
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
    OffsetFetchRequest, RequestKind, ResponseKind, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{admin, text, wrong_kind, Connection};
use crate::error::{Error, Result};

/// Group timing, Kafka's consumer defaults except a longer session: these clients share small,
/// noisy machines with the broker, and a missed heartbeat costs a whole rebalance.
const SESSION_TIMEOUT_MS: i32 = 30_000;
const REBALANCE_TIMEOUT_MS: i32 = 60_000;
/// How often a member should heartbeat: a tenth of the session timeout, as Kafka advises.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Joins retried this many times before the member gives up: enough to ride out a coordinator
/// that is still loading or a rebalance that other members are slow to finish.
const JOIN_ATTEMPTS: usize = 20;
const JOIN_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Kafka error codes the group client reacts to.
const MEMBER_ID_REQUIRED: i16 = 79;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;

/// The assignor this client offers: round robin over all subscribed partitions.
const ASSIGNOR: &str = "roundrobin";

/// A classic consumer-group member: JoinGroup/SyncGroup (this client's own round-robin
/// assignment when it leads), Heartbeat, OffsetFetch, OffsetCommit, LeaveGroup.
pub struct GroupMember {
    coordinator: Connection,
    group_id: String,
    topics: Vec<String>,
    member_id: String,
    generation: i32,
}

impl GroupMember {
    /// Finds the group's coordinator through `bootstrap` and connects to it as `client_id`.
    pub fn new(
        bootstrap: &mut Connection,
        group_id: String,
        topics: Vec<String>,
        client_id: &'static str,
    ) -> Result<GroupMember> {
        let address = find_coordinator(bootstrap, &group_id)?;
        Ok(GroupMember {
            coordinator: Connection::connect(&address, client_id)?,
            group_id,
            topics,
            member_id: String::new(),
            generation: -1,
        })
    }

    /// Joins (or rejoins) the group and returns this member's partitions.
    pub fn join(&mut self) -> Result<Vec<(String, i32)>> {
        let mut subscription = BytesMut::new();
        let version = 0;
        subscription.put_i16(version);
        ConsumerProtocolSubscription::default()
            .with_topics(self.topics.iter().map(|topic| text(topic)).collect())
            .encode(&mut subscription, version)
            .map_err(|error| Error::Peer(format!("encoding a subscription: {error}")))?;
        let subscription = subscription.freeze();
        for _ in 0..JOIN_ATTEMPTS {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(text(&self.group_id)))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(text(&self.member_id))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(ASSIGNOR))
                    .with_metadata(subscription.clone())]);
            let (_, response) =
                self.coordinator
                    .call(ApiKey::JoinGroup, 1..=7, RequestKind::JoinGroup(request))?;
            let ResponseKind::JoinGroup(joined) = response else {
                return Err(wrong_kind(ApiKey::JoinGroup));
            };
            match joined.error_code {
                0 => {}
                MEMBER_ID_REQUIRED => {
                    self.member_id = joined.member_id.to_string();
                    continue;
                }
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                REBALANCE_IN_PROGRESS
                | COORDINATOR_LOAD_IN_PROGRESS
                | COORDINATOR_NOT_AVAILABLE
                | NOT_COORDINATOR => {
                    std::thread::sleep(JOIN_RETRY_BACKOFF);
                    continue;
                }
                code => {
                    return Err(Error::Kafka {
                        op: format!("joining group {}", self.group_id),
                        code,
                        message: None,
                    })
                }
            }
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let assignments = if joined.leader == joined.member_id {
                assign_round_robin(&mut self.coordinator, &joined.members)?
            } else {
                Vec::new()
            };
            let request = SyncGroupRequest::default()
                .with_group_id(GroupId(text(&self.group_id)))
                .with_generation_id(self.generation)
                .with_member_id(text(&self.member_id))
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str(ASSIGNOR)))
                .with_assignments(assignments);
            let (_, response) =
                self.coordinator
                    .call(ApiKey::SyncGroup, 1..=5, RequestKind::SyncGroup(request))?;
            let ResponseKind::SyncGroup(synced) = response else {
                return Err(wrong_kind(ApiKey::SyncGroup));
            };
            match synced.error_code {
                0 => return decode_assignment(synced.assignment),
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue,
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                code => {
                    return Err(Error::Kafka {
                        op: format!("syncing group {}", self.group_id),
                        code,
                        message: None,
                    })
                }
            }
        }
        Err(Error::Peer(format!(
            "could not join group {} in {JOIN_ATTEMPTS} attempts",
            self.group_id
        )))
    }

    /// Returns true when the group is rebalancing and this member must rejoin.
    pub fn heartbeat(&mut self) -> Result<bool> {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(text(&self.group_id)))
            .with_generation_id(self.generation)
            .with_member_id(text(&self.member_id));
        let (_, response) =
            self.coordinator
                .call(ApiKey::Heartbeat, 1..=4, RequestKind::Heartbeat(request))?;
        let ResponseKind::Heartbeat(response) = response else {
            return Err(wrong_kind(ApiKey::Heartbeat));
        };
        match response.error_code {
            0 => Ok(false),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => Ok(true),
            UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                Ok(true)
            }
            code => Err(Error::Kafka {
                op: format!("heartbeat to group {}", self.group_id),
                code,
                message: None,
            }),
        }
    }

    pub fn committed(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<BTreeMap<(String, i32), i64>> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            topics.entry(topic).or_default().push(*partition);
        }
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(&self.group_id)))
            .with_topics(Some(
                topics
                    .iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(text(topic)))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect(),
            ));
        let (_, response) = self.coordinator.call(
            ApiKey::OffsetFetch,
            1..=7,
            RequestKind::OffsetFetch(request),
        )?;
        let ResponseKind::OffsetFetch(response) = response else {
            return Err(wrong_kind(ApiKey::OffsetFetch));
        };
        let mut committed = BTreeMap::new();
        for topic in &response.topics {
            for partition in &topic.partitions {
                if partition.error_code == 0 {
                    committed.insert(
                        (topic.name.0.to_string(), partition.partition_index),
                        partition.committed_offset,
                    );
                }
            }
        }
        Ok(committed)
    }

    /// Commits the next offset to read of each (topic, partition, offset).
    pub fn commit<'a>(
        &mut self,
        positions: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) -> Result<()> {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (topic_name, partition_index, offset) in positions {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(partition_index)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1);
            match topics
                .iter_mut()
                .find(|topic| topic.name.0.as_str() == topic_name)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(text(topic_name)))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        if topics.is_empty() {
            return Ok(());
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(text(&self.group_id)))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(text(&self.member_id))
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let (_, response) = self.coordinator.call(
            ApiKey::OffsetCommit,
            2..=8,
            RequestKind::OffsetCommit(request),
        )?;
        let ResponseKind::OffsetCommit(response) = response else {
            return Err(wrong_kind(ApiKey::OffsetCommit));
        };
        for topic in &response.topics {
            for partition in &topic.partitions {
                // A commit racing a rebalance is refused; the next one after the rejoin lands.
                if partition.error_code != 0
                    && partition.error_code != REBALANCE_IN_PROGRESS
                    && partition.error_code != ILLEGAL_GENERATION
                {
                    return Err(Error::Kafka {
                        op: format!("committing offsets of group {}", self.group_id),
                        code: partition.error_code,
                        message: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// Leaves the group so it rebalances now rather than after the session timeout.
    pub fn leave(&mut self) -> Result<()> {
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        // v0-2 name one member; v3 on name a batch of them and refuse the old field.
        let version = self.coordinator.versions.pick(ApiKey::LeaveGroup, 1..=5)?;
        let request = LeaveGroupRequest::default().with_group_id(GroupId(text(&self.group_id)));
        let request = if version < 3 {
            request.with_member_id(text(&self.member_id))
        } else {
            request.with_members(vec![
                MemberIdentity::default().with_member_id(text(&self.member_id))
            ])
        };
        let (_, response) = self.coordinator.call(
            ApiKey::LeaveGroup,
            version..=version,
            RequestKind::LeaveGroup(request),
        )?;
        let ResponseKind::LeaveGroup(response) = response else {
            return Err(wrong_kind(ApiKey::LeaveGroup));
        };
        let code = response
            .members
            .iter()
            .map(|member| member.error_code)
            .find(|code| *code != 0)
            .unwrap_or(response.error_code);
        if code != 0 {
            return Err(Error::Kafka {
                op: format!("leaving group {}", self.group_id),
                code,
                message: None,
            });
        }
        Ok(())
    }
}

/// The host:port of `group_id`'s coordinator.
pub fn find_coordinator(bootstrap: &mut Connection, group_id: &str) -> Result<String> {
    for _ in 0..JOIN_ATTEMPTS {
        let request = FindCoordinatorRequest::default()
            .with_key(text(group_id))
            .with_key_type(0);
        let (_, response) = bootstrap.call(
            ApiKey::FindCoordinator,
            1..=3,
            RequestKind::FindCoordinator(request),
        )?;
        let ResponseKind::FindCoordinator(response) = response else {
            return Err(wrong_kind(ApiKey::FindCoordinator));
        };
        match response.error_code {
            0 => return Ok(format!("{}:{}", response.host, response.port)),
            COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS => {
                std::thread::sleep(JOIN_RETRY_BACKOFF);
            }
            code => {
                return Err(Error::Kafka {
                    op: format!("finding the coordinator of group {group_id}"),
                    code,
                    message: response.error_message.as_ref().map(|m| m.to_string()),
                })
            }
        }
    }
    Err(Error::Peer(format!("no coordinator for group {group_id}")))
}

/// The leader's assignment: every partition of every member's subscription, dealt round robin
/// over the members in member-id order.
fn assign_round_robin(
    bootstrap: &mut Connection,
    members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
) -> Result<Vec<SyncGroupRequestAssignment>> {
    let mut subscriptions: Vec<(String, Vec<String>)> = Vec::new();
    for member in members {
        let mut metadata = member.metadata.clone();
        if metadata.remaining() < 2 {
            return Err(Error::Peer(format!(
                "member {} sent no subscription",
                member.member_id
            )));
        }
        let version = metadata.get_i16();
        let subscription = ConsumerProtocolSubscription::decode(&mut metadata, version.min(3))
            .map_err(|error| Error::Peer(format!("decoding a subscription: {error}")))?;
        subscriptions.push((
            member.member_id.to_string(),
            subscription.topics.iter().map(|t| t.to_string()).collect(),
        ));
    }
    subscriptions.sort();
    let mut topics: Vec<String> = subscriptions
        .iter()
        .flat_map(|(_, topics)| topics.iter().cloned())
        .collect();
    topics.sort();
    topics.dedup();
    let layout = admin::wait_for_layout(bootstrap, &topics)?;
    let mut plan: BTreeMap<String, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    let mut turn = 0;
    for (topic, partition) in layout.leaders.keys() {
        let subscribers: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(member, _)| member)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let member = subscribers[turn % subscribers.len()];
        turn += 1;
        plan.entry(member.clone())
            .or_default()
            .entry(topic.clone())
            .or_default()
            .push(*partition);
    }
    subscriptions
        .iter()
        .map(|(member, _)| {
            let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                plan.get(member)
                    .map(|topics| {
                        topics
                            .iter()
                            .map(|(topic, partitions)| {
                                AssignedTopic::default()
                                    .with_topic(TopicName(text(topic)))
                                    .with_partitions(partitions.clone())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            );
            let mut bytes = BytesMut::new();
            bytes.put_i16(0);
            assignment
                .encode(&mut bytes, 0)
                .map_err(|error| Error::Peer(format!("encoding an assignment: {error}")))?;
            Ok(SyncGroupRequestAssignment::default()
                .with_member_id(text(member))
                .with_assignment(bytes.freeze()))
        })
        .collect()
}

/// A classic consumer's assignment bytes (the consumer protocol's format) as (topic,
/// partition) pairs.
pub fn decode_assignment(mut bytes: Bytes) -> Result<Vec<(String, i32)>> {
    if bytes.remaining() < 2 {
        return Ok(Vec::new());
    }
    let version = bytes.get_i16();
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3))
        .map_err(|error| Error::Peer(format!("decoding an assignment: {error}")))?;
    Ok(assignment
        .assigned_partitions
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| (topic.topic.0.to_string(), *partition))
        })
        .collect())
}
