//! `ringlog log dump`: renders a [`PartitionScan`] as text (one line per frame) or as JSON.

use std::fmt::Write as _;
use std::path::Path;

use ringlog_engine::format::FrameHeader;
use serde::Serialize;

use super::scan::{FrameScan, IndexState, Marker, PartitionScan, SegmentScan};

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

fn header_text(header: &FrameHeader) -> String {
    format!(
        "offsets {}..={} ({} records), first timestamp {}, max timestamp {}, payload {} bytes, \
         leader epoch {}, synced_position {}",
        header.base_offset,
        header.last_offset(),
        header.record_count,
        header.first_timestamp,
        header.max_timestamp,
        header.payload_bytes,
        header.leader_epoch,
        header.synced_position,
    )
}

/// The text dump of one partition.
pub fn to_text(partition: &PartitionScan) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(out, "partition {}", partition.dir.display());
    let _ = match &partition.clean_marker {
        Marker::Absent => writeln!(
            out,
            "  clean-shutdown: absent (next open validates the last segment)"
        ),
        Marker::Valid(marker) => writeln!(
            out,
            "  clean-shutdown: active segment base offset {}, end position {}, log end offset {}",
            marker.active_base_offset, marker.end_position, marker.log_end_offset
        ),
        Marker::Damaged(reason) => writeln!(out, "  clean-shutdown: DAMAGED: {reason}"),
    };
    let _ = match &partition.log_start_offset {
        Marker::Absent => writeln!(out, "  log-start-offset: absent (the first segment's base)"),
        Marker::Valid(offset) => writeln!(out, "  log-start-offset: {offset}"),
        Marker::Damaged(reason) => writeln!(out, "  log-start-offset: DAMAGED: {reason}"),
    };
    for leftover in &partition.leftovers {
        let _ = writeln!(out, "  leftover file (recovery deletes it): {leftover}");
    }
    let mut frame_count = 0;
    for segment in &partition.segments {
        segment_text(segment, &mut out);
        frame_count += segment
            .frames
            .iter()
            .filter(|frame| matches!(frame, FrameScan::Valid { .. }))
            .count();
    }
    let first = partition
        .segments
        .first()
        .map(|segment| segment.base_offset);
    let end = partition.segments.iter().rev().find_map(|segment| {
        segment.frames.iter().rev().find_map(|frame| match frame {
            FrameScan::Valid { header, .. } => Some(header.last_offset() + 1),
            _ => None,
        })
    });
    let _ = writeln!(
        out,
        "  summary: {} segments, {frame_count} valid frames, offsets {} to {}",
        partition.segments.len(),
        first.map_or_else(|| "-".to_string(), |offset| offset.to_string()),
        end.map_or_else(|| "-".to_string(), |offset| (offset - 1).to_string()),
    );
    out
}

