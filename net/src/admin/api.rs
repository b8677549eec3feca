//! The admin endpoints: each gathers what it needs from every shard, one bus message per shard
//! per request ([`super::snapshot::take`] runs on the shard that owns the data), and answers JSON, or
//! the Prometheus text for `/metrics`.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use ringlog_engine::metrics::{HistogramSnapshot, LATENCY_BUCKET_BOUNDS_US};
use ringlog_engine::rt;
use ringlog_engine::ShardId;
use serde_json::{json, Value};

use super::http::{Endpoint, Response, Status, CONTENT_TYPE_PROMETHEUS};
use super::snapshot::{ShardSnapshot, SnapshotWanted};
use super::{console, prometheus};
use crate::broker::Broker;
use crate::messages::{BrokerRequest, BrokerResponse};

/// How long an admin request waits for every shard's snapshot. A snapshot is a walk over the
/// shard's partitions and groups with no I/O, answered in microseconds; a shard that takes
/// seconds is stuck or stopping, and the scrape should fail rather than hang.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers one admin request.
pub async fn respond(broker: &Rc<Broker>, endpoint: Endpoint) -> Response {
    match endpoint {
        Endpoint::Health => Response::json(Status::Ok, &json!({ "status": "ok" })),
        Endpoint::Ready => ready(broker).await,
        Endpoint::Brokers => brokers(broker),
        Endpoint::Topics => topics(broker),
        Endpoint::Metrics => {
            let wanted = SnapshotWanted {
                metrics: true,
                ..SnapshotWanted::default()
            };
            match gather(broker, wanted).await {
                Ok(shards) => Response {
                    status: Status::Ok,
                    content_type: CONTENT_TYPE_PROMETHEUS,
                    headers: &[],
                    body: prometheus::render(&shards).into_bytes(),
                },
                Err(response) => response,
            }
        }
        Endpoint::Partitions => partitions(broker).await,
        Endpoint::Shards => shards(broker).await,
        Endpoint::Groups => groups(broker).await,
        Endpoint::Console(asset) => console::response(asset),
    }
}

/// How many shards the broker runs.
fn shard_count(broker: &Broker) -> usize {
    broker.table().shard_count()
}

