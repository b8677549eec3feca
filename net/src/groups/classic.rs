//! The classic consumer-group protocol's coordinator for one group, modelled on Apache Kafka's
//! `GroupCoordinator` and `GroupMetadata`: a pure state machine (events in, actions out, time
//! passed in as `now_ms`) so that the rebalance rules can be tested without sockets or timers.
//!
//! The I/O layer that wraps it owns the group, feeds it one [`GroupEvent`] at a time with the
//! current time, performs the [`GroupAction`]s it returns in order, and sends [`GroupEvent::Tick`]
//! at [`Group::next_deadline_ms`]. Every request event carries a [`RequestToken`]; the machine
//! answers each token exactly once, possibly much later (a JoinGroup is held until the join
//! phase ends, a follower's SyncGroup until the leader's arrives).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codes::KafkaError;

/// Kafka's `group.min.session.timeout.ms` default: a shorter session would let a client's GC
/// pause or a slow poll loop look like a crash and rebalance the group for nothing.
pub const GROUP_MIN_SESSION_TIMEOUT_MS: i32 = 6_000;

/// Kafka's `group.max.session.timeout.ms` default (30 minutes): a longer session leaves a dead
/// consumer's partitions unconsumed for too long before anyone notices.
pub const GROUP_MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

/// Kafka's `group.initial.rebalance.delay.ms` default: when a group starts from empty, wait this
/// long for more members so that a fleet of consumers starting together causes one rebalance
/// instead of one per member.
pub const GROUP_INITIAL_REBALANCE_DELAY_MS: i32 = 3_000;

/// Kafka's `group.max.size` default (`Int.MaxValue`): no limit unless an operator sets one.
pub const GROUP_MAX_SIZE: usize = i32::MAX as usize;

/// The generation a member sends when it is not in a generation (a simple, non-member commit).
pub const NO_GENERATION: i32 = -1;

/// Version of [`GroupSnapshot`]'s layout; [`Group::restore`] refuses any other.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The broker settings that govern groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`.
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: GROUP_MIN_SESSION_TIMEOUT_MS,
            max_session_timeout_ms: GROUP_MAX_SESSION_TIMEOUT_MS,
            initial_rebalance_delay_ms: GROUP_INITIAL_REBALANCE_DELAY_MS,
            max_size: GROUP_MAX_SIZE,
        }
    }
}

/// Kafka's group states, with the names DescribeGroups and ListGroups report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (the group may still hold committed offsets).
    Empty,
    /// Members are (re)joining; JoinGroup responses are held until the join phase ends.
    PreparingRebalance,
    /// The join phase ended; waiting for the leader's assignment in SyncGroup.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted; the I/O layer should drop this group and create a new one on the next join.
    Dead,
}

impl GroupState {
    /// The state's name as Kafka spells it on the wire.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Routes a held response back to its connection; opaque to the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestToken(pub u64);

/// One protocol (assignor) a member supports, with its opaque subscription metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A JoinGroup request, independent of its wire version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty for a member that has no id yet.
    pub member_id: String,
    /// `group.instance.id` of a static member (v5+).
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// v0 has none: the handler passes the session timeout, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and an id (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: the response can tell a rejoining static leader not to assign (KIP-814).
    pub supports_skip_assignment: bool,
}

/// A SyncGroup request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    /// v5+; checked against the group's when present.
    pub protocol_name: Option<String>,
    /// The leader's assignment (member id, assignment); empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// A Heartbeat request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
}

/// One member leaving; v0-2 send one with no instance id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveMember {
    /// May be empty when `group_instance_id` names the member (an admin removing a static
    /// member).
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// A LeaveGroup request (batched from v3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveRequest {
    pub members: Vec<LeaveMember>,
}

/// An input to the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    Join {
        token: RequestToken,
        request: JoinRequest,
    },
    Sync {
        token: RequestToken,
        request: SyncRequest,
    },
    Heartbeat {
        token: RequestToken,
        request: HeartbeatRequest,
    },
    Leave {
        token: RequestToken,
        request: LeaveRequest,
    },
    /// Time passed: expire sessions, pending member ids and the join phase.
    Tick,
}

/// One member in the leader's JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<KafkaError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinMember>,
    /// The leader must not compute a new assignment (a static leader rejoined, KIP-814).
    pub skip_assignment: bool,
}

impl JoinResponse {
    /// A refused join: Kafka's answer with no generation.
    pub fn failed(error: KafkaError, member_id: String) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation_id: NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id,
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// A SyncGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<KafkaError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn failed(error: KafkaError) -> SyncResponse {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// One member's outcome in a LeaveGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveMemberResult {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error: Option<KafkaError>,
}

/// A LeaveGroup response; v0-2 handlers report the single member's error at the top level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error: Option<KafkaError>,
    pub members: Vec<LeaveMemberResult>,
}

/// A response to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupResponse {
    Join(JoinResponse),
    Sync(SyncResponse),
    /// A Heartbeat response is only its error.
    Heartbeat(Option<KafkaError>),
    Leave(LeaveResponse),
}

/// An output of the machine. Actions come in order, and the order matters: a `Persist` must
/// be durable before any `Respond` after it is sent (Kafka answers SyncGroup only once the
/// group's record is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupAction {
    Respond {
        token: RequestToken,
        response: GroupResponse,
    },
    Persist(GroupSnapshot),
}

/// What of a group survives a coordinator restart: Kafka's group metadata record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub version: u32,
    pub group_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: Vec<MemberSnapshot>,
}

/// One member in a [`GroupSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// A snapshot that cannot be a group's state (damaged or from another version).
#[derive(Debug, thiserror::Error)]
#[error("invalid snapshot of group {group_id}: {reason}")]
pub struct SnapshotError {
    pub group_id: String,
    pub reason: String,
}

/// One member as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the chosen protocol; empty unless the group is Stable, as in Kafka.
    pub metadata: Bytes,
    /// Empty unless the group is Stable, as in Kafka.
    pub assignment: Bytes,
}

/// A group as DescribeGroups and ListGroups report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol; empty unless the group is Stable, as in Kafka.
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// A member of the group.
#[derive(Clone, Debug)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    /// Its held JoinGroup, while the join phase runs.
    awaiting_join: Option<RequestToken>,
    /// Its held SyncGroup, until the leader's assignment arrives.
    awaiting_sync: Option<RequestToken>,
    /// It is removed if no heartbeat, join or sync arrives by then (unless a request of its
    /// is held: then the rebalance timeout bounds it instead).
    session_deadline_ms: i64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|candidate| candidate.name == protocol)
            .map(|candidate| candidate.metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols
            .iter()
            .any(|candidate| candidate.name == protocol)
    }

    /// The member's most preferred protocol among `candidates` (Kafka's `MemberMetadata.vote`).
    fn vote<'a>(&'a self, candidates: &BTreeSet<&str>) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|protocol| protocol.name.as_str())
            .find(|name| candidates.contains(name))
    }

    fn is_holding_request(&self) -> bool {
        self.awaiting_join.is_some() || self.awaiting_sync.is_some()
    }
}

/// The join phase while the group is PreparingRebalance (Kafka's `DelayedJoin` in purgatory).
#[derive(Clone, Debug)]
struct JoinPhase {
    deadline_ms: i64,
    /// Set when the group started from Empty (Kafka's `InitialDelayedJoin`): then the phase
    /// never ends early, and is extended while new members keep arriving.
    initial: Option<InitialDelay>,
}

#[derive(Clone, Debug)]
struct InitialDelay {
    /// How much of the rebalance timeout is left for further extensions.
    remaining_ms: i64,
    new_member_added: bool,
}

/// One classic consumer group. Owned by the shard that coordinates the group.
#[derive(Clone, Debug)]
pub struct Group {
    group_id: String,
    config: GroupConfig,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    /// Ordered so that leader choice and the leader's member list are deterministic.
    members: BTreeMap<String, Member>,
    /// group.instance.id → its current member id.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED → when they expire unless used.
    pending_members: BTreeMap<String, i64>,
    join_phase: Option<JoinPhase>,
    /// Member ids are `{client_id}-{uuid}`, the uuid made of this seed and a counter, so tests
    /// are deterministic and a random seed per start keeps ids unique across restarts.
    member_id_seed: u64,
    member_id_counter: u64,
}