fn segment_text(segment: &SegmentScan, out: &mut String) {
    let _ = writeln!(
        out,
        "  segment {}: base offset {}, {} bytes",
        file_name(&segment.path),
        segment.base_offset,
        segment.file_bytes
    );
    let index_name = file_name(&segment.index_path);
    let _ = match &segment.index {
        IndexState::Absent => writeln!(out, "    index {index_name}: absent"),
        IndexState::Valid {
            checkpoint,
            entries,
        } => writeln!(
            out,
            "    index {index_name}: covers positions [0, {}), next offset {}, max timestamp {}, \
             offset of max timestamp {}, {} entries{}",
            checkpoint.covered_position,
            checkpoint.next_offset,
            checkpoint.max_timestamp,
            checkpoint.offset_of_max_timestamp,
            entries.len(),
            entries
                .last()
                .map(|entry| format!(
                    " (last: relative offset {} at position {})",
                    entry.relative_offset, entry.position
                ))
                .unwrap_or_default(),
        ),
        IndexState::Damaged(reason) => writeln!(out, "    index {index_name}: DAMAGED: {reason}"),
    };
    for frame in &segment.frames {
        let _ = match frame {
            FrameScan::Valid { position, header } => writeln!(
                out,
                "    frame @{position}: {}, batch crc {:#010x} (matches), header crc ok",
                header_text(header),
                header.batch_crc
            ),
            FrameScan::Invalid {
                position,
                header: Some(header),
                computed_crc,
                reason,
            } => {
                let crc = match computed_crc {
                    Some(computed) if *computed == header.batch_crc => {
                        format!("batch crc {:#010x} (matches)", header.batch_crc)
                    }
                    Some(computed) => format!(
                        "batch crc {:#010x} (MISMATCH: data gives {computed:#010x})",
                        header.batch_crc
                    ),
                    None => format!("batch crc {:#010x} (payload unreadable)", header.batch_crc),
                };
                writeln!(
                    out,
                    "    frame @{position}: INVALID: {reason}; {}, {crc}, header crc ok",
                    header_text(header)
                )
            }
            FrameScan::Invalid {
                position,
                header: None,
                reason,
                ..
            } => {
                writeln!(
                    out,
                    "    frame @{position}: INVALID: {reason}; header crc bad or header cut"
                )
            }
            FrameScan::EndOfData {
                position,
                zeros_end,
            } => writeln!(
                out,
                "    end of data @{position}: zeros up to {zeros_end}{}",
                if *zeros_end < segment.file_bytes {
                    " (valid frames follow)"
                } else {
                    ""
                }
            ),
        };
    }
}

/// A frame header as `--json` shows it: the fields a reader of the log cares about, without
/// the on-disk framing ones (magic, version, reserved, header CRC).
#[derive(Serialize)]
struct HeaderJson {
    base_offset: i64,
    last_offset: i64,
    record_count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    payload_bytes: u32,
    leader_epoch: i32,
    batch_crc: u32,
    synced_position: u32,
}

impl From<&FrameHeader> for HeaderJson {
    fn from(header: &FrameHeader) -> HeaderJson {
        HeaderJson {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            record_count: header.record_count,
            first_timestamp: header.first_timestamp,
            max_timestamp: header.max_timestamp,
            payload_bytes: header.payload_bytes,
            leader_epoch: header.leader_epoch,
            batch_crc: header.batch_crc,
            synced_position: header.synced_position,
        }
    }
}

/// One [`FrameScan`]. Untagged with an explicit `kind` field rather than serde's internal tag,
/// which would move `kind` before `position`.
#[derive(Serialize)]
#[serde(untagged)]
enum FrameJson<'a> {
    Valid {
        position: u64,
        kind: &'static str,
        header: HeaderJson,
        header_crc_ok: bool,
        batch_crc_matches: bool,
    },
    Invalid {
        position: u64,
        kind: &'static str,
        reason: &'a str,
        header: Option<HeaderJson>,
        header_crc_ok: bool,
        computed_batch_crc: Option<u32>,
        batch_crc_matches: Option<bool>,
    },
    EndOfData {
        position: u64,
        kind: &'static str,
        zeros_end: u64,
    },
}

impl<'a> From<&'a FrameScan> for FrameJson<'a> {
    fn from(frame: &'a FrameScan) -> FrameJson<'a> {
        match frame {
            FrameScan::Valid { position, header } => FrameJson::Valid {
                position: *position,
                kind: "valid",
                header: header.into(),
                header_crc_ok: true,
                batch_crc_matches: true,
            },
            FrameScan::Invalid {
                position,
                header,
                computed_crc,
                reason,
            } => FrameJson::Invalid {
                position: *position,
                kind: "invalid",
                reason,
                header: header.as_ref().map(HeaderJson::from),
                header_crc_ok: header.is_some(),
                computed_batch_crc: *computed_crc,
                batch_crc_matches: header
                    .as_ref()
                    .and_then(|header| computed_crc.map(|computed| computed == header.batch_crc)),
            },
            FrameScan::EndOfData {
                position,
                zeros_end,
            } => FrameJson::EndOfData {
                position: *position,
                kind: "end_of_data",
                zeros_end: *zeros_end,
            },
        }
    }
}

