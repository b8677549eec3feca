//! `ringlog consume TOPIC`: reads records from a position (`--from`), alone or in a consumer
//! group (`--group`, classic protocol, offsets committed as it goes and on exit), printing each
//! through a format template or as JSON lines. Without `--count` or `--exit-at-end` it follows
//! the topic until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use ringlog_net::client::admin;
use ringlog_net::client::group::{GroupMember, HEARTBEAT_INTERVAL};
use ringlog_net::client::{text, wrong_kind};
use serde::Serialize;

use super::client::{Client, TopicInfo};
use super::topic::existing_topic;
use super::{codes, CliError, CliResult, Connect, CLIENT_ID};

/// Fetch versions this client speaks: v4 brought record batches and the isolation level; v12
/// is the last that names topics rather than topic ids.
const FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 4..=12;
/// Kafka's consumer defaults: `fetch.max.wait.ms` (also how often a signal is noticed),
/// `fetch.max.bytes`, `max.partition.fetch.bytes`.
const FETCH_MAX_WAIT_MS: i32 = 500;
const FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
/// Kafka's `auto.commit.interval.ms`.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// The template when neither `--format` nor `--json` is given: the value, a line each.
const FORMAT_DEFAULT: &str = "%v\\n";

/// Where reading starts (for a group: where partitions without a committed offset start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    Beginning,
    End,
    Offset(i64),
    Timestamp(i64),
}

fn parse_start(text: &str) -> Result<StartFrom, String> {
    match text {
        "beginning" | "earliest" | "start" => Ok(StartFrom::Beginning),
        "end" | "latest" => Ok(StartFrom::End),
        _ => {
            if let Some(timestamp) = text.strip_prefix('@') {
                timestamp
                    .parse::<i64>()
                    .ok()
                    .filter(|timestamp| *timestamp >= 0)
                    .map(StartFrom::Timestamp)
                    .ok_or_else(|| format!("{text:?}: expected @ and milliseconds since the epoch"))
            } else {
                text.parse::<i64>()
                    .ok()
                    .filter(|offset| *offset >= 0)
                    .map(StartFrom::Offset)
                    .ok_or_else(|| {
                        format!("{text:?}: expected beginning, end, an offset, or @TIMESTAMP_MS")
                    })
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connect: Connect,
    /// The topic to read.
    #[arg(value_name = "TOPIC")]
    topic: String,
    /// Where to start: beginning, end, an offset, or @TIMESTAMP_MS (the first record at or
    /// after it). With --group, only for partitions the group has no committed offset for.
    #[arg(long, short = 'o', value_name = "POSITION", default_value = "beginning", value_parser = parse_start)]
    from: StartFrom,
    /// Read only this partition; repeat for more (not with --group).
    #[arg(long, short = 'p', value_name = "N", conflicts_with = "group")]
    partition: Vec<i32>,
    /// Read as a member of this consumer group, committing offsets as it goes.
    #[arg(long, short = 'g', value_name = "GROUP")]
    group: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'c', value_name = "N")]
    count: Option<u64>,
    /// Stop at the end of the partitions (their end when reading started).
    #[arg(long, short = 'e')]
    exit_at_end: bool,
    /// Output template: %t topic, %p partition, %o offset, %k key, %v value, %T timestamp
    /// (ms), %h headers (k=v,...), %% a percent sign; \n, \t and \\ escapes.
    #[arg(long, short = 'f', value_name = "TEMPLATE", conflicts_with = "json")]
    format: Option<String>,
}

/// A record as `--json` prints it: key, value and header values as UTF-8 text (invalid bytes
/// replaced), absent ones as null.
#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: BTreeMap<String, Option<String>>,
}

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
}