impl Group {
    /// A new, Empty group. `member_id_seed` should be random in production.
    pub fn new(group_id: String, config: GroupConfig, member_id_seed: u64) -> Group {
        Group {
            group_id,
            config,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            join_phase: None,
            member_id_seed,
            member_id_counter: 0,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Applies one event at `now_ms` and returns what the I/O layer must do, in order.
    pub fn handle(&mut self, event: GroupEvent, now_ms: i64) -> Vec<GroupAction> {
        let mut actions = Vec::new();
        // Deadlines that passed before this event count first, as if their timers had fired:
        // a heartbeat that arrives after its session expired must not revive the member.
        self.advance(now_ms, &mut actions);
        match event {
            GroupEvent::Join { token, request } => self.join(token, request, now_ms, &mut actions),
            GroupEvent::Sync { token, request } => self.sync(token, request, now_ms, &mut actions),
            GroupEvent::Heartbeat { token, request } => {
                let error = self.heartbeat(&request, now_ms);
                respond(&mut actions, token, GroupResponse::Heartbeat(error));
            }
            GroupEvent::Leave { token, request } => {
                let response = self.leave(&request, now_ms, &mut actions);
                respond(&mut actions, token, GroupResponse::Leave(response));
            }
            GroupEvent::Tick => {}
        }
        // The event may have let the join phase end (the last member rejoined, or left).
        self.advance(now_ms, &mut actions);
        self.check_invariants();
        actions
    }

    /// When the I/O layer must send the next [`GroupEvent::Tick`], if anything is scheduled.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let join = self.join_phase.as_ref().map(|phase| phase.deadline_ms);
        let pending = self.pending_members.values().copied().min();
        let sessions = self
            .members
            .values()
            .filter(|member| !member.is_holding_request())
            .map(|member| member.session_deadline_ms)
            .min();
        [join, pending, sessions].into_iter().flatten().min()
    }

    /// Checks an OffsetCommit's member fields (Kafka's `validateOffsetCommit` and the state
    /// rules of `handleCommitOffsets`); on success a member's session is extended, as a commit
    /// proves it alive.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), KafkaError> {
        if self.state == GroupState::Dead {
            return Err(KafkaError::CoordinatorNotAvailable);
        }
        let is_member_commit =
            generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some();
        if !is_member_commit {
            // A simple commit (an admin tool, or a consumer that assigns partitions itself)
            // could overwrite the offsets of a live group's members, so Kafka only takes it
            // while the group has none.
            return match self.state {
                GroupState::Empty => Ok(()),
                _ => Err(KafkaError::UnknownMemberId),
            };
        }
        self.validate_current_member(member_id, group_instance_id)?;
        if generation_id != self.generation_id {
            return Err(KafkaError::IllegalGeneration);
        }
        match self.state {
            // The member has the new generation but not yet its assignment: committing now
            // would be for partitions it may no longer own.
            GroupState::CompletingRebalance => Err(KafkaError::RebalanceInProgress),
            // During PreparingRebalance commits of the current generation are still taken: the
            // member learns of the rebalance from its next heartbeat.
            GroupState::Stable | GroupState::PreparingRebalance => {
                self.touch(member_id, now_ms);
                Ok(())
            }
            GroupState::Empty | GroupState::Dead => Err(KafkaError::UnknownMemberId),
        }
    }

    /// Marks an Empty group deleted (DeleteGroups); a group with members is refused.
    pub fn delete(&mut self) -> Result<(), KafkaError> {
        match self.state {
            GroupState::Empty => {
                self.state = GroupState::Dead;
                self.pending_members.clear();
                Ok(())
            }
            GroupState::Dead => Err(KafkaError::GroupIdNotFound),
            _ => Err(KafkaError::NonEmptyGroup),
        }
    }

    /// The group for DescribeGroups and ListGroups.
    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol_name = if stable {
            self.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = self
            .members
            .values()
            .map(|member| MemberDescription {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: if stable {
                    member.metadata(&protocol_name)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    member.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            group_id: self.group_id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name,
            members,
        }
    }

    /// What must survive a restart.
    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            version: SNAPSHOT_VERSION,
            group_id: self.group_id.clone(),
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            members: self
                .members
                .values()
                .map(|member| MemberSnapshot {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    session_timeout_ms: member.session_timeout_ms,
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    protocols: member
                        .protocols
                        .iter()
                        .map(|protocol| (protocol.name.clone(), protocol.metadata.to_vec()))
                        .collect(),
                    assignment: member.assignment.to_vec(),
                })
                .collect(),
        }
    }

