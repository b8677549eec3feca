//! The cross-core bus: typed request/response calls that run work on another shard, over the
//! channel mesh. A partition's data lives on its owning shard; a connection on any other shard
//! reaches it through here.
//!
//! A round trip costs microseconds (see `examples/bus_rtt.rs`), so callers batch: one message per
//! destination shard per client request, carrying all of that shard's partitions, never one per
//! record or per partition ([`crate::shard::table::ShardTable::group_by_shard`] helps).
//!
//! Wake-ups stay on their own shard. glommio 0.9 can wake a task from another thread (the waker
//! goes through the owning executor's notifier queue and eventfd), but the bus does not rely on
//! it: a response travels back over the mesh like a request, the caller's shard receives it in a
//! receive loop, and that loop completes a shard-local slot (`Rc`/`RefCell`) and wakes the
//! waiting caller locally. The only cross-thread signal is the mesh's own channel notification.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use event_listener::Event;

use crate::rt::mesh::{Mesh, MeshReceiver, MeshSenders, MESH_CHANNEL_CAPACITY};
use crate::rt::{spawn, spawn_detached, timeout, ShardContext, Task, TaskClass};
use crate::{Error, Result, ShardId};

/// How long [`Bus::close`] waits for the other shards to finish with the bus, and for requests
/// this shard is serving to complete, before it stops regardless.
///
/// Kafka's default `request.timeout.ms` is 30 s: a request in flight at shutdown (say a produce
/// waiting for `acks=all`) may legitimately take that long, and a shard that has not finished by
/// then is stuck, not slow.
pub const BUS_CLOSE_GRACE: Duration = Duration::from_secs(30);

/// What travels over the mesh.
enum Envelope<Req, Resp> {
    Request {
        correlation_id: u64,
        body: Req,
    },
    Response {
        correlation_id: u64,
        body: Resp,
    },
    /// The sending shard has finished its own work and will start no new calls.
    Closing,
}

type Handler<Req, Resp> = Rc<dyn Fn(ShardId, Req) -> Pin<Box<dyn Future<Output = Resp>>>>;

