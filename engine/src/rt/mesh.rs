//! A typed, shard-addressed wrapper around glommio's channel mesh: one bounded single-producer
//! single-consumer channel for every ordered pair of shards. The cross-core bus is built on it.
//!
//! Build a [`Mesh`] before the shards start, hand a clone to every shard, and have every shard
//! [`Mesh::join`] it: joining waits until all shards have joined.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;

use crate::rt::{spawn, ShardContext, Task, TaskClass};
use crate::{Error, Result, ShardId};

/// Messages each directed shard-to-shard channel holds before a sender waits.
///
/// Callers batch (one message per destination shard per client request), so the messages in
/// flight between two shards are about the requests in flight on a shard: 256 absorbs a burst
/// from a few hundred pipelined connections without making senders wait. The slots are
/// preallocated for every ordered pair: 256 slots of a ~64-byte envelope is 16 KiB per pair,
/// 64 MiB at 64 shards, so keep messages small (box large payloads).
pub const MESH_CHANNEL_CAPACITY: usize = 256;

/// A channel mesh between all shards, before they join it. Clone it into every shard's main
/// future; it is `Send` and `Sync`.
pub struct Mesh<T: Send + 'static> {
    shared: Arc<MeshShared<T>>,
}

struct MeshShared<T: Send + 'static> {
    shard_count: usize,
    /// One glommio builder per shard, taken by that shard's `join`.
    ///
    /// glommio's `MeshBuilder` is `Send` but holds an `Rc`, so cloning it on two threads at once
    /// would race on the reference count. All clones are made here, on the thread that creates
    /// the mesh, before any shard can see them; the shards only drop theirs. Concurrent drops can
    /// at worst lose a decrement and leak the builder's small peer list, never free it early.
    builders: Mutex<Vec<Option<MeshBuilder<T, Full>>>>,
    /// The glommio executor id of each shard that has joined. glommio orders mesh peers by
    /// executor id, not by our shard index; this maps one to the other.
    executor_ids: Mutex<Vec<Option<usize>>>,
}

impl<T: Send + 'static> Clone for Mesh<T> {
    fn clone(&self) -> Self {
        Mesh {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Mesh<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Mesh")
            .field("shard_count", &self.shared.shard_count)
            .finish()
    }
}

impl<T: Send + 'static> Mesh<T> {
    /// A mesh for `shard_count` shards with [`MESH_CHANNEL_CAPACITY`] messages per channel.
    pub fn new(shard_count: usize) -> Self {
        Self::with_capacity(shard_count, MESH_CHANNEL_CAPACITY)
    }

    /// A mesh for `shard_count` shards with `capacity` messages per directed channel (rounded up
    /// to a power of two by glommio).
    pub fn with_capacity(shard_count: usize, capacity: usize) -> Self {
        assert!(shard_count > 0, "a mesh needs at least one shard");
        assert!(
            capacity > 0,
            "a mesh channel needs room for at least one message"
        );
        let original = MeshBuilder::full(shard_count, capacity);
        let builders = (0..shard_count).map(|_| Some(original.clone())).collect();
        drop(original);
        Mesh {
            shared: Arc::new(MeshShared {
                shard_count,
                builders: Mutex::new(builders),
                executor_ids: Mutex::new(vec![None; shard_count]),
            }),
        }
    }

    /// How many shards the mesh connects.
    pub fn shard_count(&self) -> usize {
        self.shared.shard_count
    }

    /// Joins the mesh from the shard `context` describes. Waits until every shard has joined,
    /// so every shard must call it exactly once, from its own thread.
    pub async fn join(&self, context: &ShardContext) -> Result<(MeshSenders<T>, MeshReceivers<T>)> {
        let shard_id = context.shard_id;
        let shard_index = usize::from(shard_id.0);
        if context.shard_count != self.shared.shard_count {
            return Err(Error::Runtime(format!(
                "mesh for {} shards joined from a runtime of {}",
                self.shared.shard_count, context.shard_count
            )));
        }
        let builder = lock(&self.shared.builders)[shard_index].take();
        let Some(builder) = builder else {
            return Err(Error::Runtime(format!("{shard_id} joined the mesh twice")));
        };
        // Recorded before joining: glommio's join returns on any shard only after every shard
        // has registered, so by then every shard's id is recorded.
        lock(&self.shared.executor_ids)[shard_index] = Some(glommio::executor().id());
        let (senders, mut receivers) = builder
            .join()
            .await
            .map_err(|error| Error::Runtime(format!("{shard_id} joining the mesh: {error}")))?;

        let peer_index_of_shard = self.peer_index_of_shard();
        assert_eq!(
            senders.peer_id(),
            peer_index_of_shard[shard_index],
            "mesh peer order"
        );
        let mut shard_of_peer_index = vec![ShardId(0); self.shared.shard_count];
        for (index, &peer_index) in peer_index_of_shard.iter().enumerate() {
            shard_of_peer_index[peer_index] = ShardId(index as u16);
        }
        let peers = receivers
            .streams()
            .into_iter()
            .map(|(peer_index, receiver)| MeshReceiver {
                from: shard_of_peer_index[peer_index],
                receiver,
            })
            .collect();
        Ok((
            MeshSenders {
                shard_id,
                peer_index_of_shard,
                senders,
            },
            MeshReceivers { shard_id, peers },
        ))
    }

    /// glommio's peer index of every shard: the rank of its executor id.
    fn peer_index_of_shard(&self) -> Vec<usize> {
        let executor_ids = lock(&self.shared.executor_ids);
        let mut by_executor: Vec<(usize, usize)> = executor_ids
            .iter()
            .enumerate()
            .map(|(shard_index, executor_id)| {
                let executor_id =
                    executor_id.expect("every shard records its executor before the mesh forms");
                (executor_id, shard_index)
            })
            .collect();
        by_executor.sort_unstable();
        let mut peer_index_of_shard = vec![0; by_executor.len()];
        for (peer_index, (_, shard_index)) in by_executor.into_iter().enumerate() {
            peer_index_of_shard[shard_index] = peer_index;
        }
        peer_index_of_shard
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data is only ever replaced whole, so it is consistent even after a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This shard's sending ends, one per other shard.
///
/// One per shard.
pub struct MeshSenders<T: Send + 'static> {
    shard_id: ShardId,
    peer_index_of_shard: Vec<usize>,
    senders: Senders<T>,
}

