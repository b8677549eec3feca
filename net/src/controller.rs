//! The single-node controller, on shard 0: owns the cluster metadata, persists every change to
//! `<data-dir>/cluster-metadata.json` before it takes effect, places new partitions on shards,
//! opens them on their owners and sends every shard the new metadata and shard table. One
//! command at a time. The metadata rules themselves are `ringlog_cluster::metadata`'s; the
//! replicated controller of the cluster issue will replace this file, not those rules.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ringlog_cluster::metadata::new_cluster_id;
use ringlog_cluster::MetadataImage;
use ringlog_engine::rt::fs::Storage;
use ringlog_engine::shard::table::{ShardTable, ShardTableUpdate};
use ringlog_engine::{ShardId, TopicPartition};

use crate::broker::Broker;
use crate::codes::KafkaError;
use crate::groups::storage::{OFFSETS_PARTITION_COUNT, OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIGS};
use crate::messages::{
    BrokerRequest, BrokerResponse, ControllerRequest, ControllerResponse, Refusal,
};

/// The metadata file's name in the data directory.
pub const METADATA_FILE: &str = "cluster-metadata.json";

/// Shard 0 only.
pub struct Controller {
    storage: Storage,
    path: PathBuf,
    state: RefCell<State>,
    /// One command at a time: each is validated, persisted and applied before the next.
    turn: async_lock::Mutex<()>,
}

struct State {
    image: MetadataImage,
    table: ShardTable,
}

impl Controller {
    /// Loads the metadata (or starts a new cluster) and places every partition on a shard.
    pub async fn load(
        storage: Storage,
        data_dir: PathBuf,
        shard_count: usize,
    ) -> ringlog_engine::Result<Controller> {
        let path = data_dir.join(METADATA_FILE);
        let image = match storage.read_file(&path).await? {
            Some(bytes) => MetadataImage::from_json(&bytes).map_err(|reason| {
                ringlog_engine::Error::Corrupt {
                    path: path.clone(),
                    position: 0,
                    reason,
                }
            })?,
            None => {
                let image = MetadataImage::new(new_cluster_id());
                storage.write_file_atomic(&path, &image.to_json()).await?;
                image
            }
        };
        let mut table = ShardTable::new(shard_count);
        let partitions: Vec<TopicPartition> = image
            .topics
            .iter()
            .flat_map(|(name, topic)| {
                (0..topic.partition_count)
                    .map(move |index| TopicPartition::new(name.clone(), index))
            })
            .collect();
        place(&mut table, &partitions);
        Ok(Controller {
            storage,
            path,
            state: RefCell::new(State { image, table }),
            turn: async_lock::Mutex::new(()),
        })
    }

    /// Opens every partition on its shard and gives every shard the metadata: the broker's
    /// start. Partitions that fail to open are reported and stay offline.
    pub async fn bootstrap(&self, broker: &Broker) {
        let _turn = self.turn.lock().await;
        let (image, table) = self.snapshot();
        let partitions: Vec<TopicPartition> =
            table.assignments().map(|(tp, _)| tp.clone()).collect();
        open_on_owners(broker, &image, &table, partitions).await;
        if image.topic(OFFSETS_TOPIC).is_none() {
            self.create_offsets_topic(broker).await;
        }
        self.broadcast(broker).await;
    }

    /// Creates the internal `__consumer_offsets` topic (consumer groups live there); without it
    /// the broker still serves everything else, and group requests get COORDINATOR_NOT_AVAILABLE.
    async fn create_offsets_topic(&self, broker: &Broker) {
        let mut next = self.state.borrow().image.clone();
        let configs: BTreeMap<String, String> = OFFSETS_TOPIC_CONFIGS
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        if let Err(error) = next.check_create_topic(
            OFFSETS_TOPIC,
            OFFSETS_PARTITION_COUNT,
            1,
            &configs,
            &broker.config.topic_defaults,
        ) {
            tracing::error!(%error, "cannot create {OFFSETS_TOPIC}");
            return;
        }
        next.create_topic(
            OFFSETS_TOPIC,
            OFFSETS_PARTITION_COUNT,
            configs,
            new_topic_id(),
        );
        let created = (0..OFFSETS_PARTITION_COUNT)
            .map(|index| TopicPartition::new(OFFSETS_TOPIC.to_string(), index))
            .collect();
        if let Err(error) = self.commit(broker, next, created, Vec::new()).await {
            tracing::error!(?error, "cannot create {OFFSETS_TOPIC}");
        }
    }

    fn snapshot(&self) -> (Arc<MetadataImage>, ShardTable) {
        let state = self.state.borrow();
        (Arc::new(state.image.clone()), state.table.clone())
    }

