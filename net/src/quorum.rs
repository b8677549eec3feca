//! Shard 0's link to the controller quorum in a multi-node cluster (`--controller-quorum`):
//! - registers this broker and heartbeats to the active controller (KIP-631), which fences it
//!   when it goes silent and unfences it once it has caught up with the metadata log;
//! - follows the metadata this node's controller applies: opens the partitions whose replicas
//!   include this broker (placing them on shards), deletes those it no longer hosts, pushes
//!   changed topic configs, and sends every shard the new image, shard table and brokers (each
//!   shard then takes its partitions' roles, `replica`);
//! - turns the Kafka admin requests that change metadata into controller commands.
//!
//! The single-node controller (`controller`) does all this for a broker without a quorum.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ringlog_cluster::controller::sessions::Heartbeat;
use ringlog_cluster::controller::{
    new_topic_id, CommandResponse, ControllerNode, ControllerState, HeartbeatReply,
    MetadataCommand, TopicSpec,
};
use ringlog_cluster::MetadataImage;
use ringlog_engine::rt::{self, TaskClass};
use ringlog_engine::shard::table::{ShardTable, ShardTableUpdate};
use ringlog_engine::{ShardId, TopicPartition};

use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::controller::open_on_owners;
use crate::groups::storage::{OFFSETS_PARTITION_COUNT, OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIGS};
use crate::messages::{BrokerRequest, ControllerRequest, ControllerResponse, Refusal};

/// Kafka's `offsets.topic.replication.factor` default: `__consumer_offsets` gets three
/// replicas, or as many as the cluster has brokers when it has fewer.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR: i32 = 3;

/// How long a broker waits after a failed registration or heartbeat before trying again.
const HEARTBEAT_RETRY_DELAY: Duration = Duration::from_millis(500);

/// How long a stopping broker waits for its leaderships to move before it stops anyway
/// (Kafka retries controlled shutdown for about as long).
pub const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a controlled shutdown looks whether the broker still leads anything.
const CONTROLLED_SHUTDOWN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Shard 0 only, in a multi-node cluster.
pub struct QuorumLink {
    node: Arc<ControllerNode>,
    /// Random per process start: the controller tells a restart from a retried registration.
    incarnation_id: u128,
    /// What this node hosts, placed on its shards, and the image last sent to the shards.
    state: RefCell<Hosted>,
    /// One metadata application at a time.
    turn: async_lock::Mutex<()>,
}

struct Hosted {
    table: ShardTable,
    image: Option<Arc<MetadataImage>>,
}

impl QuorumLink {
    pub fn new(node: Arc<ControllerNode>, shard_count: usize) -> QuorumLink {
        QuorumLink {
            node,
            incarnation_id: new_topic_id(),
            state: RefCell::new(Hosted {
                table: ShardTable::new(shard_count),
                image: None,
            }),
            turn: async_lock::Mutex::new(()),
        }
    }

    /// Waits for the first initialized metadata and applies it (the broker's start), then
    /// follows every later change and keeps this broker registered, in tasks of their own.
    pub async fn bootstrap(&self, broker: &Rc<Broker>) {
        let mut states = self.node.subscribe();
        loop {
            let state = Arc::clone(&states.borrow_and_update());
            if state.is_initialized() {
                self.apply(broker, &state).await;
                break;
            }
            if states.changed().await.is_err() {
                return;
            }
        }
        let follower = Rc::clone(broker);
        rt::spawn_detached(TaskClass::Background, async move {
            loop {
                if states.changed().await.is_err() || follower.is_stopping() {
                    return;
                }
                let state = Arc::clone(&states.borrow_and_update());
                if let Some(crate::broker::ControllerRole::Quorum(link)) = &follower.controller {
                    link.apply(&follower, &state).await;
                }
            }
        });
        let heart = Rc::clone(broker);
        rt::spawn_detached(TaskClass::Background, async move {
            if let Some(crate::broker::ControllerRole::Quorum(link)) = &heart.controller {
                link.keep_registered(&heart).await;
            }
        });
    }

