//! The benchmark's messages and record batches: building a batch to produce (through
//! `kafka-protocol`'s encoder, with the chosen compression) and walking the batches a fetch
//! returns to read each record's offset and value (uncompressed batches are walked in place;
//! compressed ones go through `kafka-protocol`'s decoder).
//!
//! Every message value starts with the producer's send time (`clock::now_us`, 8 bytes, little
//! endian), so a consumer can measure end-to-end latency with microsecond resolution, which the
//! record timestamp (milliseconds) cannot give.

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

/// Bytes at the start of every message value that carry its send time.
pub const TIMESTAMP_BYTES: usize = 8;

/// The size of a v2 record batch header: everything before the first record.
const BATCH_HEADER_BYTES: usize = 61;
/// Where the batch length (bytes after this field and the base offset) sits.
const BATCH_LENGTH_OFFSET: usize = 8;
/// Bytes before the batch length field counts from (base offset + length).
const BATCH_LOG_OVERHEAD: usize = 12;
const MAGIC_OFFSET: usize = 16;
const ATTRIBUTES_OFFSET: usize = 21;
const RECORD_COUNT_OFFSET: usize = 57;
/// Attribute bits naming the compression codec.
const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit marking a control batch (transaction markers), never shown to consumers.
const CONTROL_FLAG: i16 = 0x20;

/// Monotonic clock readings in microseconds, comparable between threads and between processes
/// on one machine (CLOCK_MONOTONIC is system-wide on Linux).
pub mod clock {
    pub fn now_us() -> u64 {
        crate::measure::read_clock(libc::CLOCK_MONOTONIC).as_micros() as u64
    }
}

/// The codecs the producer can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn compression(self) -> Compression {
        match self {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

/// Message values of one size: a fixed random-looking body behind each message's timestamp.
#[derive(Clone, Debug)]
pub struct Payload {
    body: Bytes,
}

impl Payload {
    pub fn new(size: usize, seed: u64) -> anyhow::Result<Payload> {
        if size < TIMESTAMP_BYTES {
            bail!("messages must be at least {TIMESTAMP_BYTES} bytes (they carry their send time)");
        }
        // A xorshift stream: incompressible enough that compression is not a free win, and
        // the same for every run with the same seed.
        let mut state = seed | 1;
        let body = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect::<Vec<u8>>();
        Ok(Payload {
            body: Bytes::from(body),
        })
    }

    pub fn size(&self) -> usize {
        self.body.len()
    }

    /// One message value stamped with `sent_us`.
    pub fn message(&self, sent_us: u64) -> Bytes {
        let mut value = BytesMut::with_capacity(self.body.len());
        value.extend_from_slice(&sent_us.to_le_bytes());
        value.extend_from_slice(&self.body[TIMESTAMP_BYTES..]);
        value.freeze()
    }
}

/// Builds one record batch of `messages` (key, value) with create times `timestamp_ms`.
pub fn encode_batch(
    messages: &[(Option<Bytes>, Bytes)],
    timestamp_ms: i64,
    codec: Codec,
    scratch: &mut Vec<Record>,
) -> anyhow::Result<Bytes> {
    scratch.clear();
    scratch.extend(
        messages
            .iter()
            .enumerate()
            .map(|(index, (key, value))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: index as i64,
                // The encoder starts a new batch whenever `offset - sequence` changes, and writes the
                // first record's sequence as the base sequence: offset - 1 keeps every message in one
                // batch with Kafka's "no sequence" (-1) base.
                sequence: index as i32 + NO_SEQUENCE,
                timestamp: timestamp_ms,
                key: key.clone(),
                value: Some(value.clone()),
                headers: Default::default(),
            }),
    );
    let mut out = BytesMut::with_capacity(
        messages
            .iter()
            .map(|(_, value)| value.len() + 16)
            .sum::<usize>()
            + BATCH_HEADER_BYTES,
    );
    RecordBatchEncoder::encode(
        &mut out,
        scratch.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: codec.compression(),
        },
    )
    .map_err(|error| anyhow!("encoding a record batch: {error}"))?;
    Ok(out.freeze())
}