    /// Rebuilds a group from its snapshot at `now_ms`, the way Kafka loads a group: Stable if
    /// it has members, else Empty; every member must heartbeat within its session timeout
    /// counted from now, since no heartbeat could reach the coordinator while it was down.
    pub fn restore(
        snapshot: GroupSnapshot,
        config: GroupConfig,
        member_id_seed: u64,
        now_ms: i64,
    ) -> Result<Group, SnapshotError> {
        validate_snapshot(&snapshot).map_err(|reason| SnapshotError {
            group_id: snapshot.group_id.clone(),
            reason,
        })?;
        let mut group = Group::new(snapshot.group_id, config, member_id_seed);
        group.generation_id = snapshot.generation_id;
        group.protocol_type = snapshot.protocol_type;
        group.protocol_name = snapshot.protocol_name;
        group.leader_id = snapshot.leader_id;
        for member in snapshot.members {
            if let Some(instance_id) = &member.group_instance_id {
                group
                    .static_members
                    .insert(instance_id.clone(), member.member_id.clone());
            }
            let restored = Member {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id,
                client_id: member.client_id,
                client_host: member.client_host,
                session_timeout_ms: member.session_timeout_ms,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                protocols: member
                    .protocols
                    .into_iter()
                    .map(|(name, metadata)| Protocol {
                        name,
                        metadata: Bytes::from(metadata),
                    })
                    .collect(),
                assignment: Bytes::from(member.assignment),
                awaiting_join: None,
                awaiting_sync: None,
                session_deadline_ms: now_ms + i64::from(member.session_timeout_ms),
            };
            group.members.insert(member.member_id, restored);
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group.check_invariants();
        Ok(group)
    }

    // ---- JoinGroup ----

    fn join(
        &mut self,
        token: RequestToken,
        request: JoinRequest,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) {
        if let Err(error) = self.check_join(&request) {
            let response = JoinResponse::failed(error, request.member_id);
            respond(actions, token, GroupResponse::Join(response));
            return;
        }
        if request.member_id.is_empty() {
            self.join_new_member(token, request, now_ms, actions);
        } else {
            self.join_current_member(token, request, now_ms, actions);
        }
    }

    /// The checks every JoinGroup passes first, in Kafka's order.
    fn check_join(&self, request: &JoinRequest) -> Result<(), KafkaError> {
        if self.state == GroupState::Dead {
            return Err(KafkaError::CoordinatorNotAvailable);
        }
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Err(KafkaError::InvalidSessionTimeout);
        }
        if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            return Err(KafkaError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    /// Kafka's `GroupMetadata.supportsProtocols`: the first member sets the protocol type and
    /// needs at least one protocol; later ones must share the type and one protocol that every
    /// current member supports.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|protocol| {
                self.members
                    .values()
                    .all(|member| member.supports(&protocol.name))
            })
    }

    fn join_new_member(
        &mut self,
        token: RequestToken,
        request: JoinRequest,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) {
        let member_id = self.new_member_id(&request.client_id);
        if let Some(instance_id) = &request.group_instance_id {
            // A static member needs no MEMBER_ID_REQUIRED round trip: its instance id already
            // identifies it, so a retried join cannot leave a stray member behind.
            if let Some(old_member_id) = self.static_members.get(instance_id).cloned() {
                self.replace_static_member(
                    token,
                    request,
                    old_member_id,
                    member_id,
                    now_ms,
                    actions,
                );
                return;
            }
        } else if request.require_known_member_id {
            if self.is_full() {
                let response = JoinResponse::failed(KafkaError::GroupMaxSizeReached, String::new());
                respond(actions, token, GroupResponse::Join(response));
                return;
            }
            // A client whose join timed out retries with an empty id; handing out the id
            // first means that retry cannot create a second, phantom member (KIP-394).
            let deadline_ms = now_ms + i64::from(request.session_timeout_ms);
            self.pending_members.insert(member_id.clone(), deadline_ms);
            let response = JoinResponse::failed(KafkaError::MemberIdRequired, member_id);
            respond(actions, token, GroupResponse::Join(response));
            return;
        }
        if self.is_full() {
            let response = JoinResponse::failed(KafkaError::GroupMaxSizeReached, String::new());
            respond(actions, token, GroupResponse::Join(response));
            return;
        }
        self.add_member(token, request, member_id, now_ms, actions);
    }

    fn join_current_member(
        &mut self,
        token: RequestToken,
        request: JoinRequest,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) {
        let member_id = request.member_id.clone();
        if self.pending_members.contains_key(&member_id) {
            // Pending ids are only handed to dynamic members; one claimed by a static member
            // is a client bug, and it recovers by joining again with an empty id.
            let error = if request.group_instance_id.is_some() {
                Some(KafkaError::UnknownMemberId)
            } else if self.is_full() {
                Some(KafkaError::GroupMaxSizeReached)
            } else {
                None
            };
            match error {
                Some(error) => {
                    let response = JoinResponse::failed(error, member_id);
                    respond(actions, token, GroupResponse::Join(response));
                }
                None => self.add_member(token, request, member_id, now_ms, actions),
            }
            return;
        }
        if let Err(error) =
            self.validate_current_member(&member_id, request.group_instance_id.as_deref())
        {
            let response = JoinResponse::failed(error, member_id);
            respond(actions, token, GroupResponse::Join(response));
            return;
        }
        let (is_leader, unchanged) = {
            let member = &self.members[&member_id];
            let unchanged = member.protocols == request.protocols;
            (
                self.leader_id.as_deref() == Some(member_id.as_str()),
                unchanged,
            )
        };
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(token, request, now_ms, actions);
            }
            // A member that missed its JoinGroup response asks again: give it the same answer.
            GroupState::CompletingRebalance if unchanged => {
                self.touch(&member_id, now_ms);
                let response = self.current_join_response(&member_id, is_leader);
                respond(actions, token, GroupResponse::Join(response));
            }
            // A follower rejoining with the same metadata changes nothing; a leader's rejoin
            // is how a client asks for a new assignment (e.g. its subscription's topics grew).
            GroupState::Stable if unchanged && !is_leader => {
                self.touch(&member_id, now_ms);
                let response = self.current_join_response(&member_id, false);
                respond(actions, token, GroupResponse::Join(response));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(token, request, now_ms, actions);
                self.maybe_prepare_rebalance(now_ms, actions);
            }
            GroupState::Empty | GroupState::Dead => {
                let response = JoinResponse::failed(KafkaError::UnknownMemberId, member_id);
                respond(actions, token, GroupResponse::Join(response));
            }
        }
    }

    fn add_member(
        &mut self,
        token: RequestToken,
        request: JoinRequest,
        member_id: String,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) {
        if let Some(initial) = self
            .join_phase
            .as_mut()
            .and_then(|phase| phase.initial.as_mut())
        {
            initial.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        self.pending_members.remove(&member_id);
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        if let Some(instance_id) = &request.group_instance_id {
            self.static_members
                .insert(instance_id.clone(), member_id.clone());
        }
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(token),
            awaiting_sync: None,
            session_deadline_ms: now_ms + i64::from(request.session_timeout_ms),
        };
        self.members.insert(member_id, member);
        self.maybe_prepare_rebalance(now_ms, actions);
    }

    /// Records a current member's rejoin and holds its response until the join phase ends.
    fn update_member(
        &mut self,
        token: RequestToken,
        request: JoinRequest,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) {
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return;
        };
        if let Some(superseded) = member.awaiting_join.replace(token) {
            // The client gave up on its earlier join and sent another; the earlier one still
            // gets an answer so that no token is left without one.
            let response =
                JoinResponse::failed(KafkaError::RebalanceInProgress, request.member_id.clone());
            respond(actions, superseded, GroupResponse::Join(response));
        }
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_deadline_ms = now_ms + i64::from(request.session_timeout_ms);
    }

    /// A known static member restarted and joined with an empty member id: it takes a new
    /// member id and keeps its place and assignment (Kafka's `updateStaticMemberAndRebalance`);
    /// the old id is fenced so the previous incarnation, if still alive, cannot disturb it.
    fn replace_static_member(
        &mut self,
        token: RequestToken,
        request: JoinRequest,
        old_member_id: String,
        new_member_id: String,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) {
        let Some(mut member) = self.members.remove(&old_member_id) else {
            return;
        };
        if let Some(held) = member.awaiting_join.take() {
            let response =
                JoinResponse::failed(KafkaError::FencedInstanceId, old_member_id.clone());
            respond(actions, held, GroupResponse::Join(response));
        }
        if let Some(held) = member.awaiting_sync.take() {
            respond(
                actions,
                held,
                GroupResponse::Sync(SyncResponse::failed(KafkaError::FencedInstanceId)),
            );
        }
        let instance_id = request.group_instance_id.clone().unwrap_or_default();
        member.member_id = new_member_id.clone();
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_deadline_ms = now_ms + i64::from(request.session_timeout_ms);
        self.members.insert(new_member_id.clone(), member);
        self.static_members
            .insert(instance_id, new_member_id.clone());
        let was_leader = self.leader_id.as_deref() == Some(old_member_id.as_str());
        if was_leader {
            self.leader_id = Some(new_member_id.clone());
        }
        let hold = |group: &mut Group| {
            if let Some(member) = group.members.get_mut(&new_member_id) {
                member.awaiting_join = Some(token);
            }
        };
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol_name => {
                actions.push(GroupAction::Persist(self.snapshot()));
                let mut response = self.current_join_response(&new_member_id, was_leader);
                if was_leader {
                    if request.supports_skip_assignment {
                        response.skip_assignment = true;
                    } else {
                        // Before KIP-814 a client that sees itself as leader would compute a
                        // new assignment; naming the old id as leader keeps it a follower.
                        response.leader_id = old_member_id;
                        response.members.clear();
                    }
                }
                respond(actions, token, GroupResponse::Join(response));
            }
            // Its new protocols would change the group's choice: everyone must rejoin.
            GroupState::Stable | GroupState::CompletingRebalance => {
                hold(self);
                self.maybe_prepare_rebalance(now_ms, actions);
            }
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => hold(self),
        }
    }

    /// The JoinGroup response for the current generation.
    fn current_join_response(&self, member_id: &str, with_members: bool) -> JoinResponse {
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        let members = if with_members {
            self.members
                .values()
                .map(|member| JoinMember {
                    member_id: member.member_id.clone(),
                    group_instance_id: member.group_instance_id.clone(),
                    metadata: member.metadata(&protocol_name),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    // ---- Rebalance ----

    fn maybe_prepare_rebalance(&mut self, now_ms: i64, actions: &mut Vec<GroupAction>) {
        match self.state {
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, actions);
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, actions: &mut Vec<GroupAction>) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being prepared is for members that are about to change.
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(held) = member.awaiting_sync.take() {
                    // Its session was suspended while the request was held: it restarts now.
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                    let response = SyncResponse::failed(KafkaError::RebalanceInProgress);
                    respond(actions, held, GroupResponse::Sync(response));
                }
            }
        }
        // Kafka waits for the slowest member: the group's rebalance timeout is the largest.
        let rebalance_timeout_ms = self
            .members
            .values()
            .map(|member| i64::from(member.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        let phase = if self.state == GroupState::Empty {
            let delay_ms = i64::from(self.config.initial_rebalance_delay_ms);
            JoinPhase {
                deadline_ms: now_ms + delay_ms,
                initial: Some(InitialDelay {
                    remaining_ms: (rebalance_timeout_ms - delay_ms).max(0),
                    new_member_added: false,
                }),
            }
        } else {
            JoinPhase {
                deadline_ms: now_ms + rebalance_timeout_ms,
                initial: None,
            }
        };
        self.join_phase = Some(phase);
        self.state = GroupState::PreparingRebalance;
    }

    /// Expires what is due and ends the join phase when it can end.
    fn advance(&mut self, now_ms: i64, actions: &mut Vec<GroupAction>) {
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, deadline_ms)| **deadline_ms <= now_ms)
            .map(|(member_id, _)| member_id.clone())
            .collect();
        for member_id in expired_pending {
            self.pending_members.remove(&member_id);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| !member.is_holding_request() && member.session_deadline_ms <= now_ms)
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in expired {
            self.remove_member(&member_id, now_ms, actions);
        }
        self.maybe_complete_join(now_ms, actions);
    }

    fn maybe_complete_join(&mut self, now_ms: i64, actions: &mut Vec<GroupAction>) {
        let Some(phase) = self.join_phase.as_mut() else {
            return;
        };
        let all_joined = self.pending_members.is_empty()
            && self
                .members
                .values()
                .all(|member| member.awaiting_join.is_some());
        if phase.initial.is_none() && all_joined {
            self.complete_join(now_ms, actions);
            return;
        }
        if now_ms < phase.deadline_ms {
            return;
        }
        if let Some(initial) = phase.initial.as_mut() {
            if initial.new_member_added && initial.remaining_ms > 0 {
                // Members are still arriving: wait another delay, within the rebalance timeout.
                let delay_ms =
                    i64::from(self.config.initial_rebalance_delay_ms).min(initial.remaining_ms);
                initial.remaining_ms -= delay_ms;
                initial.new_member_added = false;
                phase.deadline_ms = now_ms + delay_ms;
                return;
            }
        }
        self.complete_join(now_ms, actions);
    }

    /// Kafka's `onCompleteJoin`: members that did not rejoin are removed, the generation
    /// advances, and every held JoinGroup is answered.
    fn complete_join(&mut self, now_ms: i64, actions: &mut Vec<GroupAction>) {
        self.join_phase = None;
        let not_rejoined: Vec<String> = self
            .members
            .values()
            .filter(|member| member.awaiting_join.is_none())
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in not_rejoined {
            self.remove_member(&member_id, now_ms, actions);
        }
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            actions.push(GroupAction::Persist(self.snapshot()));
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let leader_id = self.leader_id.clone().unwrap_or_default();
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let response = self.current_join_response(&member_id, member_id == leader_id);
            let Some(member) = self.members.get_mut(&member_id) else {
                continue;
            };
            member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
            if let Some(held) = member.awaiting_join.take() {
                respond(actions, held, GroupResponse::Join(response));
            }
        }
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports, each member votes
    /// for its most preferred one, and the most votes win (ties go to the protocol listed
    /// first by the first member, to be deterministic).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: BTreeSet<&str> = first
            .protocols
            .iter()
            .map(|protocol| protocol.name.as_str())
            .filter(|name| self.members.values().all(|member| member.supports(name)))
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(vote) = member.vote(&candidates) {
                *votes.entry(vote).or_default() += 1;
            }
        }
        let most = votes.values().copied().max()?;
        first
            .protocols
            .iter()
            .map(|protocol| protocol.name.as_str())
            .find(|name| votes.get(name) == Some(&most))
            .map(str::to_string)
    }

    /// Removes a member (left, session expired, or did not rejoin in time); its held requests
    /// are answered with UNKNOWN_MEMBER_ID so the client, if alive, joins again.
    fn remove_member(&mut self, member_id: &str, now_ms: i64, actions: &mut Vec<GroupAction>) {
        let Some(member) = self.members.remove(member_id) else {
            return;
        };
        if let Some(held) = member.awaiting_join {
            let response = JoinResponse::failed(KafkaError::UnknownMemberId, member_id.to_string());
            respond(actions, held, GroupResponse::Join(response));
        }
        if let Some(held) = member.awaiting_sync {
            respond(
                actions,
                held,
                GroupResponse::Sync(SyncResponse::failed(KafkaError::UnknownMemberId)),
            );
        }
        if let Some(instance_id) = &member.group_instance_id {
            if self.static_members.get(instance_id).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance_id);
            }
        }
        if self.leader_id.as_deref() == Some(member_id) {
            // Prefer a member that has rejoined, so the new leader is one that gets the
            // member list when the join phase ends.
            self.leader_id = self
                .members
                .values()
                .find(|candidate| candidate.awaiting_join.is_some())
                .or_else(|| self.members.values().next())
                .map(|candidate| candidate.member_id.clone());
        }
        self.maybe_prepare_rebalance_after_removal(now_ms, actions);
    }

    fn maybe_prepare_rebalance_after_removal(
        &mut self,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, actions);
            }
            // The join phase may now be complete; `advance` checks after every event.
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup ----

    fn sync(
        &mut self,
        token: RequestToken,
        request: SyncRequest,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) {
        if let Err(error) = self.check_sync(&request) {
            respond(
                actions,
                token,
                GroupResponse::Sync(SyncResponse::failed(error)),
            );
            return;
        }
        let member_id = request.member_id;
        match self.state {
            GroupState::CompletingRebalance => {
                let Some(member) = self.members.get_mut(&member_id) else {
                    return;
                };
                if let Some(superseded) = member.awaiting_sync.replace(token) {
                    let response = SyncResponse::failed(KafkaError::RebalanceInProgress);
                    respond(actions, superseded, GroupResponse::Sync(response));
                }
                member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                if self.leader_id.as_deref() != Some(member_id.as_str()) {
                    return;
                }
                // Members the leader left out get an empty assignment; entries for unknown
                // members are ignored.
                let mut assignments: BTreeMap<String, Bytes> =
                    request.assignments.into_iter().collect();
                for member in self.members.values_mut() {
                    member.assignment = assignments.remove(&member.member_id).unwrap_or_default();
                }
                self.state = GroupState::Stable;
                actions.push(GroupAction::Persist(self.snapshot()));
                let protocol_type = self.protocol_type.clone();
                let protocol_name = self.protocol_name.clone();
                for member in self.members.values_mut() {
                    if let Some(held) = member.awaiting_sync.take() {
                        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                        let response = SyncResponse {
                            error: None,
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                            assignment: member.assignment.clone(),
                        };
                        respond(actions, held, GroupResponse::Sync(response));
                    }
                }
            }
            GroupState::Stable => {
                self.touch(&member_id, now_ms);
                let response = SyncResponse {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: self.members[&member_id].assignment.clone(),
                };
                respond(actions, token, GroupResponse::Sync(response));
            }
            GroupState::PreparingRebalance => {
                let response = SyncResponse::failed(KafkaError::RebalanceInProgress);
                respond(actions, token, GroupResponse::Sync(response));
            }
            GroupState::Empty | GroupState::Dead => {
                let response = SyncResponse::failed(KafkaError::UnknownMemberId);
                respond(actions, token, GroupResponse::Sync(response));
            }
        }
    }

    fn check_sync(&self, request: &SyncRequest) -> Result<(), KafkaError> {
        if self.state == GroupState::Dead {
            return Err(KafkaError::CoordinatorNotAvailable);
        }
        self.validate_current_member(&request.member_id, request.group_instance_id.as_deref())?;
        if request.generation_id != self.generation_id {
            return Err(KafkaError::IllegalGeneration);
        }
        let mismatch =
            |given: &Option<String>, ours: &Option<String>| given.is_some() && given != ours;
        if mismatch(&request.protocol_type, &self.protocol_type)
            || mismatch(&request.protocol_name, &self.protocol_name)
        {
            return Err(KafkaError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    fn heartbeat(&mut self, request: &HeartbeatRequest, now_ms: i64) -> Option<KafkaError> {
        if self.state == GroupState::Dead {
            return Some(KafkaError::CoordinatorNotAvailable);
        }
        if let Err(error) =
            self.validate_current_member(&request.member_id, request.group_instance_id.as_deref())
        {
            return Some(error);
        }
        if request.generation_id != self.generation_id {
            return Some(KafkaError::IllegalGeneration);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Some(KafkaError::UnknownMemberId),
            // A member may heartbeat between its JoinGroup and SyncGroup responses.
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.touch(&request.member_id, now_ms);
                None
            }
            // How a member learns that it must rejoin.
            GroupState::PreparingRebalance => {
                self.touch(&request.member_id, now_ms);
                Some(KafkaError::RebalanceInProgress)
            }
        }
    }

    fn leave(
        &mut self,
        request: &LeaveRequest,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) -> LeaveResponse {
        if self.state == GroupState::Dead {
            return LeaveResponse {
                error: Some(KafkaError::CoordinatorNotAvailable),
                members: Vec::new(),
            };
        }
        let members = request
            .members
            .iter()
            .map(|leaving| LeaveMemberResult {
                member_id: leaving.member_id.clone(),
                group_instance_id: leaving.group_instance_id.clone(),
                error: self.leave_one(leaving, now_ms, actions),
            })
            .collect();
        LeaveResponse {
            error: None,
            members,
        }
    }

    /// Kafka's per-member LeaveGroup rules: a static member may be named by its instance id
    /// alone, but a member id that does not match the instance's current one is fenced.
    fn leave_one(
        &mut self,
        leaving: &LeaveMember,
        now_ms: i64,
        actions: &mut Vec<GroupAction>,
    ) -> Option<KafkaError> {
        let static_member_id = leaving
            .group_instance_id
            .as_ref()
            .and_then(|instance_id| self.static_members.get(instance_id))
            .cloned();
        if let Some(current) = &static_member_id {
            if !leaving.member_id.is_empty() && *current != leaving.member_id {
                return Some(KafkaError::FencedInstanceId);
            }
        }
        if self.pending_members.remove(&leaving.member_id).is_some() {
            return None;
        }
        let member_id = match static_member_id {
            Some(member_id) => member_id,
            None if self.members.contains_key(&leaving.member_id) => leaving.member_id.clone(),
            None => return Some(KafkaError::UnknownMemberId),
        };
        self.remove_member(&member_id, now_ms, actions);
        None
    }

    // ---- Helpers ----

    /// Kafka's `validateCurrentMember`: an instance id must be known and map to this member
    /// id (else the caller is an old incarnation, fenced), and the member id must be known.
    fn validate_current_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), KafkaError> {
        if let Some(instance_id) = group_instance_id {
            match self.static_members.get(instance_id) {
                Some(current) if current != member_id => return Err(KafkaError::FencedInstanceId),
                Some(_) => {}
                None => return Err(KafkaError::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(KafkaError::UnknownMemberId);
        }
        Ok(())
    }

    /// Extends a member's session: it has shown it is alive.
    fn touch(&mut self, member_id: &str, now_ms: i64) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        }
    }

    fn is_full(&self) -> bool {
        self.members.len() >= self.config.max_size
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        loop {
            self.member_id_counter += 1;
            let uuid = uuid::Uuid::from_u64_pair(self.member_id_seed, self.member_id_counter);
            let member_id = format!("{client_id}-{uuid}");
            // Only a restore with a repeated seed could collide; skip rather than merge two
            // clients into one member.
            if !self.members.contains_key(&member_id)
                && !self.pending_members.contains_key(&member_id)
            {
                return member_id;
            }
        }
    }

    /// The rules that hold between events; cheap enough for debug builds and tests.
    fn check_invariants(&self) {
        debug_assert_eq!(
            self.state == GroupState::PreparingRebalance,
            self.join_phase.is_some()
        );
        match self.state {
            GroupState::Empty | GroupState::Dead => debug_assert!(self.members.is_empty()),
            GroupState::CompletingRebalance | GroupState::Stable => {
                debug_assert!(!self.members.is_empty());
            }
            GroupState::PreparingRebalance => {}
        }
        debug_assert_eq!(self.members.is_empty(), self.leader_id.is_none());
        if let Some(leader_id) = &self.leader_id {
            debug_assert!(self.members.contains_key(leader_id));
        }
        for (instance_id, member_id) in &self.static_members {
            debug_assert_eq!(
                self.members
                    .get(member_id)
                    .and_then(|member| member.group_instance_id.as_ref()),
                Some(instance_id)
            );
        }
        for member in self.members.values() {
            debug_assert!(
                member.awaiting_join.is_none() || self.state == GroupState::PreparingRebalance
            );
            debug_assert!(
                member.awaiting_sync.is_none() || self.state == GroupState::CompletingRebalance
            );
        }
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            debug_assert!(self.protocol_name.is_some());
        }
    }
}