    async fn persist(&self, image: &MetadataImage) -> Result<(), KafkaError> {
        self.storage
            .write_file_atomic(&self.path, &image.to_json())
            .await
            .map_err(|error| {
                tracing::error!(%error, "cannot persist cluster metadata");
                KafkaError::KafkaStorageError
            })
    }

    async fn broadcast(&self, broker: &Broker) {
        let (image, table) = self.snapshot();
        let shard_count = table.shard_count();
        let calls = (0..shard_count)
            .map(|index| {
                let request = BrokerRequest::Metadata {
                    image: Arc::clone(&image),
                    table: table.clone(),
                    brokers: None,
                };
                (ShardId(index as u16), request)
            })
            .collect();
        broker.call_each(calls).await;
    }

    /// Serves one controller command.
    pub async fn handle(&self, broker: &Broker, request: ControllerRequest) -> ControllerResponse {
        let _turn = self.turn.lock().await;
        match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut results = Vec::with_capacity(topics.len());
                let mut next = self.state.borrow().image.clone();
                let mut created = Vec::new();
                for spec in topics {
                    let check = next.check_create_topic(
                        &spec.name,
                        spec.partition_count,
                        spec.replication_factor,
                        &spec.configs,
                        &broker.config.topic_defaults,
                    );
                    if let Err(error) = check {
                        results.push(Err(Refusal::from(error)));
                        continue;
                    }
                    let topic_id = new_topic_id();
                    if !validate_only {
                        next.create_topic(&spec.name, spec.partition_count, spec.configs, topic_id);
                        created.extend(
                            (0..spec.partition_count)
                                .map(|index| TopicPartition::new(spec.name.clone(), index)),
                        );
                    }
                    results.push(Ok((topic_id, spec.partition_count)));
                }
                if !created.is_empty() {
                    if let Err(error) = self.commit(broker, next, created, Vec::new()).await {
                        return ControllerResponse::CreateTopics(
                            results
                                .into_iter()
                                .map(|_| Err(storage_failed(error)))
                                .collect(),
                        );
                    }
                }
                ControllerResponse::CreateTopics(results)
            }
            ControllerRequest::DeleteTopics { names } => {
                let mut next = self.state.borrow().image.clone();
                let mut removed = Vec::new();
                let results: Vec<_> = names
                    .iter()
                    .map(|name| {
                        let topic = next.delete_topic(name).map_err(Refusal::from)?;
                        removed.extend(
                            (0..topic.partition_count)
                                .map(|index| TopicPartition::new(name.clone(), index)),
                        );
                        Ok(())
                    })
                    .collect();
                if !removed.is_empty() {
                    let owners = {
                        let state = self.state.borrow();
                        state.table.group_items_by_shard(removed.clone(), |tp| tp)
                    };
                    if let Err(error) = self.commit(broker, next, Vec::new(), removed).await {
                        return ControllerResponse::Topics(
                            results
                                .into_iter()
                                .map(|_| Err(storage_failed(error)))
                                .collect(),
                        );
                    }
                    let calls = owners
                        .by_shard
                        .into_iter()
                        .map(|(shard, partitions)| (shard, BrokerRequest::Delete(partitions)))
                        .collect();
                    broker.call_each(calls).await;
                }
                ControllerResponse::Topics(results)
            }
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
            } => {
                let mut next = self.state.borrow().image.clone();
                let mut created = Vec::new();
                let results: Vec<_> = topics
                    .iter()
                    .map(|(name, count)| {
                        let old = if validate_only {
                            next.check_create_partitions(name, *count)
                        } else {
                            next.create_partitions(name, *count)
                        }
                        .map_err(Refusal::from)?;
                        if !validate_only {
                            created.extend(
                                (old..*count).map(|index| TopicPartition::new(name.clone(), index)),
                            );
                        }
                        Ok(())
                    })
                    .collect();
                if !created.is_empty() {
                    if let Err(error) = self.commit(broker, next, created, Vec::new()).await {
                        return ControllerResponse::Topics(
                            results
                                .into_iter()
                                .map(|_| Err(storage_failed(error)))
                                .collect(),
                        );
                    }
                }
                ControllerResponse::Topics(results)
            }
            ControllerRequest::AlterConfigs {
                topics,
                incremental,
                validate_only,
            } => {
                let mut next = self.state.borrow().image.clone();
                let mut changed = Vec::new();
                let results: Vec<_> = topics
                    .iter()
                    .map(|(name, changes)| {
                        let configs = next
                            .altered_configs(
                                name,
                                changes,
                                incremental,
                                &broker.config.topic_defaults,
                            )
                            .map_err(Refusal::from)?;
                        if !validate_only {
                            next.set_configs(name, configs);
                            changed.push(name.clone());
                        }
                        Ok(())
                    })
                    .collect();
                if !changed.is_empty() {
                    if let Err(error) = self
                        .commit(broker, next.clone(), Vec::new(), Vec::new())
                        .await
                    {
                        return ControllerResponse::Topics(
                            results
                                .into_iter()
                                .map(|_| Err(storage_failed(error)))
                                .collect(),
                        );
                    }
                    self.push_configs(broker, &next, &changed).await;
                }
                ControllerResponse::Topics(results)
            }
            // The ElectLeaders handler answers a single node itself; nothing to elect here.
            ControllerRequest::ElectLeaders { partitions, .. } => ControllerResponse::Elections(
                partitions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(topic, partition)| {
                        (topic, partition, Err(KafkaError::ElectionNotNeeded))
                    })
                    .collect(),
            ),
            ControllerRequest::AllocateProducerId => {
                let mut next = self.state.borrow().image.clone();
                let id = next.allocate_producer_id();
                match self.persist(&next).await {
                    Ok(()) => {
                        self.state.borrow_mut().image = next;
                        ControllerResponse::ProducerId(Ok(id))
                    }
                    Err(error) => ControllerResponse::ProducerId(Err(error)),
                }
            }
        }
    }

    /// Persists `next`, places and opens `created` partitions, drops `removed` ones from the
    /// table, and sends every shard the result.
    async fn commit(
        &self,
        broker: &Broker,
        next: MetadataImage,
        created: Vec<TopicPartition>,
        removed: Vec<TopicPartition>,
    ) -> Result<(), KafkaError> {
        self.persist(&next).await?;
        let table = {
            let mut state = self.state.borrow_mut();
            state.image = next;
            if !removed.is_empty() {
                let update = ShardTableUpdate {
                    version: state.table.version() + 1,
                    assign: Vec::new(),
                    remove: removed,
                };
                let _ = state.table.apply(&update);
            }
            place(&mut state.table, &created);
            state.table.clone()
        };
        let image = self.state.borrow().image.clone();
        open_on_owners(broker, &image, &table, created).await;
        self.broadcast(broker).await;
        Ok(())
    }

    /// Sends changed topics' effective configs to the shards owning their partitions.
    async fn push_configs(&self, broker: &Broker, image: &MetadataImage, topics: &[String]) {
        let table = self.state.borrow().table.clone();
        let mut partitions = Vec::new();
        for name in topics {
            let config = broker.log_config(image, name);
            if let Some(topic) = image.topic(name) {
                for index in 0..topic.partition_count {
                    partitions.push((TopicPartition::new(name.clone(), index), config.clone()));
                }
            }
        }
        let groups = table.group_items_by_shard(partitions, |(tp, _)| tp);
        let calls = groups
            .by_shard
            .into_iter()
            .map(|(shard, partitions)| (shard, BrokerRequest::SetConfigs(partitions)))
            .collect();
        broker.call_each(calls).await;
    }
}

