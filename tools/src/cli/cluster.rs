//! `ringlog cluster info`: the cluster's id, controller and brokers, and how many partitions
//! each broker leads and holds (Kafka metadata); and a Ringlog broker's shards with their
//! partitions, from its admin HTTP API, since the Kafka protocol has no notion of shards.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::admin_http::{AdminApi, AdminError};
use super::client::{Client, Metadata};
use super::output::{print, print_json, Table};
use super::{env_setting, CliResult, Connect};

/// Names the admin API when `--admin-url` does not.
pub const ADMIN_URL_ENV: &str = "RINGLOG_ADMIN_URL";

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller and partitions per broker; with a Ringlog broker's admin API, its
    /// shards and partitions per shard.
    Info {
        #[command(flatten)]
        connect: Connect,

        /// A Ringlog broker's admin HTTP API (`serve --admin-listen`), which shows its shards;
        /// HOST:PORT means http://HOST:PORT. Without it, http://HOST:9644 is tried with HOST
        /// from the first of --brokers, and shards are left out with a note if that does not
        /// answer; a given URL that does not answer is an error
        /// [env: RINGLOG_ADMIN_URL]
        #[arg(long, value_name = "URL")]
        admin_url: Option<String>,
    },
}

#[derive(Debug, Serialize)]
struct Info {
    cluster_id: Option<String>,
    controller: i32,
    brokers: Vec<Broker>,
    topics: usize,
    partitions: usize,
    /// The admin API asked for shards.
    admin_url: String,
    /// The shards of the broker behind `admin_url`; `None` when it did not tell.
    shards: Option<Vec<Shard>>,
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

/// A shard of a broker, as `/api/v1/shards` describes it (the fields shown here; the answer
/// has more).
#[derive(Debug, Deserialize)]
struct AdminShard {
    shard: u16,
    serving: bool,
    partitions: u64,
    partitions_offline: u64,
    connections: u64,
    disk_bytes: u64,
}

/// The broker behind an admin API, as `/api/v1/brokers` describes it.
#[derive(Debug, Deserialize)]
struct AdminBroker {
    node_id: i32,
    port: i32,
}

#[derive(Debug, Serialize)]
struct Shard {
    node_id: i32,
    shard: u16,
    serving: bool,
    /// Partitions the shard owns, offline ones included.
    partitions: u64,
    partitions_offline: u64,
    connections: u64,
    disk_bytes: u64,
}

pub fn run(command: ClusterCommand) -> CliResult {
    match command {
        ClusterCommand::Info { connect, admin_url } => info(&connect, admin_url),
    }
}

/// The admin API to ask for shards, and whether the user named it (flag, then environment,
/// unless empty) or it is a guess from the first bootstrap broker.
fn admin_api(flag: Option<String>, connect: &Connect) -> CliResult<(AdminApi, bool)> {
    let given = match flag {
        Some(url) => Some(url),
        None => env_setting(ADMIN_URL_ENV)?,
    };
    Ok(match given {
        Some(url) => (AdminApi::new(&url), true),
        None => {
            let addresses = connect.addresses()?;
            let first = addresses.first().map_or("", String::as_str);
            (AdminApi::guess(first), false)
        }
    })
}

/// The shards of the broker behind `api`, which must be one of the cluster's brokers: a guessed
/// address may reach another broker on the same host.
fn shards(api: &AdminApi, metadata: &Metadata) -> Result<Vec<Shard>, AdminError> {
    let brokers: Vec<AdminBroker> = api.get("/api/v1/brokers")?;
    let [broker] = brokers.as_slice() else {
        return Err(AdminError::failed(format!(
            "{}/api/v1/brokers names {} brokers, not the one it runs on",
            api.url(),
            brokers.len()
        )));
    };
    let known = metadata
        .brokers
        .iter()
        .any(|member| member.node_id == broker.node_id && member.port == broker.port);
    if !known {
        return Err(AdminError::failed(format!(
            "the admin API at {} is broker {} with Kafka port {}, not a broker of this cluster",
            api.url(),
            broker.node_id,
            broker.port
        )));
    }
    let shards: Vec<AdminShard> = api.get("/api/v1/shards")?;
    Ok(shards
        .into_iter()
        .map(|shard| Shard {
            node_id: broker.node_id,
            shard: shard.shard,
            serving: shard.serving,
            partitions: shard.partitions,
            partitions_offline: shard.partitions_offline,
            connections: shard.connections,
            disk_bytes: shard.disk_bytes,
        })
        .collect())
}

fn info(connect: &Connect, admin_url: Option<String>) -> CliResult {
    let (api, given) = admin_api(admin_url, connect)?;
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
    let shards = match shards(&api, &metadata) {
        Ok(shards) => Some(shards),
        Err(error) if given => {
            return Err(error.into_cli(format!(
                "--admin-url (or {ADMIN_URL_ENV}) must name a Ringlog broker's admin port \
                 (`ringlog serve --admin-listen`, default 127.0.0.1:9644) of this cluster"
            )))
        }
        Err(error) => {
            eprintln!(
                "ringlog: note: shards unknown ({}); point --admin-url at a Ringlog broker's \
                 admin port to show them",
                error.message
            );
            None
        }
    };
    let info = Info {
        cluster_id: metadata.cluster_id.clone(),
        controller: metadata.controller,
        brokers,
        topics: metadata.topics.len(),
        partitions,
        admin_url: api.url().to_string(),
        shards,
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
    if let Some(shards) = &info.shards {
        let mut table = Table::new(&[
            "BROKER",
            "SHARD",
            "SERVING",
            "PARTITIONS",
            "CONNECTIONS",
            "DISK-BYTES",
        ]);
        for shard in shards {
            table.row(vec![
                shard.node_id.to_string(),
                shard.shard.to_string(),
                if shard.serving { "yes" } else { "no" }.to_string(),
                shard.partitions.to_string(),
                shard.connections.to_string(),
                shard.disk_bytes.to_string(),
            ]);
        }
        text.push('\n');
        text.push_str(&table.render());
    }
    print(&text)
}