/// What walking a fetch's record bytes found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    pub records: u64,
    pub value_bytes: u64,
    /// The offset after the last complete batch (where the next fetch starts), if any batch
    /// was complete.
    pub next_offset: Option<i64>,
}

/// Calls `each(offset, value)` for every data record in the complete batches of `data` (a
/// fetch response's records field; a partial batch at the end is ignored, as clients do).
pub fn walk_records(data: &Bytes, mut each: impl FnMut(i64, &[u8])) -> anyhow::Result<Walked> {
    let mut walked = Walked::default();
    let mut at = 0;
    while data.len() - at >= BATCH_HEADER_BYTES {
        let header = &data[at..];
        let base_offset = i64::from_be_bytes(header[..8].try_into()?);
        let length = i32::from_be_bytes(header[BATCH_LENGTH_OFFSET..][..4].try_into()?);
        let total = usize::try_from(length)
            .ok()
            .and_then(|length| length.checked_add(BATCH_LOG_OVERHEAD))
            .filter(|total| *total >= BATCH_HEADER_BYTES)
            .ok_or_else(|| anyhow!("batch at offset {base_offset} has length {length}"))?;
        if data.len() - at < total {
            break;
        }
        if header[MAGIC_OFFSET] != 2 {
            bail!(
                "batch at offset {base_offset} has magic {}",
                header[MAGIC_OFFSET]
            );
        }
        let attributes = i16::from_be_bytes(header[ATTRIBUTES_OFFSET..][..2].try_into()?);
        let last_offset_delta = i32::from_be_bytes(header[23..27].try_into()?);
        let batch = data.slice(at..at + total);
        at += total;
        walked.next_offset = Some(base_offset + i64::from(last_offset_delta) + 1);
        if attributes & CONTROL_FLAG != 0 {
            continue;
        }
        if attributes & COMPRESSION_MASK != 0 {
            let mut batch = batch;
            let set = RecordBatchDecoder::decode(&mut batch)
                .map_err(|error| anyhow!("decoding a compressed batch: {error}"))?;
            for record in &set.records {
                let value = record.value.as_deref().unwrap_or_default();
                walked.records += 1;
                walked.value_bytes += value.len() as u64;
                each(record.offset, value);
            }
            continue;
        }
        let count = i32::from_be_bytes(header[RECORD_COUNT_OFFSET..][..4].try_into()?);
        let mut records = &batch[BATCH_HEADER_BYTES..];
        for _ in 0..count {
            let (offset_delta, value) = next_record(&mut records)
                .with_context(|| format!("a record of the batch at offset {base_offset}"))?;
            walked.records += 1;
            walked.value_bytes += value.len() as u64;
            each(base_offset + offset_delta, value);
        }
    }
    Ok(walked)
}

/// Reads one v2 record from the front of `records`: its offset delta and value.
fn next_record<'a>(records: &mut &'a [u8]) -> anyhow::Result<(i64, &'a [u8])> {
    let length = usize::try_from(varint(records)?).context("negative record length")?;
    if records.len() < length {
        bail!("record of {length} bytes overruns its batch");
    }
    let (mut record, rest) = records.split_at(length);
    *records = rest;
    if record.is_empty() {
        bail!("empty record");
    }
    record.advance(1); // attributes
    varint(&mut record)?; // timestamp delta
    let offset_delta = varint(&mut record)?;
    let key_length = varint(&mut record)?;
    if key_length > 0 {
        let key_length = key_length as usize;
        if record.len() < key_length {
            bail!("key overruns its record");
        }
        record.advance(key_length);
    }
    let value_length = varint(&mut record)?;
    let value = if value_length < 0 {
        &[][..]
    } else {
        let value_length = value_length as usize;
        if record.len() < value_length {
            bail!("value overruns its record");
        }
        &record[..value_length]
    };
    Ok((offset_delta, value))
}

