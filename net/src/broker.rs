//! The broker's state on one shard: the engine shard with its partition logs, this shard's
//! copies of the cluster metadata and the shard table, the idempotent producer state of the
//! partitions it owns, and the bus to the other shards. Serves [`BrokerRequest`]s.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use event_listener::Event;
use ringlog_cluster::controller::{BrokerRegistration, ControllerNode};
use ringlog_cluster::metadata::effective_log_config;
use ringlog_cluster::MetadataImage;
use ringlog_engine::bus::Bus;
use ringlog_engine::config::LogConfig;
use ringlog_engine::format::BatchInfo;
use ringlog_engine::log::{AppendGate, AppendResult, PartitionLog, ReadLimit};
use ringlog_engine::rt::fs::Storage;
use ringlog_engine::rt::{self, TaskClass};
use ringlog_engine::shard::table::{ShardGroups, ShardTable};
use ringlog_engine::shard::Shard;
use ringlog_engine::{ShardId, TopicPartition};

use crate::codes::{self, KafkaError};
use crate::connection::Connections;
use crate::controller::Controller;
use crate::groups::storage::OFFSETS_TOPIC;
use crate::groups::GroupCoordinator;
use crate::messages::{BrokerRequest, BrokerResponse, PartitionResults, PartitionState, ReadSpec};
use crate::metrics::BrokerMetrics;
use crate::producers::{ProducerStates, SequenceCheck, PRODUCER_SNAPSHOT_FILE};
use crate::quorum::QuorumLink;
use crate::replica::Replication;
use crate::BrokerConfig;

/// Bytes read per step while rebuilding a partition's producer state from its log.
const PRODUCER_REBUILD_READ_BYTES: usize = 4 << 20;

pub type BrokerBus = Bus<BrokerRequest, BrokerResponse>;

/// One per shard.
pub struct Broker {
    /// This broker itself, for work that outlives a borrow of it (tasks it spawns).
    me: std::rc::Weak<Broker>,
    pub config: Arc<BrokerConfig>,
    /// The address the Kafka listener is bound to, shared by every shard: set by shard 0 when
    /// it binds, before any shard accepts a connection.
    listen_address: Arc<OnceLock<SocketAddr>>,
    pub shard_id: ShardId,
    pub shard: Rc<Shard>,
    storage: Storage,
    bus: RefCell<Option<Rc<BrokerBus>>>,
    metadata: RefCell<Arc<MetadataImage>>,
    table: RefCell<ShardTable>,
    producers: RefCell<HashMap<TopicPartition, Rc<RefCell<ProducerStates>>>>,
    /// Shard 0 only: the single-node controller, or the link to the controller quorum.
    pub controller: Option<ControllerRole>,
    /// A multi-node cluster's controller of this node (every shard may propose to it).
    quorum: Option<Arc<ControllerNode>>,
    /// The registered brokers, as the metadata this shard last received has them.
    brokers: RefCell<Arc<BTreeMap<i32, BrokerRegistration>>>,
    /// The roles of this shard's partitions in a multi-node cluster, and their replication.
    pub replication: Replication,
    /// Set once the broker is stopping (fetchers end).
    stopping: Cell<bool>,
    /// The consumer groups whose `__consumer_offsets` partitions this shard owns.
    pub groups: GroupCoordinator,
    /// This shard's client connections, once it accepts them (adopted ones join them).
    connections: RefCell<Option<Rc<Connections>>>,
    /// Set once the first metadata image has arrived (connections wait for it).
    ready: Cell<bool>,
    ready_event: Event,
    /// Set once this shard accepts Kafka connections (for the admin port's readiness).
    serving: Cell<bool>,
    /// What the Kafka layer counts on this shard.
    pub metrics: BrokerMetrics,
}

impl Broker {
    pub fn new(
        config: Arc<BrokerConfig>,
        listen_address: Arc<OnceLock<SocketAddr>>,
        shard: Rc<Shard>,
        storage: Storage,
        shard_count: usize,
        controller: Option<ControllerRole>,
        quorum: Option<Arc<ControllerNode>>,
    ) -> Rc<Broker> {
        let groups = GroupCoordinator::new(&config);
        let replication = Replication::new(config.node_id);
        Rc::new_cyclic(|me| Broker {
            me: me.clone(),
            config,
            listen_address,
            shard_id: shard.id(),
            shard,
            storage,
            bus: RefCell::new(None),
            metadata: RefCell::new(Arc::new(MetadataImage::new(String::new()))),
            table: RefCell::new(ShardTable::new(shard_count)),
            producers: RefCell::new(HashMap::new()),
            controller,
            quorum,
            brokers: RefCell::new(Arc::new(BTreeMap::new())),
            replication,
            stopping: Cell::new(false),
            groups,
            connections: RefCell::new(None),
            ready: Cell::new(false),
            ready_event: Event::new(),
            serving: Cell::new(false),
            metrics: BrokerMetrics::default(),
        })
    }