/// Every shard's snapshot, in shard order; a 503 naming the shards that did not answer.
async fn gather(
    broker: &Rc<Broker>,
    wanted: SnapshotWanted,
) -> Result<Vec<ShardSnapshot>, Response> {
    let shards = shard_count(broker);
    let calls = (0..shards)
        .map(|shard| (ShardId(shard as u16), BrokerRequest::Snapshot(wanted)))
        .collect();
    let Some(responses) = rt::timeout(GATHER_TIMEOUT, broker.call_each(calls)).await else {
        return Err(Response::error(
            Status::ServiceUnavailable,
            &format!("the shards did not answer within {GATHER_TIMEOUT:?}"),
        ));
    };
    let mut snapshots = Vec::with_capacity(shards);
    let mut missing = Vec::new();
    for (shard, response) in responses.into_iter().enumerate() {
        match response {
            Some(BrokerResponse::Snapshot(snapshot)) => snapshots.push(*snapshot),
            _ => missing.push(shard.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(snapshots)
    } else {
        Err(Response::error(
            Status::ServiceUnavailable,
            &format!("shard(s) {} did not answer", missing.join(", ")),
        ))
    }
}

/// 200 once every shard has its metadata and accepts Kafka connections, else 503.
async fn ready(broker: &Rc<Broker>) -> Response {
    let shards = gather(broker, SnapshotWanted::default()).await;
    let (ready, states): (bool, Vec<Value>) = match &shards {
        Ok(shards) => (
            shards.iter().all(|shard| shard.serving),
            shards
                .iter()
                .map(|shard| json!({ "shard": shard.shard, "serving": shard.serving }))
                .collect(),
        ),
        Err(_) => (false, Vec::new()),
    };
    let status = if ready {
        Status::Ok
    } else {
        Status::ServiceUnavailable
    };
    Response::json(status, &json!({ "ready": ready, "shards": states }))
}

fn brokers(broker: &Broker) -> Response {
    let (host, port) = broker.config.advertised();
    Response::json(
        Status::Ok,
        &json!([{
            "node_id": broker.config.node_id,
            "host": host,
            "port": port,
            // Racks arrive with the cluster layer; a single node has none.
            "rack": Value::Null,
            "shards": shard_count(broker),
            "listen": broker.config.listen.to_string(),
            "admin_listen": broker.config.admin_listen.map(|address| address.to_string()),
        }]),
    )
}

fn topics(broker: &Broker) -> Response {
    let image = broker.metadata();
    let topics: Vec<Value> = image
        .topics
        .iter()
        .map(|(name, topic)| {
            json!({
                "name": name,
                "topic_id": format!("{}", uuid::Uuid::from_u128(topic.topic_id)),
                "partitions": topic.partition_count,
                "replication_factor": 1,
                "internal": name.starts_with("__"),
                // Overrides only: the rest are the broker's defaults.
                "configs": topic.configs,
            })
        })
        .collect();
    Response::json(Status::Ok, &Value::Array(topics))
}

async fn partitions(broker: &Rc<Broker>) -> Response {
    let wanted = SnapshotWanted {
        partitions: true,
        ..SnapshotWanted::default()
    };
    match gather(broker, wanted).await {
        Ok(shards) => {
            let mut partitions: Vec<_> = shards
                .into_iter()
                .flat_map(|shard| shard.partitions)
                .collect();
            partitions.sort_by(|left, right| {
                (&left.topic, left.partition).cmp(&(&right.topic, right.partition))
            });
            Response::json(Status::Ok, &json!(partitions))
        }
        Err(response) => response,
    }
}

async fn shards(broker: &Rc<Broker>) -> Response {
    let wanted = SnapshotWanted {
        metrics: true,
        ..SnapshotWanted::default()
    };
    match gather(broker, wanted).await {
        Ok(shards) => {
            let shards: Vec<Value> = shards
                .iter()
                .filter_map(|shard| {
                    let metrics = shard.metrics.as_ref()?;
                    let requests: u64 = metrics
                        .broker
                        .requests
                        .iter()
                        .map(|(_, _, count)| count)
                        .sum();
                    Some(json!({
                        "shard": shard.shard,
                        "serving": shard.serving,
                        "partitions": metrics.partitions_online + metrics.partitions_offline,
                        "partitions_offline": metrics.partitions_offline,
                        "connections": metrics.connections,
                        "disk_bytes": metrics.disk_bytes,
                        "bytes_in": metrics.broker.bytes_in,
                        "bytes_out": metrics.broker.bytes_out,
                        "messages_in": metrics.broker.records_in,
                        "messages_out": metrics.broker.records_out,
                        "requests": requests,
                        "batch_cache_hits": metrics.cache.hits,
                        "batch_cache_misses": metrics.cache.misses,
                        "batch_cache_bytes": metrics.cache.used_bytes,
                        "bus_messages_sent": metrics.bus.messages_sent,
                        "bus_messages_received": metrics.bus.messages_received,
                        "produce_latency": histogram(&metrics.broker.produce_latency),
                        "fetch_latency": histogram(&metrics.broker.fetch_latency),
                        "fsync_latency": histogram(&metrics.fsync_latency),
                    }))
                })
                .collect();
            Response::json(Status::Ok, &Value::Array(shards))
        }
        Err(response) => response,
    }
}

/// A latency histogram as the shards endpoint shows it: each bucket's upper bound in
/// microseconds (`null` for the last, unbounded one) and the samples in it since the broker
/// started, not cumulative; the difference between two reads gives the interval's quantiles.
fn histogram(snapshot: &HistogramSnapshot) -> Value {
    let bounds: Vec<Option<u64>> = (0..snapshot.counts.len())
        .map(|index| LATENCY_BUCKET_BOUNDS_US.get(index).copied())
        .collect();
    json!({
        "bucket_bounds_us": bounds,
        "counts": snapshot.counts,
        "sum_us": snapshot.sum_us,
    })
}

/// Groups with each committed offset's lag against the partition's high watermark, from one
/// gather of every shard's partitions and groups.
async fn groups(broker: &Rc<Broker>) -> Response {
    let wanted = SnapshotWanted {
        partitions: true,
        groups: true,
        ..SnapshotWanted::default()
    };
    match gather(broker, wanted).await {
        Ok(shards) => {
            let high_watermarks: HashMap<(String, i32), i64> = shards
                .iter()
                .flat_map(|shard| shard.partitions.iter())
                .filter_map(|partition| {
                    Some((
                        (partition.topic.clone(), partition.partition),
                        partition.high_watermark?,
                    ))
                })
                .collect();
            let mut groups: Vec<_> = shards.into_iter().flat_map(|shard| shard.groups).collect();
            for group in &mut groups {
                for committed in &mut group.offsets {
                    let key = (committed.topic.clone(), committed.partition);
                    committed.high_watermark = high_watermarks.get(&key).copied();
                    committed.lag = committed
                        .high_watermark
                        .map(|high_watermark| high_watermark - committed.committed_offset);
                }
            }
            groups.sort_by(|left, right| left.group_id.cmp(&right.group_id));
            Response::json(Status::Ok, &json!(groups))
        }
        Err(response) => response,
    }
}
