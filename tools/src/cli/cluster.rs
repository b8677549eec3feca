//! `ringlog cluster info`: the cluster's id, controller and brokers, and how many partitions
//! each broker leads and holds.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde::Serialize;

use super::client::Client;
use super::output::{print, print_json, Table};
use super::{CliResult, Connect};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller, and partitions per broker.
    Info {
        #[command(flatten)]
        connect: Connect,
    },
}

#[derive(Debug, Serialize)]
struct Info {
    cluster_id: Option<String>,
    controller: i32,
    brokers: Vec<Broker>,
    topics: usize,
    partitions: usize,
}

#[derive(Debug, Serialize)]
struct Broker {
    node_id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
    controller: bool,
    /// Partitions this broker leads.
    leader_partitions: usize,
    /// Partitions with a replica on this broker.
    replica_partitions: usize,
}

pub fn run(command: ClusterCommand) -> CliResult {
    match command {
        ClusterCommand::Info { connect } => info(&connect),
    }
}

fn info(connect: &Connect) -> CliResult {
    let mut client = Client::connect(connect)?;
    let metadata = client.metadata(None)?;
    let mut leading: BTreeMap<i32, usize> = BTreeMap::new();
    let mut holding: BTreeMap<i32, usize> = BTreeMap::new();
    let mut partitions = 0;
    for topic in &metadata.topics {
        for partition in &topic.partitions {
            partitions += 1;
            *leading.entry(partition.leader).or_default() += 1;
            for replica in &partition.replicas {
                *holding.entry(*replica).or_default() += 1;
            }
        }
    }
    let mut brokers: Vec<Broker> = metadata
        .brokers
        .iter()
        .map(|broker| Broker {
            node_id: broker.node_id,
            host: broker.host.clone(),
            port: broker.port,
            rack: broker.rack.clone(),
            controller: broker.node_id == metadata.controller,
            leader_partitions: leading.get(&broker.node_id).copied().unwrap_or(0),
            replica_partitions: holding.get(&broker.node_id).copied().unwrap_or(0),
        })
        .collect();
    brokers.sort_by_key(|broker| broker.node_id);
    let info = Info {
        cluster_id: metadata.cluster_id.clone(),
        controller: metadata.controller,
        brokers,
        topics: metadata.topics.len(),
        partitions,
    };
    if connect.json {
        return print_json(&info);
    }
    let mut text = format!(
        "CLUSTER     {}\nCONTROLLER  {}\nTOPICS      {}\nPARTITIONS  {}\n\n",
        info.cluster_id.as_deref().unwrap_or("-"),
        info.controller,
        info.topics,
        info.partitions
    );
    let mut table = Table::new(&[
        "ID",
        "HOST",
        "PORT",
        "RACK",
        "LEADER-PARTITIONS",
        "REPLICAS",
    ]);
    for broker in &info.brokers {
        let id = if broker.controller {
            format!("{}*", broker.node_id)
        } else {
            broker.node_id.to_string()
        };
        table.row(vec![
            id,
            broker.host.clone(),
            broker.port.to_string(),
            broker.rack.clone().unwrap_or_else(|| "-".into()),
            broker.leader_partitions.to_string(),
            broker.replica_partitions.to_string(),
        ]);
    }
    text.push_str(&table.render());
    print(&text)
}
