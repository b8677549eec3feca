//! `ringlog produce TOPIC`: one record per line of stdin, optionally with a key before a
//! separator, static headers, a fixed partition, acks and compression. Records are batched per
//! partition (up to a size, or for a short linger when stdin pauses) and each batch waits for
//! its acknowledgement before the next is sent, so order is kept and nothing is acknowledged
//! that the broker did not take.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use ringlog_net::client::{text, wrong_kind};
use serde::Serialize;

use super::client::Client;
use super::output::{print, print_json, Table};
use super::topic::existing_topic;
use super::{key_value, CliError, CliResult, Connect};

/// Records per batch: Kafka's `batch.size` is 16 KiB of records; a line-oriented tool sends
/// small records, so a count bounds the batch as well.
const BATCH_RECORDS_MAX: usize = 1000;
/// Bytes of keys and values per batch: Kafka's `batch.size` default, so a batch fits every
/// broker's default `max.message.bytes` (1 MiB) with room to spare.
const BATCH_BYTES_MAX: usize = 16 * 1024;
/// How long a partial batch waits for more lines before it is sent: Kafka's `linger.ms` is 5 ms
/// since 4.0; a person typing sees each line sent at once.
const LINGER: Duration = Duration::from_millis(5);
/// The produce timeout asked of the broker: Kafka's `request.timeout.ms`.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Kafka's partitioner hash seed (`Utils.murmur2`), so keys land where Java clients put them.
const MURMUR2_SEED: u32 = 0x9747_b28c;
/// Lines queued between the stdin reader and the sender before the reader waits.
const LINES_QUEUED_MAX: usize = 4 * BATCH_RECORDS_MAX;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Acks {
    /// Wait for every in-sync replica (acks=-1).
    All,
    /// Wait for the leader only.
    #[value(name = "1")]
    Leader,
    /// Do not wait.
    #[value(name = "0")]
    None,
    /// The same as all.
    #[value(name = "-1")]
    MinusOne,
}

impl Acks {
    fn value(self) -> i16 {
        match self {
            Acks::All | Acks::MinusOne => -1,
            Acks::Leader => 1,
            Acks::None => 0,
        }
    }
}

/// A `--compression` value as the codec of the batches.
fn parse_compression(text: &str) -> Result<Compression, String> {
    match text {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(format!(
            "{text:?}: expected none, gzip, snappy, lz4 or zstd"
        )),
    }
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    connect: Connect,
    /// The topic to write to.
    #[arg(value_name = "TOPIC")]
    topic: String,
    /// Split each line at the first SEP into key and value; a line without SEP has no key.
    #[arg(long, short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record; repeat for more.
    #[arg(long, short = 'H', value_name = "KEY=VALUE", value_parser = key_value)]
    header: Vec<(String, String)>,
    /// Write every record to this partition; otherwise keyed records go where Kafka's default
    /// partitioner puts them (murmur2 of the key) and unkeyed batches rotate over partitions.
    #[arg(long, short = 'p', value_name = "N")]
    partition: Option<i32>,
    /// Acknowledgements to wait for.
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// Compression of the record batches: none, gzip, snappy, lz4 or zstd.
    #[arg(long, short = 'z', value_name = "CODEC", default_value = "none", value_parser = parse_compression)]
    compression: Compression,
}

/// One record read from stdin.
struct Line {
    key: Option<Bytes>,
    value: Bytes,
}

/// What was written to one partition.
#[derive(Debug, Default, Serialize)]
struct Written {
    partition: i32,
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

pub fn run(args: ProduceArgs) -> CliResult {
    if args.key_separator.as_deref() == Some("") {
        return Err(CliError::usage("--key-separator must not be empty"));
    }
    let mut client = Client::connect(&args.connect)?;
    let metadata = client.metadata(Some(std::slice::from_ref(&args.topic)))?;
    let topic = existing_topic(&metadata, &args.topic)?;
    let partition_count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    if let Some(partition) = args.partition {
        if !(0..partition_count).contains(&partition) {
            return Err(CliError::usage(format!(
                "--partition {partition}: topic {} has partitions 0 to {}",
                args.topic,
                partition_count - 1
            )));
        }
    }
    let leaders: BTreeMap<i32, i32> = topic
        .partitions
        .iter()
        .map(|partition| (partition.partition, partition.leader))
        .collect();
    let headers: IndexMap<StrBytes, Option<Bytes>> = args
        .header
        .iter()
        .map(|(key, value)| (text(key), Some(Bytes::from(value.clone()))))
        .collect();

    let (lines, received) = mpsc::sync_channel::<std::io::Result<Line>>(LINES_QUEUED_MAX);
    let separator = args.key_separator.clone();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(separator, lines))
        .map_err(|error| CliError::failed(format!("starting the stdin reader: {error}")))?;

