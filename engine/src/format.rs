//! The on-disk frame format and the Kafka v2 RecordBatch checks done on append.
//!
//! A segment is a sequence of frames. A frame is a fixed-size rkyv-archived [`FrameHeader`]
//! followed by one Kafka RecordBatch exactly as the client sent it (only its base offset and
//! partition leader epoch patched, which its CRC-32C does not cover), padded with zeros to
//! [`FRAME_ALIGNMENT_BYTES`]. The byte layout is documented in `docs/on-disk-format.md` and pinned
//! by a golden file in the tests.

use bytes::{Bytes, BytesMut};
use rkyv::rancor;

use crate::error::{Error, Result};

/// First four bytes of every frame header: "RLF1" read as a little-endian u32. A cheap filter
/// when scanning damaged data for the next frame.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"RLF1");

/// Version of the frame header layout. Bumped on any change to [`FrameHeader`].
pub const FRAME_VERSION: u16 = 1;

/// Size of an archived frame header. Fixed: the struct has only primitive fields.
pub const FRAME_HEADER_BYTES: usize = 64;

/// Frames start at multiples of 8 bytes so the archived header (which holds i64s) can be read in
/// place from an aligned buffer and a scan for the next frame only probes 1 position in 8.
pub const FRAME_ALIGNMENT_BYTES: usize = 8;

/// Size of a Kafka v2 RecordBatch header, up to and including `recordsCount`.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes of a batch not counted in its `batchLength` field (baseOffset and batchLength).
const BATCH_LENGTH_PREFIX_BYTES: usize = 12;

/// Offsets of the RecordBatch v2 fields (big-endian), from the Kafka protocol documentation.
mod batch_field {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORDS_COUNT: usize = 57;
}

/// Attribute bits of a RecordBatch.
pub mod attributes {
    pub const COMPRESSION_MASK: i16 = 0x07;
    pub const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
    pub const TRANSACTIONAL: i16 = 0x10;
    pub const CONTROL: i16 = 0x20;
}

/// The header written before every batch in a segment. Archived with rkyv (little-endian,
/// aligned, 32-bit pointers — pinned in the workspace's `Cargo.toml`); its archived form is the
/// on-disk layout. Field order keeps every field naturally aligned with no padding.
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FrameHeader {
    pub magic: u32,
    pub version: u16,
    /// Reserved for future use; written as zero.
    pub flags: u16,
    pub base_offset: i64,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub last_offset_delta: i32,
    pub record_count: i32,
    /// Length of the RecordBatch that follows (without padding).
    pub payload_bytes: u32,
    pub leader_epoch: i32,
    /// The batch's own CRC-32C, copied here so tools can report it without parsing the batch.
    pub batch_crc: u32,
    /// How many bytes of this segment were known durable when this frame was appended. Recovery
    /// uses it to tell a torn tail (damage after the last sync) from corruption of data that
    /// had been synced (see `segment::recover`).
    pub synced_position: u32,
    /// Reserved for future use; written as zero.
    pub reserved: u32,
    /// CRC-32 (crc32fast) of the 60 bytes before it.
    pub header_crc: u32,
}

const _: () = assert!(std::mem::size_of::<ArchivedFrameHeader>() == FRAME_HEADER_BYTES);

#[repr(C, align(8))]
struct AlignedHeader([u8; FRAME_HEADER_BYTES]);

impl FrameHeader {
    /// The last offset of the batch this header describes.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Bytes the whole frame occupies in the segment, padding included.
    pub fn frame_bytes(&self) -> u64 {
        frame_bytes_for(self.payload_bytes as usize) as u64
    }