    /// The host and port clients are told to connect to (Metadata, FindCoordinator,
    /// DescribeCluster): `advertise`, else the bound listen address, so a broker started on
    /// port 0 advertises the port it really has.
    pub fn advertised(&self) -> (String, u16) {
        let bound = self
            .listen_address
            .get()
            .copied()
            .unwrap_or(self.config.listen);
        self.config.advertised_for(bound)
    }

    /// Whether this broker is a node of a multi-node cluster (`--controller-quorum`).
    pub fn is_clustered(&self) -> bool {
        self.quorum.is_some()
    }

    /// This node's controller of the quorum, in a multi-node cluster.
    pub fn quorum_node(&self) -> Option<&Arc<ControllerNode>> {
        self.quorum.as_ref()
    }

    /// The registered brokers.
    pub fn brokers(&self) -> Arc<BTreeMap<i32, BrokerRegistration>> {
        Arc::clone(&self.brokers.borrow())
    }

    /// This broker's epoch: its registration's, once the quorum has it.
    pub fn broker_epoch(&self) -> Option<u64> {
        self.brokers
            .borrow()
            .get(&self.config.node_id)
            .map(|registration| registration.broker_epoch)
    }

    /// Where broker `id`'s Kafka port is, as it registered it.
    pub fn broker_address(&self, id: i32) -> Option<SocketAddr> {
        let brokers = self.brokers.borrow();
        let registration = brokers.get(&id)?;
        use std::net::ToSocketAddrs;
        (registration.host.as_str(), registration.port)
            .to_socket_addrs()
            .ok()?
            .next()
    }

    /// Whether the broker is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// A partition as clients are told of it: leader, leader epoch, replicas, ISR. A single
    /// node leads everything at epoch 0.
    pub fn partition_view(&self, image: &MetadataImage, topic: &str, index: i32) -> PartitionView {
        match image.partition(topic, index) {
            Some(registration) if self.is_clustered() => PartitionView {
                leader: registration.leader,
                leader_epoch: registration.leader_epoch,
                replicas: registration.replicas.clone(),
                isr: registration.isr.clone(),
            },
            _ => PartitionView {
                leader: self.config.node_id,
                leader_epoch: crate::handlers::metadata::SINGLE_NODE_LEADER_EPOCH,
                replicas: vec![self.config.node_id],
                isr: vec![self.config.node_id],
            },
        }
    }

    /// The brokers clients are told of, with their addresses and racks: the registered,
    /// unfenced ones in a multi-node cluster; this broker on a single node.
    pub fn live_brokers(&self) -> Vec<(i32, String, u16, Option<String>)> {
        if !self.is_clustered() {
            let (host, port) = self.advertised();
            return vec![(
                self.config.node_id,
                host,
                port,
                self.config.broker_rack.clone(),
            )];
        }
        self.brokers
            .borrow()
            .values()
            .filter(|registration| !registration.fenced)
            .map(|registration| {
                (
                    registration.broker_id,
                    registration.host.clone(),
                    registration.port,
                    registration.rack.clone(),
                )
            })
            .collect()
    }

    /// The node coordinating `group_id`: the leader of its `__consumer_offsets` partition, with
    /// its address. COORDINATOR_NOT_AVAILABLE until that partition exists and has a leader.
    pub fn coordinator_node(&self, group_id: &str) -> Result<(i32, String, u16), KafkaError> {
        if !self.is_clustered() {
            self.coordinator_shard(group_id)
                .ok_or(KafkaError::CoordinatorNotAvailable)?;
            let (host, port) = self.advertised();
            return Ok((self.config.node_id, host, port));
        }
        let partition = crate::groups::storage::partition_for(group_id);
        let image = self.metadata();
        let leader = image
            .partition(OFFSETS_TOPIC, partition)
            .map(|registration| registration.leader)
            .ok_or(KafkaError::CoordinatorNotAvailable)?;
        let brokers = self.brokers.borrow();
        let registration = brokers
            .get(&leader)
            .filter(|registration| !registration.fenced)
            .ok_or(KafkaError::CoordinatorNotAvailable)?;
        Ok((leader, registration.host.clone(), registration.port))
    }

