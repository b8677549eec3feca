//! The new consumer group protocol (KIP-848) for one group, modelled on Apache Kafka's
//! `GroupMetadataManager.consumerGroupHeartbeat`, `ConsumerGroup` and `CurrentAssignmentBuilder`:
//! a pure state machine, time passed in as `now_ms`, topics passed in as the metadata image.
//!
//! Members heartbeat with their subscription; the coordinator computes a target assignment with a
//! server-side assignor whenever the group epoch moves (a member joins or leaves, a subscription
//! or a subscribed topic changes), and then moves each member towards its target on its own
//! heartbeats: partitions it must give up are revoked first (its epoch stays), and a partition
//! is handed to its new owner only once the old owner has released it. So no partition is ever
//! owned by two members at once.
//!
//! Nothing here waits: a heartbeat is answered at once. The I/O layer persists a
//! [`ConsumerGroup::snapshot`] whenever an outcome says so, before it sends the answer.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use ringlog_cluster::metadata::MetadataImage;
use serde::{Deserialize, Serialize};

use super::assignor::{Assignment, Assignor, MemberSpec, TopicId, ASSIGNORS};
use crate::codes::KafkaError;

/// Kafka's `group.consumer.session.timeout.ms` default: a member that sends no heartbeat for
/// this long is removed and its partitions go to others. Clients cannot choose it in this
/// protocol; the broker does.
pub const CONSUMER_SESSION_TIMEOUT_MS: i32 = 45_000;

/// Kafka's `group.consumer.heartbeat.interval.ms` default: how often members heartbeat, and so
/// how long a member may take to learn of a new assignment.
pub const CONSUMER_HEARTBEAT_INTERVAL_MS: i32 = 5_000;

/// Kafka's `group.consumer.max.size` default (`Int.MaxValue`): no limit unless set.
pub const CONSUMER_GROUP_MAX_SIZE: usize = i32::MAX as usize;

/// The member epoch a member sends to join (or rejoin after being fenced).
pub const JOIN_GROUP_MEMBER_EPOCH: i32 = 0;

/// The member epoch a member sends to leave the group for good.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;

/// The member epoch a static member sends to leave for a moment (a restart): its partitions
/// stay reserved for its `group.instance.id` until its session times out.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// Longest subscription regex accepted. Kafka's are topic-name patterns; a kilobyte is far
/// beyond any real one, and bounds the compiled automaton.
pub const SUBSCRIPTION_REGEX_BYTES_MAX: usize = 1024;

/// Compiled-size limit for a subscription regex (the `regex` crate's `size_limit`), so a
/// hostile pattern cannot make the coordinator build a huge automaton.
const SUBSCRIPTION_REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;

/// Longest member id, instance id or rack id accepted: ids are stored in the group's snapshot,
/// and Kafka's own are 22-character UUIDs or short operator-chosen names.
pub const MEMBER_ID_BYTES_MAX: usize = 1024;

/// Version of [`ConsumerGroupSnapshot`]'s layout; [`ConsumerGroup::restore`] refuses any other.
pub const CONSUMER_SNAPSHOT_VERSION: u32 = 1;

/// The broker settings that govern consumer-protocol groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            session_timeout_ms: CONSUMER_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms: CONSUMER_HEARTBEAT_INTERVAL_MS,
            max_size: CONSUMER_GROUP_MAX_SIZE,
        }
    }
}

/// A ConsumerGroupHeartbeat, with `None` for the fields the client left null ("unchanged").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerHeartbeat {
    /// The request's API version: v1 members choose their own member id (KIP-1082).
    pub version: i16,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns now.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a heartbeat. `assignment` is `None` when the member's assignment did not
/// change since it was last sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerHeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Assignment>,
}

/// A refused heartbeat: the Kafka error and a message saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatError {
    pub error: KafkaError,
    pub message: String,
}

impl HeartbeatError {
    fn new(error: KafkaError, message: impl Into<String>) -> HeartbeatError {
        HeartbeatError {
            error,
            message: message.into(),
        }
    }
}

/// What a heartbeat did: its answer, and whether the group changed in a way that must be
/// durable before the answer is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub result: Result<ConsumerHeartbeatResponse, HeartbeatError>,
    pub persist: bool,
}

/// Where a member is on its way to its target assignment (Kafka's `MemberState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// It has its whole target assignment at the assignment epoch.
    Stable,
    /// It must give up `pending_revocation` before it can move on.
    UnrevokedPartitions,
    /// It is at the assignment epoch but waits for partitions other members still own.
    UnreleasedPartitions,
}

/// The group's state as ConsumerGroupDescribe and ListGroups report it (Kafka's
/// `ConsumerGroupState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    /// The group epoch moved and no target assignment has been computed for it yet.
    Assigning,
    /// Some member is not yet at its target assignment.
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// One member as ConsumerGroupDescribe reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target_assignment: Assignment,
}

/// A group as ConsumerGroupDescribe reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: String,
    pub members: Vec<ConsumerMemberDescription>,
}

/// What must survive a restart, stored as JSON in `__consumer_offsets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroupSnapshot {
    pub version: u32,
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    /// The subscribed topics the target assignment was computed from: (name, id, partitions).
    pub subscribed_topics: Vec<(String, TopicId, i32)>,
    pub members: Vec<ConsumerMemberSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub state: MemberState,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub assigned: Vec<(TopicId, Vec<i32>)>,
    pub pending_revocation: Vec<(TopicId, Vec<i32>)>,
    pub target: Vec<(TopicId, Vec<i32>)>,
}

/// A member of the group.
#[derive(Clone, Debug)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    subscribed_topic_names: BTreeSet<String>,
    subscribed_topic_regex: Option<Regex>,
    server_assignor: Option<String>,
    state: MemberState,
    member_epoch: i32,
    previous_member_epoch: i32,
    assigned: Assignment,
    pending_revocation: Assignment,
    /// Removed if no heartbeat arrives by then.
    session_deadline_ms: i64,
    /// Removed (fenced) if it has not revoked `pending_revocation` by then.
    revocation_deadline_ms: Option<i64>,
    /// The (epoch, assignment) last sent to it; `None` until something is sent after a
    /// (re)join or a restart of the coordinator.
    sent: Option<(i32, Assignment)>,
}

impl Member {
    fn subscribes_to(&self, topic: &str) -> bool {
        self.subscribed_topic_names.contains(topic)
            || self
                .subscribed_topic_regex
                .as_ref()
                .is_some_and(|regex| regex.is_match(topic))
    }

    fn owns(&self) -> impl Iterator<Item = (TopicId, i32)> + '_ {
        flatten(&self.assigned).chain(flatten(&self.pending_revocation))
    }
}

/// One consumer-protocol group. Owned by the shard that coordinates the group.
#[derive(Clone, Debug)]
pub struct ConsumerGroup {
    group_id: String,
    config: ConsumerConfig,
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    /// group.instance.id → its current member id.
    static_members: BTreeMap<String, String>,
    /// member id → its target assignment at `assignment_epoch`.
    target: BTreeMap<String, Assignment>,
    /// The subscribed topics as of `group_epoch`: name → (id, partition count).
    subscribed_topics: BTreeMap<String, (TopicId, i32)>,
    /// (metadata version, subscription revision) `subscribed_topics` was resolved at.
    resolved_at: Option<(u64, u64)>,
    /// Bumped whenever a member's subscription changes.
    subscription_revision: u64,
    /// Something changed that needs a new target: the group epoch moves once at the end of
    /// the event, however many things changed in it.
    epoch_pending: bool,
    /// Each owned partition → the member that owns it (assigned or being revoked).
    owners: BTreeMap<(TopicId, i32), String>,
    /// Member ids for v0 clients are made from this seed and a counter.
    member_id_seed: u64,
    member_id_counter: u64,
}

