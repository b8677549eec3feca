//! The runtime layer: the only module that names glommio. Executors (one per core), task queues,
//! timers, DMA files, and the channel mesh live behind this facade, so that the storage fault
//! layer ([`sim`]) or another io_uring runtime can stand in for the real thing.

pub mod exec;
pub mod fs;
pub mod mesh;
pub mod net;
pub mod sim;

pub use exec::*;