    /// The controller id clients are told of: the quorum's leader, or this node.
    pub fn controller_id(&self) -> i32 {
        self.quorum
            .as_ref()
            .and_then(|node| node.current_leader())
            .map_or(self.config.node_id, |id| id as i32)
    }

    pub fn set_connections(&self, connections: Rc<Connections>) {
        *self.connections.borrow_mut() = Some(connections);
    }

    /// Marks this shard as accepting Kafka connections.
    pub fn set_serving(&self) {
        self.serving.set(true);
    }

    /// Whether this shard has its metadata and accepts Kafka connections.
    /// In a multi-node cluster, also once the controller has let this broker in (unfenced,
    /// Kafka's RUNNING state): before that it leads nothing and is not in the metadata.
    pub fn is_serving(&self) -> bool {
        let admitted = !self.is_clustered()
            || self
                .brokers
                .borrow()
                .get(&self.config.node_id)
                .is_some_and(|registration| !registration.fenced);
        self.ready.get() && self.serving.get() && admitted
    }

    /// Open client connections on this shard.
    pub fn open_connections(&self) -> usize {
        self.connections
            .borrow()
            .as_ref()
            .map_or(0, |connections| connections.open())
    }

    /// This shard's end of the bus, once it has joined.
    pub fn bus_handle(&self) -> Option<Rc<BrokerBus>> {
        self.bus.borrow().clone()
    }

    pub fn set_bus(&self, bus: Rc<BrokerBus>) {
        *self.bus.borrow_mut() = Some(bus);
    }

    fn bus(&self) -> Rc<BrokerBus> {
        Rc::clone(
            self.bus
                .borrow()
                .as_ref()
                .expect("the bus is set before requests are served"),
        )
    }

