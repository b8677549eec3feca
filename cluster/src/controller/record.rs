//! The checksummed records every controller file is made of, and the fsync discipline around
//! them. A record is a 12-byte header — payload length (u32 LE), CRC-32C of the payload (u32
//! LE), CRC-32C of those 8 bytes (u32 LE) — then the payload (JSON). The header has its own
//! checksum so a damaged length is recognised as damage instead of being followed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Error, Result};

/// The header's size in bytes.
pub const RECORD_HEADER_BYTES: usize = 12;

/// The largest record payload. The biggest record is a snapshot of the whole image: 10,000
/// topics with a few configs each are a few MiB of JSON, so 256 MiB is far beyond any real
/// cluster while still refusing a damaged length before it is allocated.
pub const RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The record's header and payload, ready to write.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= RECORD_BYTES_MAX, "records are bounded");
    let mut bytes = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&bytes[..8]);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// What was found at one position of a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record, and the position after it.
    Record { payload: &'a [u8], end: usize },
    /// The end of the file.
    End,
    /// Something that can only be the torn last write: a partial header or payload that ends
    /// the file, or a damaged record followed by nothing but zeros up to the end of the file.
    Torn,
    /// Damage that is not a torn last write.
    Corrupt(String),
}

/// Decodes the record at `position` of `bytes` (a whole file).
pub fn decode(bytes: &[u8], position: usize) -> Decoded<'_> {
    let rest = &bytes[position..];
    if rest.is_empty() {
        return Decoded::End;
    }
    if rest.len() < RECORD_HEADER_BYTES || rest.iter().all(|byte| *byte == 0) {
        return Decoded::Torn;
    }
    // Where the bytes that are not zero end: a write cut short leaves zeros (or nothing) after
    // what reached the disk. Computed only for a damaged record, so reading stays linear.
    let written_end = || {
        rest.iter()
            .rposition(|byte| *byte != 0)
            .map_or(0, |at| at + 1)
    };
    let word = |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
    if crc32c::crc32c(&rest[..8]) != word(8) {
        if written_end() <= RECORD_HEADER_BYTES {
            return Decoded::Torn;
        }
        return Decoded::Corrupt("record header checksum mismatch".into());
    }
    let length = word(0) as usize;
    if length > RECORD_BYTES_MAX {
        return Decoded::Corrupt(format!("record length {length} exceeds {RECORD_BYTES_MAX}"));
    }
    let end = RECORD_HEADER_BYTES + length;
    if rest.len() < end {
        // A valid header whose payload runs past the end of the file: the write was cut.
        return Decoded::Torn;
    }
    let payload = &rest[RECORD_HEADER_BYTES..end];
    if crc32c::crc32c(payload) != word(4) {
        if written_end() <= end {
            return Decoded::Torn;
        }
        return Decoded::Corrupt("record payload checksum mismatch".into());
    }
    Decoded::Record {
        payload,
        end: position + end,
    }
}

pub fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory, so the names created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("fsync directory", dir))
}

/// Replaces `path` with one record holding `payload`: written to a temporary name, fsynced,
/// renamed over `path`, and (when `durable`) the directory fsynced, so a crash leaves either the
/// old file or the new one, never a mix.
pub fn write_single(path: &Path, payload: &[u8], durable: bool) -> Result<()> {
    let temporary = temporary_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(io_error("create", &temporary))?;
    file.write_all(&encode(payload))
        .map_err(io_error("write", &temporary))?;
    if durable {
        file.sync_all().map_err(io_error("fsync", &temporary))?;
    }
    drop(file);
    std::fs::rename(&temporary, path).map_err(io_error("rename", path))?;
    if durable {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// Reads a file written by [`write_single`]: `None` if it does not exist.
pub fn read_single(path: &Path) -> Result<Option<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read", path)(error)),
    };
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    match decode(&bytes, 0) {
        Decoded::Record { payload, end } if end == bytes.len() => Ok(Some(payload.to_vec())),
        Decoded::Record { end, .. } => Err(corrupt(format!(
            "{} bytes after the record, which ends at {end}",
            bytes.len() - end
        ))),
        // Written under another name and renamed into place after an fsync: never torn.
        Decoded::End | Decoded::Torn => Err(corrupt("incomplete record".into())),
        Decoded::Corrupt(reason) => Err(corrupt(reason)),
    }
}

pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_and_damage_is_classified() {
        let mut file = encode(b"first");
        let second = file.len();
        file.extend_from_slice(&encode(b"second"));
        assert_eq!(
            decode(&file, 0),
            Decoded::Record {
                payload: b"first",
                end: second
            }
        );
        assert!(matches!(decode(&file, second), Decoded::Record { .. }));
        assert_eq!(decode(&file, file.len()), Decoded::End);

        // Every cut of the last record is torn.
        for cut in second + 1..file.len() {
            assert_eq!(decode(&file[..cut], second), Decoded::Torn, "cut at {cut}");
        }
        // A flipped payload byte in the last record: torn; in an earlier one: corrupt.
        let mut damaged = file.clone();
        *damaged.last_mut().expect("non-empty") ^= 1;
        assert_eq!(decode(&damaged, second), Decoded::Torn);
        let mut damaged = file.clone();
        damaged[RECORD_HEADER_BYTES] ^= 1;
        assert!(matches!(decode(&damaged, 0), Decoded::Corrupt(_)));
        // A flipped length is caught by the header checksum, never followed.
        let mut damaged = file.clone();
        damaged[1] ^= 0x40;
        assert!(matches!(decode(&damaged, 0), Decoded::Corrupt(_)));
        // Zeros where a record should be: an extended but unwritten tail.
        let mut zeroed = file.clone();
        zeroed.extend_from_slice(&[0; 100]);
        assert_eq!(decode(&zeroed, file.len()), Decoded::Torn);
    }

    #[test]
    fn single_record_files_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("one");
        assert_eq!(read_single(&path).expect("reads"), None);
        write_single(&path, b"payload", true).expect("writes");
        assert_eq!(
            read_single(&path).expect("reads"),
            Some(b"payload".to_vec())
        );
        std::fs::write(&path, b"junk").expect("writes");
        let error = read_single(&path).expect_err("junk is corrupt");
        assert!(error.to_string().contains("one"), "{error}");
    }
}