fn respond(actions: &mut Vec<GroupAction>, token: RequestToken, response: GroupResponse) {
    actions.push(GroupAction::Respond { token, response });
}

/// A snapshot read back must describe a possible group: the checks `Group` relies on.
fn validate_snapshot(snapshot: &GroupSnapshot) -> Result<(), String> {
    if snapshot.version != SNAPSHOT_VERSION {
        return Err(format!(
            "version {} (expected {SNAPSHOT_VERSION})",
            snapshot.version
        ));
    }
    if snapshot.generation_id < 0 {
        return Err(format!("negative generation {}", snapshot.generation_id));
    }
    let mut member_ids = BTreeSet::new();
    let mut instance_ids = BTreeSet::new();
    for member in &snapshot.members {
        if member.member_id.is_empty() || !member_ids.insert(member.member_id.as_str()) {
            return Err(format!(
                "empty or repeated member id {:?}",
                member.member_id
            ));
        }
        if let Some(instance_id) = &member.group_instance_id {
            if !instance_ids.insert(instance_id.as_str()) {
                return Err(format!("repeated group instance id {instance_id:?}"));
            }
        }
        if member.session_timeout_ms <= 0 || member.rebalance_timeout_ms < 0 {
            return Err(format!("member {} has invalid timeouts", member.member_id));
        }
    }
    if snapshot.members.is_empty() {
        return match &snapshot.leader_id {
            None => Ok(()),
            Some(leader_id) => Err(format!("leader {leader_id} of a group without members")),
        };
    }
    match &snapshot.leader_id {
        Some(leader_id) if member_ids.contains(leader_id.as_str()) => {}
        other => return Err(format!("leader {other:?} is not a member")),
    }
    if snapshot.protocol_type.as_deref().is_none_or(str::is_empty) {
        return Err("a group with members has no protocol type".to_string());
    }
    let Some(protocol_name) = &snapshot.protocol_name else {
        return Err("a group with members has no protocol".to_string());
    };
    for member in &snapshot.members {
        if !member
            .protocols
            .iter()
            .any(|(name, _)| name == protocol_name)
        {
            return Err(format!(
                "member {} does not support protocol {protocol_name}",
                member.member_id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const SESSION_MS: i32 = 10_000;
    const REBALANCE_MS: i32 = 30_000;
    const DELAY_MS: i64 = GROUP_INITIAL_REBALANCE_DELAY_MS as i64;

    /// Drives a group and checks that every token is answered exactly once.
    struct Harness {
        group: Group,
        now_ms: i64,
        next_token: u64,
        outstanding: BTreeSet<RequestToken>,
        responses: BTreeMap<RequestToken, GroupResponse>,
        persisted: Vec<GroupSnapshot>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness::with_group(Group::new("group".to_string(), GroupConfig::default(), 7))
        }

        fn with_group(group: Group) -> Harness {
            Harness {
                group,
                now_ms: 0,
                next_token: 0,
                outstanding: BTreeSet::new(),
                responses: BTreeMap::new(),
                persisted: Vec::new(),
            }
        }

        fn apply(&mut self, actions: Vec<GroupAction>) {
            for action in actions {
                match action {
                    GroupAction::Respond { token, response } => {
                        assert!(
                            self.outstanding.remove(&token),
                            "{token:?} answered twice or never asked"
                        );
                        self.responses.insert(token, response);
                    }
                    GroupAction::Persist(snapshot) => self.persisted.push(snapshot),
                }
            }
        }

        fn token(&mut self) -> RequestToken {
            self.next_token += 1;
            let token = RequestToken(self.next_token);
            self.outstanding.insert(token);
            token
        }

        fn advance_to(&mut self, now_ms: i64) {
            self.now_ms = now_ms;
            let actions = self.group.handle(GroupEvent::Tick, now_ms);
            self.apply(actions);
        }

        /// Ticks at each deadline until the join phase ends (the initial delay is extended
        /// while members keep arriving).
        fn finish_join_phase(&mut self) {
            while self.group.state() == GroupState::PreparingRebalance {
                let deadline_ms = self
                    .group
                    .next_deadline_ms()
                    .expect("a join phase has a deadline");
                self.advance_to(deadline_ms.max(self.now_ms));
            }
        }

        fn join(&mut self, request: JoinRequest) -> RequestToken {
            let token = self.token();
            let actions = self
                .group
                .handle(GroupEvent::Join { token, request }, self.now_ms);
            self.apply(actions);
            token
        }

        fn sync(
            &mut self,
            member_id: &str,
            generation_id: i32,
            assignments: &[(&str, &str)],
        ) -> RequestToken {
            let request = SyncRequest {
                member_id: member_id.to_string(),
                group_instance_id: self.instance_of(member_id),
                generation_id,
                protocol_type: None,
                protocol_name: None,
                assignments: assignments
                    .iter()
                    .map(|(member, assignment)| {
                        (member.to_string(), Bytes::from(assignment.to_string()))
                    })
                    .collect(),
            };
            let token = self.token();
            let actions = self
                .group
                .handle(GroupEvent::Sync { token, request }, self.now_ms);
            self.apply(actions);
            token
        }

        fn heartbeat_as(
            &mut self,
            member_id: &str,
            instance_id: Option<&str>,
            generation_id: i32,
        ) -> Option<KafkaError> {
            let request = HeartbeatRequest {
                member_id: member_id.to_string(),
                group_instance_id: instance_id.map(str::to_string),
                generation_id,
            };
            let token = self.token();
            let actions = self
                .group
                .handle(GroupEvent::Heartbeat { token, request }, self.now_ms);
            self.apply(actions);
            match self.responses.remove(&token) {
                Some(GroupResponse::Heartbeat(error)) => error,
                other => panic!("no heartbeat response: {other:?}"),
            }
        }

        fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> Option<KafkaError> {
            let instance_id = self.instance_of(member_id);
            self.heartbeat_as(member_id, instance_id.as_deref(), generation_id)
        }

        fn leave(&mut self, members: &[(&str, Option<&str>)]) -> LeaveResponse {
            let request = LeaveRequest {
                members: members
                    .iter()
                    .map(|(member_id, instance_id)| LeaveMember {
                        member_id: member_id.to_string(),
                        group_instance_id: instance_id.map(str::to_string),
                    })
                    .collect(),
            };
            let token = self.token();
            let actions = self
                .group
                .handle(GroupEvent::Leave { token, request }, self.now_ms);
            self.apply(actions);
            match self.responses.remove(&token) {
                Some(GroupResponse::Leave(response)) => response,
                other => panic!("no leave response: {other:?}"),
            }
        }

        fn instance_of(&self, member_id: &str) -> Option<String> {
            self.group
                .members
                .get(member_id)
                .and_then(|member| member.group_instance_id.clone())
        }

        fn join_response(&mut self, token: RequestToken) -> Option<JoinResponse> {
            match self.responses.remove(&token)? {
                GroupResponse::Join(response) => Some(response),
                other => panic!("not a join response: {other:?}"),
            }
        }

        fn sync_response(&mut self, token: RequestToken) -> Option<SyncResponse> {
            match self.responses.remove(&token)? {
                GroupResponse::Sync(response) => Some(response),
                other => panic!("not a sync response: {other:?}"),
            }
        }

        /// A v4+ dynamic member's full entry: MEMBER_ID_REQUIRED, then the join with its id.
        fn join_new(&mut self, client_id: &str) -> (String, RequestToken) {
            let first = self.join(request(client_id, ""));
            let response = self.join_response(first).expect("answered at once");
            assert_eq!(response.error, Some(KafkaError::MemberIdRequired));
            let member_id = response.member_id;
            let token = self.join(request(client_id, &member_id));
            (member_id, token)
        }

        /// A stable group of the given clients at generation 1, each assigned its own name.
        fn stable_group(&mut self, clients: &[&str]) -> Vec<String> {
            let joined: Vec<(String, RequestToken)> =
                clients.iter().map(|client| self.join_new(client)).collect();
            self.finish_join_phase();
            let responses: Vec<JoinResponse> = joined
                .iter()
                .map(|(_, token)| self.join_response(*token).expect("join phase over"))
                .collect();
            let leader = responses[0].leader_id.clone();
            let ids: Vec<String> = joined.into_iter().map(|(member_id, _)| member_id).collect();
            let assignments: Vec<(&str, &str)> = ids
                .iter()
                .zip(clients)
                .map(|(id, client)| (id.as_str(), *client))
                .collect();
            let syncs: Vec<RequestToken> = ids
                .iter()
                .filter(|id| **id != leader)
                .map(|id| self.sync(id, 1, &[]))
                .collect();
            let leader_sync = self.sync(&leader, 1, &assignments);
            for token in syncs.into_iter().chain([leader_sync]) {
                assert_eq!(self.sync_response(token).expect("synced").error, None);
            }
            assert_eq!(self.group.state(), GroupState::Stable);
            ids
        }
    }

    fn request(client_id: &str, member_id: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: client_id.to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".to_string(),
            protocols: vec![protocol("range", client_id)],
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    fn static_request(client_id: &str, member_id: &str, instance_id: &str) -> JoinRequest {
        JoinRequest {
            group_instance_id: Some(instance_id.to_string()),
            ..request(client_id, member_id)
        }
    }

    fn protocol(name: &str, metadata: &str) -> Protocol {
        Protocol {
            name: name.to_string(),
            metadata: Bytes::from(metadata.to_string()),
        }
    }

    #[test]
    fn single_member_becomes_leader_of_generation_1_then_stable() {
        let mut harness = Harness::new();
        let (member_id, token) = harness.join_new("c1");
        assert!(member_id.starts_with("c1-"));
        // The first join of an empty group waits for the initial rebalance delay.
        assert_eq!(harness.group.next_deadline_ms(), Some(DELAY_MS));
        harness.advance_to(DELAY_MS - 1);
        assert!(harness.join_response(token).is_none());
        harness.advance_to(DELAY_MS);
        let response = harness.join_response(token).expect("join phase over");
        assert_eq!(response.error, None);
        assert_eq!(response.generation_id, 1);
        assert_eq!(response.leader_id, member_id);
        assert_eq!(response.protocol_name.as_deref(), Some("range"));
        assert_eq!(response.members.len(), 1);
        assert_eq!(response.members[0].metadata, Bytes::from("c1"));
        assert_eq!(harness.group.state(), GroupState::CompletingRebalance);

        let sync = harness.sync(&member_id, 1, &[(&member_id, "p0")]);
        let response = harness
            .sync_response(sync)
            .expect("leader's sync answered at once");
        assert_eq!(response.assignment, Bytes::from("p0"));
        assert_eq!(harness.group.state(), GroupState::Stable);
        let snapshot = harness.persisted.last().expect("persisted on sync");
        assert_eq!(snapshot.generation_id, 1);
        assert_eq!(snapshot.members[0].assignment, b"p0".to_vec());
        assert_eq!(harness.heartbeat(&member_id, 1), None);
        let description = harness.group.describe();
        assert_eq!(description.state.name(), "Stable");
        assert_eq!(description.protocol_name, "range");
        assert_eq!(description.members[0].assignment, Bytes::from("p0"));
    }

    #[test]
    fn responses_are_held_until_every_member_has_joined() {
        let mut harness = Harness::new();
        let ids = harness.stable_group(&["c1", "c2"]);
        // c2 rejoins with new metadata: a rebalance in which c1 must rejoin too.
        let mut changed = request("c2", &ids[1]);
        changed.protocols = vec![protocol("range", "c2-more-topics")];
        let second = harness.join(changed);
        assert_eq!(harness.group.state(), GroupState::PreparingRebalance);
        assert!(harness.join_response(second).is_none());
        assert_eq!(
            harness.heartbeat(&ids[0], 1),
            Some(KafkaError::RebalanceInProgress)
        );
        let first = harness.join(request("c1", &ids[0]));
        let first = harness.join_response(first).expect("all joined");
        let second = harness.join_response(second).expect("all joined");
        assert_eq!((first.generation_id, second.generation_id), (2, 2));
        assert_eq!(first.leader_id, second.leader_id);
        let leader = if first.leader_id == ids[0] {
            &first
        } else {
            &second
        };
        assert_eq!(leader.members.len(), 2);
        assert!(leader
            .members
            .iter()
            .any(|member| member.metadata == "c2-more-topics"));
    }

    #[test]
    fn member_id_required_then_pending_id_expires() {
        let mut harness = Harness::new();
        let token = harness.join(request("c1", ""));
        let response = harness.join_response(token).expect("answered at once");
        assert_eq!(response.error, Some(KafkaError::MemberIdRequired));
        assert_eq!(
            response.member_id,
            "c1-00000000-0000-0007-0000-000000000001"
        );
        // An id the coordinator never handed out is refused.
        let unknown = harness.join(request("c1", "c1-made-up"));
        assert_eq!(
            harness.join_response(unknown).expect("answered").error,
            Some(KafkaError::UnknownMemberId)
        );
        // The pending id expires after the session timeout if it is never used.
        assert_eq!(
            harness.group.next_deadline_ms(),
            Some(i64::from(SESSION_MS))
        );
        harness.advance_to(i64::from(SESSION_MS));
        let late = harness.join(request("c1", &response.member_id));
        assert_eq!(
            harness.join_response(late).expect("answered").error,
            Some(KafkaError::UnknownMemberId)
        );
        // Before v4 a member joins directly, with an id chosen for it.
        let mut old = request("c2", "");
        old.require_known_member_id = false;
        let token = harness.join(old);
        harness.advance_to(harness.now_ms + DELAY_MS);
        let response = harness.join_response(token).expect("joined");
        assert_eq!((response.error, response.generation_id), (None, 1));
        assert!(response.member_id.starts_with("c2-"));
    }

    #[test]
    fn a_third_member_triggers_a_rebalance() {
        let mut harness = Harness::new();
        let ids = harness.stable_group(&["c1", "c2"]);
        let (third, third_token) = harness.join_new("c3");
        assert_eq!(harness.group.state(), GroupState::PreparingRebalance);
        for id in &ids {
            assert_eq!(
                harness.heartbeat(id, 1),
                Some(KafkaError::RebalanceInProgress)
            );
        }
        let rejoins: Vec<RequestToken> = ids
            .iter()
            .zip(["c1", "c2"])
            .map(|(id, client)| harness.join(request(client, id)))
            .collect();
        for token in rejoins.into_iter().chain([third_token]) {
            let response = harness.join_response(token).expect("all joined");
            assert_eq!((response.error, response.generation_id), (None, 2));
        }
        assert_eq!(harness.group.member_count(), 3);
        assert!(harness.group.members.contains_key(&third));
    }

    #[test]
    fn session_expiry_rebalances_and_survivors_rejoin() {
        let mut harness = Harness::new();
        let ids = harness.stable_group(&["c1", "c2"]);
        // c1 keeps heartbeating, c2 goes silent.
        let mut now_ms = harness.now_ms;
        let expiry_ms = harness.group.members[&ids[1]].session_deadline_ms;
        while now_ms + 3_000 < expiry_ms {
            now_ms += 3_000;
            harness.advance_to(now_ms);
            assert_eq!(harness.heartbeat(&ids[0], 1), None);
        }
        harness.advance_to(expiry_ms);
        assert_eq!(harness.group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            harness.heartbeat(&ids[1], 1),
            Some(KafkaError::UnknownMemberId)
        );
        assert_eq!(
            harness.heartbeat(&ids[0], 1),
            Some(KafkaError::RebalanceInProgress)
        );
        let token = harness.join(request("c1", &ids[0]));
        let response = harness
            .join_response(token)
            .expect("the only member rejoined");
        assert_eq!(
            (response.generation_id, response.leader_id.as_str()),
            (2, ids[0].as_str())
        );
        assert_eq!(response.members.len(), 1);
    }

    #[test]
    fn rebalance_timeout_removes_members_that_did_not_rejoin() {
        let mut harness = Harness::new();
        let ids = harness.stable_group(&["c1", "c2"]);
        let start_ms = harness.now_ms;
        let mut changed = request("c1", &ids[0]);
        changed.protocols = vec![protocol("range", "new")];
        let token = harness.join(changed);
        // c2 heartbeats (so its session does not expire) but never rejoins.
        let mut now_ms = start_ms;
        while now_ms + 3_000 < start_ms + i64::from(REBALANCE_MS) {
            now_ms += 3_000;
            harness.advance_to(now_ms);
            assert_eq!(
                harness.heartbeat(&ids[1], 1),
                Some(KafkaError::RebalanceInProgress)
            );
        }
        assert!(harness.join_response(token).is_none());
        assert_eq!(
            harness.group.next_deadline_ms(),
            Some(start_ms + i64::from(REBALANCE_MS))
        );
        harness.advance_to(start_ms + i64::from(REBALANCE_MS));
        let response = harness.join_response(token).expect("rebalance timeout");
        assert_eq!((response.generation_id, response.members.len()), (2, 1));
        assert_eq!(
            harness.heartbeat(&ids[1], 1),
            Some(KafkaError::UnknownMemberId)
        );
    }

    #[test]
    fn sync_checks() {
        let mut harness = Harness::new();
        let ids = harness.stable_group(&["c1", "c2"]);
        let cases: [(&str, i32, Option<KafkaError>); 3] = [
            (&ids[0], 0, Some(KafkaError::IllegalGeneration)),
            ("nobody", 1, Some(KafkaError::UnknownMemberId)),
            (&ids[1], 1, None),
        ];
        for (member_id, generation_id, expected) in cases {
            let token = harness.sync(member_id, generation_id, &[]);
            let response = harness.sync_response(token).expect("answered at once");
            assert_eq!(response.error, expected, "{member_id} {generation_id}");
            if expected.is_none() {
                assert_eq!(
                    response.assignment,
                    Bytes::from("c2"),
                    "Stable returns the current assignment"
                );
            }
        }
        harness.join_new("c3");
        let token = harness.sync(&ids[0], 1, &[]);
        assert_eq!(
            harness.sync_response(token).expect("answered").error,
            Some(KafkaError::RebalanceInProgress)
        );
    }

    #[test]
    fn follower_sync_is_held_until_the_leaders() {
        let mut harness = Harness::new();
        let (first, first_join) = harness.join_new("c1");
        let (second, second_join) = harness.join_new("c2");
        harness.finish_join_phase();
        let leader = harness.join_response(first_join).expect("joined").leader_id;
        harness.join_response(second_join).expect("joined");
        let follower = if leader == first {
            second.clone()
        } else {
            first.clone()
        };
        let follower_sync = harness.sync(&follower, 1, &[]);
        assert!(harness.sync_response(follower_sync).is_none());
        // A follower still heartbeats while it waits.
        assert_eq!(harness.heartbeat(&follower, 1), None);
        // A held sync keeps its member alive; the leader that never syncs expires, and the
        // rebalance that follows releases the follower's sync.
        let leader_deadline_ms = harness
            .group
            .next_deadline_ms()
            .expect("the leader's session");
        assert_eq!(leader_deadline_ms, harness.now_ms + i64::from(SESSION_MS));
        harness.advance_to(leader_deadline_ms);
        let response = harness.sync_response(follower_sync).expect("released");
        assert_eq!(response.error, Some(KafkaError::RebalanceInProgress));
        assert_eq!(harness.group.member_count(), 1);
        assert!(harness.group.members.contains_key(&follower));
        assert_eq!(harness.group.leader_id.as_deref(), Some(follower.as_str()));
    }

    #[test]
    fn follower_sync_answered_with_its_assignment() {
        let mut harness = Harness::new();
        let (first, first_join) = harness.join_new("c1");
        let (second, second_join) = harness.join_new("c2");
        harness.finish_join_phase();
        let leader = harness.join_response(first_join).expect("joined").leader_id;
        harness.join_response(second_join).expect("joined");
        let follower = if leader == first { second } else { first };
        let follower_sync = harness.sync(&follower, 1, &[]);
        assert!(harness.sync_response(follower_sync).is_none());
        let leader_sync = harness.sync(&leader, 1, &[(&leader, "a"), (&follower, "b")]);
        assert_eq!(
            harness
                .sync_response(follower_sync)
                .expect("released")
                .assignment,
            Bytes::from("b")
        );
        assert_eq!(
            harness
                .sync_response(leader_sync)
                .expect("answered")
                .assignment,
            Bytes::from("a")
        );
        // A new rebalance answers nothing twice and the persist came before the responses.
        assert_eq!(harness.persisted.len(), 1);
    }

    #[test]
    fn leave_rebalances_then_empties_the_group() {
        let mut harness = Harness::new();
        let ids = harness.stable_group(&["c1", "c2"]);
        let response = harness.leave(&[(&ids[1], None), ("nobody", None)]);
        assert_eq!(response.error, None);
        assert_eq!(response.members[0].error, None);
        assert_eq!(response.members[1].error, Some(KafkaError::UnknownMemberId));
        assert_eq!(harness.group.state(), GroupState::PreparingRebalance);
        let token = harness.join(request("c1", &ids[0]));
        assert_eq!(
            harness.join_response(token).expect("joined").generation_id,
            2
        );
        let persisted = harness.persisted.len();
        let response = harness.leave(&[(&ids[0], None)]);
        assert_eq!(response.members[0].error, None);
        assert_eq!(harness.group.state(), GroupState::Empty);
        assert_eq!(harness.group.generation_id(), 3);
        let snapshot = harness
            .persisted
            .last()
            .expect("the empty group is persisted");
        assert_eq!(harness.persisted.len(), persisted + 1);
        assert!(snapshot.members.is_empty());
        assert_eq!(harness.group.next_deadline_ms(), None);
    }

    #[test]
    fn static_member_restart_keeps_its_assignment_without_rebalance() {
        let mut harness = Harness::new();
        let mut tokens = Vec::new();
        for (client, instance) in [("c1", "i1"), ("c2", "i2")] {
            tokens.push(harness.join(static_request(client, "", instance)));
        }
        harness.finish_join_phase();
        let responses: Vec<JoinResponse> = tokens
            .iter()
            .map(|token| harness.join_response(*token).expect("joined"))
            .collect();
        let leader = responses[0].leader_id.clone();
        let ids: Vec<String> = responses
            .iter()
            .map(|response| response.member_id.clone())
            .collect();
        let follower_index = if ids[0] == leader { 1 } else { 0 };
        let follower = ids[follower_index].clone();
        let follower_instance = ["i1", "i2"][follower_index];
        let follower_client = ["c1", "c2"][follower_index];
        let follower_sync = harness.sync(&follower, 1, &[]);
        harness.sync(&leader, 1, &[(&leader, "L"), (&follower, "F")]);
        harness.sync_response(follower_sync).expect("synced");
        let persisted = harness.persisted.len();

        // The follower restarts: same instance id, no member id.
        let token = harness.join(static_request(follower_client, "", follower_instance));
        let response = harness.join_response(token).expect("answered at once");
        assert_eq!(response.error, None);
        assert_eq!(response.generation_id, 1, "no new generation");
        assert_ne!(response.member_id, follower);
        assert_eq!(harness.group.state(), GroupState::Stable);
        assert_eq!(
            harness.persisted.len(),
            persisted + 1,
            "the new member id is persisted"
        );
        let new_id = response.member_id;
        let sync = harness.sync(&new_id, 1, &[]);
        assert_eq!(
            harness.sync_response(sync).expect("stable").assignment,
            Bytes::from("F")
        );
        assert_eq!(
            harness.heartbeat(&leader, 1),
            None,
            "the others see no rebalance"
        );
        // The old incarnation is fenced.
        assert_eq!(
            harness.heartbeat_as(&follower, Some(follower_instance), 1),
            Some(KafkaError::FencedInstanceId)
        );
        assert_eq!(
            harness
                .group
                .validate_commit(&follower, 1, Some(follower_instance), harness.now_ms),
            Err(KafkaError::FencedInstanceId)
        );
        let response = harness.leave(&[(&follower, Some(follower_instance))]);
        assert_eq!(
            response.members[0].error,
            Some(KafkaError::FencedInstanceId)
        );
        // Leaving by instance id alone removes the current incarnation.
        let response = harness.leave(&[("", Some(follower_instance))]);
        assert_eq!(response.members[0].error, None);
        assert_eq!(harness.group.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn static_leader_restart_is_told_to_skip_assignment() {
        let mut harness = Harness::new();
        let token = harness.join(static_request("c1", "", "i1"));
        harness.advance_to(DELAY_MS);
        let leader = harness.join_response(token).expect("joined").member_id;
        let sync = harness.sync(&leader, 1, &[(&leader, "L")]);
        harness.sync_response(sync).expect("synced");
        for supports_skip in [true, false] {
            let mut rejoin = static_request("c1", "", "i1");
            rejoin.supports_skip_assignment = supports_skip;
            let old_leader = harness.group.leader_id.clone().expect("leader");
            let token = harness.join(rejoin);
            let response = harness.join_response(token).expect("answered at once");
            assert_eq!(response.generation_id, 1);
            assert_eq!(
                harness.group.leader_id.as_deref(),
                Some(response.member_id.as_str())
            );
            if supports_skip {
                assert!(response.skip_assignment);
                assert_eq!(response.leader_id, response.member_id);
                assert_eq!(response.members.len(), 1);
            } else {
                assert_eq!(
                    response.leader_id, old_leader,
                    "an old client must not think it leads"
                );
                assert!(response.members.is_empty());
            }
        }
    }

    #[test]
    fn join_is_refused() {
        let mut harness = Harness::new();
        harness.stable_group(&["c1"]);
        let mut wrong_type = request("c2", "");
        wrong_type.protocol_type = "connect".to_string();
        let mut no_common = request("c2", "");
        no_common.protocols = vec![protocol("roundrobin", "")];
        let mut too_short = request("c2", "");
        too_short.session_timeout_ms = GROUP_MIN_SESSION_TIMEOUT_MS - 1;
        let mut too_long = request("c2", "");
        too_long.session_timeout_ms = GROUP_MAX_SESSION_TIMEOUT_MS + 1;
        let mut no_protocols = Harness::new();
        let mut empty_protocols = request("c2", "");
        empty_protocols.protocols.clear();
        let cases = [
            (wrong_type, KafkaError::InconsistentGroupProtocol),
            (no_common, KafkaError::InconsistentGroupProtocol),
            (too_short, KafkaError::InvalidSessionTimeout),
            (too_long, KafkaError::InvalidSessionTimeout),
            (request("c2", "c2-unknown"), KafkaError::UnknownMemberId),
        ];
        for (request, expected) in cases {
            let token = harness.join(request.clone());
            let response = harness.join_response(token).expect("answered at once");
            assert_eq!(response.error, Some(expected), "{request:?}");
            assert_eq!(response.generation_id, NO_GENERATION);
        }
        assert_eq!(harness.group.state(), GroupState::Stable);
        let token = no_protocols.join(empty_protocols);
        assert_eq!(
            no_protocols.join_response(token).expect("answered").error,
            Some(KafkaError::InconsistentGroupProtocol)
        );
    }

    #[test]
    fn protocol_selection_is_a_vote_among_common_protocols() {
        let mut harness = Harness::new();
        let preferences = [
            ("c1", vec!["sticky", "range", "roundrobin"]),
            ("c2", vec!["range", "sticky"]),
            ("c3", vec!["range", "sticky", "roundrobin"]),
        ];
        let mut tokens = Vec::new();
        for (client, names) in &preferences {
            let mut join = request(client, "");
            join.require_known_member_id = false;
            join.protocols = names.iter().map(|name| protocol(name, client)).collect();
            tokens.push(harness.join(join));
        }
        harness.finish_join_phase();
        for token in tokens {
            assert_eq!(
                harness
                    .join_response(token)
                    .expect("joined")
                    .protocol_name
                    .as_deref(),
                Some("range")
            );
        }
    }

    #[test]
    fn commit_validation() {
        let mut harness = Harness::new();
        let mut empty = Group::new("empty".to_string(), GroupConfig::default(), 1);
        assert_eq!(empty.validate_commit("", NO_GENERATION, None, 0), Ok(()));
        assert_eq!(
            empty.validate_commit("someone", 1, None, 0),
            Err(KafkaError::UnknownMemberId)
        );
        let ids = harness.stable_group(&["c1"]);
        let member = ids[0].as_str();
        type Case<'a> = (&'a str, i32, Option<&'a str>, Result<(), KafkaError>);
        let cases: [Case; 5] = [
            (member, 1, None, Ok(())),
            (member, 0, None, Err(KafkaError::IllegalGeneration)),
            ("nobody", 1, None, Err(KafkaError::UnknownMemberId)),
            ("", NO_GENERATION, None, Err(KafkaError::UnknownMemberId)),
            (
                member,
                1,
                Some("not-static"),
                Err(KafkaError::UnknownMemberId),
            ),
        ];
        for (member_id, generation_id, instance_id, expected) in cases {
            let now_ms = harness.now_ms;
            let result =
                harness
                    .group
                    .validate_commit(member_id, generation_id, instance_id, now_ms);
            assert_eq!(
                result, expected,
                "{member_id} {generation_id} {instance_id:?}"
            );
        }
        // During PreparingRebalance the current generation may still commit.
        harness.join_new("c2");
        assert_eq!(
            harness
                .group
                .validate_commit(member, 1, None, harness.now_ms),
            Ok(())
        );
        let rejoin = harness.join(request("c1", member));
        harness.join_response(rejoin).expect("all joined");
        assert_eq!(
            harness
                .group
                .validate_commit(member, 1, None, harness.now_ms),
            Err(KafkaError::IllegalGeneration)
        );
        assert_eq!(
            harness
                .group
                .validate_commit(member, 2, None, harness.now_ms),
            Err(KafkaError::RebalanceInProgress)
        );
    }

    #[test]
    fn initial_delay_extends_while_members_arrive() {
        let mut harness = Harness::new();
        let (_, first) = harness.join_new("c1");
        harness.advance_to(DELAY_MS - 1);
        let (_, second) = harness.join_new("c2");
        harness.advance_to(DELAY_MS);
        assert!(
            harness.join_response(first).is_none(),
            "a member arrived during the delay"
        );
        assert_eq!(harness.group.next_deadline_ms(), Some(2 * DELAY_MS));
        harness.advance_to(2 * DELAY_MS);
        assert_eq!(
            harness.join_response(first).expect("joined").generation_id,
            1
        );
        assert_eq!(
            harness.join_response(second).expect("joined").generation_id,
            1
        );
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let mut harness = Harness::new();
        let ids = harness.stable_group(&["c1", "c2"]);
        let snapshot = harness.persisted.last().expect("persisted").clone();
        assert_eq!(snapshot, harness.group.snapshot());
        let json = serde_json::to_vec(&snapshot).expect("serializes");
        let read: GroupSnapshot = serde_json::from_slice(&json).expect("deserializes");
        let restart_ms = 1_000_000;
        let group = Group::restore(read, GroupConfig::default(), 8, restart_ms).expect("valid");
        assert_eq!(group.snapshot(), snapshot);
        assert_eq!(group.state(), GroupState::Stable);
        assert_eq!(group.describe(), harness.group.describe());
        let mut restored = Harness::with_group(group);
        restored.now_ms = restart_ms;
        // Sessions count from the restore, not from the last heartbeat before it.
        assert_eq!(
            restored.group.next_deadline_ms(),
            Some(restart_ms + i64::from(SESSION_MS))
        );
        assert_eq!(restored.heartbeat(&ids[0], 1), None);
        let sync = restored.sync(&ids[1], 1, &[]);
        assert_eq!(
            restored.sync_response(sync).expect("stable").assignment,
            Bytes::from("c2")
        );
        restored.advance_to(restart_ms + i64::from(SESSION_MS) / 2);
        assert_eq!(restored.heartbeat(&ids[0], 1), None);
        restored.advance_to(restart_ms + i64::from(SESSION_MS));
        assert_eq!(
            restored.group.state(),
            GroupState::PreparingRebalance,
            "c2 never heartbeat again"
        );

        let mut damaged = snapshot.clone();
        damaged.leader_id = Some("nobody".to_string());
        assert!(Group::restore(damaged, GroupConfig::default(), 8, 0).is_err());
        let mut damaged = snapshot.clone();
        damaged.version = SNAPSHOT_VERSION + 1;
        assert!(Group::restore(damaged, GroupConfig::default(), 8, 0).is_err());
        let mut damaged = snapshot;
        damaged.members[1].member_id = damaged.members[0].member_id.clone();
        assert!(Group::restore(damaged, GroupConfig::default(), 8, 0).is_err());
    }

    #[test]
    fn group_max_size_and_delete() {
        let config = GroupConfig {
            max_size: 1,
            ..GroupConfig::default()
        };
        let mut harness = Harness::with_group(Group::new("small".to_string(), config, 3));
        let ids = harness.stable_group(&["c1"]);
        let token = harness.join(request("c2", ""));
        assert_eq!(
            harness.join_response(token).expect("answered").error,
            Some(KafkaError::GroupMaxSizeReached)
        );
        assert_eq!(harness.group.delete(), Err(KafkaError::NonEmptyGroup));
        harness.leave(&[(&ids[0], None)]);
        assert_eq!(harness.group.delete(), Ok(()));
        assert_eq!(
            harness.heartbeat(&ids[0], 1),
            Some(KafkaError::CoordinatorNotAvailable)
        );
        let token = harness.join(request("c1", ""));
        assert_eq!(
            harness.join_response(token).expect("answered").error,
            Some(KafkaError::CoordinatorNotAvailable)
        );
    }
}