/// A marker file or an index checkpoint: null when absent, its contents when valid, and
/// `{"damaged": reason}` when it cannot be read.
#[derive(Serialize)]
#[serde(untagged)]
enum MarkerJson<'a, T> {
    Absent,
    Valid(T),
    Damaged { damaged: &'a str },
}

impl<'a, T> MarkerJson<'a, T> {
    fn new<S>(marker: &'a Marker<S>, render: impl Fn(&'a S) -> T) -> MarkerJson<'a, T> {
        match marker {
            Marker::Absent => MarkerJson::Absent,
            Marker::Valid(value) => MarkerJson::Valid(render(value)),
            Marker::Damaged(reason) => MarkerJson::Damaged { damaged: reason },
        }
    }
}

#[derive(Serialize)]
struct CleanMarkerJson {
    active_base_offset: i64,
    end_position: u64,
    log_end_offset: i64,
}

#[derive(Serialize)]
struct IndexJson {
    covered_position: u64,
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    entry_count: usize,
}

#[derive(Serialize)]
struct SegmentJson<'a> {
    file: String,
    base_offset: i64,
    file_bytes: u64,
    index: MarkerJson<'a, IndexJson>,
    frames: Vec<FrameJson<'a>>,
}

impl<'a> From<&'a SegmentScan> for SegmentJson<'a> {
    fn from(segment: &'a SegmentScan) -> SegmentJson<'a> {
        let index = match &segment.index {
            IndexState::Absent => MarkerJson::Absent,
            IndexState::Valid {
                checkpoint,
                entries,
            } => MarkerJson::Valid(IndexJson {
                covered_position: checkpoint.covered_position,
                next_offset: checkpoint.next_offset,
                max_timestamp: checkpoint.max_timestamp,
                offset_of_max_timestamp: checkpoint.offset_of_max_timestamp,
                entry_count: entries.len(),
            }),
            IndexState::Damaged(reason) => MarkerJson::Damaged { damaged: reason },
        };
        SegmentJson {
            file: segment.path.display().to_string(),
            base_offset: segment.base_offset,
            file_bytes: segment.file_bytes,
            index,
            frames: segment.frames.iter().map(FrameJson::from).collect(),
        }
    }
}

#[derive(Serialize)]
struct PartitionJson<'a> {
    dir: String,
    clean_shutdown: MarkerJson<'a, CleanMarkerJson>,
    log_start_offset: MarkerJson<'a, i64>,
    leftovers: &'a [String],
    segments: Vec<SegmentJson<'a>>,
}

#[derive(Serialize)]
struct DumpJson<'a> {
    partitions: Vec<PartitionJson<'a>>,
}

