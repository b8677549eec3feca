//! `ringlog log verify`: applies the engine's recovery rules to a [`PartitionScan`] and lists
//! what is wrong, as `file:position: reason`.
//!
//! Problems are damage recovery would refuse (an invalid frame in a sealed segment, or before
//! data proven synced), offsets that are not contiguous, checkpoints and markers that do not
//! decode or contradict the frames. Notes are states a crash legitimately leaves and recovery
//! repairs: a torn tail, a missing index, leftover temporary files. A zeroed header in the last
//! segment is the end of the data (segments are preallocated with zeros), not damage.

use std::collections::BTreeMap;
use std::path::Path;

use ringlog_engine::format::FrameHeader;
use ringlog_engine::log::{CLEAN_SHUTDOWN_FILE, LOG_START_OFFSET_FILE};

use super::scan::{FrameScan, IndexState, Marker, PartitionScan, SegmentScan};

/// What verifying one partition found.
pub struct Report {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    pub summary: String,
}

fn at(path: &Path, position: u64, reason: impl std::fmt::Display) -> String {
    format!("{}:{position}: {reason}", path.display())
}

/// What the frames of one segment add up to, up to its first damage.
struct SegmentFacts {
    /// The offset after the last frame before any damage.
    next_offset: i64,
    /// The position after the last frame before any damage.
    data_end: u64,
    valid_frames: usize,
    /// Frame positions and headers before any damage, for checking the index against.
    frames: BTreeMap<u64, FrameHeader>,
}

pub fn verify(partition: &PartitionScan) -> Report {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let clean_path = partition.dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = match &partition.clean_marker {
        Marker::Valid(marker) => Some(*marker),
        Marker::Absent => None,
        Marker::Damaged(reason) => {
            problems.push(at(
                &clean_path,
                0,
                format!("damaged clean-shutdown marker: {reason}"),
            ));
            None
        }
    };
    for leftover in &partition.leftovers {
        notes.push(at(
            &partition.dir.join(leftover),
            0,
            "leftover file; recovery deletes it",
        ));
    }
    let mut total_frames = 0;
    let mut previous_end: Option<i64> = None;
    let mut log_end_offset = None;
    let segment_count = partition.segments.len();
    for (index, segment) in partition.segments.iter().enumerate() {
        let last = index + 1 == segment_count;
        if let Some(previous) = previous_end {
            if previous != segment.base_offset {
                problems.push(at(
                    &segment.path,
                    0,
                    format!(
                        "segment starts at offset {} but the previous one ends at {previous}",
                        segment.base_offset
                    ),
                ));
            }
        }
        let clean_here =
            clean.filter(|marker| last && marker.active_base_offset == segment.base_offset);
        let facts = verify_segment(segment, last, clean_here, &mut problems, &mut notes);
        total_frames += facts.valid_frames;
        verify_index(segment, last, &facts, &mut problems, &mut notes);
        if let Some(marker) = clean_here {
            if marker.log_end_offset != facts.next_offset {
                problems.push(at(
                    &clean_path,
                    0,
                    format!(
                        "clean-shutdown marker says the log ends at offset {} but the frames end \
                         at {}",
                        marker.log_end_offset, facts.next_offset
                    ),
                ));
            }
        }
        previous_end = Some(facts.next_offset);
        log_end_offset = Some(facts.next_offset);
    }
    if let Some(marker) = clean {
        let last_base = partition.segments.last().map(|segment| segment.base_offset);
        if last_base != Some(marker.active_base_offset) {
            problems.push(at(
                &clean_path,
                0,
                format!(
                    "clean-shutdown marker names segment {} but the last segment is {}",
                    marker.active_base_offset,
                    last_base.map_or_else(|| "absent".to_string(), |base| base.to_string())
                ),
            ));
        }
    }
    let start_path = partition.dir.join(LOG_START_OFFSET_FILE);
    match &partition.log_start_offset {
        Marker::Damaged(reason) => problems.push(at(
            &start_path,
            0,
            format!("damaged log-start-offset checkpoint: {reason}"),
        )),
        Marker::Valid(offset) if log_end_offset.is_some_and(|end| *offset > end) => {
            problems.push(at(
                &start_path,
                0,
                format!(
                    "log start offset {offset} is past the log end {}",
                    log_end_offset.unwrap_or(0)
                ),
            ))
        }
        _ => {}
    }
    let first = partition
        .segments
        .first()
        .map(|segment| segment.base_offset);
    let summary =
        format!(
        "{}: {} segments, {total_frames} valid frames, offsets [{}, {}), {}, {} problems, {} notes",
        partition.dir.display(),
        segment_count,
        first.unwrap_or(0),
        log_end_offset.unwrap_or(0),
        if clean.is_some() { "clean shutdown" } else { "no clean-shutdown marker" },
        problems.len(),
        notes.len(),
    );
    Report {
        problems,
        notes,
        summary,
    }
}

