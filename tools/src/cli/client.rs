//! The client subcommands' view of a cluster: one bootstrap connection (the first broker of
//! `--brokers` that answers), fresh metadata, and a connection per broker, opened when a request
//! must go to that broker (a partition's leader, a group's coordinator, the controller).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestKind, ResponseKind, TopicName,
};
use ringlog_net::client::{group, text, wrong_kind, Connection};

use super::{CliError, CliResult, Connect, CLIENT_ID};

/// Metadata versions asked for: v1 is the first with the controller id, v12 the last this
/// client's decoding needs (v13 only adds a top-level error code).
const METADATA_VERSIONS: RangeInclusive<i16> = 1..=12;

/// A topic's partitions as metadata describes them.
#[derive(Clone, Debug)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A topic as metadata describes it.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub name: String,
    pub internal: bool,
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// A broker as metadata describes it.
#[derive(Clone, Debug)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What Metadata said.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

impl Metadata {
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|topic| topic.name == name)
    }
}

/// A cluster, reached through its bootstrap brokers.
pub struct Client {
    bootstrap: Connection,
    /// Connections by broker address, the bootstrap one excluded.
    connections: BTreeMap<String, Connection>,
    brokers: BTreeMap<i32, String>,
    controller: i32,
}

impl Client {
    /// Connects to the first of the bootstrap brokers that answers.
    pub fn connect(connect: &Connect) -> CliResult<Client> {
        let addresses = connect.addresses()?;
        let mut last_error = None;
        for address in &addresses {
            match Connection::connect(address, CLIENT_ID) {
                Ok(bootstrap) => {
                    return Ok(Client {
                        bootstrap,
                        connections: BTreeMap::new(),
                        brokers: BTreeMap::new(),
                        controller: -1,
                    })
                }
                Err(error) => last_error = Some(error),
            }
        }
        let error = CliError::from_client(last_error.expect("at least one address was tried"));
        if addresses.len() == 1 {
            Err(error)
        } else {
            Err(CliError {
                message: format!(
                    "none of the {} brokers answered; the last: {}",
                    addresses.len(),
                    error.message
                ),
                ..error
            })
        }
    }

    /// Sends `request` to the bootstrap broker.
    pub fn call(
        &mut self,
        key: ApiKey,
        versions: RangeInclusive<i16>,
        request: RequestKind,
    ) -> CliResult<(i16, ResponseKind)> {
        Ok(self.bootstrap.call(key, versions, request)?)
    }

    pub fn bootstrap(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    /// Metadata for `topics`, or for every topic when `None`.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> CliResult<Metadata> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|topics| {
                topics
                    .iter()
                    .map(|topic| {
                        MetadataRequestTopic::default().with_name(Some(TopicName(text(topic))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let (_, response) = self.call(
            ApiKey::Metadata,
            METADATA_VERSIONS,
            RequestKind::Metadata(request),
        )?;
        let ResponseKind::Metadata(response) = response else {
            return Err(wrong_kind(ApiKey::Metadata).into());
        };
        let metadata = convert(response);
        self.brokers = metadata
            .brokers
            .iter()
            .map(|broker| (broker.node_id, broker.address()))
            .collect();
        self.controller = metadata.controller;
        Ok(metadata)
    }

    /// The connection to broker `node_id` (known from the last metadata).
    pub fn node(&mut self, node_id: i32) -> CliResult<&mut Connection> {
        let address = self.brokers.get(&node_id).cloned().ok_or_else(|| {
            CliError::failed(format!("broker {node_id} is not in the cluster's metadata"))
        })?;
        self.at(&address)
    }

    /// The connection to the broker at `address`, opened on first use.
    pub fn at(&mut self, address: &str) -> CliResult<&mut Connection> {
        if address == self.bootstrap.peer() {
            return Ok(&mut self.bootstrap);
        }
        if !self.connections.contains_key(address) {
            let connection = Connection::connect(address, CLIENT_ID)?;
            self.connections.insert(address.to_string(), connection);
        }
        Ok(self
            .connections
            .get_mut(address)
            .expect("the connection was just inserted"))
    }

    /// The connection to the controller, for topic changes: Kafka brokers before KRaft accept
    /// them only there, and any broker forwards them since. Falls back to the bootstrap broker
    /// when metadata names no controller.
    pub fn controller(&mut self) -> CliResult<&mut Connection> {
        if self.brokers.is_empty() {
            self.metadata(Some(&[]))?;
        }
        if self.controller >= 0 && self.brokers.contains_key(&self.controller) {
            let controller = self.controller;
            self.node(controller)
        } else {
            Ok(&mut self.bootstrap)
        }
    }

    /// The connection to `group_id`'s coordinator.
    pub fn coordinator(&mut self, group_id: &str) -> CliResult<&mut Connection> {
        let address = group::find_coordinator(&mut self.bootstrap, group_id)?;
        self.at(&address)
    }
}

fn convert(response: MetadataResponse) -> Metadata {
    Metadata {
        cluster_id: response.cluster_id.map(|id| id.to_string()),
        controller: response.controller_id.0,
        brokers: response
            .brokers
            .iter()
            .map(|broker| BrokerInfo {
                node_id: broker.node_id.0,
                host: broker.host.to_string(),
                port: broker.port,
                rack: broker.rack.as_ref().map(|rack| rack.to_string()),
            })
            .collect(),
        topics: response
            .topics
            .iter()
            .map(|topic| {
                let mut partitions: Vec<PartitionInfo> = topic
                    .partitions
                    .iter()
                    .map(|partition| PartitionInfo {
                        partition: partition.partition_index,
                        leader: partition.leader_id.0,
                        leader_epoch: partition.leader_epoch,
                        replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                        isr: partition.isr_nodes.iter().map(|id| id.0).collect(),
                    })
                    .collect();
                partitions.sort_by_key(|partition| partition.partition);
                TopicInfo {
                    name: topic
                        .name
                        .as_ref()
                        .map_or_else(String::new, |name| name.0.to_string()),
                    internal: topic.is_internal,
                    error_code: topic.error_code,
                    partitions,
                }
            })
            .collect(),
    }
}
