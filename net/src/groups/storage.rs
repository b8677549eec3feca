//! How consumer groups are stored: the internal topic `__consumer_offsets`, which of its
//! partitions holds a group, and the keys and values of its records (committed offsets and group
//! snapshots). The layout is described byte by byte in `docs/on-disk-format.md`.

use bytes::Bytes;
use ringlog_engine::format::{self, BatchInfo, BATCH_HEADER_BYTES};
use ringlog_engine::TopicPartition;

use super::classic::GroupSnapshot;
use super::consumer::ConsumerGroupSnapshot;

/// The internal topic holding committed offsets and group snapshots (Kafka's name, so tools
/// that hide internal topics hide it).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Partitions of [`OFFSETS_TOPIC`]. Fixed forever: a group's partition is its hash modulo this
/// count, so changing it would orphan every committed offset. Eight spreads the groups over up to
/// eight shards (the coordinator of a group is the shard owning its partition) while keeping the
/// files of an idle broker few; Kafka's 50 is sized for many brokers, not for one.
pub const OFFSETS_PARTITION_COUNT: i32 = 8;

/// The topic configs of [`OFFSETS_TOPIC`]: only the latest value per key matters, and
/// segments are Kafka's `offsets.topic.segment.bytes` (100 MiB), smaller than a data topic's so
/// that the space a checkpoint frees is given back soon (a segment is deleted once wholly
/// below the log start).
pub const OFFSETS_TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.bytes", "104857600"),
];

/// The first byte of a key: what the record is. Also the key's layout version.
const KEY_OFFSET: u8 = 0;
const KEY_GROUP: u8 = 1;

/// The first byte of a value: its layout version.
const VALUE_VERSION: u8 = 0;

/// The first byte of a group value holding a consumer-protocol group's snapshot.
const GROUP_VALUE_CONSUMER: u8 = 1;

/// The partition of [`OFFSETS_TOPIC`] that holds `group_id`: FNV-1a (64-bit) of the group id's
/// UTF-8 bytes modulo [`OFFSETS_PARTITION_COUNT`]. FNV-1a is fixed by its definition, so the
/// mapping is the same on every build, platform and restart.
pub fn partition_for(group_id: &str) -> i32 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = group_id.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    (hash % OFFSETS_PARTITION_COUNT as u64) as i32
}

/// The [`TopicPartition`] of partition `index` of [`OFFSETS_TOPIC`].
pub fn offsets_partition(index: i32) -> TopicPartition {
    TopicPartition::new(OFFSETS_TOPIC.to_string(), index)
}

/// One committed offset, as OffsetCommit sets it and OffsetFetch returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// What a record of [`OFFSETS_TOPIC`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group_id: String,
        topic: String,
        partition: i32,
    },
    Group {
        group_id: String,
    },
}