/// Checks the frames of one segment against recovery's rules.
fn verify_segment(
    segment: &SegmentScan,
    last: bool,
    clean: Option<super::scan::CleanMarker>,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> SegmentFacts {
    let path = &segment.path;
    let mut facts = SegmentFacts {
        next_offset: segment.base_offset,
        data_end: 0,
        valid_frames: 0,
        frames: BTreeMap::new(),
    };
    // The first position that is not a valid frame, and why.
    let mut damage: Option<(u64, String, bool)> = None;
    let mut proof_reported = false;
    let mut discarded = 0;
    for frame in &segment.frames {
        match frame {
            FrameScan::Valid { position, header } => match &damage {
                None => {
                    if header.base_offset != facts.next_offset {
                        problems.push(at(
                            path,
                            *position,
                            format!(
                                "frame holds offset {} where {} was expected",
                                header.base_offset, facts.next_offset
                            ),
                        ));
                    }
                    facts.frames.insert(*position, *header);
                    facts.next_offset = header.last_offset() + 1;
                    facts.data_end = position + header.frame_bytes();
                    facts.valid_frames += 1;
                }
                Some((damaged_at, reason, _)) => {
                    // The rule of the engine's `classify_damage`: a valid frame appended after
                    // the damaged position had been synced proves the damage hit durable data.
                    if u64::from(header.synced_position) > *damaged_at
                        && last
                        && clean.is_none()
                        && !proof_reported
                    {
                        problems.push(at(
                            path,
                            *damaged_at,
                            format!(
                                "{reason}; a valid frame at position {position} (offset {}) was \
                                 appended after position {damaged_at} had been synced",
                                header.base_offset
                            ),
                        ));
                        proof_reported = true;
                    }
                    discarded += 1;
                }
            },
            FrameScan::Invalid {
                position, reason, ..
            } => {
                if damage.is_none() {
                    damage = Some((*position, reason.clone(), false));
                }
            }
            FrameScan::EndOfData { position, .. } => {
                if damage.is_none() {
                    damage = Some((*position, "zeroed frame header".to_string(), true));
                }
            }
        }
    }
    let Some((damaged_at, reason, zeroed)) = damage else {
        if let Some(marker) = clean {
            if marker.end_position != facts.data_end {
                problems.push(at(
                    path,
                    facts.data_end,
                    format!(
                        "clean-shutdown marker says the data ends at position {} but the frames \
                         end at {}",
                        marker.end_position, facts.data_end
                    ),
                ));
            }
        }
        return facts;
    };
    if !last {
        // A sealed segment was synced and trimmed to its last frame before the next one was
        // created: nothing in it may be invalid, not even zeros.
        problems.push(at(
            path,
            damaged_at,
            format!("{reason} in a sealed segment"),
        ));
        return facts;
    }
    if let Some(marker) = clean {
        // After a clean shutdown the frames end exactly where the marker says.
        if damaged_at < marker.end_position || marker.end_position != facts.data_end {
            problems.push(at(
                path,
                damaged_at,
                format!(
                    "{reason} before position {} where the clean-shutdown marker says the data \
                     ends",
                    marker.end_position
                ),
            ));
        }
        return facts;
    }
    if let IndexState::Valid { checkpoint, .. } = &segment.index {
        if damaged_at < checkpoint.covered_position {
            problems.push(at(
                path,
                damaged_at,
                format!(
                    "{reason} inside the part validated by the index checkpoint (up to position {})",
                    checkpoint.covered_position
                ),
            ));
            return facts;
        }
    }
    if proof_reported {
        return facts;
    }
    if !zeroed {
        notes.push(at(
            path,
            damaged_at,
            format!(
                "torn tail ({reason}): recovery truncates the segment here{}",
                if discarded > 0 {
                    format!(", dropping {discarded} unsynced frames after it")
                } else {
                    String::new()
                }
            ),
        ));
    } else if discarded > 0 {
        notes.push(at(
            path,
            damaged_at,
            format!("end of data, followed by {discarded} unsynced frames that recovery drops"),
        ));
    }
    facts
}

/// Checks that an index checkpoint decodes and agrees with the frames it describes.
fn verify_index(
    segment: &SegmentScan,
    last: bool,
    facts: &SegmentFacts,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let path = &segment.index_path;
    let (checkpoint, entries) = match &segment.index {
        IndexState::Absent => {
            if !last {
                notes.push(at(
                    path,
                    0,
                    "no index checkpoint; recovery rebuilds it by scanning",
                ));
            }
            return;
        }
        IndexState::Damaged(reason) => {
            problems.push(at(
                path,
                0,
                format!("{reason}; recovery rebuilds it by scanning"),
            ));
            return;
        }
        IndexState::Valid {
            checkpoint,
            entries,
        } => (checkpoint, entries),
    };
    let covered = checkpoint.covered_position;
    let offset_at_covered = if covered == facts.data_end {
        Some(facts.next_offset)
    } else {
        facts.frames.get(&covered).map(|header| header.base_offset)
    };
    match offset_at_covered {
        None => problems.push(at(
            path,
            0,
            format!(
                "checkpoint covers up to position {covered}, which is not a frame boundary \
                 (valid frames end at {})",
                facts.data_end
            ),
        )),
        Some(offset) if offset != checkpoint.next_offset => problems.push(at(
            path,
            0,
            format!(
                "checkpoint says offset {} follows position {covered} but the frames say {offset}",
                checkpoint.next_offset
            ),
        )),
        Some(_) => {}
    }
    if !last && covered != segment.file_bytes {
        notes.push(at(
            path,
            0,
            format!(
                "checkpoint covers {covered} bytes of a {}-byte sealed segment; recovery ignores \
                 it and rescans",
                segment.file_bytes
            ),
        ));
    }
    for entry in entries {
        let position = u64::from(entry.position);
        let expected = segment.base_offset + i64::from(entry.relative_offset);
        match facts.frames.get(&position) {
            Some(header) if header.base_offset == expected => {}
            Some(header) => problems.push(at(
                path,
                0,
                format!(
                    "index entry for offset {expected} points at position {position}, which holds \
                     offset {}",
                    header.base_offset
                ),
            )),
            None => problems.push(at(
                path,
                0,
                format!(
                    "index entry for offset {expected} points at position {position}, not a frame"
                ),
            )),
        }
    }
}