/// Opens `partitions` on the shards `table` gives them, with their topics' configs from
/// `image`; a partition that does not open is logged and stays offline.
pub(crate) async fn open_on_owners(
    broker: &Broker,
    image: &MetadataImage,
    table: &ShardTable,
    partitions: Vec<TopicPartition>,
) {
    let groups = table.group_items_by_shard(partitions, |tp| tp);
    let calls = groups
        .by_shard
        .into_iter()
        .map(|(shard, partitions)| {
            let with_configs = partitions
                .into_iter()
                .map(|tp| {
                    let config = broker.log_config(image, &tp.topic);
                    (tp, config)
                })
                .collect();
            (shard, BrokerRequest::Open(with_configs))
        })
        .collect();
    for response in broker.call_each(calls).await {
        if let Some(BrokerResponse::Done(results)) = response {
            for (partition, result) in results {
                if let Err(error) = result {
                    tracing::error!(%partition, ?error, "partition did not open");
                }
            }
        }
    }
}

/// Places `partitions` one by one on the shard with the fewest, as versioned updates.
fn place(table: &mut ShardTable, partitions: &[TopicPartition]) {
    for partition in partitions {
        let shard = table.place(partition);
        let update = ShardTableUpdate {
            version: table.version() + 1,
            assign: vec![(partition.clone(), shard)],
            remove: Vec::new(),
        };
        let _ = table.apply(&update);
    }
}

fn storage_failed(error: KafkaError) -> Refusal {
    Refusal {
        error,
        message: "the cluster metadata could not be persisted".into(),
    }
}

fn new_topic_id() -> u128 {
    // Kafka reserves the all-zero UUID and the one with value 1.
    loop {
        let id = fastrand::u128(..);
        if id > 1 {
            return id;
        }
    }
}