    /// Archives the header, computing its checksum. The returned bytes are what goes on disk.
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut header = *self;
        header.header_crc = 0;
        let mut bytes = archive(&header);
        let crc = crc32fast::hash(&bytes[..FRAME_HEADER_BYTES - 4]);
        header.header_crc = crc;
        bytes = archive(&header);
        // Pair assertion: what we write must read back as what we meant.
        debug_assert_eq!(FrameHeader::decode(&bytes), Ok(header));
        bytes
    }

    /// Reads a header from the start of `bytes`, checking its magic, version and checksum.
    pub fn decode(bytes: &[u8]) -> std::result::Result<FrameHeader, FrameError> {
        if bytes.len() < FRAME_HEADER_BYTES {
            return Err(FrameError::Truncated);
        }
        let bytes = &bytes[..FRAME_HEADER_BYTES];
        if bytes.iter().all(|&byte| byte == 0) {
            return Err(FrameError::Zeroed);
        }
        let stored_crc = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
        if crc32fast::hash(&bytes[..FRAME_HEADER_BYTES - 4]) != stored_crc {
            return Err(FrameError::BadChecksum);
        }
        let mut aligned = AlignedHeader([0; FRAME_HEADER_BYTES]);
        aligned.0.copy_from_slice(bytes);
        let archived = rkyv::access::<ArchivedFrameHeader, rancor::Error>(&aligned.0)
            .map_err(|_| FrameError::BadChecksum)?;
        let header = FrameHeader {
            magic: archived.magic.to_native(),
            version: archived.version.to_native(),
            flags: archived.flags.to_native(),
            base_offset: archived.base_offset.to_native(),
            first_timestamp: archived.first_timestamp.to_native(),
            max_timestamp: archived.max_timestamp.to_native(),
            last_offset_delta: archived.last_offset_delta.to_native(),
            record_count: archived.record_count.to_native(),
            payload_bytes: archived.payload_bytes.to_native(),
            leader_epoch: archived.leader_epoch.to_native(),
            batch_crc: archived.batch_crc.to_native(),
            synced_position: archived.synced_position.to_native(),
            reserved: archived.reserved.to_native(),
            header_crc: archived.header_crc.to_native(),
        };
        if header.magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic);
        }
        if header.version != FRAME_VERSION {
            return Err(FrameError::UnknownVersion(header.version));
        }
        Ok(header)
    }
}

fn archive(header: &FrameHeader) -> [u8; FRAME_HEADER_BYTES] {
    let mut aligned = AlignedHeader([0; FRAME_HEADER_BYTES]);
    let written = rkyv::api::high::to_bytes_in::<_, rancor::Error>(
        header,
        rkyv::ser::writer::Buffer::from(&mut aligned.0[..]),
    )
    .map(|buffer| buffer.len());
    // Serializing a struct of primitives into a buffer of exactly its size cannot fail.
    assert_eq!(
        written.ok(),
        Some(FRAME_HEADER_BYTES),
        "frame header archive size"
    );
    aligned.0
}

/// Why bytes at a position are not a valid frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header remain.
    Truncated,
    /// The header is all zeros: the end of the written part of a preallocated segment.
    Zeroed,
    BadChecksum,
    BadMagic,
    UnknownVersion(u16),
}

/// Bytes a frame with a payload of `payload_bytes` occupies, padding included.
pub fn frame_bytes_for(payload_bytes: usize) -> usize {
    let unpadded = FRAME_HEADER_BYTES + payload_bytes;
    unpadded.div_ceil(FRAME_ALIGNMENT_BYTES) * FRAME_ALIGNMENT_BYTES
}

/// The fields of a Kafka v2 RecordBatch header the engine uses. Parsed from a batch without
/// touching its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

/// The `recordsCount` of the batch at the start of `batch`; `None` if its header is cut short.
pub fn batch_records_count(batch: &[u8]) -> Option<i32> {
    let field = batch.get(batch_field::RECORDS_COUNT..batch_field::RECORDS_COUNT + 4)?;
    Some(i32::from_be_bytes(field.try_into().ok()?))
}

impl BatchInfo {
    /// Reads the header fields of the batch at the start of `batch`, checking only that they are
    /// present. Use [`validate_batch`] for the full check.
    pub fn parse(batch: &[u8]) -> Result<BatchInfo> {
        if batch.len() < BATCH_HEADER_BYTES {
            return Err(Error::InvalidBatch(format!(
                "{} bytes is shorter than a record batch header ({BATCH_HEADER_BYTES})",
                batch.len()
            )));
        }
        use batch_field::*;
        Ok(BatchInfo {
            base_offset: read_i64(batch, BASE_OFFSET),
            batch_length: read_i32(batch, BATCH_LENGTH),
            partition_leader_epoch: read_i32(batch, PARTITION_LEADER_EPOCH),
            magic: batch[MAGIC] as i8,
            crc: read_i32(batch, CRC) as u32,
            attributes: read_i16(batch, ATTRIBUTES),
            last_offset_delta: read_i32(batch, LAST_OFFSET_DELTA),
            base_timestamp: read_i64(batch, BASE_TIMESTAMP),
            max_timestamp: read_i64(batch, MAX_TIMESTAMP),
            producer_id: read_i64(batch, PRODUCER_ID),
            producer_epoch: read_i16(batch, PRODUCER_EPOCH),
            base_sequence: read_i32(batch, BASE_SEQUENCE),
            records_count: read_i32(batch, RECORDS_COUNT),
        })
    }

