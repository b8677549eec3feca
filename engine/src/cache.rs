//! The per-shard batch cache. Direct I/O bypasses the page cache, so recent batches are kept in
//! memory under a byte budget: tailing consumers and followers read them without touching the
//! disk. Eviction is first-in first-out across all logs of the shard, which for a log is also
//! oldest-offset-first — the order in which tailing readers stop needing batches.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

/// Default cache budget per shard. 64 MiB holds about a second of appends at the disk's
/// sequential write speed here, enough for consumers that keep up to be served from memory.
pub const BATCH_CACHE_BYTES_DEFAULT: usize = 64 << 20;

/// Bookkeeping bytes charged per cached batch on top of its length (map node, queue slot,
/// `Bytes` header), so that many tiny batches cannot blow the budget.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// Identifies a log within its shard's cache.
pub type LogKey = u64;

struct CachedBatch {
    last_offset: i64,
    bytes: Bytes,
    sequence: u64,
}

#[derive(Default)]
struct Inner {
    budget_bytes: usize,
    used_bytes: usize,
    next_log_key: LogKey,
    next_sequence: u64,
    logs: HashMap<LogKey, BTreeMap<i64, CachedBatch>>,
    /// Insertion order for eviction: (log, base offset, sequence). Entries removed early
    /// (truncation, deletion) leave stale records here that eviction skips by sequence.
    order: VecDeque<(LogKey, i64, u64)>,
    stats: CacheStats,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub inserted_batches: u64,
    pub evicted_batches: u64,
    pub used_bytes: usize,
}

/// Batches served from the cache: whole batches, in offset order, contiguous.
pub struct CachedRead {
    pub batches: Vec<Bytes>,
    /// The offset after the last batch returned.
    pub next_offset: i64,
}

/// One per shard, shared by that shard's logs.
pub struct BatchCache {
    inner: RefCell<Inner>,
}

impl BatchCache {
    pub fn new(budget_bytes: usize) -> Rc<BatchCache> {
        Rc::new(BatchCache {
            inner: RefCell::new(Inner {
                budget_bytes,
                ..Inner::default()
            }),
        })
    }

    pub fn register_log(&self) -> LogKey {
        let mut inner = self.inner.borrow_mut();
        inner.next_log_key += 1;
        inner.next_log_key
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.borrow();
        CacheStats {
            used_bytes: inner.used_bytes,
            ..inner.stats
        }
    }