/// Creates a bus before the shards start. Clone it into every shard's main future and
/// [`BusBuilder::join`] it on every shard.
pub struct BusBuilder<Req: Send + 'static, Resp: Send + 'static> {
    mesh: Mesh<Envelope<Req, Resp>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Clone for BusBuilder<Req, Resp> {
    fn clone(&self) -> Self {
        BusBuilder {
            mesh: self.mesh.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> fmt::Debug for BusBuilder<Req, Resp> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BusBuilder")
            .field("shard_count", &self.mesh.shard_count())
            .finish()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> BusBuilder<Req, Resp> {
    /// A bus for `shard_count` shards (see [`crate::rt::RuntimeConfig::resolved_shard_count`]).
    pub fn new(shard_count: usize) -> Self {
        Self::with_capacity(shard_count, MESH_CHANNEL_CAPACITY)
    }

    /// A bus whose mesh channels hold `capacity` messages each.
    pub fn with_capacity(shard_count: usize, capacity: usize) -> Self {
        BusBuilder {
            mesh: Mesh::with_capacity(shard_count, capacity),
        }
    }

    /// Joins the bus on the shard `context` describes; waits until every shard has joined. Every
    /// shard must join exactly once.
    ///
    /// Requests may arrive at once; they wait until [`Bus::serve`] installs a handler. The bus
    /// registers a shutdown hook on `context` that runs [`Bus::close`] after the shard's main
    /// future returns, so a shard keeps serving until the others have finished too.
    pub async fn join(&self, context: &ShardContext) -> Result<Rc<Bus<Req, Resp>>> {
        let (senders, receivers) = self.mesh.join(context).await?;
        let bus = Rc::new(Bus {
            shard_id: context.shard_id,
            shard_count: context.shard_count,
            senders,
            handler: RefCell::new(None),
            pending: RefCell::new(HashMap::new()),
            next_correlation_id: Cell::new(0),
            peers: RefCell::new(vec![PeerState::default(); context.shard_count]),
            served_in_flight: Cell::new(0),
            receive_loops_running: Cell::new(0),
            phase: Cell::new(Phase::Open),
            state_changed: Event::new(),
            receive_loops: RefCell::new(Vec::new()),
            messages_sent: Cell::new(0),
            messages_received: Cell::new(0),
        });
        // This shard is not its own peer: it never sends itself `Closing`.
        bus.peers.borrow_mut()[usize::from(context.shard_id.0)] = PeerState {
            closing: true,
            gone: true,
        };
        let peers = receivers.into_peers();
        bus.receive_loops_running.set(peers.len());
        let loops: Vec<Task<()>> = peers
            .into_iter()
            .map(|receiver| spawn(TaskClass::Latency, Rc::clone(&bus).receive_loop(receiver)))
            .collect();
        *bus.receive_loops.borrow_mut() = loops;
        let closing = Rc::clone(&bus);
        context.on_shutdown(move || async move { closing.close().await });
        Ok(bus)
    }
}

/// Where the bus is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// `close` has told the peers; still serving until they have finished too.
    Draining,
    /// Senders closed; calls fail. Still waiting for the peers' channels to close.
    Closed,
    /// Everything is released: no receive loops, no pending calls, no handler.
    Finished,
}

/// What this shard knows about another shard's end of the bus.
#[derive(Clone, Copy, Default)]
struct PeerState {
    /// It sent `Closing` (or is gone): it starts no new calls.
    closing: bool,
    /// Its channel to us is closed: no response from it will arrive.
    gone: bool,
}

/// A call waiting for its response.
struct PendingCall<Resp> {
    to: ShardId,
    slot: Rc<ResponseSlot<Resp>>,
}

/// Where a receive loop puts a response for the caller waiting on it. Shard-local.
struct ResponseSlot<Resp> {
    response: RefCell<Option<Result<Resp>>>,
    waker: RefCell<Option<Waker>>,
}

impl<Resp> ResponseSlot<Resp> {
    fn new() -> Self {
        ResponseSlot {
            response: RefCell::new(None),
            waker: RefCell::new(None),
        }
    }

    fn complete(&self, response: Result<Resp>) {
        *self.response.borrow_mut() = Some(response);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn poll_response(&self, context: &mut Context<'_>) -> Poll<Result<Resp>> {
        match self.response.borrow_mut().take() {
            Some(response) => Poll::Ready(response),
            None => {
                *self.waker.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Removes a call's pending entry when the call ends, including when the caller drops the call
/// (a timeout): a late response then finds no entry and is dropped.
struct PendingGuard<'bus, Req: Send + 'static, Resp: Send + 'static> {
    bus: &'bus Bus<Req, Resp>,
    correlation_id: u64,
}

impl<Req: Send + 'static, Resp: Send + 'static> Drop for PendingGuard<'_, Req, Resp> {
    fn drop(&mut self) {
        self.bus.pending.borrow_mut().remove(&self.correlation_id);
    }
}

/// One shard's end of the cross-core bus: calls other shards and serves their calls.
///
/// One per shard.
pub struct Bus<Req: Send + 'static, Resp: Send + 'static> {
    shard_id: ShardId,
    shard_count: usize,
    senders: MeshSenders<Envelope<Req, Resp>>,
    handler: RefCell<Option<Handler<Req, Resp>>>,
    /// Calls from this shard waiting for a response, by correlation id.
    pending: RefCell<HashMap<u64, PendingCall<Resp>>>,
    next_correlation_id: Cell<u64>,
    /// Indexed by shard.
    peers: RefCell<Vec<PeerState>>,
    /// Requests from other shards whose handler has not finished (or whose response is not sent).
    served_in_flight: Cell<usize>,
    receive_loops_running: Cell<usize>,
    phase: Cell<Phase>,
    /// Notified whenever `handler`, `peers`, `served_in_flight`, `receive_loops_running` or
    /// `phase` change.
    state_changed: Event,
    receive_loops: RefCell<Vec<Task<()>>>,
    /// Envelopes this shard put on the mesh and took off it (requests, responses, closings);
    /// calls to this shard itself never cross the mesh and are not counted.
    messages_sent: Cell<u64>,
    messages_received: Cell<u64>,
}

/// What a shard's end of the bus has carried, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    pub messages_sent: u64,
    pub messages_received: u64,
}

impl<Req: Send + 'static, Resp: Send + 'static> fmt::Debug for Bus<Req, Resp> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Bus")
            .field("shard_id", &self.shard_id)
            .field("shard_count", &self.shard_count)
            .field("phase", &self.phase.get())
            .field("pending", &self.pending.borrow().len())
            .field("served_in_flight", &self.served_in_flight.get())
            .finish_non_exhaustive()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Bus<Req, Resp> {
    /// The shard this end of the bus is on.
    pub fn shard_id(&self) -> ShardId {
        self.shard_id
    }

    /// How many shards the bus connects.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Messages this shard has sent to and received from the other shards.
    pub fn stats(&self) -> BusStats {
        BusStats {
            messages_sent: self.messages_sent.get(),
            messages_received: self.messages_received.get(),
        }
    }

    /// Puts `envelope` on the mesh to `to`, counting it.
    async fn send(&self, to: ShardId, envelope: Envelope<Req, Resp>) -> Result<()> {
        self.messages_sent.set(self.messages_sent.get() + 1);
        self.senders.send_to(to, envelope).await
    }

    /// Installs the handler for requests to this shard, replacing any previous one. It gets the
    /// calling shard and the request. Each request from another shard runs in its own
    /// latency-class task, so a slow request does not hold up the others; a request from this
    /// shard runs in the caller's task.
    pub fn serve<H, Fut>(&self, handler: H)
    where
        H: Fn(ShardId, Req) -> Fut + 'static,
        Fut: Future<Output = Resp> + 'static,
    {
        let handler: Handler<Req, Resp> =
            Rc::new(move |from, request| Box::pin(handler(from, request)));
        if self.phase.get() == Phase::Finished {
            // Installing a handler now would only recreate the cycle `close` broke.
            return;
        }
        *self.handler.borrow_mut() = Some(handler);
        self.state_changed.notify(usize::MAX);
    }

    /// Runs `request` on shard `to` and returns its response. A call to this shard runs the
    /// handler directly, without the mesh.
    ///
    /// Fails with [`Error::ShardUnavailable`] if `to` has left the bus (or leaves it before
    /// answering), or if this shard's bus is closed. Dropping the returned future abandons the
    /// call; the handler on `to` still runs, and its response is discarded.
    pub async fn call(&self, to: ShardId, request: Req) -> Result<Resp> {
        assert!(
            usize::from(to.0) < self.shard_count,
            "{to} is not on the bus"
        );
        if matches!(self.phase.get(), Phase::Closed | Phase::Finished) {
            return Err(Error::ShardUnavailable(to.0));
        }
        if to == self.shard_id {
            let Some(handler) = self.installed_handler().await else {
                return Err(Error::ShardUnavailable(to.0));
            };
            return Ok(handler(self.shard_id, request).await);
        }
        if self.peers.borrow()[usize::from(to.0)].gone {
            return Err(Error::ShardUnavailable(to.0));
        }

        let correlation_id = self.next_correlation_id.get();
        self.next_correlation_id.set(correlation_id.wrapping_add(1));
        let slot = Rc::new(ResponseSlot::new());
        self.pending.borrow_mut().insert(
            correlation_id,
            PendingCall {
                to,
                slot: Rc::clone(&slot),
            },
        );
        let _pending = PendingGuard {
            bus: self,
            correlation_id,
        };
        self.send(
            to,
            Envelope::Request {
                correlation_id,
                body: request,
            },
        )
        .await?;
        poll_fn(|context| slot.poll_response(context)).await
    }

    /// Runs every `(shard, request)` call concurrently and returns the results in the same order.
    ///
    /// Send at most one request per destination shard per client request: group a request's
    /// partitions by owning shard first, then make one call per shard.
    pub async fn call_each(&self, calls: Vec<(ShardId, Req)>) -> Vec<Result<Resp>> {
        join_all(
            calls
                .into_iter()
                .map(|(to, request)| self.call(to, request))
                .collect(),
        )
        .await
    }

    /// Leaves the bus, gracefully: tells the other shards this shard starts no new calls, keeps
    /// serving until every other shard has said the same and the requests it is serving are
    /// answered, then closes its channels. Calls still waiting after that fail with
    /// [`Error::ShardUnavailable`], as does every later call.
    ///
    /// [`run_shards`](crate::rt::run_shards) calls this after the shard's main future returns;
    /// call it earlier to leave sooner. Gives up waiting after [`BUS_CLOSE_GRACE`].
    pub async fn close(&self) {
        self.close_with_grace(BUS_CLOSE_GRACE).await;
    }

    /// [`Bus::close`], waiting at most `grace` for the other shards and for requests in flight.
    /// With a zero grace the bus stops at once: requests being served get no response, and the
    /// shards waiting for them see [`Error::ShardUnavailable`].
    pub async fn close_with_grace(&self, grace: Duration) {
        if self.phase.get() != Phase::Open {
            // Another task is closing the bus: wait for it to finish.
            self.wait_until(|bus| bus.phase.get() == Phase::Finished)
                .await;
            return;
        }
        let deadline = Instant::now() + grace;
        self.set_phase(Phase::Draining);
        for peer in self.peer_ids() {
            // A peer that has already gone cannot be told, and one whose channel stays full is
            // stuck: either way it is not waited for beyond the grace.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let _ = timeout(remaining, self.send(peer, Envelope::Closing)).await;
        }
        let peers_done = |bus: &Self| {
            bus.peers.borrow().iter().all(|peer| peer.closing) && bus.served_in_flight.get() == 0
        };
        let _ = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.wait_until(peers_done),
        )
        .await;

        self.set_phase(Phase::Closed);
        self.senders.close();
        // The other shards close their channels once they are done too; wait for that, so that
        // responses they still owe this shard arrive.
        let loops_ended = |bus: &Self| bus.receive_loops_running.get() == 0;
        let ended = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.wait_until(loops_ended),
        )
        .await;
        let loops = std::mem::take(&mut *self.receive_loops.borrow_mut());
        if ended.is_none() {
            // Dropping the receivers closes the channels from this side too, so peers' sends fail.
            for receive_loop in loops {
                receive_loop.cancel().await;
            }
            self.receive_loops_running.set(0);
        }
        let abandoned: Vec<PendingCall<Resp>> = self
            .pending
            .borrow_mut()
            .drain()
            .map(|(_, call)| call)
            .collect();
        for call in abandoned {
            call.slot.complete(Err(Error::ShardUnavailable(call.to.0)));
        }
        // The handler may hold an `Rc` of this bus; dropping it breaks that cycle.
        self.handler.borrow_mut().take();
        self.set_phase(Phase::Finished);
    }

    fn peer_ids(&self) -> impl Iterator<Item = ShardId> + '_ {
        (0..self.shard_count)
            .map(|index| ShardId(index as u16))
            .filter(|&shard| shard != self.shard_id)
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.set(phase);
        self.state_changed.notify(usize::MAX);
    }

    async fn wait_until(&self, condition: impl Fn(&Self) -> bool) {
        loop {
            if condition(self) {
                return;
            }
            let listener = self.state_changed.listen();
            // Re-check: the state may have changed between the check and the listen.
            if condition(self) {
                return;
            }
            listener.await;
        }
    }

    /// The handler, once [`Bus::serve`] has installed it; `None` once the bus has finished
    /// closing (there will never be one then).
    async fn installed_handler(&self) -> Option<Handler<Req, Resp>> {
        self.wait_until(|bus| bus.handler.borrow().is_some() || bus.phase.get() == Phase::Finished)
            .await;
        self.handler.borrow().as_ref().map(Rc::clone)
    }

    /// Receives everything one peer sends, until it closes its channel.
    async fn receive_loop(self: Rc<Self>, receiver: MeshReceiver<Envelope<Req, Resp>>) {
        let from = receiver.from();
        while let Some(envelope) = receiver.recv().await {
            self.messages_received.set(self.messages_received.get() + 1);
            match envelope {
                Envelope::Request {
                    correlation_id,
                    body,
                } => self.serve_remote(from, correlation_id, body),
                Envelope::Response {
                    correlation_id,
                    body,
                } => {
                    let call = self.pending.borrow_mut().remove(&correlation_id);
                    // No entry: the caller gave up on the call; drop the response.
                    if let Some(call) = call {
                        call.slot.complete(Ok(body));
                    }
                }
                Envelope::Closing => {
                    self.peers.borrow_mut()[usize::from(from.0)].closing = true;
                    self.state_changed.notify(usize::MAX);
                }
            }
        }
        self.peers.borrow_mut()[usize::from(from.0)] = PeerState {
            closing: true,
            gone: true,
        };
        let failed: Vec<PendingCall<Resp>> = {
            let mut pending = self.pending.borrow_mut();
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, call)| call.to == from)
                .map(|(&id, _)| id)
                .collect();
            ids.into_iter()
                .filter_map(|id| pending.remove(&id))
                .collect()
        };
        for call in failed {
            call.slot.complete(Err(Error::ShardUnavailable(from.0)));
        }
        self.receive_loops_running
            .set(self.receive_loops_running.get() - 1);
        self.state_changed.notify(usize::MAX);
    }