    pub fn compression(&self) -> i16 {
        self.attributes & attributes::COMPRESSION_MASK
    }

    pub fn is_control(&self) -> bool {
        self.attributes & attributes::CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & attributes::TRANSACTIONAL != 0
    }

    /// Total size of the batch in bytes, from its `batchLength` field.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + BATCH_LENGTH_PREFIX_BYTES
    }
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut buffer = [0_u8; 8];
    buffer.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(buffer)
}

/// The CRC-32C Kafka computes over a batch: from `attributes` to the end.
pub fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[batch_field::ATTRIBUTES..])
}

/// Checks one RecordBatch as a broker must before writing it: header present, `batchLength`
/// equal to the bytes given, magic 2, CRC-32C matching, a positive record count consistent with
/// `lastOffsetDelta`, and — for uncompressed batches, whose records can be walked without
/// decoding them — exactly `recordsCount` length-prefixed records filling the batch.
pub fn validate_batch(batch: &[u8]) -> Result<BatchInfo> {
    let info = BatchInfo::parse(batch)?;
    if info.batch_length < 0 || info.total_bytes() != batch.len() {
        return Err(Error::InvalidBatch(format!(
            "batchLength {} does not match the {} bytes received",
            info.batch_length,
            batch.len()
        )));
    }
    if info.magic != 2 {
        return Err(Error::InvalidBatch(format!(
            "unsupported magic {}",
            info.magic
        )));
    }
    let computed = batch_crc(batch);
    if computed != info.crc {
        return Err(Error::CorruptBatch {
            stored: info.crc,
            computed,
        });
    }
    if info.records_count <= 0 {
        return Err(Error::InvalidBatch(format!(
            "record count {}",
            info.records_count
        )));
    }
    if info.last_offset_delta != info.records_count - 1 {
        return Err(Error::InvalidBatch(format!(
            "lastOffsetDelta {} does not match record count {}",
            info.last_offset_delta, info.records_count
        )));
    }
    if info.compression() == 0 {
        let walked = count_records(&batch[BATCH_HEADER_BYTES..])?;
        if walked != info.records_count as usize {
            return Err(Error::InvalidBatch(format!(
                "record count {} does not match the {walked} records present",
                info.records_count
            )));
        }
    }
    Ok(info)
}

/// Counts the length-prefixed records of an uncompressed batch body, failing if they do not
/// exactly fill it. Reads only each record's length varint.
fn count_records(mut body: &[u8]) -> Result<usize> {
    let mut count = 0;
    while !body.is_empty() {
        let (length, used) = read_varint(body)?;
        let length = usize::try_from(length)
            .map_err(|_| Error::InvalidBatch(format!("negative record length {length}")))?;
        let end = used
            .checked_add(length)
            .filter(|&end| end <= body.len())
            .ok_or_else(|| Error::InvalidBatch("record runs past the end of its batch".into()))?;
        body = &body[end..];
        count += 1;
    }
    Ok(count)
}

/// Reads a zigzag-encoded varint (Kafka's record field encoding); returns (value, bytes used).
pub fn read_varint(bytes: &[u8]) -> Result<(i64, usize)> {
    let mut raw: u64 = 0;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let value = (raw >> 1) as i64 ^ -((raw & 1) as i64);
            return Ok((value, index + 1));
        }
    }
    Err(Error::InvalidBatch("malformed varint".into()))
}