fn parse_template(template: &str) -> Result<Vec<Piece>, CliError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut characters = template.chars();
    while let Some(character) = characters.next() {
        match character {
            '%' => {
                let piece = match characters.next() {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('T') => Piece::Timestamp,
                    Some('h') => Piece::Headers,
                    Some('%') => {
                        literal.push('%');
                        continue;
                    }
                    other => {
                        return Err(CliError::usage(format!(
                            "--format: unknown field %{} (fields: %t %p %o %k %v %T %h %%)",
                            other.map(String::from).unwrap_or_default()
                        )))
                    }
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
            }
            '\\' => match characters.next() {
                Some('n') => literal.push('\n'),
                Some('t') => literal.push('\t'),
                Some('\\') => literal.push('\\'),
                Some(other) => {
                    literal.push('\\');
                    literal.push(other);
                }
                None => literal.push('\\'),
            },
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn render(pieces: &[Piece], topic: &str, partition: i32, record: &Record, out: &mut Vec<u8>) {
    for piece in pieces {
        match piece {
            Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
            Piece::Timestamp => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
            Piece::Key => out.extend_from_slice(record.key.as_deref().unwrap_or_default()),
            Piece::Value => out.extend_from_slice(record.value.as_deref().unwrap_or_default()),
            Piece::Headers => {
                for (index, (key, value)) in record.headers.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(key.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(value.as_deref().unwrap_or_default());
                }
            }
        }
    }
}

/// Bytes of a record batch's base offset and length fields, which precede the length's span.
const BATCH_LENGTH_PREFIX_BYTES: usize = 12;

/// The size of the first record batch in `records` if all of it is there.
fn whole_batch_bytes(records: &[u8]) -> Option<usize> {
    let length = records.get(8..BATCH_LENGTH_PREFIX_BYTES)?;
    let length = i32::from_be_bytes(length.try_into().ok()?);
    let total = BATCH_LENGTH_PREFIX_BYTES.checked_add(usize::try_from(length).ok()?)?;
    (records.len() >= total).then_some(total)
}

fn lossy(bytes: Option<&Bytes>) -> Option<String> {
    bytes.map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

/// Where one partition is being read.
#[derive(Debug)]
struct Position {
    partition: i32,
    offset: i64,
    /// The end offset when reading started, for --exit-at-end.
    end: i64,
}

pub fn run(args: ConsumeArgs) -> CliResult {
    let pieces = if args.connect.json {
        Vec::new()
    } else {
        parse_template(args.format.as_deref().unwrap_or(FORMAT_DEFAULT))?
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|error| CliError::failed(format!("registering signal {signal}: {error}")))?;
    }
    let mut client = Client::connect(&args.connect)?;
    let metadata = client.metadata(Some(std::slice::from_ref(&args.topic)))?;
    let mut topic = existing_topic(&metadata, &args.topic)?;
    for partition in &args.partition {
        if !topic.partitions.iter().any(|p| p.partition == *partition) {
            return Err(CliError::usage(format!(
                "--partition {partition}: topic {} has partitions 0 to {}",
                args.topic,
                topic.partitions.len().saturating_sub(1)
            )));
        }
    }
    let mut consumer = Consumer {
        args: &args,
        pieces,
        stop,
        printed: 0,
        positions: Vec::new(),
        member: None,
    };
    if let Some(group) = &args.group {
        let member = GroupMember::new(
            client.bootstrap(),
            group.clone(),
            vec![args.topic.clone()],
            CLIENT_ID,
        )?;
        consumer.member = Some(member);
        consumer.join(&mut client, &mut topic)?;
    } else {
        let partitions: Vec<i32> = if args.partition.is_empty() {
            topic.partitions.iter().map(|p| p.partition).collect()
        } else {
            args.partition.clone()
        };
        consumer.positions = start_positions(
            &mut client,
            &topic,
            &partitions,
            &BTreeMap::new(),
            args.from,
        )?;
    }
    let outcome = consumer.read(&mut client, &mut topic);
    if let Some(mut member) = consumer.member.take() {
        let committed = member.commit(
            consumer
                .positions
                .iter()
                .map(|position| (args.topic.as_str(), position.partition, position.offset)),
        );
        let left = member.leave();
        outcome?;
        committed?;
        left?;
        return Ok(());
    }
    outcome
}

/// The starting positions of `partitions`: their committed offset if there is one, else where
/// `from` says. An offset past either end is clamped into the log, as `kcat -o` does.
fn start_positions(
    client: &mut Client,
    topic: &TopicInfo,
    partitions: &[i32],
    committed: &BTreeMap<(String, i32), i64>,
    from: StartFrom,
) -> CliResult<Vec<Position>> {
    let mut positions = Vec::new();
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for partition in partitions {
        let leader = topic
            .partitions
            .iter()
            .find(|p| p.partition == *partition)
            .map_or(-1, |p| p.leader);
        by_leader.entry(leader).or_default().push(*partition);
    }
    for (leader, partitions) in by_leader {
        let connection = client.node(leader)?;
        let starts = admin::offsets(connection, &topic.name, &partitions, admin::EARLIEST)?;
        let ends = admin::offsets(connection, &topic.name, &partitions, admin::LATEST)?;
        let at_time = match from {
            StartFrom::Timestamp(timestamp) => {
                admin::offsets(connection, &topic.name, &partitions, timestamp)?
            }
            _ => BTreeMap::new(),
        };
        for partition in partitions {
            let start = starts.get(&partition).copied().unwrap_or(0);
            let end = ends.get(&partition).copied().unwrap_or(0);
            let offset = match committed.get(&(topic.name.clone(), partition)) {
                Some(offset) if *offset >= 0 => *offset,
                _ => match from {
                    StartFrom::Beginning => start,
                    StartFrom::End => end,
                    StartFrom::Offset(offset) => offset,
                    // No record at or after the time: start at the end, as Kafka's
                    // offsetsForTimes users do.
                    StartFrom::Timestamp(_) => match at_time.get(&partition) {
                        Some(offset) if *offset >= 0 => *offset,
                        _ => end,
                    },
                },
            };
            positions.push(Position {
                partition,
                offset: offset.clamp(start, end.max(start)),
                end,
            });
        }
    }
    positions.sort_by_key(|position| position.partition);
    Ok(positions)
}

struct Consumer<'a> {
    args: &'a ConsumeArgs,
    pieces: Vec<Piece>,
    stop: Arc<AtomicBool>,
    printed: u64,
    positions: Vec<Position>,
    member: Option<GroupMember>,
}

impl Consumer<'_> {
    /// Joins (or rejoins) the group and starts its partitions where the group left them.
    fn join(&mut self, client: &mut Client, topic: &mut TopicInfo) -> CliResult {
        let Some(member) = self.member.as_mut() else {
            return Ok(());
        };
        let assigned: Vec<(String, i32)> = member
            .join()?
            .into_iter()
            .filter(|(name, _)| *name == topic.name)
            .collect();
        let committed = member.committed(&assigned)?;
        // A rejoin may follow added partitions or a new leader.
        let metadata = client.metadata(Some(std::slice::from_ref(&topic.name)))?;
        *topic = existing_topic(&metadata, &topic.name)?;
        let partitions: Vec<i32> = assigned.iter().map(|(_, partition)| *partition).collect();
        self.positions = start_positions(client, topic, &partitions, &committed, self.args.from)?;
        Ok(())
    }

    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.args.count.is_some_and(|count| self.printed >= count)
            || (self.args.exit_at_end
                && self
                    .positions
                    .iter()
                    .all(|position| position.offset >= position.end))
    }

    fn read(&mut self, client: &mut Client, topic: &mut TopicInfo) -> CliResult {
        let mut last_heartbeat = Instant::now();
        let mut last_commit = Instant::now();
        while !self.done() {
            if self.positions.is_empty() {
                // A group member without partitions waits for a rebalance to give it some.
                std::thread::sleep(Duration::from_millis(FETCH_MAX_WAIT_MS as u64));
            } else {
                self.fetch_once(client, topic)?;
            }
            if let Some(member) = self.member.as_mut() {
                if last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                    last_heartbeat = Instant::now();
                    if member.heartbeat()? {
                        self.commit()?;
                        self.join(client, topic)?;
                    }
                }
                if last_commit.elapsed() >= COMMIT_INTERVAL {
                    last_commit = Instant::now();
                    self.commit()?;
                }
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> CliResult {
        let Some(member) = self.member.as_mut() else {
            return Ok(());
        };
        let topic = self.args.topic.as_str();
        member.commit(
            self.positions
                .iter()
                .map(|position| (topic, position.partition, position.offset)),
        )?;
        Ok(())
    }

    /// One Fetch to each leader of the partitions still being read.
    fn fetch_once(&mut self, client: &mut Client, topic: &mut TopicInfo) -> CliResult {
        let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (index, position) in self.positions.iter().enumerate() {
            if self.args.exit_at_end && position.offset >= position.end {
                continue;
            }
            let leader = topic
                .partitions
                .iter()
                .find(|p| p.partition == position.partition)
                .map_or(-1, |p| p.leader);
            by_leader.entry(leader).or_default().push(index);
        }
        let mut refresh = false;
        for (leader, indexes) in by_leader {
            let partitions = indexes
                .iter()
                .map(|&index| {
                    FetchPartition::default()
                        .with_partition(self.positions[index].partition)
                        .with_current_leader_epoch(-1)
                        .with_fetch_offset(self.positions[index].offset)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(PARTITION_MAX_BYTES)
                })
                .collect();
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(FETCH_MAX_WAIT_MS)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_MAX_BYTES)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(text(&topic.name)))
                    .with_partitions(partitions)]);
            let (_, response) = client.node(leader)?.call(
                ApiKey::Fetch,
                FETCH_VERSIONS,
                RequestKind::Fetch(request),
            )?;
            let ResponseKind::Fetch(response) = response else {
                return Err(wrong_kind(ApiKey::Fetch).into());
            };
            if response.error_code != 0 {
                return Err(CliError::kafka(
                    format!("fetching from {}", topic.name),
                    response.error_code,
                    None,
                ));
            }
            for answer in response.responses.iter().flat_map(|t| t.partitions.iter()) {
                let Some(index) = indexes
                    .iter()
                    .copied()
                    .find(|index| self.positions[*index].partition == answer.partition_index)
                else {
                    continue;
                };
                match answer.error_code {
                    0 => {}
                    codes::OFFSET_OUT_OF_RANGE => {
                        self.reset(client, topic, index)?;
                        continue;
                    }
                    codes::NOT_LEADER_OR_FOLLOWER
                    | codes::LEADER_NOT_AVAILABLE
                    | codes::UNKNOWN_TOPIC_OR_PARTITION => {
                        refresh = true;
                        continue;
                    }
                    code => {
                        return Err(CliError::kafka(
                            format!("fetching {}-{}", topic.name, answer.partition_index),
                            code,
                            None,
                        ))
                    }
                }
                if let Some(records) = &answer.records {
                    self.take(index, &topic.name, records.clone())?;
                    if self.done() {
                        return Ok(());
                    }
                }
            }
        }
        if refresh {
            std::thread::sleep(Duration::from_millis(FETCH_MAX_WAIT_MS as u64));
            let metadata = client.metadata(Some(std::slice::from_ref(&topic.name)))?;
            *topic = existing_topic(&metadata, &topic.name)?;
        }
        Ok(())
    }

    /// After OFFSET_OUT_OF_RANGE: retention moved the log start past the position, or the log
    /// was truncated below it. Moves to the nearest end, as `auto.offset.reset` would, and says so.
    fn reset(&mut self, client: &mut Client, topic: &TopicInfo, index: usize) -> CliResult {
        let partition = self.positions[index].partition;
        let from = self.positions[index].offset;
        let moved = start_positions(
            client,
            topic,
            &[partition],
            &BTreeMap::new(),
            StartFrom::Offset(from),
        )?;
        if let Some(position) = moved.into_iter().next() {
            eprintln!(
                "ringlog: {}-{partition}: offset {from} is out of range; continuing at {}",
                topic.name, position.offset
            );
            self.positions[index].offset = position.offset;
        }
        Ok(())
    }

    /// Prints the records of `records` at or past the partition's position, up to `--count`.
    fn take(&mut self, index: usize, topic: &str, mut records: Bytes) -> CliResult {
        let partition = self.positions[index].partition;
        let mut out = Vec::new();
        while !records.is_empty() {
            // A fetch may end with a partial batch, which the next fetch returns whole.
            let Some(batch_bytes) = whole_batch_bytes(&records) else {
                break;
            };
            let mut batch = records.split_to(batch_bytes);
            let set = RecordBatchDecoder::decode(&mut batch).map_err(|error| {
                CliError::failed(format!("decoding records of {topic}-{partition}: {error}"))
            })?;
            for record in &set.records {
                if record.offset < self.positions[index].offset {
                    continue;
                }
                // Past --count, a record stays unread: the position (and the group's commit)
                // must not move over what was not printed.
                if !record.control && self.args.count.is_some_and(|count| self.printed >= count) {
                    break;
                }
                self.positions[index].offset = record.offset + 1;
                if record.control {
                    continue;
                }
                self.printed += 1;
                if self.args.connect.json {
                    let line = JsonRecord {
                        topic,
                        partition,
                        offset: record.offset,
                        timestamp: record.timestamp,
                        key: lossy(record.key.as_ref()),
                        value: lossy(record.value.as_ref()),
                        headers: record
                            .headers
                            .iter()
                            .map(|(key, value)| (key.to_string(), lossy(value.as_ref())))
                            .collect(),
                    };
                    serde_json::to_writer(&mut out, &line)
                        .map_err(|error| CliError::failed(format!("encoding JSON: {error}")))?;
                    out.push(b'\n');
                } else {
                    render(&self.pieces, topic, partition, record, &mut out);
                }
            }
        }
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(&out).and_then(|()| stdout.flush()) {
            Ok(()) => Ok(()),
            // The reader went away (`| head`): stop reading, as if interrupted.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                self.stop.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => Err(CliError::failed(format!("writing to stdout: {error}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("beginning"), Ok(StartFrom::Beginning));
        assert_eq!(parse_start("end"), Ok(StartFrom::End));
        assert_eq!(parse_start("42"), Ok(StartFrom::Offset(42)));
        assert_eq!(
            parse_start("@1700000000000"),
            Ok(StartFrom::Timestamp(1_700_000_000_000))
        );
        assert!(parse_start("-3").is_err());
        assert!(parse_start("@soon").is_err());
        assert!(parse_start("middle").is_err());
    }

    #[test]
    fn templates_render_every_field() {
        let pieces = parse_template("%t/%p@%o %k=%v [%h] %T 100%%\\n").expect("parses");
        let mut headers = indexmap::IndexMap::new();
        headers.insert(text("h1"), Some(Bytes::from_static(b"x")));
        headers.insert(text("h2"), None);
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: 7,
            sequence: -1,
            timestamp: 1234,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers,
        };
        let mut out = Vec::new();
        render(&pieces, "orders", 2, &record, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "orders/2@7 k=v [h1=x,h2=] 1234 100%\n"
        );
        assert!(parse_template("%q").is_err());
    }
}