    /// Runs a request from another shard in its own task and sends the response back.
    fn serve_remote(self: &Rc<Self>, from: ShardId, correlation_id: u64, request: Req) {
        if matches!(self.phase.get(), Phase::Closed | Phase::Finished) {
            // No response could be sent: this shard's channels are closed, and the caller's
            // shard fails the call when it sees that.
            return;
        }
        self.served_in_flight.set(self.served_in_flight.get() + 1);
        let bus = Rc::clone(self);
        spawn_detached(TaskClass::Latency, async move {
            if let Some(handler) = bus.installed_handler().await {
                let response = handler(from, request).await;
                // The caller's shard may have left the bus meanwhile; nobody waits for this then.
                let reply = Envelope::Response {
                    correlation_id,
                    body: response,
                };
                let _ = bus.send(from, reply).await;
            }
            bus.served_in_flight.set(bus.served_in_flight.get() - 1);
            bus.state_changed.notify(usize::MAX);
        });
    }
}

/// Polls all `futures` concurrently; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|context| {
        let mut all_ready = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => all_ready = false,
                }
            }
        }
        if all_ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let count = outputs.len();
    let outputs: Vec<F::Output> = outputs.into_iter().flatten().collect();
    assert_eq!(
        outputs.len(),
        count,
        "join_all returns only when every future is ready"
    );
    outputs
}
