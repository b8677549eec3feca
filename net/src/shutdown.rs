//! A shutdown request that crosses threads: set by a signal handler (or a test), observed by
//! every shard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Cheap to clone; every clone sees the same request.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Asks the broker to stop: stop accepting, finish in-flight requests, sync, exit.
    pub fn trigger(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The flag itself, for `signal_hook::flag::register`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.requested)
    }
}