/// The JSON dump of all partitions, on one line: `{"partitions": [...]}`. Keys keep the order
/// of the structs above (scripts may diff dumps).
pub fn to_json(partitions: &[PartitionScan]) -> serde_json::Result<String> {
    let dump = DumpJson {
        partitions: partitions
            .iter()
            .map(|partition| PartitionJson {
                dir: partition.dir.display().to_string(),
                clean_shutdown: MarkerJson::new(&partition.clean_marker, |marker| {
                    CleanMarkerJson {
                        active_base_offset: marker.active_base_offset,
                        end_position: marker.end_position,
                        log_end_offset: marker.log_end_offset,
                    }
                }),
                log_start_offset: MarkerJson::new(&partition.log_start_offset, |offset| *offset),
                leftovers: &partition.leftovers,
                segments: partition.segments.iter().map(SegmentJson::from).collect(),
            })
            .collect(),
    };
    serde_json::to_string(&dump)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ringlog_engine::index::IndexCheckpoint;

    use super::*;
    use crate::inspect::scan::CleanMarker;

    fn header(base_offset: i64) -> FrameHeader {
        FrameHeader {
            magic: 0,
            version: 1,
            flags: 0,
            base_offset,
            first_timestamp: 1_000,
            max_timestamp: 1_001,
            last_offset_delta: 1,
            record_count: 2,
            payload_bytes: 100,
            leader_epoch: 3,
            batch_crc: 7,
            synced_position: 0,
            reserved: 0,
            header_crc: 0,
        }
    }

    /// Every kind of frame and marker, keys in the order the dump has always written them.
    #[test]
    fn json_keeps_its_shape_and_key_order() {
        let partition = PartitionScan {
            dir: PathBuf::from("/data/orders-0"),
            segments: vec![SegmentScan {
                base_offset: 0,
                path: PathBuf::from("/data/orders-0/00000000000000000000.log"),
                index_path: PathBuf::from("/data/orders-0/00000000000000000000.index"),
                file_bytes: 4096,
                index: IndexState::Valid {
                    checkpoint: IndexCheckpoint {
                        covered_position: 128,
                        next_offset: 2,
                        max_timestamp: 1_001,
                        offset_of_max_timestamp: 1,
                    },
                    entries: Vec::new(),
                },
                frames: vec![
                    FrameScan::Valid {
                        position: 0,
                        header: header(0),
                    },
                    FrameScan::Invalid {
                        position: 128,
                        header: Some(header(2)),
                        computed_crc: Some(8),
                        reason: "batch crc \"mismatch\"\n".to_string(),
                    },
                    FrameScan::Invalid {
                        position: 256,
                        header: None,
                        computed_crc: None,
                        reason: "header crc".to_string(),
                    },
                    FrameScan::EndOfData {
                        position: 384,
                        zeros_end: 4096,
                    },
                ],
            }],
            clean_marker: Marker::Valid(CleanMarker {
                active_base_offset: 0,
                end_position: 384,
                log_end_offset: 2,
            }),
            log_start_offset: Marker::Damaged("bad crc".to_string()),
            leftovers: vec!["00000000000000000000.index.tmp".to_string()],
        };
        let absent = PartitionScan {
            dir: PathBuf::from("/data/empty-0"),
            segments: Vec::new(),
            clean_marker: Marker::Absent,
            log_start_offset: Marker::Valid(5),
            leftovers: Vec::new(),
        };
        let header = r#"{"base_offset":0,"last_offset":1,"record_count":2,"first_timestamp":1000,"max_timestamp":1001,"payload_bytes":100,"leader_epoch":3,"batch_crc":7,"synced_position":0}"#;
        let header_2 = header.replace(
            r#""base_offset":0,"last_offset":1"#,
            r#""base_offset":2,"last_offset":3"#,
        );
        let expected = format!(
            concat!(
                r#"{{"partitions":[{{"dir":"/data/orders-0","#,
                r#""clean_shutdown":{{"active_base_offset":0,"end_position":384,"log_end_offset":2}},"#,
                r#""log_start_offset":{{"damaged":"bad crc"}},"#,
                r#""leftovers":["00000000000000000000.index.tmp"],"#,
                r#""segments":[{{"file":"/data/orders-0/00000000000000000000.log","base_offset":0,"file_bytes":4096,"#,
                r#""index":{{"covered_position":128,"next_offset":2,"max_timestamp":1001,"offset_of_max_timestamp":1,"entry_count":0}},"#,
                r#""frames":[{{"position":0,"kind":"valid","header":{header},"header_crc_ok":true,"batch_crc_matches":true}},"#,
                r#"{{"position":128,"kind":"invalid","reason":"batch crc \"mismatch\"\n","header":{header_2},"header_crc_ok":true,"computed_batch_crc":8,"batch_crc_matches":false}},"#,
                r#"{{"position":256,"kind":"invalid","reason":"header crc","header":null,"header_crc_ok":false,"computed_batch_crc":null,"batch_crc_matches":null}},"#,
                r#"{{"position":384,"kind":"end_of_data","zeros_end":4096}}]}}]}},"#,
                r#"{{"dir":"/data/empty-0","clean_shutdown":null,"log_start_offset":5,"leftovers":[],"segments":[]}}]}}"#,
            ),
            header = header,
            header_2 = header_2,
        );
        assert_eq!(
            to_json(&[partition, absent]).expect("serializable"),
            expected
        );
    }
}