/// Splits a Produce request's record set (one or more concatenated batches) into batches,
/// validating each. Returns slices of the input: nothing is copied.
pub fn split_batches(records: &Bytes) -> Result<Vec<(Bytes, BatchInfo)>> {
    let (batches, partial_tail_bytes) = split_records(records, PartialTail::Refuse)?;
    debug_assert_eq!(partial_tail_bytes, 0);
    if batches.is_empty() {
        return Err(Error::InvalidBatch("empty record set".into()));
    }
    Ok(batches)
}

/// Splits a Fetch response's record set into its whole batches, validating each, and ignores
/// an incomplete last batch (a leader cuts its response at the fetch's byte limit, possibly
/// inside a batch, even inside its length prefix). Returns the whole batches, possibly none,
/// and how many bytes the incomplete tail had. A batch that is whole but invalid is an error.
pub fn split_whole_batches(records: &Bytes) -> Result<(Vec<(Bytes, BatchInfo)>, usize)> {
    split_records(records, PartialTail::Ignore)
}

/// What [`split_records`] does with bytes at the end that do not hold a whole batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PartialTail {
    /// A client's Produce: the record set must be exactly whole batches.
    Refuse,
    /// A leader's Fetch response: its last batch may be cut short.
    Ignore,
}

fn split_records(
    records: &Bytes,
    partial_tail: PartialTail,
) -> Result<(Vec<(Bytes, BatchInfo)>, usize)> {
    let mut batches = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let remaining = &records[position..];
        if partial_tail == PartialTail::Ignore && remaining.len() < BATCH_LENGTH_PREFIX_BYTES {
            return Ok((batches, remaining.len()));
        }
        if partial_tail == PartialTail::Refuse && remaining.len() < BATCH_HEADER_BYTES {
            return Err(Error::InvalidBatch(format!(
                "{} trailing bytes after the last record batch",
                remaining.len()
            )));
        }
        let length = read_i32(remaining, batch_field::BATCH_LENGTH);
        let total = usize::try_from(length)
            .ok()
            .and_then(|length| length.checked_add(BATCH_LENGTH_PREFIX_BYTES))
            .filter(|&total| total >= BATCH_HEADER_BYTES);
        let total = match total {
            Some(total) if total <= remaining.len() => total,
            Some(_) if partial_tail == PartialTail::Ignore => {
                return Ok((batches, remaining.len()));
            }
            _ => {
                return Err(Error::InvalidBatch(format!(
                    "batchLength {length} does not fit the {} bytes that remain",
                    remaining.len()
                )))
            }
        };
        let batch = records.slice(position..position + total);
        let info = validate_batch(&batch)?;
        batches.push((batch, info));
        position += total;
    }
    Ok((batches, 0))
}