    pub fn metadata(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.metadata.borrow())
    }

    pub fn table(&self) -> std::cell::Ref<'_, ShardTable> {
        self.table.borrow()
    }

    /// Waits until this shard has its first metadata image.
    pub async fn wait_ready(&self) {
        loop {
            let listener = self.ready_event.listen();
            if self.ready.get() {
                return;
            }
            listener.await;
        }
    }

    /// The shard coordinating `group_id`: the owner of its `__consumer_offsets` partition.
    pub fn coordinator_shard(&self, group_id: &str) -> Option<ShardId> {
        let partition = crate::groups::storage::partition_for(group_id);
        self.table
            .borrow()
            .lookup(&crate::groups::storage::offsets_partition(partition))
    }

    /// Sends a group request to the shard coordinating `group_id`; `None` when no shard does
    /// (yet) or the bus failed.
    pub async fn call_coordinator(
        &self,
        group_id: &str,
        request: crate::messages::GroupRequest,
    ) -> Option<crate::messages::GroupReply> {
        let shard = self.coordinator_shard(group_id)?;
        match self.call(shard, BrokerRequest::Group(request)).await? {
            BrokerResponse::Group(reply) => Some(reply),
            _ => None,
        }
    }

    /// Groups items by the shard owning each one's partition.
    pub fn group_by_shard<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &TopicPartition,
    ) -> ShardGroups<T> {
        self.table.borrow().group_items_by_shard(items, key)
    }

    /// Runs per-partition work on the shards owning the partitions, one bus message per shard,
    /// and returns each item's `place` (where the caller puts its answer) with its result, in
    /// no particular order. An item whose partition is not (yet) in this shard's table, or
    /// whose shard did not answer, gets NOT_LEADER_OR_FOLLOWER: retriable, as the metadata
    /// moved or the shard is stopping.
    pub async fn scatter<P, T, R>(
        &self,
        items: Vec<(P, TopicPartition, T)>,
        request: impl Fn(Vec<(TopicPartition, T)>) -> BrokerRequest,
        results: impl Fn(BrokerResponse) -> Option<PartitionResults<R>>,
    ) -> Vec<(P, Result<R, KafkaError>)> {
        let groups = self.group_by_shard(items, |(_, partition, _)| partition);
        let mut answers: Vec<(P, Result<R, KafkaError>)> = groups
            .unassigned
            .into_iter()
            .map(|(place, _, _)| (place, Err(KafkaError::NotLeaderOrFollower)))
            .collect();
        let mut places = Vec::with_capacity(groups.by_shard.len());
        let mut calls = Vec::with_capacity(groups.by_shard.len());
        for (shard, items) in groups.by_shard {
            let (shard_places, work): (Vec<P>, Vec<(TopicPartition, T)>) = items
                .into_iter()
                .map(|(place, partition, item)| (place, (partition, item)))
                .unzip();
            places.push(shard_places);
            calls.push((shard, request(work)));
        }
        for (shard_places, response) in places.into_iter().zip(self.call_each(calls).await) {
            let mut replies = response.and_then(&results).unwrap_or_default().into_iter();
            for place in shard_places {
                let result = replies
                    .next()
                    .map_or(Err(KafkaError::NotLeaderOrFollower), |(_, result)| result);
                answers.push((place, result));
            }
        }
        answers
    }

    /// Sends `request` to shard `to` (directly if it is this shard).
    pub async fn call(&self, to: ShardId, request: BrokerRequest) -> Option<BrokerResponse> {
        match self.bus().call(to, request).await {
            Ok(response) => Some(response),
            Err(error) => {
                tracing::warn!(shard = %self.shard_id, to = %to, %error, "bus call failed");
                None
            }
        }
    }

    /// Sends one request per shard concurrently; answers in the order given.
    pub async fn call_each(
        &self,
        calls: Vec<(ShardId, BrokerRequest)>,
    ) -> Vec<Option<BrokerResponse>> {
        self.bus()
            .call_each(calls)
            .await
            .into_iter()
            .map(|result| result.ok())
            .collect()
    }

    /// The effective log config of a topic in `image`.
    pub fn log_config(&self, image: &MetadataImage, topic: &str) -> LogConfig {
        image
            .topic(topic)
            .and_then(|topic| {
                effective_log_config(&self.config.topic_defaults, &topic.configs).ok()
            })
            .unwrap_or_default()
    }

    /// Serves one bus request.
    pub async fn handle(self: Rc<Self>, request: BrokerRequest) -> BrokerResponse {
        match request {
            BrokerRequest::Open(partitions) => {
                BrokerResponse::Done(self.open_partitions(partitions).await)
            }
            BrokerRequest::Delete(partitions) => {
                let mut results = Vec::with_capacity(partitions.len());
                for partition in partitions {
                    self.producers.borrow_mut().remove(&partition);
                    if partition.topic == OFFSETS_TOPIC {
                        self.groups.unload(partition.partition.0);
                    }
                    let result = self
                        .shard
                        .delete_partition(&partition)
                        .await
                        .map_err(|error| codes::from_engine(&error));
                    results.push((partition, result));
                }
                BrokerResponse::Done(results)
            }
            BrokerRequest::SetConfigs(partitions) => {
                let results = partitions
                    .into_iter()
                    .map(|(partition, config)| {
                        let result = self.log(&partition).map(|log| log.set_config(config));
                        (partition, result)
                    })
                    .collect();
                BrokerResponse::Done(results)
            }
            BrokerRequest::Produce {
                appends,
                acks,
                timeout,
            } => {
                let tasks: Vec<_> = appends
                    .into_iter()
                    .map(|(partition, records)| {
                        let broker = Rc::clone(&self);
                        let key = partition.clone();
                        let task = rt::spawn(TaskClass::Latency, async move {
                            broker
                                .produce_replicated(&key, records, acks, timeout)
                                .await
                        });
                        (partition, task)
                    })
                    .collect();
                let mut results = Vec::with_capacity(tasks.len());
                for (partition, task) in tasks {
                    results.push((partition, task.await));
                }
                BrokerResponse::Produced(results)
            }
            BrokerRequest::Read(reads) => {
                let mut results = Vec::with_capacity(reads.len());
                for read in reads {
                    let result = self.read_local(&read).await;
                    results.push((read.partition, result));
                }
                BrokerResponse::Read(results)
            }
            BrokerRequest::WaitForData {
                partitions,
                max_wait,
                log_end,
            } => {
                let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = partitions
                    .iter()
                    .filter_map(|(partition, offset)| {
                        let log = self.log(partition).ok()?;
                        let offset = *offset;
                        let wait: Pin<Box<dyn Future<Output = ()>>> = if log_end {
                            Box::pin(async move { log.wait_for_log_end_past(offset).await })
                        } else {
                            Box::pin(async move { log.wait_for_data(offset).await })
                        };
                        Some(wait)
                    })
                    .collect();
                if !waits.is_empty() {
                    let any = std::future::poll_fn(|context| {
                        for wait in waits.iter_mut() {
                            if wait.as_mut().poll(context).is_ready() {
                                return Poll::Ready(());
                            }
                        }
                        Poll::Pending
                    });
                    rt::timeout(max_wait, any).await;
                }
                BrokerResponse::DataReady
            }
            BrokerRequest::State(partitions) => {
                let results = partitions
                    .into_iter()
                    .map(|partition| {
                        let result = self.log(&partition).map(|log| PartitionState {
                            log_start_offset: log.log_start_offset(),
                            high_watermark: log.high_watermark(),
                            log_end_offset: log.log_end_offset(),
                            size_bytes: log.size_bytes(),
                        });
                        (partition, result)
                    })
                    .collect();
                BrokerResponse::State(results)
            }
            BrokerRequest::EpochEndOffsets(queries) => {
                let results = queries
                    .into_iter()
                    .map(|(partition, (current, asked))| {
                        let result = self.log(&partition).and_then(|log| {
                            self.replication
                                .offset_for_leader_epoch(&partition, &log, current, asked)
                                .map(|end| (end.epoch.0, end.end_offset.0))
                        });
                        (partition, result)
                    })
                    .collect();
                BrokerResponse::EpochEndOffsets(results)
            }
            BrokerRequest::OffsetForTime(queries) => {
                let mut results = Vec::with_capacity(queries.len());
                for (partition, timestamp) in queries {
                    let result = match self.leader_log(&partition) {
                        Ok(log) => offset_for_time(&log, timestamp).await,
                        Err(error) => Err(error),
                    };
                    results.push((partition, result));
                }
                BrokerResponse::OffsetForTime(results)
            }
            BrokerRequest::DeleteRecords(requests) => {
                let mut results = Vec::with_capacity(requests.len());
                for (partition, offset) in requests {
                    let result = match self.leader_log(&partition) {
                        Ok(log) => log
                            .delete_records(offset)
                            .await
                            .map_err(|error| codes::from_engine(&error)),
                        Err(error) => Err(error),
                    };
                    results.push((partition, result));
                }
                BrokerResponse::DeletedRecords(results)
            }
            BrokerRequest::Metadata {
                image,
                table,
                brokers,
            } => {
                self.apply_metadata(Arc::clone(&image), table);
                if let Some(brokers) = brokers {
                    *self.brokers.borrow_mut() = brokers;
                }
                if self.is_clustered() {
                    self.replication.reconcile(&self, &image).await;
                }
                BrokerResponse::MetadataApplied
            }
            BrokerRequest::AdoptConnection(handover) => {
                let connections = self.connections.borrow().clone();
                match connections.filter(|connections| !connections.is_stopping()) {
                    Some(connections) => {
                        let stream = rt::net::TcpStream::adopt(handover.socket);
                        connections.spawn(Rc::clone(&self), stream, Some(handover.first_frame));
                        BrokerResponse::Adopted(true)
                    }
                    // Dropping the handover closes only the duplicate descriptor.
                    None => BrokerResponse::Adopted(false),
                }
            }
            BrokerRequest::Controller(request) => match &self.controller {
                Some(ControllerRole::Single(controller)) => {
                    BrokerResponse::Controller(controller.handle(&self, request).await)
                }
                Some(ControllerRole::Quorum(link)) => {
                    BrokerResponse::Controller(link.handle(&self, request).await)
                }
                None => panic!("controller requests go to shard 0"),
            },
            BrokerRequest::Group(request) => {
                BrokerResponse::Group(self.groups.handle(&self, request).await)
            }
            BrokerRequest::Snapshot(wanted) => {
                BrokerResponse::Snapshot(Box::new(crate::admin::snapshot::take(&self, wanted)))
            }
        }
    }

    /// Replaces this shard's metadata and shard table with newer copies.
    pub fn apply_metadata(&self, image: Arc<MetadataImage>, table: ShardTable) {
        let newer = image.version >= self.metadata.borrow().version || !self.ready.get();
        if newer {
            *self.metadata.borrow_mut() = image;
        }
        self.table.borrow_mut().replace_if_newer(&table);
        if !self.ready.get() {
            self.ready.set(true);
            self.ready_event.notify(usize::MAX);
        }
    }

    /// The log of a partition this broker leads (any hosted one on a single node): the only
    /// one clients may read offsets from or delete records of.
    fn leader_log(&self, partition: &TopicPartition) -> Result<Rc<PartitionLog>, KafkaError> {
        if self.is_clustered() && !self.replication.is_leader(partition) {
            return Err(KafkaError::NotLeaderOrFollower);
        }
        self.log(partition)
    }

    fn log(&self, partition: &TopicPartition) -> Result<Rc<PartitionLog>, KafkaError> {
        self.shard
            .log(partition)
            .map_err(|error| codes::from_engine(&error))
    }

    async fn open_partitions(
        &self,
        partitions: Vec<(TopicPartition, LogConfig)>,
    ) -> PartitionResults<()> {
        let mut results = Vec::with_capacity(partitions.len());
        for (partition, config) in partitions {
            let result = match self.shard.open_partition(&partition, config).await {
                Ok(log) => match rebuild_producer_states(&self.storage, &log).await {
                    Ok(states) => {
                        self.producers
                            .borrow_mut()
                            .insert(partition.clone(), Rc::new(RefCell::new(states)));
                        // In a cluster an offsets partition's groups load when this broker
                        // becomes its leader (`replica`), not when it opens.
                        if partition.topic == OFFSETS_TOPIC && !self.is_clustered() {
                            self.groups
                                .load(partition.partition.0, &log)
                                .await
                                .map_err(|error| codes::from_engine(&error))
                        } else {
                            Ok(())
                        }
                    }
                    Err(error) => Err(codes::from_engine(&error)),
                },
                Err(error) => Err(codes::from_engine(&error)),
            };
            results.push((partition, result));
        }
        results
    }

    /// Appends on the owning shard; in a cluster only as the partition's leader, stamping its
    /// leader epoch, and with acks=all (-1) answering once the high watermark covers the
    /// records (NOT_ENOUGH_REPLICAS before appending if the ISR is below
    /// `min.insync.replicas`, REQUEST_TIMED_OUT if replication takes longer than `timeout`).
    pub async fn produce_replicated(
        self: &Rc<Self>,
        partition: &TopicPartition,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<AppendResult, KafkaError> {
        if !self.is_clustered() {
            return self
                .produce_local(partition, records, SINGLE_NODE_EPOCH)
                .await;
        }
        let acks_all = acks == ACKS_ALL;
        let epoch = self.replication.check_append(partition, acks_all)?;
        let result = self.produce_local(partition, records, epoch).await?;
        self.replication.log_progress(self, partition);
        if acks_all {
            self.replication
                .await_replication(self, partition, result.last_offset + 1, timeout)
                .await?;
        }
        Ok(result)
    }

    /// An append for the group coordinator (`__consumer_offsets`): as the partition's leader,
    /// acknowledged once every ISR member has it (Kafka writes offsets with acks=all).
    pub async fn append_offsets(
        &self,
        log: &PartitionLog,
        batch: &Bytes,
    ) -> Result<(), KafkaError> {
        let partition = log.topic_partition().clone();
        if !self.is_clustered() {
            log.append(batch, SINGLE_NODE_EPOCH)
                .await
                .map_err(|error| codes::from_engine(&error))?;
            return Ok(());
        }
        let Some(this) = self.me.upgrade() else {
            return Err(KafkaError::NotCoordinator);
        };
        let epoch = self
            .replication
            .check_append(&partition, true)
            .map_err(|_| KafkaError::NotCoordinator)?;
        let result = log
            .append(batch, epoch)
            .await
            .map_err(|error| codes::from_engine(&error))?;
        self.replication.log_progress(&this, &partition);
        self.replication
            .await_replication(
                &this,
                &partition,
                result.last_offset + 1,
                OFFSETS_COMMIT_TIMEOUT,
            )
            .await
    }

    /// A follower's append of batches fetched from the leader, kept as they are; the batches'
    /// producer state is recorded so that this broker, once leader, still refuses duplicates.
    /// Returns the records appended.
    pub async fn replicated_append(
        &self,
        partition: &TopicPartition,
        records: &Bytes,
    ) -> Result<i64, KafkaError> {
        let log = self.log(partition)?;
        let appended = log
            .append_replicated(records)
            .await
            .map_err(|error| codes::from_engine(&error))?;
        if appended.record_count > 0 {
            let states = Rc::clone(
                self.producers
                    .borrow_mut()
                    .entry(partition.clone())
                    .or_default(),
            );
            let mut states = states.borrow_mut();
            let (batches, _) =
                ringlog_engine::format::split_whole_batches(records).unwrap_or_default();
            for (_, info) in batches {
                if info.base_offset > appended.last_offset {
                    break;
                }
                states.record(&info, info.base_offset);
            }
        }
        Ok(appended.record_count)
    }

    /// A follower's truncation: the log is cut at `offset` and the producer state rebuilt
    /// from what remains.
    pub async fn truncate_replica(
        &self,
        partition: &TopicPartition,
        offset: i64,
    ) -> Result<(), KafkaError> {
        let log = self.log(partition)?;
        tracing::info!(%partition, from = log.log_end_offset(), to = offset, "truncating");
        log.truncate_to(offset)
            .await
            .map_err(|error| codes::from_engine(&error))?;
        let _ = self
            .storage
            .remove_file(&log.dir().join(PRODUCER_SNAPSHOT_FILE))
            .await;
        let states = rebuild_producer_states(&self.storage, &log)
            .await
            .map_err(|error| codes::from_engine(&error))?;
        self.producers
            .borrow_mut()
            .insert(partition.clone(), Rc::new(RefCell::new(states)));
        Ok(())
    }

    /// Appends on the owning shard, with the idempotent producer's checks inside the log's
    /// append gate so that the check and the append are one step.
    async fn produce_local(
        &self,
        partition: &TopicPartition,
        records: Bytes,
        leader_epoch: i32,
    ) -> Result<AppendResult, KafkaError> {
        let log = self.log(partition)?;
        let states = Rc::clone(
            self.producers
                .borrow_mut()
                .entry(partition.clone())
                .or_default(),
        );
        let gate = |batches: &[(Bytes, BatchInfo)], base_offset: i64| {
            let mut states = states.borrow_mut();
            if let [(_, info)] = batches {
                return match states.check(info) {
                    SequenceCheck::Append => {
                        states.record(info, base_offset);
                        AppendGate::Append
                    }
                    other => AppendGate::Skip(other),
                };
            }
            // Several batches in one record set: all must be new and in order.
            let mut scratch = states.clone();
            let mut offset = base_offset;
            for (_, info) in batches {
                match scratch.check(info) {
                    SequenceCheck::Append => scratch.record(info, offset),
                    SequenceCheck::Duplicate(_) => {
                        return AppendGate::Skip(SequenceCheck::Reject(
                            KafkaError::OutOfOrderSequenceNumber,
                        ))
                    }
                    reject => return AppendGate::Skip(reject),
                }
                offset += i64::from(info.last_offset_delta) + 1;
            }
            *states = scratch;
            AppendGate::Append
        };
        match log.append_gated(&records, leader_epoch, gate).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(SequenceCheck::Duplicate(original))) => {
                // A retry of a batch that may still be on its way to disk: answer once it is.
                log.sync_to(original.last_offset + 1)
                    .await
                    .map_err(|error| codes::from_engine(&error))?;
                Ok(AppendResult {
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                    log_start_offset: log.log_start_offset(),
                    record_count: original.last_offset - original.base_offset + 1,
                    // Not remembered for duplicates; -1 tells the client to use its own time.
                    log_append_time_ms: -1,
                })
            }
            Ok(Err(SequenceCheck::Reject(error))) => Err(error),
            Ok(Err(SequenceCheck::Append)) => unreachable!("the gate never skips to append"),
            Err(error) => Err(codes::from_engine(&error)),
        }
    }

    async fn read_local(
        self: &Rc<Self>,
        read: &ReadSpec,
    ) -> Result<ringlog_engine::log::ReadResult, KafkaError> {
        let log = self.log(&read.partition)?;
        let limit = match read.replica {
            Some((replica, current_leader_epoch)) => {
                let high_watermark = self.replication.follower_fetch(
                    self,
                    &read.partition,
                    replica,
                    current_leader_epoch,
                    read.offset,
                )?;
                let mut result = log
                    .read(read.offset, read.max_bytes, ReadLimit::LogEnd)
                    .await
                    .map_err(|error| codes::from_engine(&error))?;
                result.high_watermark = high_watermark;
                return Ok(result);
            }
            None if self.is_clustered() && !self.replication.is_leader(&read.partition) => {
                return Err(KafkaError::NotLeaderOrFollower)
            }
            None => ReadLimit::HighWatermark,
        };
        log.read(read.offset, read.max_bytes, limit)
            .await
            .map_err(|error| codes::from_engine(&error))
    }

    /// Closes every log (sync, index checkpoint, clean-shutdown marker).
    /// Writes each partition's producer-state snapshot, then closes every log.
    pub async fn shutdown(&self) -> ringlog_engine::Result<()> {
        self.stopping.set(true);
        let producers: Vec<_> = self
            .producers
            .borrow()
            .iter()
            .map(|(partition, states)| (partition.clone(), Rc::clone(states)))
            .collect();
        for (partition, states) in producers {
            let Ok(log) = self.shard.log(&partition) else {
                continue;
            };
            // Nothing appends any more (connections are drained and the bus is closed), so the
            // log end is the offset the state is complete up to.
            let snapshot = states.borrow().to_snapshot(log.log_end_offset());
            let path = log.dir().join(PRODUCER_SNAPSHOT_FILE);
            if let Err(error) = self.storage.write_file_atomic(&path, &snapshot).await {
                tracing::warn!(%partition, %error, "producer-state snapshot not written");
            }
        }
        self.shard.shutdown().await
    }
}

