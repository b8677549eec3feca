//! `ringlog log dump`: renders a [`PartitionScan`] as text (one line per frame) or as JSON.

use std::fmt::Write as _;
use std::path::Path;

use ringlog_engine::format::FrameHeader;

use super::scan::{FrameScan, IndexState, Marker, PartitionScan, SegmentScan};
use crate::json::Json;

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

fn header_json(header: &FrameHeader) -> Json {
    Json::object([
        ("base_offset", header.base_offset.into()),
        ("last_offset", header.last_offset().into()),
        ("record_count", header.record_count.into()),
        ("first_timestamp", header.first_timestamp.into()),
        ("max_timestamp", header.max_timestamp.into()),
        ("payload_bytes", header.payload_bytes.into()),
        ("leader_epoch", header.leader_epoch.into()),
        ("batch_crc", header.batch_crc.into()),
        ("synced_position", header.synced_position.into()),
    ])
}

fn frame_json(frame: &FrameScan) -> Json {
    match frame {
        FrameScan::Valid { position, header } => Json::object([
            ("position", (*position).into()),
            ("kind", Json::str("valid")),
            ("header", header_json(header)),
            ("header_crc_ok", true.into()),
            ("batch_crc_matches", true.into()),
        ]),
        FrameScan::Invalid {
            position,
            header,
            computed_crc,
            reason,
        } => Json::object([
            ("position", (*position).into()),
            ("kind", Json::str("invalid")),
            ("reason", Json::str(reason.clone())),
            ("header", Json::option(header.as_ref().map(header_json))),
            ("header_crc_ok", header.is_some().into()),
            (
                "computed_batch_crc",
                Json::option(computed_crc.map(Json::from)),
            ),
            (
                "batch_crc_matches",
                Json::option(header.as_ref().and_then(|header| {
                    computed_crc.map(|computed| Json::from(computed == header.batch_crc))
                })),
            ),
        ]),
        FrameScan::EndOfData {
            position,
            zeros_end,
        } => Json::object([
            ("position", (*position).into()),
            ("kind", Json::str("end_of_data")),
            ("zeros_end", (*zeros_end).into()),
        ]),
    }
}

fn marker_json<T>(marker: &Marker<T>, render: impl Fn(&T) -> Json) -> Json {
    match marker {
        Marker::Absent => Json::Null,
        Marker::Valid(value) => render(value),
        Marker::Damaged(reason) => Json::object([("damaged", Json::str(reason.clone()))]),
    }
}

fn segment_json(segment: &SegmentScan) -> Json {
    let index = match &segment.index {
        IndexState::Absent => Json::Null,
        IndexState::Valid {
            checkpoint,
            entries,
        } => Json::object([
            ("covered_position", checkpoint.covered_position.into()),
            ("next_offset", checkpoint.next_offset.into()),
            ("max_timestamp", checkpoint.max_timestamp.into()),
            (
                "offset_of_max_timestamp",
                checkpoint.offset_of_max_timestamp.into(),
            ),
            ("entry_count", entries.len().into()),
        ]),
        IndexState::Damaged(reason) => Json::object([("damaged", Json::str(reason.clone()))]),
    };
    Json::object([
        ("file", Json::str(segment.path.display().to_string())),
        ("base_offset", segment.base_offset.into()),
        ("file_bytes", segment.file_bytes.into()),
        ("index", index),
        (
            "frames",
            Json::Array(segment.frames.iter().map(frame_json).collect()),
        ),
    ])
}

/// The JSON dump of all partitions: `{"partitions": [...]}`.
pub fn to_json(partitions: &[PartitionScan]) -> Json {
    let partitions = partitions
        .iter()
        .map(|partition| {
            Json::object([
                ("dir", Json::str(partition.dir.display().to_string())),
                (
                    "clean_shutdown",
                    marker_json(&partition.clean_marker, |marker| {
                        Json::object([
                            ("active_base_offset", marker.active_base_offset.into()),
                            ("end_position", marker.end_position.into()),
                            ("log_end_offset", marker.log_end_offset.into()),
                        ])
                    }),
                ),
                (
                    "log_start_offset",
                    marker_json(&partition.log_start_offset, |offset| (*offset).into()),
                ),
                (
                    "leftovers",
                    Json::Array(
                        partition
                            .leftovers
                            .iter()
                            .map(|name| Json::str(name.clone()))
                            .collect(),
                    ),
                ),
                (
                    "segments",
                    Json::Array(partition.segments.iter().map(segment_json).collect()),
                ),
            ])
        })
        .collect();
    Json::object([("partitions", Json::Array(partitions))])
}