fn flatten(assignment: &Assignment) -> impl Iterator<Item = (TopicId, i32)> + '_ {
    assignment
        .iter()
        .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (*topic, *p)))
}

fn to_pairs(assignment: &Assignment) -> Vec<(TopicId, Vec<i32>)> {
    assignment
        .iter()
        .filter(|(_, partitions)| !partitions.is_empty())
        .map(|(topic, partitions)| (*topic, partitions.iter().copied().collect()))
        .collect()
}

fn from_pairs(pairs: Vec<(TopicId, Vec<i32>)>) -> Assignment {
    let mut assignment = Assignment::new();
    for (topic, partitions) in pairs {
        assignment.entry(topic).or_default().extend(partitions);
    }
    assignment.retain(|_, partitions| !partitions.is_empty());
    assignment
}

fn insert(assignment: &mut Assignment, (topic, partition): (TopicId, i32)) {
    assignment.entry(topic).or_default().insert(partition);
}

fn contains(assignment: &Assignment, (topic, partition): (TopicId, i32)) -> bool {
    assignment
        .get(&topic)
        .is_some_and(|partitions| partitions.contains(&partition))
}

fn is_subset(small: &Assignment, big: &Assignment) -> bool {
    flatten(small).all(|key| contains(big, key))
}

fn compile_regex(pattern: &str) -> Result<Regex, HeartbeatError> {
    if pattern.len() > SUBSCRIPTION_REGEX_BYTES_MAX {
        return Err(HeartbeatError::new(
            KafkaError::InvalidRegularExpression,
            format!("SubscribedTopicRegex is longer than {SUBSCRIPTION_REGEX_BYTES_MAX} bytes."),
        ));
    }
    // Kafka matches the whole topic name (Java's `Matcher.matches`).
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(SUBSCRIPTION_REGEX_COMPILED_BYTES_MAX)
        .build()
        .map_err(|error| {
            HeartbeatError::new(
                KafkaError::InvalidRegularExpression,
                format!("SubscribedTopicRegex `{pattern}` is not valid: {error}"),
            )
        })
}

fn invalid(message: &str) -> HeartbeatError {
    HeartbeatError::new(KafkaError::InvalidRequest, message)
}