/// The leader epoch a single-node broker writes batches at: leadership never changes.
const SINGLE_NODE_EPOCH: i32 = 0;

/// Produce's `acks` meaning every in-sync replica.
pub const ACKS_ALL: i16 = -1;

/// How long an offset commit waits for the offsets partition's ISR: Kafka's
/// `offsets.commit.timeout.ms` default.
pub const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shard-0 role that serves controller requests.
pub enum ControllerRole {
    /// A single-node cluster: this broker's own controller.
    Single(Controller),
    /// A node of a multi-node cluster: proposals to the controller quorum.
    Quorum(QuorumLink),
}

/// A partition as Metadata and error responses describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// ListOffsets for one partition.
async fn offset_for_time(log: &PartitionLog, timestamp: i64) -> Result<(i64, i64), KafkaError> {
    match timestamp {
        LATEST_TIMESTAMP => Ok((log.high_watermark(), -1)),
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok((log.log_start_offset(), -1)),
        MAX_TIMESTAMP => Ok(log.max_timestamp().unwrap_or((-1, -1))),
        timestamp if timestamp < 0 => Err(KafkaError::InvalidRequest),
        timestamp => match log.offset_for_timestamp(timestamp).await {
            Ok(Some((offset, found))) if offset < log.high_watermark() => Ok((offset, found)),
            Ok(_) => Ok((-1, -1)),
            Err(error) => Err(codes::from_engine(&error)),
        },
    }
}

