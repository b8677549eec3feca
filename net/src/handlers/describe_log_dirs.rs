//! DescribeLogDirs: the broker's one log directory (the data directory), the size of each
//! partition in it as its owning shard reports, and (v4) the size and free space of its
//! filesystem.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use ringlog_engine::TopicPartition;

use super::str_bytes;
use crate::broker::Broker;
use crate::codes::NONE;
use crate::messages::{BrokerRequest, BrokerResponse};

/// `total_bytes` / `usable_bytes` when the filesystem cannot be asked (Kafka's default).
const BYTES_UNKNOWN: i64 = -1;

pub async fn handle(
    broker: &Rc<Broker>,
    request: DescribeLogDirsRequest,
    _version: i16,
) -> DescribeLogDirsResponse {
    let image = broker.metadata();
    // Partitions asked for that exist; null asks for all of them. Kafka leaves out what the
    // directory does not hold.
    let wanted: Vec<TopicPartition> = match request.topics {
        None => image
            .topics
            .iter()
            .flat_map(|(name, topic)| {
                (0..topic.partition_count)
                    .map(move |index| TopicPartition::new(name.clone(), index))
            })
            .collect(),
        Some(topics) => topics
            .into_iter()
            .flat_map(|topic| {
                let name = topic.topic.0.to_string();
                let count = image.topic(&name).map_or(0, |topic| topic.partition_count);
                topic
                    .partitions
                    .into_iter()
                    .filter(move |index| (0..count).contains(index))
                    .map(move |index| TopicPartition::new(name.clone(), index))
            })
            .collect(),
    };
    let groups = broker.group_by_shard(wanted, |partition| partition);
    let calls = groups
        .by_shard
        .into_iter()
        .map(|(shard, partitions)| (shard, BrokerRequest::State(partitions)))
        .collect();
    // Sorted by topic then partition; a partition whose shard cannot say (offline, moving) is
    // left out, as Kafka leaves out partitions it has no log for.
    let mut sizes: BTreeMap<String, BTreeMap<i32, u64>> = BTreeMap::new();
    for response in broker.call_each(calls).await {
        if let Some(BrokerResponse::State(results)) = response {
            for (partition, result) in results {
                if let Ok(state) = result {
                    sizes
                        .entry(partition.topic.clone())
                        .or_default()
                        .insert(partition.partition.0, state.size_bytes);
                }
            }
        }
    }
    let topics = sizes
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, size_bytes)| {
                            DescribeLogDirsPartition::default()
                                .with_partition_index(index)
                                .with_partition_size(i64::try_from(size_bytes).unwrap_or(i64::MAX))
                                .with_offset_lag(0)
                                .with_is_future_key(false)
                        })
                        .collect(),
                )
        })
        .collect();
    let data_dir = &broker.config.data_dir;
    let log_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.clone());
    let (total_bytes, usable_bytes) =
        filesystem_bytes(data_dir).unwrap_or((BYTES_UNKNOWN, BYTES_UNKNOWN));
    DescribeLogDirsResponse::default()
        .with_error_code(NONE)
        .with_results(vec![DescribeLogDirsResult::default()
            .with_error_code(NONE)
            .with_log_dir(str_bytes(log_dir.display().to_string()))
            .with_topics(topics)
            .with_total_bytes(total_bytes)
            .with_usable_bytes(usable_bytes)])
}

/// The size of the filesystem holding `path` and the bytes an unprivileged process can still
/// write to it (what Kafka reports: `FileStore.getTotalSpace` / `getUsableSpace`). One
/// `statvfs` call, which answers from the kernel's superblock without touching the disk.
fn filesystem_bytes(path: &Path) -> Option<(i64, i64)> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stats` a writable `statvfs`, both live for
    // the call.
    let status = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    if status != 0 {
        return None;
    }
    let fragment_bytes = u128::from(stats.f_frsize);
    let bytes = |blocks: u128| i64::try_from(blocks * fragment_bytes).unwrap_or(i64::MAX);
    Some((
        bytes(u128::from(stats.f_blocks)),
        bytes(u128::from(stats.f_bavail)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_sizes_are_plausible() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (total, usable) = filesystem_bytes(dir.path()).expect("statvfs on a directory");
        assert!(
            total > 0 && (0..=total).contains(&usable),
            "{total} {usable}"
        );
        assert_eq!(filesystem_bytes(&dir.path().join("missing")), None);
    }
}