impl ConsumerGroup {
    /// A new, Empty group. `member_id_seed` should be random in production.
    pub fn new(group_id: String, config: ConsumerConfig, member_id_seed: u64) -> ConsumerGroup {
        ConsumerGroup {
            group_id,
            config,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_topics: BTreeMap::new(),
            resolved_at: None,
            subscription_revision: 0,
            epoch_pending: false,
            owners: BTreeMap::new(),
            member_id_seed,
            member_id_counter: 0,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch != self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|member| {
            member.state != MemberState::Stable || member.member_epoch != self.assignment_epoch
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// Serves one ConsumerGroupHeartbeat at `now_ms` against the topics of `image`.
    pub fn heartbeat(
        &mut self,
        request: ConsumerHeartbeat,
        image: &MetadataImage,
        now_ms: i64,
    ) -> HeartbeatOutcome {
        // Deadlines that passed count first: a heartbeat after the session expired must not
        // revive the member.
        let mut persist = self.expire(now_ms);
        let result = match validate(&request) {
            Err(error) => Err(error),
            Ok(regex) => match request.member_epoch {
                LEAVE_GROUP_MEMBER_EPOCH | LEAVE_GROUP_STATIC_MEMBER_EPOCH => {
                    self.leave(&request, now_ms, &mut persist)
                }
                _ => self.join_or_heartbeat(request, regex, image, now_ms, &mut persist),
            },
        };
        self.check_invariants();
        HeartbeatOutcome { result, persist }
    }

    /// Removes members whose session or revocation deadline passed; true if any was.
    pub fn expire(&mut self, now_ms: i64) -> bool {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| {
                member.session_deadline_ms <= now_ms
                    || member
                        .revocation_deadline_ms
                        .is_some_and(|deadline| deadline <= now_ms)
            })
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in &expired {
            self.remove_member(member_id);
        }
        self.bump_epoch_if_changed();
        !expired.is_empty()
    }

    /// Moves the group epoch once if anything this event did calls for a new target.
    fn bump_epoch_if_changed(&mut self) {
        if std::mem::take(&mut self.epoch_pending) {
            self.group_epoch += 1;
        }
    }

    /// When the I/O layer must call [`ConsumerGroup::expire`] next, if anything is scheduled.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|member| {
                [
                    Some(member.session_deadline_ms),
                    member.revocation_deadline_ms,
                ]
            })
            .flatten()
            .min()
    }

    fn leave(
        &mut self,
        request: &ConsumerHeartbeat,
        now_ms: i64,
        persist: &mut bool,
    ) -> Result<ConsumerHeartbeatResponse, HeartbeatError> {
        let member_id = match &request.instance_id {
            None => {
                if !self.members.contains_key(&request.member_id) {
                    return Err(unknown_member(&request.member_id));
                }
                request.member_id.clone()
            }
            Some(instance_id) => {
                let member_id = self
                    .static_members
                    .get(instance_id)
                    .cloned()
                    .ok_or_else(|| unknown_member(&request.member_id))?;
                if member_id != request.member_id {
                    return Err(HeartbeatError::new(
                        KafkaError::FencedInstanceId,
                        format!("Instance id {instance_id} is used by another member."),
                    ));
                }
                member_id
            }
        };
        if request.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            // Its partitions stay reserved: a restart with the same instance id within the
            // session timeout gets them back without moving anyone else's.
            let session_timeout_ms = self.config.session_timeout_ms;
            let member = self.members.get_mut(&member_id).expect("checked above");
            // Its epoch is kept as the previous one, for its next incarnation to take over.
            if member.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                member.previous_member_epoch = member.member_epoch;
            }
            member.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            member.session_deadline_ms = now_ms + i64::from(session_timeout_ms);
            member.revocation_deadline_ms = None;
            member.sent = None;
        } else {
            self.remove_member(&member_id);
            self.bump_epoch_if_changed();
        }
        *persist = true;
        Ok(ConsumerHeartbeatResponse {
            member_id,
            member_epoch: request.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    fn join_or_heartbeat(
        &mut self,
        request: ConsumerHeartbeat,
        regex: Option<Option<Regex>>,
        image: &MetadataImage,
        now_ms: i64,
        persist: &mut bool,
    ) -> Result<ConsumerHeartbeatResponse, HeartbeatError> {
        let joining = request.member_epoch == JOIN_GROUP_MEMBER_EPOCH;
        let member_id = self.find_or_create_member(&request, now_ms, persist)?;
        if !joining {
            let member = &self.members[&member_id];
            let epoch = request.member_epoch;
            let fenced = epoch > member.member_epoch
                || (epoch < member.member_epoch
                    && (epoch != member.previous_member_epoch
                        || !request
                            .owned
                            .as_ref()
                            .is_some_and(|owned| is_subset(owned, &member.assigned))));
            if fenced {
                return Err(HeartbeatError::new(
                    KafkaError::FencedMemberEpoch,
                    format!(
                        "The member epoch {epoch} does not match the expected epoch {}.",
                        member.member_epoch
                    ),
                ));
            }
        }
        let session_timeout_ms = self.config.session_timeout_ms;
        let member = self.members.get_mut(&member_id).expect("found or created");
        member.session_deadline_ms = now_ms + i64::from(session_timeout_ms);
        let mut subscription_changed = false;
        if let Some(names) = request.subscribed_topic_names {
            let names: BTreeSet<String> = names.into_iter().collect();
            if names != member.subscribed_topic_names {
                member.subscribed_topic_names = names;
                subscription_changed = true;
            }
        }
        if let Some(regex) = regex {
            let before = member.subscribed_topic_regex.as_ref().map(Regex::as_str);
            if before != regex.as_ref().map(Regex::as_str) {
                member.subscribed_topic_regex = regex;
                subscription_changed = true;
            }
        }
        if let Some(assignor) = request.server_assignor {
            let assignor = (!assignor.is_empty()).then_some(assignor);
            if assignor != member.server_assignor {
                member.server_assignor = assignor;
                subscription_changed = true;
            }
        }
        let mut member_changed = subscription_changed;
        if request.rebalance_timeout_ms > 0
            && request.rebalance_timeout_ms != member.rebalance_timeout_ms
        {
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
            member_changed = true;
        }
        if request.rack_id.is_some() && request.rack_id != member.rack_id {
            member.rack_id = request.rack_id;
            member_changed = true;
        }
        if member.client_id != request.client_id || member.client_host != request.client_host {
            member.client_id = request.client_id;
            member.client_host = request.client_host;
            member_changed = true;
        }
        if subscription_changed {
            self.epoch_pending = true;
            self.subscription_revision += 1;
        }
        *persist |= member_changed;
        *persist |= self.resolve_subscriptions(image);
        self.bump_epoch_if_changed();
        if self.group_epoch > self.assignment_epoch {
            self.compute_target();
            *persist = true;
        }
        *persist |= self.reconcile(&member_id, request.owned.as_ref(), now_ms);

        let member = self.members.get_mut(&member_id).expect("found or created");
        let already_sent = member.sent.as_ref().is_some_and(|(epoch, assignment)| {
            *epoch == member.member_epoch && *assignment == member.assigned
        });
        let differs_from_owned = request
            .owned
            .as_ref()
            .is_some_and(|owned| *owned != member.assigned);
        let send = joining || !already_sent || differs_from_owned;
        let assignment = send.then(|| member.assigned.clone());
        if let Some(assignment) = &assignment {
            member.sent = Some((member.member_epoch, assignment.clone()));
        }
        Ok(ConsumerHeartbeatResponse {
            member_id,
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            assignment,
        })
    }

    /// The member a heartbeat is from; a join creates it (or, for a static member coming back,
    /// hands it the reserved place of its instance id).
    fn find_or_create_member(
        &mut self,
        request: &ConsumerHeartbeat,
        now_ms: i64,
        persist: &mut bool,
    ) -> Result<String, HeartbeatError> {
        let joining = request.member_epoch == JOIN_GROUP_MEMBER_EPOCH;
        if let Some(instance_id) = &request.instance_id {
            match self.static_members.get(instance_id).cloned() {
                Some(existing) if joining => {
                    if self.members[&existing].member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                        let member_id = self.choose_member_id(request);
                        self.replace_static_member(&existing, &member_id);
                        *persist = true;
                        return Ok(member_id);
                    }
                    if existing != request.member_id {
                        return Err(HeartbeatError::new(
                            KafkaError::UnreleasedInstanceId,
                            format!(
                                "Instance id {instance_id} is still used by member {existing}."
                            ),
                        ));
                    }
                    // The same member joining again: it lost its state, start it afresh.
                    self.remove_member(&existing);
                }
                Some(existing) => {
                    if existing != request.member_id {
                        return Err(HeartbeatError::new(
                            KafkaError::FencedInstanceId,
                            format!("Instance id {instance_id} is used by member {existing}."),
                        ));
                    }
                    return Ok(existing);
                }
                None if !joining => return Err(unknown_member(&request.member_id)),
                None => {}
            }
        } else if !joining {
            return match self.members.contains_key(&request.member_id) {
                true => Ok(request.member_id.clone()),
                false => Err(unknown_member(&request.member_id)),
            };
        } else if self.members.contains_key(&request.member_id) {
            // A member that was fenced rejoins with its id: it gave up its partitions.
            self.remove_member(&request.member_id);
        }
        if self.members.len() >= self.config.max_size {
            return Err(HeartbeatError::new(
                KafkaError::GroupMaxSizeReached,
                format!(
                    "The group has reached its maximum size {}.",
                    self.config.max_size
                ),
            ));
        }
        let member_id = self.choose_member_id(request);
        if let Some(instance_id) = &request.instance_id {
            self.static_members
                .insert(instance_id.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                member_id: member_id.clone(),
                instance_id: request.instance_id.clone(),
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                subscribed_topic_names: BTreeSet::new(),
                subscribed_topic_regex: None,
                server_assignor: None,
                state: MemberState::Stable,
                member_epoch: JOIN_GROUP_MEMBER_EPOCH,
                previous_member_epoch: JOIN_GROUP_MEMBER_EPOCH,
                assigned: Assignment::new(),
                pending_revocation: Assignment::new(),
                session_deadline_ms: now_ms + i64::from(self.config.session_timeout_ms),
                revocation_deadline_ms: None,
                sent: None,
            },
        );
        self.epoch_pending = true;
        self.subscription_revision += 1;
        *persist = true;
        Ok(member_id)
    }

    fn choose_member_id(&mut self, request: &ConsumerHeartbeat) -> String {
        if !request.member_id.is_empty() && !self.members.contains_key(&request.member_id) {
            return request.member_id.clone();
        }
        loop {
            self.member_id_counter += 1;
            let uuid = uuid::Uuid::from_u64_pair(self.member_id_seed, self.member_id_counter);
            let member_id = uuid.simple().to_string();
            if !self.members.contains_key(&member_id) {
                return member_id;
            }
        }
    }

    /// A static member's new incarnation takes over its old one's place: epoch, assignment,
    /// target and owned partitions, so nobody else's partitions move.
    fn replace_static_member(&mut self, old_id: &str, new_id: &str) {
        let mut member = self.members.remove(old_id).expect("a static member");
        member.member_id = new_id.to_string();
        member.member_epoch = member.previous_member_epoch;
        member.sent = None;
        for key in member.owns().collect::<Vec<_>>() {
            self.owners.insert(key, new_id.to_string());
        }
        if let Some(instance_id) = &member.instance_id {
            self.static_members
                .insert(instance_id.clone(), new_id.to_string());
        }
        if let Some(target) = self.target.remove(old_id) {
            self.target.insert(new_id.to_string(), target);
        }
        self.members.insert(new_id.to_string(), member);
    }

    fn remove_member(&mut self, member_id: &str) {
        let Some(member) = self.members.remove(member_id) else {
            return;
        };
        for key in member.owns() {
            if self
                .owners
                .get(&key)
                .is_some_and(|owner| owner == member_id)
            {
                self.owners.remove(&key);
            }
        }
        if let Some(instance_id) = &member.instance_id {
            if self
                .static_members
                .get(instance_id)
                .is_some_and(|id| id == member_id)
            {
                self.static_members.remove(instance_id);
            }
        }
        self.target.remove(member_id);
        self.epoch_pending = true;
        self.subscription_revision += 1;
    }

    /// Resolves the members' subscriptions against the topics that exist; a change (a topic
    /// created, deleted or grown, a subscription changed) moves the group epoch. True if it did.
    fn resolve_subscriptions(&mut self, image: &MetadataImage) -> bool {
        let at = (image.version, self.subscription_revision);
        if self.resolved_at == Some(at) {
            return false;
        }
        self.resolved_at = Some(at);
        let mut resolved = BTreeMap::new();
        for member in self.members.values() {
            for name in &member.subscribed_topic_names {
                if let Some(topic) = image.topic(name) {
                    resolved.insert(name.clone(), (topic.topic_id, topic.partition_count));
                }
            }
            if let Some(regex) = &member.subscribed_topic_regex {
                for (name, topic) in &image.topics {
                    // Kafka never matches internal topics with a pattern.
                    if !name.starts_with("__") && regex.is_match(name) {
                        resolved.insert(name.clone(), (topic.topic_id, topic.partition_count));
                    }
                }
            }
        }
        if resolved == self.subscribed_topics {
            return false;
        }
        self.subscribed_topics = resolved;
        self.epoch_pending = true;
        true
    }

    /// The assignor the members prefer most (ties and no preference: the broker's order).
    fn assignor(&self) -> Assignor {
        let votes = |assignor: Assignor| {
            self.members
                .values()
                .filter(|member| member.server_assignor.as_deref() == Some(assignor.name()))
                .count()
        };
        ASSIGNORS
            .into_iter()
            .max_by_key(|assignor| {
                let order = ASSIGNORS.iter().position(|a| a == assignor).unwrap_or(0);
                (votes(*assignor), std::cmp::Reverse(order))
            })
            .unwrap_or(ASSIGNORS[0])
    }

    fn compute_target(&mut self) {
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .values()
            .map(|member| {
                let topics = self
                    .subscribed_topics
                    .iter()
                    .filter(|(name, _)| member.subscribes_to(name))
                    .map(|(_, (topic_id, _))| *topic_id)
                    .collect();
                let spec = MemberSpec {
                    topics,
                    instance_id: member.instance_id.clone(),
                    current: self
                        .target
                        .get(&member.member_id)
                        .cloned()
                        .unwrap_or_default(),
                };
                (member.member_id.clone(), spec)
            })
            .collect();
        let topics: BTreeMap<TopicId, i32> = self.subscribed_topics.values().copied().collect();
        self.target = self.assignor().assign(&specs, &topics);
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves a member towards its target on its own heartbeat (Kafka's
    /// `CurrentAssignmentBuilder`); true if anything about it changed.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) -> bool {
        let member = &self.members[member_id];
        match member.state {
            MemberState::Stable if member.member_epoch == self.assignment_epoch => return false,
            MemberState::UnrevokedPartitions => {
                // It may move on only once it says it no longer owns what it had to give up.
                let revoked = owned.is_some_and(|owned| {
                    !flatten(&member.pending_revocation).any(|key| contains(owned, key))
                });
                if !revoked {
                    return false;
                }
            }
            _ => {}
        }
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let mut keep = Assignment::new();
        let mut revoke = Assignment::new();
        for key in flatten(&member.assigned) {
            if contains(&target, key) {
                insert(&mut keep, key);
            } else {
                insert(&mut revoke, key);
            }
        }
        let mut next = keep.clone();
        let mut unreleased = false;
        for key in flatten(&target) {
            if contains(&member.assigned, key) {
                continue;
            }
            match self.owners.get(&key) {
                Some(owner) if owner != member_id => unreleased = true,
                _ => insert(&mut next, key),
            }
        }
        let before = (
            member.state,
            member.member_epoch,
            member.assigned.clone(),
            member.pending_revocation.clone(),
        );
        let old_owned: BTreeSet<(TopicId, i32)> = member.owns().collect();
        let assignment_epoch = self.assignment_epoch;
        let member = self.members.get_mut(member_id).expect("checked above");
        if !revoke.is_empty() {
            member.state = MemberState::UnrevokedPartitions;
            member.assigned = keep;
            member.pending_revocation = revoke;
            member.revocation_deadline_ms = Some(now_ms + i64::from(member.rebalance_timeout_ms));
        } else {
            if member.member_epoch != assignment_epoch {
                member.previous_member_epoch = member.member_epoch;
                member.member_epoch = assignment_epoch;
            }
            member.state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            member.assigned = next;
            member.pending_revocation = Assignment::new();
            member.revocation_deadline_ms = None;
        }
        let new_owned: BTreeSet<(TopicId, i32)> = member.owns().collect();
        let after = (
            member.state,
            member.member_epoch,
            member.assigned.clone(),
            member.pending_revocation.clone(),
        );
        for key in old_owned.difference(&new_owned) {
            self.owners.remove(key);
        }
        for key in new_owned.difference(&old_owned) {
            let previous = self.owners.insert(*key, member_id.to_string());
            assert!(
                previous.is_none(),
                "partition {key:?} given to {member_id} while {previous:?} owns it"
            );
        }
        before != after
    }

    /// Checks an OffsetCommit's member fields (Kafka's `ConsumerGroup.validateOffsetCommit`).
    pub fn validate_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        api_version: i16,
    ) -> Result<(), KafkaError> {
        if member_epoch < 0 && member_id.is_empty() && self.members.is_empty() {
            // An admin tool or a consumer assigning partitions itself: only while no member
            // could be overwritten.
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(KafkaError::UnknownMemberId)?;
        // Before v9 the field was a classic generation, which means nothing here.
        if api_version < 9 {
            return Err(KafkaError::UnsupportedVersion);
        }
        if member_epoch != member.member_epoch {
            return Err(KafkaError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Checks an OffsetFetch's member fields (v9+; Kafka's `validateOffsetFetch`).
    pub fn validate_fetch(&self, member_id: &str, member_epoch: i32) -> Result<(), KafkaError> {
        if member_epoch < 0 && member_id.is_empty() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(KafkaError::UnknownMemberId)?;
        if member_epoch != member.member_epoch {
            return Err(KafkaError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Whether some member subscribes to `topic` (OffsetDelete refuses to drop its offsets).
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        self.members
            .values()
            .any(|member| member.subscribes_to(topic))
    }

    pub fn describe(&self) -> ConsumerGroupDescription {
        ConsumerGroupDescription {
            group_id: self.group_id.clone(),
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor_name: self.assignor().name().to_string(),
            members: self
                .members
                .values()
                .map(|member| ConsumerMemberDescription {
                    member_id: member.member_id.clone(),
                    instance_id: member.instance_id.clone(),
                    rack_id: member.rack_id.clone(),
                    member_epoch: member.member_epoch,
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    subscribed_topic_names: member.subscribed_topic_names.iter().cloned().collect(),
                    subscribed_topic_regex: member
                        .subscribed_topic_regex
                        .as_ref()
                        .map(|regex| strip_anchors(regex.as_str()).to_string()),
                    assignment: member.assigned.clone(),
                    target_assignment: self
                        .target
                        .get(&member.member_id)
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    pub fn snapshot(&self) -> ConsumerGroupSnapshot {
        ConsumerGroupSnapshot {
            version: CONSUMER_SNAPSHOT_VERSION,
            group_id: self.group_id.clone(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            subscribed_topics: self
                .subscribed_topics
                .iter()
                .map(|(name, (id, count))| (name.clone(), *id, *count))
                .collect(),
            members: self
                .members
                .values()
                .map(|member| ConsumerMemberSnapshot {
                    member_id: member.member_id.clone(),
                    instance_id: member.instance_id.clone(),
                    rack_id: member.rack_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    subscribed_topic_names: member.subscribed_topic_names.iter().cloned().collect(),
                    subscribed_topic_regex: member
                        .subscribed_topic_regex
                        .as_ref()
                        .map(|regex| strip_anchors(regex.as_str()).to_string()),
                    server_assignor: member.server_assignor.clone(),
                    state: member.state,
                    member_epoch: member.member_epoch,
                    previous_member_epoch: member.previous_member_epoch,
                    assigned: to_pairs(&member.assigned),
                    pending_revocation: to_pairs(&member.pending_revocation),
                    target: to_pairs(
                        &self
                            .target
                            .get(&member.member_id)
                            .cloned()
                            .unwrap_or_default(),
                    ),
                })
                .collect(),
        }
    }

    /// Rebuilds a group from its snapshot at `now_ms`: every member must heartbeat within the
    /// session timeout counted from now, and is sent its assignment again.
    pub fn restore(
        snapshot: ConsumerGroupSnapshot,
        config: ConsumerConfig,
        member_id_seed: u64,
        now_ms: i64,
    ) -> Result<ConsumerGroup, String> {
        if snapshot.version != CONSUMER_SNAPSHOT_VERSION {
            return Err(format!("snapshot version {}", snapshot.version));
        }
        let mut group = ConsumerGroup::new(snapshot.group_id, config, member_id_seed);
        group.group_epoch = snapshot.group_epoch;
        group.assignment_epoch = snapshot.assignment_epoch;
        if group.assignment_epoch > group.group_epoch {
            return Err("assignment epoch past the group epoch".to_string());
        }
        group.subscribed_topics = snapshot
            .subscribed_topics
            .into_iter()
            .map(|(name, id, count)| (name, (id, count)))
            .collect();
        for member in snapshot.members {
            let regex = member
                .subscribed_topic_regex
                .as_deref()
                .map(compile_regex)
                .transpose()
                .map_err(|error| error.message)?;
            let restored = Member {
                member_id: member.member_id.clone(),
                instance_id: member.instance_id.clone(),
                rack_id: member.rack_id,
                client_id: member.client_id,
                client_host: member.client_host,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                subscribed_topic_names: member.subscribed_topic_names.into_iter().collect(),
                subscribed_topic_regex: regex,
                server_assignor: member.server_assignor,
                state: member.state,
                member_epoch: member.member_epoch,
                previous_member_epoch: member.previous_member_epoch,
                assigned: from_pairs(member.assigned),
                pending_revocation: from_pairs(member.pending_revocation),
                session_deadline_ms: now_ms + i64::from(group.config.session_timeout_ms),
                revocation_deadline_ms: (member.state == MemberState::UnrevokedPartitions)
                    .then(|| now_ms + i64::from(member.rebalance_timeout_ms)),
                sent: None,
            };
            for key in restored.owns() {
                if let Some(other) = group.owners.insert(key, member.member_id.clone()) {
                    return Err(format!(
                        "partition {key:?} owned by both {other} and {}",
                        member.member_id
                    ));
                }
            }
            if let Some(instance_id) = &member.instance_id {
                if group
                    .static_members
                    .insert(instance_id.clone(), member.member_id.clone())
                    .is_some()
                {
                    return Err(format!("instance id {instance_id} used twice"));
                }
            }
            group
                .target
                .insert(member.member_id.clone(), from_pairs(member.target));
            if group
                .members
                .insert(member.member_id.clone(), restored)
                .is_some()
            {
                return Err(format!("member {} listed twice", member.member_id));
            }
        }
        group.check_invariants();
        Ok(group)
    }

    /// Bugs crash: no partition owned twice, ownership matches the members, static ids point
    /// at their members.
    fn check_invariants(&self) {
        let mut owned = BTreeMap::new();
        for member in self.members.values() {
            for key in member.owns() {
                assert!(
                    owned.insert(key, member.member_id.as_str()).is_none(),
                    "group {}: partition {key:?} owned twice",
                    self.group_id
                );
            }
            assert!(member.member_epoch <= self.assignment_epoch.max(0));
        }
        assert_eq!(owned.len(), self.owners.len(), "group {}", self.group_id);
        for (key, owner) in &self.owners {
            assert_eq!(owned.get(key).copied(), Some(owner.as_str()));
        }
        for (instance_id, member_id) in &self.static_members {
            assert_eq!(
                self.members[member_id].instance_id.as_deref(),
                Some(instance_id.as_str())
            );
        }
        assert!(self.assignment_epoch <= self.group_epoch);
    }
}

fn unknown_member(member_id: &str) -> HeartbeatError {
    HeartbeatError::new(
        KafkaError::UnknownMemberId,
        format!("Member {member_id} is not a member of the group."),
    )
}

fn strip_anchors(pattern: &str) -> &str {
    pattern
        .strip_prefix("^(?:")
        .and_then(|inner| inner.strip_suffix(")$"))
        .unwrap_or(pattern)
}

/// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`; on success, the compiled regex if
/// the request set one (`Some(None)`: it cleared it).
fn validate(request: &ConsumerHeartbeat) -> Result<Option<Option<Regex>>, HeartbeatError> {
    if request.member_epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        return Err(invalid("MemberEpoch is invalid."));
    }
    let joining = request.member_epoch == JOIN_GROUP_MEMBER_EPOCH;
    if request.member_id.is_empty() && (request.version >= 1 || !joining) {
        return Err(invalid("MemberId can't be empty."));
    }
    for (name, id) in [
        ("MemberId", Some(&request.member_id)),
        ("InstanceId", request.instance_id.as_ref()),
        ("RackId", request.rack_id.as_ref()),
    ] {
        if id.is_some_and(|id| id.len() > MEMBER_ID_BYTES_MAX) {
            return Err(invalid(&format!(
                "{name} is longer than {MEMBER_ID_BYTES_MAX} bytes."
            )));
        }
    }
    if request.instance_id.as_deref() == Some("") {
        return Err(invalid("InstanceId can't be empty."));
    }
    if request.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && request.instance_id.is_none() {
        return Err(invalid("InstanceId can't be null."));
    }
    if joining {
        if request.rebalance_timeout_ms <= 0 {
            return Err(invalid(
                "RebalanceTimeoutMs must be provided in first request.",
            ));
        }
        if request
            .owned
            .as_ref()
            .is_some_and(|owned| !owned.is_empty())
        {
            return Err(invalid("TopicPartitions must be empty when (re-)joining."));
        }
        let names = request
            .subscribed_topic_names
            .as_ref()
            .is_some_and(|names| !names.is_empty());
        let regex = request
            .subscribed_topic_regex
            .as_ref()
            .is_some_and(|regex| !regex.is_empty());
        if !names && !regex {
            return Err(invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            ));
        }
    }
    if let Some(assignor) = request.server_assignor.as_deref() {
        if !assignor.is_empty() && Assignor::from_name(assignor).is_none() {
            return Err(HeartbeatError::new(
                KafkaError::UnsupportedAssignor,
                format!(
                    "ServerAssignor {assignor} is not supported. Supported assignors: {}.",
                    ASSIGNORS.map(Assignor::name).join(", ")
                ),
            ));
        }
    }
    request
        .subscribed_topic_regex
        .as_deref()
        .map(|pattern| match pattern.is_empty() {
            true => Ok(None),
            false => compile_regex(pattern).map(Some),
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const TOPIC: &str = "orders";
    const TOPIC_ID: TopicId = 7;
    const REBALANCE_MS: i32 = 60_000;

    fn image(topics: &[(&str, TopicId, i32)]) -> MetadataImage {
        let mut image = MetadataImage::new("cluster".to_string());
        for (name, id, partitions) in topics {
            image.create_topic(name, *partitions, BTreeMap::new(), *id);
        }
        image
    }

    fn all(partitions: i32) -> Assignment {
        BTreeMap::from([(TOPIC_ID, (0..partitions).collect())])
    }

    fn count(assignment: &Assignment) -> usize {
        assignment.values().map(BTreeSet::len).sum()
    }

    /// A well-behaved client: it reports what it owns and takes what it is given.
    #[derive(Clone, Debug)]
    struct Client {
        member_id: String,
        instance_id: Option<String>,
        epoch: i32,
        owned: Assignment,
        topics: Vec<String>,
        assignor: Option<String>,
    }

    impl Client {
        fn new(member_id: &str) -> Client {
            Client {
                member_id: member_id.to_string(),
                instance_id: None,
                epoch: JOIN_GROUP_MEMBER_EPOCH,
                owned: Assignment::new(),
                topics: vec![TOPIC.to_string()],
                assignor: None,
            }
        }

        fn request(&self) -> ConsumerHeartbeat {
            let joining = self.epoch == JOIN_GROUP_MEMBER_EPOCH;
            ConsumerHeartbeat {
                version: 1,
                member_id: self.member_id.clone(),
                member_epoch: self.epoch,
                instance_id: self.instance_id.clone(),
                rack_id: None,
                rebalance_timeout_ms: if joining { REBALANCE_MS } else { -1 },
                subscribed_topic_names: joining.then(|| self.topics.clone()),
                subscribed_topic_regex: None,
                server_assignor: joining.then(|| self.assignor.clone()).flatten(),
                owned: Some(self.owned.clone()),
                client_id: "client".to_string(),
                client_host: "/127.0.0.1".to_string(),
            }
        }

        fn beat(
            &mut self,
            group: &mut ConsumerGroup,
            image: &MetadataImage,
            now_ms: i64,
        ) -> HeartbeatOutcome {
            let outcome = group.heartbeat(self.request(), image, now_ms);
            if let Ok(response) = &outcome.result {
                self.member_id = response.member_id.clone();
                self.epoch = response.member_epoch;
                if let Some(assignment) = &response.assignment {
                    self.owned = assignment.clone();
                }
            }
            outcome
        }
    }

    fn group() -> ConsumerGroup {
        ConsumerGroup::new("group".to_string(), ConsumerConfig::default(), 1)
    }

    /// Heartbeats every client in turn until nothing changes; returns the rounds it took.
    fn settle(group: &mut ConsumerGroup, clients: &mut [Client], image: &MetadataImage) -> usize {
        for round in 1..=10 {
            let mut changed = false;
            for client in clients.iter_mut() {
                let before = (client.epoch, client.owned.clone());
                client.beat(group, image, 0).result.expect("accepted");
                changed |= before != (client.epoch, client.owned.clone());
            }
            if !changed && group.state() == ConsumerGroupState::Stable {
                return round;
            }
        }
        panic!("group did not settle: {:?}", group.describe());
    }

    #[test]
    fn first_member_gets_every_partition_at_epoch_one() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut client = Client::new("a");
        let outcome = client.beat(&mut group, &image, 0);
        assert!(outcome.persist);
        let response = outcome.result.expect("accepted");
        assert_eq!(response.member_epoch, 1);
        assert_eq!(
            response.heartbeat_interval_ms,
            CONSUMER_HEARTBEAT_INTERVAL_MS
        );
        assert_eq!(response.assignment, Some(all(6)));
        assert_eq!(group.state(), ConsumerGroupState::Stable);
        // A plain heartbeat changes nothing, sends nothing and writes nothing.
        let outcome = client.beat(&mut group, &image, 1_000);
        assert!(!outcome.persist);
        assert_eq!(outcome.result.expect("accepted").assignment, None);
    }

    #[test]
    fn a_second_member_gets_partitions_only_after_the_first_revokes_them() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut a = Client::new("a");
        let mut b = Client::new("b");
        a.beat(&mut group, &image, 0).result.expect("accepted");
        // b joins: the target gives it three of a's partitions, which a still owns.
        let response = b.beat(&mut group, &image, 0).result.expect("accepted");
        assert_eq!(response.member_epoch, 2);
        assert_eq!(response.assignment, Some(Assignment::new()));
        assert_eq!(group.state(), ConsumerGroupState::Reconciling);
        // a is told to give three up, at its old epoch.
        let response = a.beat(&mut group, &image, 0).result.expect("accepted");
        assert_eq!(response.member_epoch, 1);
        assert_eq!(count(&a.owned), 3);
        // b still gets nothing until a confirms.
        assert_eq!(
            b.beat(&mut group, &image, 0)
                .result
                .expect("accepted")
                .assignment,
            None
        );
        // a confirms by reporting what it owns now, and moves to epoch 2.
        assert_eq!(
            a.beat(&mut group, &image, 0)
                .result
                .expect("accepted")
                .member_epoch,
            2
        );
        let response = b.beat(&mut group, &image, 0).result.expect("accepted");
        assert_eq!(count(response.assignment.as_ref().expect("present")), 3);
        assert_eq!(group.state(), ConsumerGroupState::Stable);
        let mut union = a.owned.clone();
        for (topic, partitions) in &b.owned {
            for partition in partitions {
                assert!(union.entry(*topic).or_default().insert(*partition));
            }
        }
        assert_eq!(union, all(6));
    }

    #[test]
    fn wrong_epochs_and_unknown_members_are_refused() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut a = Client::new("a");
        a.beat(&mut group, &image, 0).result.expect("accepted");
        let mut ahead = a.clone();
        ahead.epoch = 5;
        let error = ahead
            .beat(&mut group, &image, 0)
            .result
            .expect_err("refused");
        assert_eq!(error.error, KafkaError::FencedMemberEpoch);
        let mut stranger = Client::new("stranger");
        stranger.epoch = 1;
        let error = stranger
            .beat(&mut group, &image, 0)
            .result
            .expect_err("refused");
        assert_eq!(error.error, KafkaError::UnknownMemberId);
        // Nothing was disturbed.
        assert!(a.beat(&mut group, &image, 0).result.is_ok());
        assert_eq!(group.describe().members.len(), 1);
    }

    #[test]
    fn a_member_one_epoch_behind_is_accepted_if_it_owns_no_more_than_it_has() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut clients = [Client::new("a"), Client::new("b")];
        settle(&mut group, &mut clients, &image);
        let [a, _] = clients;
        assert_eq!(a.epoch, 2);
        // a's answer with its new epoch was lost: it retries at its previous epoch.
        let retry = Client {
            epoch: 1,
            ..a.clone()
        };
        let response = retry
            .clone()
            .beat(&mut group, &image, 0)
            .result
            .expect("accepted");
        assert_eq!(response.member_epoch, 2);
        // Claiming a partition it does not have at that epoch is fenced.
        let claim = Client {
            epoch: 1,
            owned: all(6),
            ..a
        };
        assert_eq!(
            claim
                .clone()
                .beat(&mut group, &image, 0)
                .result
                .expect_err("refused")
                .error,
            KafkaError::FencedMemberEpoch
        );
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_and_the_other_takes_over() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut clients = [Client::new("a"), Client::new("b")];
        settle(&mut group, &mut clients, &image);
        let session = i64::from(CONSUMER_SESSION_TIMEOUT_MS);
        assert_eq!(group.next_deadline_ms(), Some(session));
        // Only b keeps heartbeating.
        let [_, mut b] = clients;
        b.beat(&mut group, &image, session - 1)
            .result
            .expect("accepted");
        assert!(group.expire(session));
        assert_eq!(group.describe().members.len(), 1);
        let response = b
            .beat(&mut group, &image, session + 1)
            .result
            .expect("accepted");
        assert_eq!(response.assignment, Some(all(6)));
        assert_eq!(group.state(), ConsumerGroupState::Stable);
    }

    #[test]
    fn a_member_that_never_revokes_is_fenced_after_its_rebalance_timeout() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut a = Client::new("a");
        let mut b = Client::new("b");
        a.beat(&mut group, &image, 0).result.expect("accepted");
        b.beat(&mut group, &image, 0).result.expect("accepted");
        // a is told to revoke but keeps reporting all six partitions.
        let stubborn = a.request();
        let outcome = group.heartbeat(stubborn.clone(), &image, 0);
        assert_eq!(
            count(
                outcome
                    .result
                    .expect("accepted")
                    .assignment
                    .as_ref()
                    .expect("present")
            ),
            3
        );
        for now in [1_000, 30_000, 59_999] {
            let mut again = stubborn.clone();
            again.owned = Some(all(6));
            group
                .heartbeat(again, &image, now)
                .result
                .expect("accepted");
            b.beat(&mut group, &image, now).result.expect("accepted");
        }
        assert_eq!(count(&b.owned), 0);
        assert!(group.expire(i64::from(REBALANCE_MS)));
        let response = b.beat(&mut group, &image, 60_001).result.expect("accepted");
        assert_eq!(response.assignment, Some(all(6)));
    }

    #[test]
    fn a_member_that_leaves_gives_its_partitions_to_the_others() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut clients = [Client::new("a"), Client::new("b"), Client::new("c")];
        settle(&mut group, &mut clients, &image);
        let mut leave = clients[0].request();
        leave.member_epoch = LEAVE_GROUP_MEMBER_EPOCH;
        let outcome = group.heartbeat(leave, &image, 0);
        assert!(outcome.persist);
        assert_eq!(
            outcome.result.expect("accepted").member_epoch,
            LEAVE_GROUP_MEMBER_EPOCH
        );
        let mut rest = [clients[1].clone(), clients[2].clone()];
        let before: Vec<usize> = rest.iter().map(|client| count(&client.owned)).collect();
        assert_eq!(before, vec![2, 2]);
        settle(&mut group, &mut rest, &image);
        assert_eq!(count(&rest[0].owned) + count(&rest[1].owned), 6);
        assert_eq!(count(&rest[0].owned), 3);
    }

    #[test]
    fn a_static_member_that_restarts_gets_its_partitions_back_without_moving_others() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut a = Client::new("a-1");
        a.instance_id = Some("instance-a".to_string());
        let mut clients = [a, Client::new("b")];
        settle(&mut group, &mut clients, &image);
        let [a, mut b] = clients;
        let epoch_before = group.group_epoch();
        let mut leave = a.request();
        leave.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
        let response = group
            .heartbeat(leave, &image, 1_000)
            .result
            .expect("accepted");
        assert_eq!(response.member_epoch, LEAVE_GROUP_STATIC_MEMBER_EPOCH);
        // While it is away, b keeps its partitions and is not given a's.
        assert_eq!(
            b.beat(&mut group, &image, 2_000)
                .result
                .expect("accepted")
                .assignment,
            None
        );
        // Its new incarnation (a new member id) takes its place.
        let mut restarted = Client::new("a-2");
        restarted.instance_id = Some("instance-a".to_string());
        let response = restarted
            .beat(&mut group, &image, 3_000)
            .result
            .expect("accepted");
        assert_eq!(response.member_id, "a-2");
        assert_eq!(response.member_epoch, a.epoch);
        assert_eq!(restarted.owned, a.owned);
        assert_eq!(group.group_epoch(), epoch_before);
        assert_eq!(
            b.beat(&mut group, &image, 4_000)
                .result
                .expect("accepted")
                .assignment,
            None
        );
        assert_eq!(group.state(), ConsumerGroupState::Stable);
    }

    #[test]
    fn an_instance_id_in_use_is_refused_and_an_abandoned_one_expires() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut a = Client::new("a-1");
        a.instance_id = Some("instance-a".to_string());
        let mut clients = [a, Client::new("b")];
        settle(&mut group, &mut clients, &image);
        let mut impostor = Client::new("a-2");
        impostor.instance_id = Some("instance-a".to_string());
        assert_eq!(
            impostor
                .beat(&mut group, &image, 0)
                .result
                .expect_err("refused")
                .error,
            KafkaError::UnreleasedInstanceId
        );
        let [a, mut b] = clients;
        let mut leave = a.request();
        leave.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
        group
            .heartbeat(leave, &image, 1_000)
            .result
            .expect("accepted");
        b.beat(&mut group, &image, 1_000).result.expect("accepted");
        let expiry = 1_000 + i64::from(CONSUMER_SESSION_TIMEOUT_MS);
        b.beat(&mut group, &image, expiry - 1)
            .result
            .expect("accepted");
        assert!(group.expire(expiry));
        let response = b
            .beat(&mut group, &image, expiry + 1)
            .result
            .expect("accepted");
        assert_eq!(response.assignment, Some(all(6)));
    }

    #[test]
    fn bad_heartbeats_get_kafka_errors() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let cases: Vec<(ConsumerHeartbeat, KafkaError)> = vec![
            (
                ConsumerHeartbeat {
                    subscribed_topic_names: None,
                    ..Client::new("a").request()
                },
                KafkaError::InvalidRequest,
            ),
            (
                ConsumerHeartbeat {
                    member_id: String::new(),
                    ..Client::new("a").request()
                },
                KafkaError::InvalidRequest,
            ),
            (
                ConsumerHeartbeat {
                    rebalance_timeout_ms: -1,
                    ..Client::new("a").request()
                },
                KafkaError::InvalidRequest,
            ),
            (
                ConsumerHeartbeat {
                    owned: Some(all(1)),
                    ..Client::new("a").request()
                },
                KafkaError::InvalidRequest,
            ),
            (
                ConsumerHeartbeat {
                    member_epoch: -3,
                    ..Client::new("a").request()
                },
                KafkaError::InvalidRequest,
            ),
            (
                ConsumerHeartbeat {
                    server_assignor: Some("roundrobin".to_string()),
                    ..Client::new("a").request()
                },
                KafkaError::UnsupportedAssignor,
            ),
            (
                ConsumerHeartbeat {
                    subscribed_topic_regex: Some("orders(".to_string()),
                    ..Client::new("a").request()
                },
                KafkaError::InvalidRegularExpression,
            ),
            (
                ConsumerHeartbeat {
                    member_epoch: LEAVE_GROUP_STATIC_MEMBER_EPOCH,
                    ..Client::new("a").request()
                },
                KafkaError::InvalidRequest,
            ),
            (
                ConsumerHeartbeat {
                    member_epoch: LEAVE_GROUP_MEMBER_EPOCH,
                    ..Client::new("nobody").request()
                },
                KafkaError::UnknownMemberId,
            ),
        ];
        for (request, expected) in cases {
            let outcome = group.heartbeat(request.clone(), &image, 0);
            assert_eq!(
                outcome.result.expect_err("refused").error,
                expected,
                "{request:?}"
            );
            assert!(!outcome.persist);
        }
        assert!(group.is_empty());
        // A v0 client may join without a member id: the coordinator makes one.
        let v0 = ConsumerHeartbeat {
            version: 0,
            member_id: String::new(),
            ..Client::new("a").request()
        };
        let response = group.heartbeat(v0, &image, 0).result.expect("accepted");
        assert_eq!(response.member_id.len(), 32);
    }

    #[test]
    fn new_partitions_and_new_topics_are_assigned_on_the_next_heartbeat() {
        let mut image = image(&[(TOPIC, TOPIC_ID, 2)]);
        let mut group = group();
        let mut a = Client::new("a");
        a.topics = vec![TOPIC.to_string(), "later".to_string()];
        a.beat(&mut group, &image, 0).result.expect("accepted");
        assert_eq!(a.owned, all(2));
        image.create_topic("later", 3, BTreeMap::new(), 9);
        let epoch = group.group_epoch();
        let outcome = a.beat(&mut group, &image, 1);
        assert!(outcome.persist);
        assert_eq!(group.group_epoch(), epoch + 1);
        assert_eq!(count(&a.owned), 5);
    }

    #[test]
    fn a_regex_subscription_matches_whole_names_and_no_internal_topics() {
        let image = image(&[
            ("orders-eu", 1, 1),
            ("orders-us", 2, 1),
            ("old-orders-eu", 3, 1),
            ("__orders", 4, 1),
        ]);
        let mut group = group();
        let request = ConsumerHeartbeat {
            subscribed_topic_names: None,
            subscribed_topic_regex: Some("orders-.*".to_string()),
            ..Client::new("a").request()
        };
        let response = group
            .heartbeat(request, &image, 0)
            .result
            .expect("accepted");
        let topics: Vec<TopicId> = response
            .assignment
            .expect("present")
            .keys()
            .copied()
            .collect();
        assert_eq!(topics, vec![1, 2]);
        let description = group.describe();
        assert_eq!(
            description.members[0].subscribed_topic_regex.as_deref(),
            Some("orders-.*")
        );
    }

    #[test]
    fn the_assignor_most_members_ask_for_is_used() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        assert_eq!(group.describe().assignor_name, "uniform");
        let mut clients: Vec<Client> = ["a", "b", "c"].iter().map(|id| Client::new(id)).collect();
        clients[0].assignor = Some("range".to_string());
        clients[1].assignor = Some("range".to_string());
        settle(&mut group, &mut clients, &image);
        assert_eq!(group.describe().assignor_name, "range");
        // Range in member id order: a gets 0-1, b 2-3, c 4-5.
        assert_eq!(clients[0].owned[&TOPIC_ID], BTreeSet::from([0, 1]));
        assert_eq!(clients[2].owned[&TOPIC_ID], BTreeSet::from([4, 5]));
    }

    #[test]
    fn a_snapshot_restores_the_same_group_through_json() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        let mut a = Client::new("a");
        a.instance_id = Some("instance-a".to_string());
        let mut b = Client::new("b");
        a.beat(&mut group, &image, 0).result.expect("accepted");
        b.beat(&mut group, &image, 0).result.expect("accepted");
        // Mid-rebalance: a has partitions pending revocation.
        a.beat(&mut group, &image, 0).result.expect("accepted");
        let snapshot = group.snapshot();
        let json = serde_json::to_vec(&snapshot).expect("encodes");
        let decoded: ConsumerGroupSnapshot = serde_json::from_slice(&json).expect("decodes");
        assert_eq!(decoded, snapshot);
        let mut restored =
            ConsumerGroup::restore(decoded, ConsumerConfig::default(), 2, 10_000).expect("present");
        assert_eq!(restored.describe(), group.describe());
        assert_eq!(
            restored.next_deadline_ms(),
            Some(10_000 + i64::from(CONSUMER_SESSION_TIMEOUT_MS))
        );
        // The rebalance finishes on the restored group.
        let mut clients = [a, b];
        settle(&mut restored, &mut clients, &image);
        assert_eq!(count(&clients[0].owned) + count(&clients[1].owned), 6);
        // A damaged snapshot is refused.
        let mut twice = group.snapshot();
        let member = twice.members[0].clone();
        twice.members.push(member);
        assert!(ConsumerGroup::restore(twice, ConsumerConfig::default(), 2, 0).is_err());
    }

    #[test]
    fn commits_and_fetches_check_member_and_epoch() {
        let image = image(&[(TOPIC, TOPIC_ID, 6)]);
        let mut group = group();
        assert_eq!(group.validate_commit("", -1, 9), Ok(()));
        let mut a = Client::new("a");
        a.beat(&mut group, &image, 0).result.expect("accepted");
        assert_eq!(group.validate_commit("a", 1, 9), Ok(()));
        assert_eq!(
            group.validate_commit("a", 0, 9),
            Err(KafkaError::StaleMemberEpoch)
        );
        assert_eq!(
            group.validate_commit("a", 1, 8),
            Err(KafkaError::UnsupportedVersion)
        );
        assert_eq!(
            group.validate_commit("x", 1, 9),
            Err(KafkaError::UnknownMemberId)
        );
        assert_eq!(
            group.validate_commit("", -1, 9),
            Err(KafkaError::UnknownMemberId)
        );
        assert_eq!(group.validate_fetch("", -1), Ok(()));
        assert_eq!(group.validate_fetch("a", 1), Ok(()));
        assert_eq!(
            group.validate_fetch("a", 2),
            Err(KafkaError::StaleMemberEpoch)
        );
        assert_eq!(
            group.validate_fetch("x", 1),
            Err(KafkaError::UnknownMemberId)
        );
    }

    #[derive(Clone, Debug)]
    enum Step {
        Beat(usize),
        Join(usize),
        Leave(usize),
        StaticLeave(usize),
        Silence(usize),
        Grow,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0_usize..5).prop_map(Step::Beat),
            2 => (0_usize..5).prop_map(Step::Join),
            1 => (0_usize..5).prop_map(Step::Leave),
            1 => (0_usize..5).prop_map(Step::StaticLeave),
            1 => (0_usize..5).prop_map(Step::Silence),
            1 => Just(Step::Grow),
        ]
    }

    proptest! {
        /// Members join, beat, leave, restart and go silent in any order, topics grow: no
        /// partition is ever owned by two clients at once (the group asserts it of itself too),
        /// and once everyone heartbeats the group settles with every partition owned.
        #[test]
        fn no_partition_is_ever_owned_twice_and_the_group_settles(steps in prop::collection::vec(step(), 1..60)) {
            let mut image = image(&[(TOPIC, TOPIC_ID, 4)]);
            let mut group = group();
            let mut clients: Vec<Option<Client>> = vec![None; 5];
            let mut incarnation = 0;
            let mut now = 0_i64;
            for step in steps {
                now += 1_000;
                match step {
                    Step::Join(index) if clients[index].is_none() => {
                        incarnation += 1;
                        let mut client = Client::new(&format!("m{index}-{incarnation}"));
                        if index % 2 == 0 {
                            client.instance_id = Some(format!("instance-{index}"));
                        }
                        if client.beat(&mut group, &image, now).result.is_ok() {
                            clients[index] = Some(client);
                        }
                    }
                    Step::Beat(index) => {
                        if let Some(client) = clients[index].as_mut() {
                            if client.beat(&mut group, &image, now).result.is_err() {
                                clients[index] = None;
                            }
                        }
                    }
                    Step::Leave(index) | Step::StaticLeave(index) => {
                        if let Some(client) = clients[index].take() {
                            let mut request = client.request();
                            request.member_epoch = match (&step, &client.instance_id) {
                                (Step::StaticLeave(_), Some(_)) => LEAVE_GROUP_STATIC_MEMBER_EPOCH,
                                _ => LEAVE_GROUP_MEMBER_EPOCH,
                            };
                            let _ = group.heartbeat(request, &image, now);
                        }
                    }
                    Step::Silence(index) => {
                        // The client is gone without a word; its session will expire.
                        clients[index] = None;
                    }
                    Step::Grow => {
                        let partitions = image.topics[TOPIC].partition_count + 1;
                        image.topics.get_mut(TOPIC).expect("present").partition_count = partitions;
                        image.version += 1;
                    }
                    Step::Join(_) => {}
                }
                // What the live clients believe they own never overlaps.
                let mut seen = BTreeSet::new();
                for client in clients.iter().flatten() {
                    for key in flatten(&client.owned) {
                        prop_assert!(seen.insert(key), "{key:?} owned twice");
                    }
                }
            }
            // Everyone still here heartbeats after every silent or departed member expired.
            now += i64::from(CONSUMER_SESSION_TIMEOUT_MS) + 1;
            group.expire(now);
            let mut live: Vec<Client> = clients.into_iter().flatten().collect();
            for client in live.iter_mut() {
                if client.beat(&mut group, &image, now).result.is_err() {
                    // Fenced: it rejoins with its id, as a real client does.
                    client.epoch = JOIN_GROUP_MEMBER_EPOCH;
                    client.owned.clear();
                }
            }
            if !live.is_empty() {
                settle(&mut group, &mut live, &image);
                let owned: usize = live.iter().map(|client| count(&client.owned)).sum();
                prop_assert_eq!(owned, image.topics[TOPIC].partition_count as usize);
            }
        }
    }
}