impl RecordKey {
    pub fn group_id(&self) -> &str {
        match self {
            RecordKey::Offset { group_id, .. } | RecordKey::Group { group_id } => group_id,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            RecordKey::Offset {
                group_id,
                topic,
                partition,
            } => {
                out.push(KEY_OFFSET);
                put_string(&mut out, group_id);
                put_string(&mut out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
            }
            RecordKey::Group { group_id } => {
                out.push(KEY_GROUP);
                put_string(&mut out, group_id);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<RecordKey, String> {
        let mut reader = Reader { bytes };
        let key = match reader.u8()? {
            KEY_OFFSET => RecordKey::Offset {
                group_id: reader.string()?,
                topic: reader.string()?,
                partition: reader.i32()?,
            },
            KEY_GROUP => RecordKey::Group {
                group_id: reader.string()?,
            },
            other => return Err(format!("unknown key type {other}")),
        };
        reader.finish()?;
        Ok(key)
    }
}

/// An offset record's value.
pub fn encode_offset(value: &CommittedOffset) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    out.extend_from_slice(&value.offset.to_be_bytes());
    out.extend_from_slice(&value.leader_epoch.to_be_bytes());
    out.extend_from_slice(&value.commit_timestamp_ms.to_be_bytes());
    match &value.metadata {
        Some(metadata) => {
            out.extend_from_slice(&(metadata.len() as i32).to_be_bytes());
            out.extend_from_slice(metadata.as_bytes());
        }
        None => out.extend_from_slice(&(-1_i32).to_be_bytes()),
    }
    out
}

pub fn decode_offset(bytes: &[u8]) -> Result<CommittedOffset, String> {
    let mut reader = Reader { bytes };
    reader.version()?;
    let offset = reader.i64()?;
    let leader_epoch = reader.i32()?;
    let commit_timestamp_ms = reader.i64()?;
    let length = reader.i32()?;
    let metadata = if length < 0 {
        None
    } else {
        let raw = reader.take(length as usize)?;
        Some(String::from_utf8(raw.to_vec()).map_err(|_| "metadata is not UTF-8".to_string())?)
    };
    reader.finish()?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// A group record's value: a layout byte, then the snapshot as JSON (a snapshot is written
/// once per rebalance, so compactness matters less than being readable with `ringlog log dump`).
/// The layout byte says which protocol the group speaks: `VALUE_VERSION` a classic group,
/// `GROUP_VALUE_CONSUMER` a consumer-protocol (KIP-848) group. A group id has one record key
/// whichever it speaks, so the latest snapshot also says which it speaks now.
pub fn encode_group(snapshot: &StoredGroup) -> Vec<u8> {
    let (layout, json) = match snapshot {
        StoredGroup::Classic(snapshot) => (VALUE_VERSION, serde_json::to_vec(snapshot)),
        StoredGroup::Consumer(snapshot) => (GROUP_VALUE_CONSUMER, serde_json::to_vec(snapshot)),
    };
    let mut out = vec![layout];
    out.extend_from_slice(&json.expect("a group snapshot serializes to JSON"));
    out
}

pub fn decode_group(bytes: &[u8]) -> Result<StoredGroup, String> {
    let mut reader = Reader { bytes };
    let layout = reader.u8()?;
    let json = reader.bytes;
    match layout {
        VALUE_VERSION => serde_json::from_slice(json)
            .map(StoredGroup::Classic)
            .map_err(|error| format!("group snapshot: {error}")),
        GROUP_VALUE_CONSUMER => serde_json::from_slice(json)
            .map(StoredGroup::Consumer)
            .map_err(|error| format!("consumer group snapshot: {error}")),
        other => Err(format!("unknown group value layout {other}")),
    }
}

/// A stored group snapshot, of either protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredGroup {
    Classic(GroupSnapshot),
    Consumer(ConsumerGroupSnapshot),
}

/// A stored record's key and value; `None` is Kafka's null.
pub type StoredRecord = (Option<Bytes>, Option<Bytes>);

/// The (key, value) records of one stored batch; `None` values are tombstones. Compressed
/// batches are refused: the coordinator only ever writes uncompressed ones.
pub fn batch_records(batch: &[u8]) -> Result<Vec<StoredRecord>, String> {
    let info = BatchInfo::parse(batch).map_err(|error| error.to_string())?;
    if info.compression() != 0 {
        return Err(format!("compressed batch (codec {})", info.compression()));
    }
    if info.is_control() {
        return Ok(Vec::new());
    }
    let end = info.total_bytes().min(batch.len());
    let mut body = &batch[BATCH_HEADER_BYTES.min(end)..end];
    let mut records = Vec::new();
    let varint = |body: &mut &[u8]| -> Result<i64, String> {
        let (value, used) = format::read_varint(body).map_err(|error| error.to_string())?;
        *body = &body[used..];
        Ok(value)
    };
    while !body.is_empty() {
        let length = varint(&mut body)?;
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= body.len())
            .ok_or("record length runs past its batch")?;
        let mut record = &body[..length];
        body = &body[length..];
        if record.is_empty() {
            return Err("empty record".into());
        }
        record = &record[1..]; // attributes
        varint(&mut record)?; // timestamp delta
        varint(&mut record)?; // offset delta
        let field = |record: &mut &[u8]| -> Result<Option<Bytes>, String> {
            let length = varint(record)?;
            if length < 0 {
                return Ok(None);
            }
            let length = usize::try_from(length)
                .ok()
                .filter(|&length| length <= record.len())
                .ok_or("record field runs past its record")?;
            let value = Bytes::copy_from_slice(&record[..length]);
            *record = &record[length..];
            Ok(Some(value))
        };
        let key = field(&mut record)?;
        let value = field(&mut record)?;
        records.push((key, value));
    }
    Ok(records)
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    let length = u16::try_from(value.len()).expect("group ids and topics are checked shorter");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// Group ids and topic names longer than this cannot be stored (the key's u16 length).
pub const NAME_BYTES_MAX: usize = u16::MAX as usize;

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < count {
            return Err(format!("{count} bytes wanted, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn version(&mut self) -> Result<(), String> {
        match self.u8()? {
            VALUE_VERSION => Ok(()),
            other => Err(format!("unknown value version {other}")),
        }
    }

    fn i32(&mut self) -> Result<i32, String> {
        let mut buffer = [0_u8; 4];
        buffer.copy_from_slice(self.take(4)?);
        Ok(i32::from_be_bytes(buffer))
    }

    fn i64(&mut self) -> Result<i64, String> {
        let mut buffer = [0_u8; 8];
        buffer.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(buffer))
    }

    fn string(&mut self) -> Result<String, String> {
        let mut buffer = [0_u8; 2];
        buffer.copy_from_slice(self.take(2)?);
        let length = u16::from_be_bytes(buffer) as usize;
        String::from_utf8(self.take(length)?.to_vec()).map_err(|_| "a name is not UTF-8".into())
    }

    fn finish(&self) -> Result<(), String> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.bytes.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::classic::{MemberSnapshot, SNAPSHOT_VERSION};

    #[test]
    fn keys_round_trip_and_have_a_fixed_layout() {
        let key = RecordKey::Offset {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let bytes = key.encode();
        assert_eq!(bytes, [0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        assert_eq!(RecordKey::decode(&bytes).expect("decodes"), key);
        let key = RecordKey::Group {
            group_id: "group".into(),
        };
        let bytes = key.encode();
        assert_eq!(bytes, [1, 0, 5, b'g', b'r', b'o', b'u', b'p']);
        assert_eq!(RecordKey::decode(&bytes).expect("decodes"), key);
    }

    #[test]
    fn damaged_keys_and_values_are_refused() {
        assert!(RecordKey::decode(&[]).is_err());
        assert!(RecordKey::decode(&[7, 0, 0]).is_err());
        assert!(RecordKey::decode(&[1, 0, 5, b'g']).is_err());
        assert!(RecordKey::decode(&[1, 0, 0, 9]).is_err(), "trailing bytes");
        assert!(decode_offset(&[0, 1, 2]).is_err());
        assert!(decode_offset(&[9; 25]).is_err(), "unknown version");
        assert!(decode_group(&[0, b'{']).is_err());
    }

    #[test]
    fn offsets_round_trip() {
        for metadata in [
            None,
            Some(String::new()),
            Some("consumer state".to_string()),
        ] {
            let value = CommittedOffset {
                offset: 42,
                leader_epoch: -1,
                metadata,
                commit_timestamp_ms: 1_700_000_000_000,
            };
            let bytes = encode_offset(&value);
            assert_eq!(bytes[0], VALUE_VERSION);
            assert_eq!(decode_offset(&bytes).expect("decodes"), value);
        }
    }

    #[test]
    fn group_snapshots_round_trip() {
        let snapshot = GroupSnapshot {
            version: SNAPSHOT_VERSION,
            group_id: "g".into(),
            generation_id: 3,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader_id: Some("m-1".into()),
            members: vec![MemberSnapshot {
                member_id: "m-1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "127.0.0.1".into(),
                session_timeout_ms: 6000,
                rebalance_timeout_ms: 30000,
                protocols: vec![("range".into(), vec![0, 1, 2])],
                assignment: vec![3, 4],
            }],
        };
        let stored = StoredGroup::Classic(snapshot);
        let bytes = encode_group(&stored);
        assert_eq!(bytes[0], VALUE_VERSION);
        assert_eq!(decode_group(&bytes).expect("decodes"), stored);
        let consumer = StoredGroup::Consumer(ConsumerGroupSnapshot {
            version: crate::groups::consumer::CONSUMER_SNAPSHOT_VERSION,
            group_id: "g".into(),
            group_epoch: 4,
            assignment_epoch: 4,
            subscribed_topics: vec![("t".into(), u128::MAX - 1, 6)],
            members: Vec::new(),
        });
        let bytes = encode_group(&consumer);
        assert_eq!(bytes[0], GROUP_VALUE_CONSUMER);
        assert_eq!(decode_group(&bytes).expect("decodes"), consumer);
        assert!(decode_group(&[7, b'{', b'}']).is_err(), "unknown layout");
    }

    #[test]
    fn records_of_a_built_batch_are_walked() {
        let batch = format::build_batch(
            5,
            &[
                (Some(b"k1".as_slice()), Some(b"v1".as_slice())),
                (Some(b"k2".as_slice()), None),
            ],
        );
        let records = batch_records(&batch).expect("walks");
        assert_eq!(
            records,
            vec![
                (
                    Some(Bytes::from_static(b"k1")),
                    Some(Bytes::from_static(b"v1"))
                ),
                (Some(Bytes::from_static(b"k2")), None),
            ]
        );
    }

    #[test]
    fn the_group_partition_is_stable() {
        // Pinned: a change would move every group's offsets to another partition.
        assert_eq!(partition_for(""), (0xcbf2_9ce4_8422_2325_u64 % 8) as i32);
        let spread: std::collections::BTreeSet<i32> = (0..64)
            .map(|index| partition_for(&format!("group-{index}")))
            .collect();
        assert_eq!(spread.len(), OFFSETS_PARTITION_COUNT as usize);
        for index in 0..64 {
            let partition = partition_for(&format!("group-{index}"));
            assert!((0..OFFSETS_PARTITION_COUNT).contains(&partition));
        }
    }
}