/// A zig-zag varint (Kafka's varint and varlong share the encoding).
fn varint(buf: &mut &[u8]) -> anyhow::Result<i64> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = buf.split_first() else {
            bail!("truncated varint");
        };
        *buf = rest;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    bail!("varint longer than 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(count: usize, codec: Codec, size: usize) -> (Bytes, Vec<Bytes>) {
        let payload = Payload::new(size, 7).expect("payload");
        let messages: Vec<(Option<Bytes>, Bytes)> = (0..count)
            .map(|index| {
                (
                    (index % 2 == 0).then(|| Bytes::from(format!("key-{index}"))),
                    payload.message(1_000 + index as u64),
                )
            })
            .collect();
        let values = messages.iter().map(|(_, value)| value.clone()).collect();
        let batch = encode_batch(&messages, 1_700_000_000_000, codec, &mut Vec::new())
            .expect("batch encodes");
        (batch, values)
    }

    fn with_base_offset(batch: &Bytes, base: i64) -> Bytes {
        let mut patched = BytesMut::from(&batch[..]);
        patched[..8].copy_from_slice(&base.to_be_bytes());
        patched.freeze()
    }

    #[test]
    fn walks_uncompressed_and_compressed_batches() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Lz4,
            Codec::Zstd,
            Codec::Snappy,
        ] {
            let (first, first_values) = batch_of(5, codec, 100);
            let (second, second_values) = batch_of(3, codec, 300);
            let mut data = BytesMut::new();
            data.extend_from_slice(&with_base_offset(&first, 10));
            data.extend_from_slice(&with_base_offset(&second, 15));
            let mut seen = Vec::new();
            let walked = walk_records(&data.freeze(), |offset, value| {
                seen.push((offset, Bytes::copy_from_slice(value)));
            })
            .expect("walks");
            let expected: Vec<(i64, Bytes)> = (10..15)
                .zip(first_values)
                .chain((15..18).zip(second_values))
                .collect();
            assert_eq!(seen, expected, "{codec:?}");
            assert_eq!(walked.records, 8);
            assert_eq!(walked.value_bytes, 5 * 100 + 3 * 300);
            assert_eq!(walked.next_offset, Some(18));
        }
    }

    #[test]
    fn messages_are_encoded_as_one_batch() {
        for codec in [Codec::None, Codec::Zstd] {
            let (batch, _) = batch_of(50, codec, 100);
            let length = i32::from_be_bytes(
                batch[BATCH_LENGTH_OFFSET..][..4]
                    .try_into()
                    .expect("4 bytes"),
            );
            assert_eq!(
                length as usize + BATCH_LOG_OVERHEAD,
                batch.len(),
                "{codec:?}"
            );
            let count = i32::from_be_bytes(
                batch[RECORD_COUNT_OFFSET..][..4]
                    .try_into()
                    .expect("4 bytes"),
            );
            assert_eq!(count, 50);
            let base_sequence = i32::from_be_bytes(batch[53..57].try_into().expect("4 bytes"));
            assert_eq!(base_sequence, NO_SEQUENCE);
        }
    }

    #[test]
    fn a_partial_trailing_batch_is_left_for_the_next_fetch() {
        let (batch, _) = batch_of(4, Codec::None, 50);
        let mut data = BytesMut::new();
        data.extend_from_slice(&with_base_offset(&batch, 0));
        data.extend_from_slice(&with_base_offset(&batch, 4)[..batch.len() - 1]);
        let walked = walk_records(&data.freeze(), |_, _| {}).expect("walks");
        assert_eq!(walked.records, 4);
        assert_eq!(walked.next_offset, Some(4));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (batch, _) = batch_of(3, Codec::None, 20);
        for cut in 0..batch.len() {
            let mut broken = BytesMut::from(&batch[..]);
            broken[cut] ^= 0xff;
            let _ = walk_records(&broken.freeze(), |_, _| {});
        }
        let mut negative = BytesMut::from(&batch[..]);
        negative[BATCH_LENGTH_OFFSET..][..4].copy_from_slice(&(-5_i32).to_be_bytes());
        assert!(walk_records(&negative.freeze(), |_, _| {}).is_err());
    }

    #[test]
    fn messages_carry_their_send_time() {
        let payload = Payload::new(64, 1).expect("payload");
        let value = payload.message(123_456_789);
        assert_eq!(value.len(), 64);
        assert_eq!(
            u64::from_le_bytes(value[..TIMESTAMP_BYTES].try_into().expect("8 bytes")),
            123_456_789
        );
        assert!(Payload::new(7, 1).is_err());
    }
}