    /// Registers this broker and heartbeats until the broker stops.
    async fn keep_registered(&self, broker: &Rc<Broker>) {
        let interval = Duration::from_millis(
            broker
                .config
                .cluster
                .as_ref()
                .map_or(2_000, |cluster| cluster.heartbeat_interval_ms),
        );
        let node_id = broker.config.node_id;
        let mut broker_epoch: Option<u64> = None;
        let mut fenced = true;
        while !broker.is_stopping() {
            let epoch = match broker_epoch {
                Some(epoch) => epoch,
                None => {
                    let (host, port) = broker.advertised();
                    let command = MetadataCommand::RegisterBroker {
                        broker_id: node_id,
                        incarnation_id: self.incarnation_id,
                        host,
                        port,
                        rack: broker.config.broker_rack.clone(),
                    };
                    match self.node.propose(command).await {
                        Ok(CommandResponse::Broker(Ok(epoch))) => {
                            tracing::info!(node_id, broker_epoch = epoch, "registered");
                            broker_epoch = Some(epoch);
                            epoch
                        }
                        outcome => {
                            tracing::warn!(?outcome, "broker registration failed; retrying");
                            rt::sleep(HEARTBEAT_RETRY_DELAY).await;
                            continue;
                        }
                    }
                }
            };
            let heartbeat = Heartbeat {
                broker_id: node_id,
                broker_epoch: epoch,
                metadata_offset: self.node.applied_index(),
                want_fence: false,
                want_shut_down: false,
            };
            match self.node.heartbeat(heartbeat).await {
                Ok(HeartbeatReply::Accepted { is_fenced, .. }) => {
                    if is_fenced != fenced {
                        tracing::info!(node_id, fenced = is_fenced, "broker fencing changed");
                        fenced = is_fenced;
                    }
                }
                Ok(HeartbeatReply::StaleBrokerEpoch { .. } | HeartbeatReply::NotRegistered) => {
                    broker_epoch = None;
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "heartbeat not answered");
                    rt::sleep(HEARTBEAT_RETRY_DELAY.min(interval)).await;
                    continue;
                }
            }
            rt::sleep(interval).await;
        }
    }

    /// Kafka's controlled shutdown: asks the quorum to move this broker's leaderships to other
    /// ISR members and waits (at most [`CONTROLLED_SHUTDOWN_TIMEOUT`]) until the metadata shows
    /// it leads nothing, so producers move on before its connections close.
    pub async fn controlled_shutdown(&self, broker: &Rc<Broker>) {
        let node_id = broker.config.node_id;
        let Some(broker_epoch) = broker.broker_epoch() else {
            return;
        };
        let leads_any = |broker: &Broker| {
            let image = broker.metadata();
            image.topics.values().any(|topic| {
                topic
                    .partitions
                    .iter()
                    .any(|registration| registration.leader == node_id)
            })
        };
        if !leads_any(broker) {
            return;
        }
        tracing::info!(node_id, "controlled shutdown: moving leaderships away");
        let proposal = self.node.propose(MetadataCommand::ShutdownBroker {
            broker_id: node_id,
            broker_epoch,
        });
        let wait = async {
            if let Err(error) = proposal.await {
                tracing::warn!(%error, "controlled shutdown not committed");
                return;
            }
            while leads_any(broker) {
                rt::sleep(CONTROLLED_SHUTDOWN_POLL_INTERVAL).await;
            }
        };
        if rt::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, wait)
            .await
            .is_none()
        {
            tracing::warn!(
                node_id,
                "controlled shutdown: still leading after the timeout"
            );
        }
    }

    /// Brings this broker in line with `state`: partitions it now hosts are opened, those it
    /// no longer hosts deleted, changed configs pushed, and every shard gets the new copies.
    async fn apply(&self, broker: &Rc<Broker>, state: &ControllerState) {
        let _turn = self.turn.lock().await;
        let node_id = broker.config.node_id;
        let image = Arc::new(state.image.clone());
        let hosted: Vec<TopicPartition> = image
            .topics
            .iter()
            .flat_map(|(name, topic)| {
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, registration)| registration.replicas.contains(&node_id))
                    .map(move |(index, _)| TopicPartition::new(name.clone(), index as i32))
            })
            .collect();
        let (previous, table) = {
            let hosted_state = self.state.borrow();
            (hosted_state.image.clone(), hosted_state.table.clone())
        };
        let removed: Vec<TopicPartition> = table
            .assignments()
            .map(|(partition, _)| partition.clone())
            .filter(|partition| !hosted.contains(partition))
            .collect();
        let added: Vec<TopicPartition> = hosted
            .iter()
            .filter(|partition| table.lookup(partition).is_none())
            .cloned()
            .collect();
        if !removed.is_empty() {
            let owners = table.group_items_by_shard(removed.clone(), |tp| tp);
            let calls = owners
                .by_shard
                .into_iter()
                .map(|(shard, partitions)| (shard, BrokerRequest::Delete(partitions)))
                .collect();
            broker.call_each(calls).await;
        }
        let table = {
            let mut hosted_state = self.state.borrow_mut();
            if !removed.is_empty() {
                let update = ShardTableUpdate {
                    version: hosted_state.table.version() + 1,
                    assign: Vec::new(),
                    remove: removed,
                };
                let _ = hosted_state.table.apply(&update);
            }
            for partition in &added {
                let shard = hosted_state.table.place(partition);
                let update = ShardTableUpdate {
                    version: hosted_state.table.version() + 1,
                    assign: vec![(partition.clone(), shard)],
                    remove: Vec::new(),
                };
                let _ = hosted_state.table.apply(&update);
            }
            hosted_state.image = Some(Arc::clone(&image));
            hosted_state.table.clone()
        };
        if !added.is_empty() {
            open_on_owners(broker, &image, &table, added).await;
        }
        if let Some(previous) = previous {
            push_changed_configs(broker, &previous, &image, &table).await;
        }
        let brokers = Arc::new(state.brokers.clone());
        let calls = (0..table.shard_count())
            .map(|index| {
                let request = BrokerRequest::Metadata {
                    image: Arc::clone(&image),
                    table: table.clone(),
                    brokers: Some(Arc::clone(&brokers)),
                };
                (ShardId(index as u16), request)
            })
            .collect();
        broker.call_each(calls).await;
        self.maybe_create_offsets_topic(broker, state);
    }

    /// Proposes `__consumer_offsets` once the cluster has its brokers: with three replicas, or
    /// every broker of a smaller cluster once all of the quorum's nodes are registered.
    fn maybe_create_offsets_topic(&self, broker: &Rc<Broker>, state: &ControllerState) {
        if state.image.topic(OFFSETS_TOPIC).is_some() {
            return;
        }
        let eligible = state
            .brokers
            .values()
            .filter(|registration| registration.is_eligible())
            .count() as i32;
        let quorum_size = broker
            .config
            .cluster
            .as_ref()
            .map_or(1, |cluster| cluster.quorum.len() as i32);
        let replication_factor = OFFSETS_TOPIC_REPLICATION_FACTOR.min(quorum_size);
        if eligible < replication_factor {
            return;
        }
        let configs: BTreeMap<String, String> = OFFSETS_TOPIC_CONFIGS
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let command = MetadataCommand::CreateTopics {
            topics: vec![TopicSpec {
                name: OFFSETS_TOPIC.to_string(),
                partition_count: OFFSETS_PARTITION_COUNT,
                replication_factor,
                configs,
                topic_id: new_topic_id(),
                assignments: Vec::new(),
            }],
            topic_defaults: broker.config.topic_defaults.clone(),
        };
        let proposal = self.node.propose(command);
        rt::spawn_detached(TaskClass::Background, async move {
            match proposal.await {
                Ok(response) => tracing::info!(?response, "created {OFFSETS_TOPIC}"),
                Err(error) => tracing::info!(%error, "{OFFSETS_TOPIC} not created yet"),
            }
        });
    }

    /// Serves one controller request by proposing it to the quorum (or, for `validate_only`,
    /// applying it to a copy of the current state).
    pub async fn handle(&self, broker: &Broker, request: ControllerRequest) -> ControllerResponse {
        let topic_defaults = broker.config.topic_defaults.clone();
        match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let count = topics.len();
                let command = MetadataCommand::CreateTopics {
                    topics: topics
                        .into_iter()
                        .map(|spec| TopicSpec {
                            name: spec.name,
                            partition_count: spec.partition_count,
                            replication_factor: spec.replication_factor,
                            configs: spec.configs,
                            topic_id: new_topic_id(),
                            assignments: Vec::new(),
                        })
                        .collect(),
                    topic_defaults,
                };
                match self.run(command, validate_only).await {
                    Ok(CommandResponse::TopicsCreated(results)) => {
                        ControllerResponse::CreateTopics(
                            results
                                .into_iter()
                                .map(|result| result.map_err(Refusal::from))
                                .collect(),
                        )
                    }
                    Ok(other) => {
                        ControllerResponse::CreateTopics(vec![Err(unexpected(&other)); count])
                    }
                    Err(refusal) => ControllerResponse::CreateTopics(vec![Err(refusal); count]),
                }
            }
            ControllerRequest::DeleteTopics { names } => {
                let count = names.len();
                self.per_topic(MetadataCommand::DeleteTopics { names }, false, count)
                    .await
            }
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
            } => {
                let count = topics.len();
                let command = MetadataCommand::CreatePartitions {
                    topics,
                    assignments: BTreeMap::new(),
                };
                self.per_topic(command, validate_only, count).await
            }
            ControllerRequest::AlterConfigs {
                topics,
                incremental,
                validate_only,
            } => {
                let count = topics.len();
                let command = MetadataCommand::AlterConfigs {
                    topics,
                    incremental,
                    topic_defaults,
                };
                self.per_topic(command, validate_only, count).await
            }
            ControllerRequest::ElectLeaders {
                election_type,
                partitions,
            } => {
                let asked = partitions.clone().unwrap_or_default();
                let command = MetadataCommand::ElectLeaders {
                    election_type,
                    partitions,
                };
                let failed = |error: KafkaError| {
                    asked
                        .iter()
                        .map(|(topic, partition)| (topic.clone(), *partition, Err(error)))
                        .collect()
                };
                match self.run(command, false).await {
                    Ok(CommandResponse::Elections(elections)) => ControllerResponse::Elections(
                        elections
                            .into_iter()
                            .map(|(topic, partition, result)| {
                                let result = result
                                    .map(|_| ())
                                    .map_err(|error| crate::codes::from_metadata(&error));
                                (topic, partition, result)
                            })
                            .collect(),
                    ),
                    Ok(_) => ControllerResponse::Elections(failed(KafkaError::UnknownServerError)),
                    Err(refusal) => ControllerResponse::Elections(failed(refusal.error)),
                }
            }
            ControllerRequest::AllocateProducerId => {
                match self.run(MetadataCommand::AllocateProducerId, false).await {
                    Ok(CommandResponse::ProducerId(id)) => ControllerResponse::ProducerId(Ok(id)),
                    Ok(_) => ControllerResponse::ProducerId(Err(KafkaError::UnknownServerError)),
                    Err(refusal) => ControllerResponse::ProducerId(Err(refusal.error)),
                }
            }
        }
    }

    async fn per_topic(
        &self,
        command: MetadataCommand,
        validate_only: bool,
        count: usize,
    ) -> ControllerResponse {
        match self.run(command, validate_only).await {
            Ok(CommandResponse::Topics(results)) => ControllerResponse::Topics(
                results
                    .into_iter()
                    .map(|result| result.map_err(Refusal::from))
                    .collect(),
            ),
            Ok(other) => ControllerResponse::Topics(vec![Err(unexpected(&other)); count]),
            Err(refusal) => ControllerResponse::Topics(vec![Err(refusal); count]),
        }
    }

    /// Commits `command`, or with `validate_only` only applies it to a copy of the state.
    async fn run(
        &self,
        command: MetadataCommand,
        validate_only: bool,
    ) -> Result<CommandResponse, Refusal> {
        if validate_only {
            let mut copy = (*self.node.state()).clone();
            let index = self.node.applied_index() + 1;
            return Ok(copy.apply(index, &command));
        }
        self.node.propose(command).await.map_err(|error| {
            tracing::warn!(%error, "controller command not committed");
            Refusal {
                error: KafkaError::RequestTimedOut,
                message: format!("the controller quorum did not commit the change: {error}"),
            }
        })
    }
}

fn unexpected(response: &CommandResponse) -> Refusal {
    Refusal {
        error: KafkaError::UnknownServerError,
        message: format!("the controller answered {response:?}"),
    }
}

/// Sends the hosted partitions of topics whose configs changed their new effective configs.
async fn push_changed_configs(
    broker: &Broker,
    previous: &MetadataImage,
    image: &MetadataImage,
    table: &ShardTable,
) {
    let mut partitions = Vec::new();
    for (name, topic) in &image.topics {
        let changed = previous
            .topic(name)
            .is_some_and(|before| before.configs != topic.configs);
        if !changed {
            continue;
        }
        let config = broker.log_config(image, name);
        for index in 0..topic.partition_count {
            let partition = TopicPartition::new(name.clone(), index);
            if table.lookup(&partition).is_some() {
                partitions.push((partition, config.clone()));
            }
        }
    }
    if partitions.is_empty() {
        return;
    }
    let groups = table.group_items_by_shard(partitions, |(tp, _)| tp);
    let calls = groups
        .by_shard
        .into_iter()
        .map(|(shard, partitions)| (shard, BrokerRequest::SetConfigs(partitions)))
        .collect();
    broker.call_each(calls).await;
}