    let mut sender = Sender {
        client: &mut client,
        topic: &args.topic,
        leaders: &leaders,
        acks: args.acks.value(),
        compression: args.compression,
        written: BTreeMap::new(),
    };
    let mut pending: BTreeMap<i32, (Vec<Line>, usize)> = BTreeMap::new();
    let mut unkeyed_partition = 0;
    let mut open = true;
    while open {
        // Wait without a bound for the first line, then at most the linger for more.
        let line = if pending.is_empty() {
            received.recv().ok()
        } else {
            match received.recv_timeout(LINGER) {
                Ok(line) => Some(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    sender.send(std::mem::take(&mut pending), &headers)?;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            }
        };
        let Some(line) = line else {
            open = false;
            continue;
        };
        let line = line.map_err(|error| CliError::failed(format!("reading stdin: {error}")))?;
        let partition = match (args.partition, &line.key) {
            (Some(partition), _) => partition,
            (None, Some(key)) => partition_for_key(key, partition_count),
            (None, None) => unkeyed_partition,
        };
        let size = line.value.len() + line.key.as_ref().map_or(0, Bytes::len);
        let (batch, bytes) = pending.entry(partition).or_default();
        batch.push(line);
        *bytes += size;
        if batch.len() >= BATCH_RECORDS_MAX || *bytes >= BATCH_BYTES_MAX {
            let full = pending
                .remove(&partition)
                .into_iter()
                .map(|b| (partition, b));
            sender.send(full.collect(), &headers)?;
            if args.partition.is_none() {
                unkeyed_partition = (unkeyed_partition + 1) % partition_count;
            }
        }
    }
    if !pending.is_empty() {
        sender.send(pending, &headers)?;
    }
    let written: Vec<Written> = sender.written.into_values().collect();
    if args.connect.json {
        return print_json(&written);
    }
    let mut table = Table::new(&["PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET"]);
    let offset = |offset: Option<i64>| offset.map_or_else(|| "-".into(), |o| o.to_string());
    for entry in &written {
        table.row(vec![
            entry.partition.to_string(),
            entry.records.to_string(),
            offset(entry.first_offset),
            offset(entry.last_offset),
        ]);
    }
    print(&table.render())
}

/// Reads stdin line by line into `lines` until end of input or the receiver goes away.
fn read_lines(separator: Option<String>, lines: mpsc::SyncSender<std::io::Result<Line>>) {
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) => return,
            Ok(_) => {
                if buffer.last() == Some(&b'\n') {
                    buffer.pop();
                    if buffer.last() == Some(&b'\r') {
                        buffer.pop();
                    }
                }
                if lines
                    .send(Ok(split_line(&buffer, separator.as_deref())))
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                let _ = lines.send(Err(error));
                return;
            }
        }
    }
}

/// A line as key and value: split at the first `separator`, or all value.
fn split_line(line: &[u8], separator: Option<&str>) -> Line {
    if let Some(separator) = separator.map(str::as_bytes) {
        if let Some(at) = line
            .windows(separator.len())
            .position(|window| window == separator)
        {
            return Line {
                key: Some(Bytes::copy_from_slice(&line[..at])),
                value: Bytes::copy_from_slice(&line[at + separator.len()..]),
            };
        }
    }
    Line {
        key: None,
        value: Bytes::copy_from_slice(line),
    }
}

/// Kafka's default partitioner for a keyed record: the positive murmur2 hash of the key modulo
/// the partition count (`Utils.toPositive(Utils.murmur2(key)) % numPartitions`).
fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    let hash = murmur2::murmur2(key, MURMUR2_SEED) & 0x7fff_ffff;
    (hash % partition_count.max(1) as u32) as i32
}

/// Sends batches to their leaders, one request per leader at a time, and records the offsets.
struct Sender<'a> {
    client: &'a mut Client,
    topic: &'a str,
    leaders: &'a BTreeMap<i32, i32>,
    acks: i16,
    compression: Compression,
    written: BTreeMap<i32, Written>,
}