/// Returns a copy of `batch` with its base offset and partition leader epoch set, the two fields
/// the broker assigns. Neither is covered by the batch's CRC, so the client's bytes stay valid.
pub fn patch_batch(batch: &[u8], base_offset: i64, leader_epoch: i32) -> BytesMut {
    let mut patched = BytesMut::from(batch);
    patched[batch_field::BASE_OFFSET..batch_field::BASE_OFFSET + 8]
        .copy_from_slice(&base_offset.to_be_bytes());
    patched[batch_field::PARTITION_LEADER_EPOCH..batch_field::PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
    patched
}

/// Sets a batch's timestamp type to LogAppendTime with `timestamp_ms` as its max timestamp, as
/// a broker does for topics with `message.timestamp.type=LogAppendTime`, and recomputes its
/// CRC-32C (both fields are covered by it).
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let attributes =
        read_i16(batch, batch_field::ATTRIBUTES) | attributes::TIMESTAMP_TYPE_LOG_APPEND;
    batch[batch_field::ATTRIBUTES..batch_field::ATTRIBUTES + 2]
        .copy_from_slice(&attributes.to_be_bytes());
    batch[batch_field::MAX_TIMESTAMP..batch_field::MAX_TIMESTAMP + 8]
        .copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = batch_crc(batch);
    batch[batch_field::CRC..batch_field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A record's key and value; `None` is Kafka's null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds an uncompressed v2 RecordBatch from (key, value) pairs. The engine never builds
/// batches on the data path; this serves tests, benchmarks and tools that need valid batches.
pub fn build_batch(base_timestamp_ms: i64, records: &[KeyValue<'_>]) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = Vec::new();
    for (index, (key, value)) in records.iter().enumerate() {
        let mut record = Vec::new();
        record.push(0); // attributes
        write_varint(&mut record, 0); // timestamp delta
        write_varint(&mut record, index as i64); // offset delta
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    write_varint(&mut record, bytes.len() as i64);
                    record.extend_from_slice(bytes);
                }
                None => write_varint(&mut record, -1),
            }
        }
        write_varint(&mut record, 0); // header count
        write_varint(&mut body, record.len() as i64);
        body.extend_from_slice(&record);
    }
    let total = BATCH_HEADER_BYTES + body.len();
    let mut batch = vec![0_u8; BATCH_HEADER_BYTES];
    use batch_field::*;
    batch[BATCH_LENGTH..BATCH_LENGTH + 4]
        .copy_from_slice(&((total - BATCH_LENGTH_PREFIX_BYTES) as i32).to_be_bytes());
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&(-1_i32).to_be_bytes());
    batch[MAGIC] = 2;
    batch[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    batch[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&base_timestamp_ms.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&base_timestamp_ms.to_be_bytes());
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&(-1_i64).to_be_bytes());
    batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&(-1_i16).to_be_bytes());
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&(-1_i32).to_be_bytes());
    batch[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&(records.len() as i32).to_be_bytes());
    batch.extend_from_slice(&body);
    let crc = batch_crc(&batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if raw < 0x80 {
            out.push(raw as u8);
            return;
        }
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_header() -> FrameHeader {
        FrameHeader {
            magic: FRAME_MAGIC,
            version: FRAME_VERSION,
            flags: 0,
            base_offset: 42,
            first_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_123,
            last_offset_delta: 9,
            record_count: 10,
            payload_bytes: 1234,
            leader_epoch: 3,
            batch_crc: 0xdead_beef,
            synced_position: 4096,
            reserved: 0,
            header_crc: 0,
        }
    }

    #[test]
    fn records_count_is_read_from_the_batch_header() {
        let batch = build_batch(0, &[(None, Some(b"a")), (None, Some(b"b")), (None, None)]);
        assert_eq!(batch_records_count(&batch), Some(3));
        assert_eq!(batch_records_count(&batch[..BATCH_HEADER_BYTES - 1]), None);
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = sample_header();
        let bytes = header.encode();
        let decoded = FrameHeader::decode(&bytes).expect("valid header");
        assert_eq!(decoded.base_offset, 42);
        assert_eq!(decoded.last_offset(), 51);
        for index in 0..FRAME_HEADER_BYTES {
            let mut damaged = bytes;
            damaged[index] ^= 0x01;
            assert!(
                FrameHeader::decode(&damaged).is_err(),
                "flip at byte {index} not detected"
            );
        }
        assert_eq!(
            FrameHeader::decode(&[0; FRAME_HEADER_BYTES]),
            Err(FrameError::Zeroed)
        );
        assert_eq!(
            FrameHeader::decode(&bytes[..10]),
            Err(FrameError::Truncated)
        );
    }

    #[test]
    fn header_layout_is_little_endian_and_pinned() {
        // The archived layout is the on-disk format: field positions must never move silently.
        let bytes = sample_header().encode();
        assert_eq!(&bytes[0..4], b"RLF1");
        assert_eq!(&bytes[4..6], &FRAME_VERSION.to_le_bytes());
        assert_eq!(&bytes[8..16], &42_i64.to_le_bytes());
        assert_eq!(&bytes[32..36], &9_i32.to_le_bytes());
        assert_eq!(&bytes[40..44], &1234_u32.to_le_bytes());
        assert_eq!(&bytes[52..56], &4096_u32.to_le_bytes());
    }

    #[test]
    fn builds_and_validates_batches() {
        let batch = build_batch(
            1000,
            &[(Some(b"k"), Some(b"v")), (None, None), (None, Some(b""))],
        );
        let info = validate_batch(&batch).expect("valid");
        assert_eq!(info.records_count, 3);
        assert_eq!(info.last_offset_delta, 2);
        let patched = patch_batch(&batch, 77, 5);
        let info = validate_batch(&patched).expect("patching keeps the CRC valid");
        assert_eq!(info.base_offset, 77);
        assert_eq!(info.partition_leader_epoch, 5);
    }

    #[test]
    fn rejects_bad_batches() {
        let batch = build_batch(1000, &[(Some(b"k"), Some(b"value"))]);
        let mut flipped = batch.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(matches!(
            validate_batch(&flipped),
            Err(Error::CorruptBatch { .. })
        ));
        let mut magic = batch.to_vec();
        magic[batch_field::MAGIC] = 1;
        assert!(matches!(
            validate_batch(&magic),
            Err(Error::InvalidBatch(_))
        ));
        // A record count that disagrees with the records present: fix up the CRC so only the
        // count is wrong.
        let mut count = batch.to_vec();
        count[batch_field::RECORDS_COUNT + 3] = 2;
        count[batch_field::LAST_OFFSET_DELTA + 3] = 1;
        let crc = batch_crc(&count);
        count[batch_field::CRC..batch_field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batch(&count),
            Err(Error::InvalidBatch(_))
        ));
        assert!(validate_batch(&batch[..30]).is_err());
    }

    #[test]
    fn splits_concatenated_batches_and_rejects_garbage_lengths() {
        let first = build_batch(1, &[(None, Some(b"a"))]);
        let second = build_batch(2, &[(None, Some(b"b")), (None, Some(b"c"))]);
        let mut both = first.to_vec();
        both.extend_from_slice(&second);
        let batches = split_batches(&Bytes::from(both.clone())).expect("two batches");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].1.records_count, 2);
        both.truncate(both.len() - 3);
        assert!(split_batches(&Bytes::from(both)).is_err());
        let mut huge = first.to_vec();
        huge[batch_field::BATCH_LENGTH..batch_field::BATCH_LENGTH + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(split_batches(&Bytes::from(huge)).is_err());
        assert!(split_batches(&Bytes::new()).is_err());
    }

    #[test]
    fn whole_batches_ignore_a_cut_tail_but_not_a_bad_batch() {
        let first = build_batch(1, &[(None, Some(b"a"))]);
        let second = build_batch(2, &[(None, Some(b"b")), (None, Some(b"c"))]);
        let mut both = first.to_vec();
        both.extend_from_slice(&second);
        // Cut anywhere in the second batch, even inside its length prefix: the first is kept.
        for cut in [1, 5, BATCH_LENGTH_PREFIX_BYTES, 40, second.len() - 1] {
            let records = Bytes::from(both[..first.len() + cut].to_vec());
            let (batches, tail_bytes) = split_whole_batches(&records).expect("a cut tail");
            assert_eq!(batches.len(), 1, "cut {cut}");
            assert_eq!(batches[0].0, first);
            assert_eq!(tail_bytes, cut);
        }
        let (batches, tail_bytes) = split_whole_batches(&Bytes::from(both.clone())).expect("whole");
        assert_eq!((batches.len(), tail_bytes), (2, 0));
        let (batches, tail_bytes) = split_whole_batches(&first.slice(..30)).expect("only a cut");
        assert_eq!((batches.len(), tail_bytes), (0, 30));
        assert_eq!(
            split_whole_batches(&Bytes::new()).expect("empty").0.len(),
            0
        );
        // A whole batch that is damaged is still refused.
        let mut damaged = both.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            split_whole_batches(&Bytes::from(damaged)),
            Err(Error::CorruptBatch { .. })
        ));
        // A length too small to be a batch is garbage, not a cut.
        let mut tiny = both;
        tiny[first.len() + batch_field::BATCH_LENGTH..first.len() + batch_field::BATCH_LENGTH + 4]
            .copy_from_slice(&10_i32.to_be_bytes());
        assert!(split_whole_batches(&Bytes::from(tiny)).is_err());
    }

    #[test]
    fn log_append_time_recomputes_crc() {
        let mut batch = build_batch(1000, &[(None, Some(b"x"))]).to_vec();
        set_log_append_time(&mut batch, 5000);
        let info = validate_batch(&batch).expect("still valid");
        assert_eq!(info.max_timestamp, 5000);
        assert_ne!(info.attributes & attributes::TIMESTAMP_TYPE_LOG_APPEND, 0);
    }
}