/// ListOffsets' special timestamps.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

/// Rebuilds a partition's producer state: from its snapshot, if there is a usable one, plus the
/// batches after it; otherwise from all its batches (the batches carry producer id, epoch and
/// sequence, which is what makes producer state survive any restart).
async fn rebuild_producer_states(
    storage: &Storage,
    log: &PartitionLog,
) -> ringlog_engine::Result<ProducerStates> {
    let end = log.log_end_offset();
    let snapshot = storage
        .read_file(&log.dir().join(PRODUCER_SNAPSHOT_FILE))
        .await?
        .and_then(|bytes| ProducerStates::from_snapshot(&bytes))
        // A snapshot past the log end describes batches the log no longer has.
        .filter(|(_, offset)| *offset <= end);
    let (mut states, mut offset) = match snapshot {
        Some((states, offset)) => (states, offset.max(log.log_start_offset())),
        None => (ProducerStates::default(), log.log_start_offset()),
    };
    while offset < end {
        let read = log
            .read(offset, PRODUCER_REBUILD_READ_BYTES, ReadLimit::LogEnd)
            .await?;
        if read.batches.is_empty() {
            break;
        }
        for batch in &read.batches {
            let info = BatchInfo::parse(batch)?;
            states.record(&info, info.base_offset);
        }
        offset = read.next_offset;
        rt::yield_if_needed().await;
    }
    Ok(states)
}