impl Sender<'_> {
    fn send(
        &mut self,
        batches: BTreeMap<i32, (Vec<Line>, usize)>,
        headers: &IndexMap<StrBytes, Option<Bytes>>,
    ) -> CliResult {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        let mut by_leader: BTreeMap<i32, Vec<(i32, usize, Bytes)>> = BTreeMap::new();
        for (partition, (lines, _)) in batches {
            let count = lines.len();
            let records: Vec<Record> = lines
                .into_iter()
                .enumerate()
                .map(|(index, line)| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: index as i64,
                    sequence: -1,
                    timestamp,
                    key: line.key,
                    value: Some(line.value),
                    headers: headers.clone(),
                })
                .collect();
            let mut encoded = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut encoded,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression: self.compression,
                },
            )
            .map_err(|error| CliError::failed(format!("encoding a record batch: {error}")))?;
            let leader = self.leaders.get(&partition).copied().unwrap_or(-1);
            by_leader
                .entry(leader)
                .or_default()
                .push((partition, count, encoded.freeze()));
        }
        for (leader, batches) in by_leader {
            self.send_to(leader, batches)?;
        }
        Ok(())
    }

    fn send_to(&mut self, leader: i32, batches: Vec<(i32, usize, Bytes)>) -> CliResult {
        if leader < 0 {
            return Err(CliError::failed(format!(
                "a partition of {} has no leader; retry when the cluster has elected one",
                self.topic
            )));
        }
        let request = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(text(self.topic)))
                .with_partition_data(
                    batches
                        .iter()
                        .map(|(partition, _, records)| {
                            PartitionProduceData::default()
                                .with_index(*partition)
                                .with_records(Some(records.clone()))
                        })
                        .collect(),
                )]);
        let connection = self.client.node(leader)?;
        if self.acks == 0 {
            // Nothing comes back for acks=0: send the frame and count the records as written.
            let version = connection.versions.pick(ApiKey::Produce, 3..=9)?;
            connection.send_only(ApiKey::Produce, version, RequestKind::Produce(request))?;
            for (partition, count, _) in &batches {
                let entry = self.written.entry(*partition).or_insert_with(|| Written {
                    partition: *partition,
                    ..Written::default()
                });
                entry.records += *count as u64;
            }
            return Ok(());
        }
        let (_, response) =
            connection.call(ApiKey::Produce, 3..=9, RequestKind::Produce(request))?;
        let ResponseKind::Produce(response) = response else {
            return Err(wrong_kind(ApiKey::Produce).into());
        };
        for (partition, count, _) in &batches {
            let answer = response
                .responses
                .iter()
                .flat_map(|topic| topic.partition_responses.iter())
                .find(|answer| answer.index == *partition)
                .ok_or_else(|| {
                    CliError::failed(format!(
                        "the broker did not answer for partition {partition}"
                    ))
                })?;
            if answer.error_code != 0 {
                return Err(CliError::kafka(
                    format!("producing to {}-{partition}", self.topic),
                    answer.error_code,
                    answer.error_message.as_ref().map(|m| m.to_string()),
                ));
            }
            let entry = self.written.entry(*partition).or_insert_with(|| Written {
                partition: *partition,
                ..Written::default()
            });
            entry.records += *count as u64;
            entry.first_offset.get_or_insert(answer.base_offset);
            entry.last_offset = Some(answer.base_offset + *count as i64 - 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own murmur2 test vectors (`UtilsTest.testMurmur2`).
    #[test]
    fn keys_hash_as_kafkas_murmur2() {
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2::murmur2(key.as_bytes(), MURMUR2_SEED) as i32,
                expected,
                "{key}"
            );
        }
        assert_eq!(
            partition_for_key(b"21", 7),
            ((-973932308_i32 & 0x7fff_ffff) % 7)
        );
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        let line = split_line(b"user-1:a:b", Some(":"));
        assert_eq!(line.key.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(&line.value[..], b"a:b");
        let line = split_line(b"no separator", Some("::"));
        assert!(line.key.is_none());
        assert_eq!(&line.value[..], b"no separator");
        let line = split_line(b"k\tv", None);
        assert!(line.key.is_none());
    }
}