impl<T: Send + 'static> MeshSenders<T> {
    /// The shard these senders belong to.
    pub fn shard_id(&self) -> ShardId {
        self.shard_id
    }

    /// Sends `message` to shard `to`, waiting while its channel is full. Fails with
    /// [`Error::ShardUnavailable`] once either side has closed the channel; the message is
    /// dropped. Sending to this shard itself is a bug (there is no channel to self).
    pub async fn send_to(&self, to: ShardId, message: T) -> Result<()> {
        let peer_index = self.peer_index(to);
        self.senders
            .send_to(peer_index, message)
            .await
            .map_err(|_| Error::ShardUnavailable(to.0))
    }

    /// Sends `message` to shard `to` if its channel has room, without waiting. Fails with
    /// [`Error::ShardUnavailable`] if the channel is full or closed.
    pub fn try_send_to(&self, to: ShardId, message: T) -> Result<()> {
        let peer_index = self.peer_index(to);
        self.senders
            .try_send_to(peer_index, message)
            .map_err(|_| Error::ShardUnavailable(to.0))
    }

    /// Closes every channel from this shard. Receivers get what was already sent, then `None`.
    pub fn close(&self) {
        self.senders.close();
    }

    fn peer_index(&self, to: ShardId) -> usize {
        assert_ne!(
            to, self.shard_id,
            "a shard cannot send to itself over the mesh"
        );
        let index = usize::from(to.0);
        assert!(
            index < self.peer_index_of_shard.len(),
            "{to} is not in the mesh"
        );
        self.peer_index_of_shard[index]
    }
}

/// This shard's receiving ends, one per other shard.
///
/// One per shard.
pub struct MeshReceivers<T: Send + 'static> {
    shard_id: ShardId,
    peers: Vec<MeshReceiver<T>>,
}

impl<T: Send + 'static> MeshReceivers<T> {
    /// The shard these receivers belong to.
    pub fn shard_id(&self) -> ShardId {
        self.shard_id
    }

    /// One receiver per other shard.
    pub fn into_peers(self) -> Vec<MeshReceiver<T>> {
        self.peers
    }

    /// Spawns one task per other shard in the queue of `class`, each running
    /// `receive_loop(receiver)`. A loop usually calls [`MeshReceiver::recv`] until it returns
    /// `None`.
    pub fn spawn_each<F, Fut>(self, class: TaskClass, mut receive_loop: F) -> Vec<Task<Fut::Output>>
    where
        F: FnMut(MeshReceiver<T>) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        self.peers
            .into_iter()
            .map(|receiver| spawn(class, receive_loop(receiver)))
            .collect()
    }
}

/// The receiving end of the channel from one other shard.
///
/// One per shard and peer.
pub struct MeshReceiver<T: Send + 'static> {
    from: ShardId,
    receiver: ConnectedReceiver<T>,
}

impl<T: Send + 'static> MeshReceiver<T> {
    /// The shard that sends on this channel.
    pub fn from(&self) -> ShardId {
        self.from
    }

    /// The next message, or `None` once the sender has closed the channel (or its shard has
    /// stopped) and every message it sent has been received.
    pub async fn recv(&self) -> Option<T> {
        self.receiver.recv().await
    }
}

impl<T: Send + 'static> fmt::Debug for MeshReceiver<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MeshReceiver")
            .field("from", &self.from)
            .finish()
    }
}