    pub fn insert(&self, log: LogKey, base_offset: i64, last_offset: i64, bytes: Bytes) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let charge = bytes.len() + ENTRY_OVERHEAD_BYTES;
        if charge > inner.budget_bytes {
            return;
        }
        inner.next_sequence += 1;
        let sequence = inner.next_sequence;
        let batches = inner.logs.entry(log).or_default();
        if let Some(old) = batches.insert(
            base_offset,
            CachedBatch {
                last_offset,
                bytes,
                sequence,
            },
        ) {
            inner.used_bytes -= old.bytes.len() + ENTRY_OVERHEAD_BYTES;
        }
        inner.used_bytes += charge;
        inner.order.push_back((log, base_offset, sequence));
        inner.stats.inserted_batches += 1;
        while inner.used_bytes > inner.budget_bytes {
            let Some((log, base, sequence)) = inner.order.pop_front() else {
                break;
            };
            let Some(batches) = inner.logs.get_mut(&log) else {
                continue;
            };
            if batches
                .get(&base)
                .is_some_and(|batch| batch.sequence == sequence)
            {
                if let Some(batch) = batches.remove(&base) {
                    inner.used_bytes -= batch.bytes.len() + ENTRY_OVERHEAD_BYTES;
                    inner.stats.evicted_batches += 1;
                }
            }
        }
    }

    /// Whole batches starting with the one that holds `offset`, contiguous, below
    /// `upper_offset`, within `max_bytes` (but at least one batch). `None` on a miss.
    pub fn read(
        &self,
        log: LogKey,
        offset: i64,
        max_bytes: usize,
        upper_offset: i64,
    ) -> Option<CachedRead> {
        let mut inner = self.inner.borrow_mut();
        let found = Self::collect(&inner, log, offset, max_bytes, upper_offset);
        match found {
            Some(_) => inner.stats.hits += 1,
            None => inner.stats.misses += 1,
        }
        found
    }

    fn collect(
        inner: &Inner,
        log: LogKey,
        offset: i64,
        max_bytes: usize,
        upper_offset: i64,
    ) -> Option<CachedRead> {
        let batches = inner.logs.get(&log)?;
        let (&first_base, first) = batches.range(..=offset).next_back()?;
        if first.last_offset < offset || first_base >= upper_offset {
            return None;
        }
        let mut read = CachedRead {
            batches: Vec::new(),
            next_offset: first_base,
        };
        let mut total = 0;
        for (&base, batch) in batches.range(first_base..) {
            if base != read.next_offset || base >= upper_offset {
                break;
            }
            if !read.batches.is_empty() && total + batch.bytes.len() > max_bytes {
                break;
            }
            total += batch.bytes.len();
            read.batches.push(batch.bytes.clone());
            read.next_offset = batch.last_offset + 1;
        }
        Some(read)
    }

    /// Drops batches whose last offset is at or past `offset` (the log was truncated).
    pub fn remove_from(&self, log: LogKey, offset: i64) {
        self.remove_where(log, |base, batch| {
            base >= offset || batch.last_offset >= offset
        });
    }

    /// Drops batches wholly below `offset` (the log start advanced).
    pub fn remove_below(&self, log: LogKey, offset: i64) {
        self.remove_where(log, |_, batch| batch.last_offset < offset);
    }

    pub fn remove_log(&self, log: LogKey) {
        self.remove_where(log, |_, _| true);
        self.inner.borrow_mut().logs.remove(&log);
    }

    fn remove_where(&self, log: LogKey, doomed: impl Fn(i64, &CachedBatch) -> bool) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(batches) = inner.logs.get_mut(&log) else {
            return;
        };
        batches.retain(|&base, batch| {
            let remove = doomed(base, batch);
            if remove {
                inner.used_bytes -= batch.bytes.len() + ENTRY_OVERHEAD_BYTES;
            }
            !remove
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize) -> Bytes {
        Bytes::from(vec![7_u8; len])
    }

    #[test]
    fn serves_contiguous_batches_within_limits() {
        let cache = BatchCache::new(1 << 20);
        let log = cache.register_log();
        cache.insert(log, 0, 9, batch(100));
        cache.insert(log, 10, 19, batch(100));
        cache.insert(log, 20, 29, batch(100));
        let read = cache.read(log, 15, 150, 30).expect("hit");
        assert_eq!(read.batches.len(), 1, "second batch would pass max_bytes");
        assert_eq!(read.next_offset, 20);
        let read = cache.read(log, 15, 1000, 30).expect("hit");
        assert_eq!(read.batches.len(), 2);
        let read = cache
            .read(log, 0, 1, 20)
            .expect("at least one batch even over max_bytes");
        assert_eq!(read.batches.len(), 1);
        assert!(
            cache.read(log, 0, 1000, 0).is_none(),
            "nothing below the upper bound"
        );
        assert!(cache.read(log, 30, 1000, 40).is_none());
        let read = cache.read(log, 0, 10_000, 20).expect("hit");
        assert_eq!(
            read.next_offset, 20,
            "stops at the upper bound (high watermark)"
        );
    }

    #[test]
    fn evicts_oldest_first_within_budget() {
        let cache = BatchCache::new(3 * (100 + ENTRY_OVERHEAD_BYTES));
        let log = cache.register_log();
        for index in 0..5 {
            cache.insert(log, index * 10, index * 10 + 9, batch(100));
        }
        let stats = cache.stats();
        assert_eq!(stats.evicted_batches, 2);
        assert!(stats.used_bytes <= 3 * (100 + ENTRY_OVERHEAD_BYTES));
        assert!(cache.read(log, 5, 1000, 100).is_none());
        assert!(cache.read(log, 25, 1000, 100).is_some());
    }

    #[test]
    fn truncation_and_log_start_invalidate() {
        let cache = BatchCache::new(1 << 20);
        let log = cache.register_log();
        for index in 0..4 {
            cache.insert(log, index * 10, index * 10 + 9, batch(10));
        }
        cache.remove_from(log, 25);
        assert!(cache.read(log, 25, 1000, 100).is_none());
        assert_eq!(
            cache.read(log, 0, 1000, 100).map(|read| read.next_offset),
            Some(20)
        );
        cache.remove_below(log, 10);
        assert!(cache.read(log, 5, 1000, 100).is_none());
        cache.remove_log(log);
        assert_eq!(cache.stats().used_bytes, 0);
    }
}
