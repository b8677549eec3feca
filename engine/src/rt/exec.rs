//! The executor facade: one glommio executor per shard (one shard per core), the two task queues
//! every shard has (latency-sensitive and background), spawning, timers, and `block_on` for tools
//! and tests. Nothing outside `engine::rt` sees glommio's executor types.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use glommio::{Latency, LocalExecutor, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

use crate::{Error, Result, ShardId};

/// Memory each executor preallocates and registers with io_uring for DMA buffers.
///
/// 16 MiB holds sixteen 1 MiB segment writes or read-aheads in flight per shard, more than a
/// shard issues at once under normal load; anything beyond it still works, from unregistered
/// heap buffers at a small cost per I/O. It is pinned memory: see `raise_memlock_limit`.
pub const DEFAULT_IO_MEMORY_BYTES: usize = 16 * 1024 * 1024;

/// How long a task queue may run before glommio checks whether another queue should run.
///
/// 2 ms bounds how long background work (retention, compaction) can delay a produce or fetch
/// that became runnable, well under the few-ms produce latency we aim for, while keeping queue
/// switches (and the I/O polling done at each switch) to a few hundred per second.
pub const DEFAULT_PREEMPT_TIMER: Duration = Duration::from_millis(2);

/// How long an idle pinned shard keeps polling before it sleeps.
///
/// Waking a sleeping executor (eventfd write, then the kernel wakes the thread, an IPI through
/// the hypervisor on VMs) costs ~100 us on our machines, against ~15 us for a whole bus round
/// trip between polling shards. A response or request usually arrives within tens of
/// microseconds of a shard going idle, so 50 us of polling catches most of them for at most
/// 50 us of CPU per idle period. glommio spins only on pinned executors.
pub const DEFAULT_SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);

/// The latency budget of the latency-sensitive queue: when it has work, whatever runs must yield
/// within this long. Half the preemption timer, so a produce waits at most ~1 ms behind a
/// background task rather than a full timer period.
pub const LATENCY_QUEUE_BUDGET: Duration = Duration::from_millis(1);

/// CPU shares of the latency-sensitive queue (produce, fetch, the bus).
///
/// glommio shares are relative: with the background queue at [`BACKGROUND_QUEUE_SHARES`], the
/// latency queue gets ~90% of a saturated core.
pub const LATENCY_QUEUE_SHARES: usize = 1000;

/// CPU shares of the background queue (retention, compaction, index rebuilds).
///
/// ~10% of a saturated core: enough that retention keeps up and the disk does not fill under
/// sustained produce load, little enough that it does not show in produce latency. An idle
/// latency queue leaves the background queue the whole core.
pub const BACKGROUND_QUEUE_SHARES: usize = 100;

/// How often the stall guard rings every executor's doorbell; see `with_stall_guard`.
///
/// glommio 0.9 sometimes parks an executor that still has runnable tasks, and nothing on that
/// executor can wake it again. 1 ms bounds that stall well under the few-ms produce latency we
/// aim for; the price is one eventfd write and one wake-up per executor per millisecond (a few
/// microseconds of CPU each).
pub const STALL_GUARD_INTERVAL: Duration = Duration::from_millis(1);

/// glommio registers the io memory with each of its three rings (main, latency, poll; see
/// `Reactor::new` in glommio's `sys/uring.rs`), and the kernel accounts each registration
/// separately against `RLIMIT_MEMLOCK` for users without `CAP_IPC_LOCK`.
const IO_URING_RINGS_PER_EXECUTOR: usize = 3;

/// glommio rounds io memory up to whole pages and to at least 64 KiB before registering it.
const IO_MEMORY_MIN_BYTES: usize = 64 * 1024;

/// The page size glommio aligns io memory to.
const IO_MEMORY_ALIGN_BYTES: usize = 4096;

/// Shards are numbered by a `u16` ([`ShardId`]); far more than any machine has cores.
const SHARD_COUNT_MAX: usize = u16::MAX as usize + 1;

/// How the runtime is started: how many shards, where they run, and their per-shard budgets.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Number of shards; `None` means one per CPU this process may run on.
    pub shard_count: Option<usize>,
    /// DMA memory each shard preallocates and registers with io_uring.
    pub io_memory_bytes: usize,
    /// How often a running task queue is asked to yield (see [`DEFAULT_PREEMPT_TIMER`]).
    pub preempt_timer: Duration,
    /// Pin shard `i` to the `i`-th CPU this process may run on.
    pub pin_to_cores: bool,
    /// How long an idle shard polls before sleeping (pinned shards only); `None` sleeps at once.
    pub spin_before_park: Option<Duration>,
    /// Thread name prefix; shard threads are named `<name>-<shard index>`.
    pub name: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shard_count: None,
            io_memory_bytes: DEFAULT_IO_MEMORY_BYTES,
            preempt_timer: DEFAULT_PREEMPT_TIMER,
            pin_to_cores: true,
            spin_before_park: Some(DEFAULT_SPIN_BEFORE_PARK),
            name: String::from("ringlog-shard"),
        }
    }
}

impl RuntimeConfig {
    /// The number of shards [`run_shards`] will start: `shard_count`, or one per CPU this process
    /// may run on. Call it before `run_shards` to size a [`crate::rt::mesh::Mesh`].
    pub fn resolved_shard_count(&self) -> Result<usize> {
        let shard_count = match self.shard_count {
            Some(count) => count,
            None => allowed_cpus()?.len(),
        };
        if shard_count == 0 || shard_count > SHARD_COUNT_MAX {
            return Err(Error::InvalidConfig {
                key: "shard_count".into(),
                reason: format!("{shard_count} is not in 1..={SHARD_COUNT_MAX}"),
            });
        }
        Ok(shard_count)
    }
}

/// Which task queue a task runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskClass {
    /// Work a client is waiting for: produce, fetch, the cross-core bus.
    Latency,
    /// Work nobody waits for: retention, compaction, index rebuilds.
    Background,
}

/// The task queues of the executor running on this thread, and its shard if it is one.
#[derive(Clone, Copy)]
struct LocalQueues {
    shard_id: Option<ShardId>,
    latency: TaskQueueHandle,
    background: TaskQueueHandle,
}

thread_local! {
    /// Set while a `run_shards` shard or a `block_on` executor runs on this thread.
    static LOCAL_QUEUES: Cell<Option<LocalQueues>> = const { Cell::new(None) };
}

/// Restores the thread's previous queues when an executor's main future ends (or unwinds).
struct LocalQueuesGuard {
    previous: Option<LocalQueues>,
}

impl Drop for LocalQueuesGuard {
    fn drop(&mut self) {
        LOCAL_QUEUES.with(|queues| queues.set(self.previous));
    }
}

/// Creates the two task queues on the executor running on this thread.
fn create_queues(shard_id: Option<ShardId>) -> LocalQueues {
    let executor = glommio::executor();
    let latency = executor.create_task_queue(
        Shares::Static(LATENCY_QUEUE_SHARES),
        Latency::Matters(LATENCY_QUEUE_BUDGET),
        "latency",
    );
    let background = executor.create_task_queue(
        Shares::Static(BACKGROUND_QUEUE_SHARES),
        Latency::NotImportant,
        "background",
    );
    LocalQueues {
        shard_id,
        latency,
        background,
    }
}

/// Makes `queues` the ones [`spawn`] uses on this thread until the guard is dropped.
fn enter_queues(queues: LocalQueues) -> LocalQueuesGuard {
    let previous = LOCAL_QUEUES.with(|current| current.replace(Some(queues)));
    LocalQueuesGuard { previous }
}

/// A spawned task. Awaiting it yields the task's output; dropping it cancels the task, so call
/// [`Task::detach`] to let it run on its own.
///
/// Lives on the shard (thread) that spawned it.
#[must_use = "a task is cancelled when dropped; call .detach() to let it run in the background"]
pub struct Task<T>(glommio::Task<T>);

impl<T> Task<T> {
    /// Lets the task run to completion in the background; its output is dropped.
    pub fn detach(self) {
        // The join handle only reports the output; dropping it does not cancel the task.
        drop(self.0.detach());
    }

    /// Cancels the task and waits until its future has been dropped. Returns its output if it
    /// had already completed.
    pub async fn cancel(self) -> Option<T> {
        self.0.cancel().await
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(context)
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Task")
    }
}

/// Spawns `future` on this shard, in the task queue of `class`.
///
/// Outside [`run_shards`] and [`block_on`] (on an executor that did not create our queues) the
/// task goes to the current task queue. Panics if no executor runs on this thread.
pub fn spawn<T: 'static>(class: TaskClass, future: impl Future<Output = T> + 'static) -> Task<T> {
    match LOCAL_QUEUES.with(Cell::get) {
        Some(queues) => {
            let queue = match class {
                TaskClass::Latency => queues.latency,
                TaskClass::Background => queues.background,
            };
            // The queues are created when the executor starts and never removed, so the only
            // error, "queue not found", would mean the thread-local outlived its executor.
            let task = glommio::spawn_local_into(future, queue)
                .expect("the shard's task queues live as long as its executor");
            Task(task)
        }
        None => Task(glommio::spawn_local(future)),
    }
}

/// Spawns `future` in the task queue of `class` and lets it run on its own.
pub fn spawn_detached(class: TaskClass, future: impl Future<Output = ()> + 'static) {
    spawn(class, future).detach();
}

/// Waits for `duration`.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future` for at most `duration`: `Some(output)` if it finished in time, `None` (and the
/// future dropped) otherwise.
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    // `or` polls the first future first, so a future that is ready wins over an expired timer.
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(duration).await;
        None
    })
    .await
}

/// Yields to other tasks if this task queue has used up its time slice. Call it in loops that
/// may run long without awaiting I/O.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// The shard running on this thread, or `None` outside [`run_shards`] (in [`block_on`], or on a
/// thread without an executor).
pub fn current_shard() -> Option<ShardId> {
    LOCAL_QUEUES
        .with(Cell::get)
        .and_then(|queues| queues.shard_id)
}

/// A hook run by [`run_shards`] on a shard after its main future returns.
type ShutdownHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>>>;

/// What a shard's main future knows about its shard. Cheap to clone.
///
/// One per shard.
#[derive(Clone)]
pub struct ShardContext {
    /// This shard's index, `0..shard_count`.
    pub shard_id: ShardId,
    /// How many shards the runtime started.
    pub shard_count: usize,
    /// The CPU this shard is pinned to, if pinned.
    pub cpu: Option<usize>,
    shutdown_hooks: Rc<RefCell<Vec<ShutdownHook>>>,
}

impl ShardContext {
    fn new(shard_id: ShardId, shard_count: usize, cpu: Option<usize>) -> Self {
        ShardContext {
            shard_id,
            shard_count,
            cpu,
            shutdown_hooks: Rc::default(),
        }
    }

    /// Every shard of the runtime, in order.
    pub fn shard_ids(&self) -> impl Iterator<Item = ShardId> {
        // `resolved_shard_count` bounds the count to `SHARD_COUNT_MAX`, so every index fits.
        (0..self.shard_count).map(|index| ShardId(index as u16))
    }

    /// Registers `hook` to run on this shard after the shard's main future returns, before
    /// [`run_shards`] lets the shard's thread end. Hooks run one at a time, the most recently
    /// registered first (like destructors). The cross-core bus uses this to leave the mesh.
    pub fn on_shutdown<F, Fut>(&self, hook: F)
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.shutdown_hooks
            .borrow_mut()
            .push(Box::new(move || Box::pin(hook())));
    }

    async fn run_shutdown_hooks(&self) {
        // A hook may register further hooks; take one at a time so none is missed or borrowed
        // across an await.
        loop {
            let hook = self.shutdown_hooks.borrow_mut().pop();
            match hook {
                Some(hook) => hook().await,
                None => break,
            }
        }
    }
}

impl fmt::Debug for ShardContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ShardContext")
            .field("shard_id", &self.shard_id)
            .field("shard_count", &self.shard_count)
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

/// Starts one shard per core, each a glommio executor on its own thread, runs `shard_main` on
/// every shard, and blocks until all of them have returned. Returns their outputs in shard order.
///
/// Every shard starts its executor first; `shard_main` runs only once all executors are up, and
/// if any fails to start none runs and the error is returned. After `shard_main` returns, the
/// hooks registered with [`ShardContext::on_shutdown`] run (the bus waits there for the other
/// shards to finish with it).
///
/// A panic on a shard aborts the process after printing which shard panicked: the other shards
/// may be waiting for it, and a half-alive broker is worse than a dead one.
///
/// Every shard is watched by the stall guard (see [`STALL_GUARD_INTERVAL`]), which works around
/// a glommio 0.9 bug that can otherwise leave a shard asleep with work queued.
pub fn run_shards<F, Fut, T>(config: &RuntimeConfig, shard_main: F) -> Result<Vec<T>>
where
    F: Fn(ShardContext) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let shard_count = config.resolved_shard_count()?;
    let cpus = if config.pin_to_cores {
        let allowed = allowed_cpus()?;
        if allowed.len() < shard_count {
            return Err(Error::InvalidConfig {
                key: "shard_count".into(),
                reason: format!(
                    "{shard_count} pinned shards but this process may run on only {} CPUs \
                     ({allowed:?}); lower shard_count or disable pin_to_cores",
                    allowed.len()
                ),
            });
        }
        Some(allowed)
    } else {
        None
    };
    raise_memlock_limit(memlock_bytes_needed(shard_count, config.io_memory_bytes));

    let startup = Arc::new(StartupLatch::new(shard_count));
    let mut threads = Vec::with_capacity(shard_count);
    for index in 0..shard_count {
        let shard = ShardStart {
            shard_id: ShardId(index as u16),
            shard_count,
            cpu: cpus.as_ref().map(|cpus| cpus[index]),
            config: config.clone(),
            startup: Arc::clone(&startup),
        };
        let shard_main = shard_main.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{index}", config.name))
            .spawn(move || shard.run(shard_main));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(source) => {
                // Release the shards already started: they wait for every shard to arrive.
                startup.cancel();
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(Error::Runtime(format!(
                    "spawning shard thread {index}: {source}"
                )));
            }
        }
    }

    let mut outputs = Vec::with_capacity(shard_count);
    let mut first_error = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(output)) => outputs.push(output),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            // Shards abort on panic (see `ShardStart::run`); this is only reachable if the panic
            // escaped that, so keep unwinding.
            Err(payload) => panic::resume_unwind(payload),
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(outputs),
    }
}

/// Everything a shard thread needs to start its executor.
struct ShardStart {
    shard_id: ShardId,
    shard_count: usize,
    cpu: Option<usize>,
    config: RuntimeConfig,
    startup: Arc<StartupLatch>,
}

impl ShardStart {
    fn run<F, Fut, T>(self, shard_main: F) -> Result<T>
    where
        F: Fn(ShardContext) -> Fut,
        Fut: Future<Output = T> + 'static,
    {
        let placement = match self.cpu {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let executor = make_executor(placement, &self.config);
        let started = executor.is_ok();
        if !self.startup.arrive_and_wait(started) {
            return match executor {
                Err(error) => Err(error),
                Ok(_) => Err(Error::Runtime(format!(
                    "{} not started: another shard failed to start",
                    self.shard_id
                ))),
            };
        }
        let executor = executor?;
        let context = ShardContext::new(self.shard_id, self.shard_count, self.cpu);
        let shard_id = self.shard_id;
        let doorbell = Doorbell::register_current_thread();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            executor.run(async {
                let _queues = enter_queues(create_queues(Some(shard_id)));
                with_stall_guard(&doorbell, async {
                    let output = shard_main(context.clone()).await;
                    context.run_shutdown_hooks().await;
                    output
                })
                .await
            })
        }));
        match outcome {
            Ok(output) => Ok(output),
            Err(payload) => abort_after_shard_panic(shard_id, payload.as_ref()),
        }
    }
}

fn make_executor(placement: Placement, config: &RuntimeConfig) -> Result<LocalExecutor> {
    let mut builder = LocalExecutorBuilder::new(placement);
    if let Some(spin) = config.spin_before_park {
        builder = builder.spin_before_park(spin);
    }
    builder
        .name(&config.name)
        .io_memory(config.io_memory_bytes)
        .preempt_timer(config.preempt_timer)
        .make()
        .map_err(|error| Error::Runtime(format!("starting executor: {error}")))
}

/// Prints which shard panicked and aborts. Written straight to stderr, bypassing the test
/// harness's output capture, which the abort would otherwise swallow.
fn abort_after_shard_panic(shard_id: ShardId, payload: &(dyn Any + Send)) -> ! {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let _ = writeln!(
        std::io::stderr(),
        "ringlog: {shard_id} panicked: {message}; aborting"
    );
    std::process::abort();
}

/// Lets shard threads start their executors, then either all go on or none does.
struct StartupLatch {
    state: Mutex<StartupState>,
    changed: Condvar,
}

struct StartupState {
    waiting_for: usize,
    failed: bool,
}

impl StartupLatch {
    fn new(shard_count: usize) -> Self {
        StartupLatch {
            state: Mutex::new(StartupState {
                waiting_for: shard_count,
                failed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Reports this shard's start and waits for the others; true if every shard started.
    fn arrive_and_wait(&self, started: bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.waiting_for -= 1;
        state.failed |= !started;
        self.changed.notify_all();
        while state.waiting_for > 0 && !state.failed {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        !state.failed
    }

    fn cancel(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failed = true;
        self.changed.notify_all();
    }
}

/// Runs `future` to completion on an unpinned executor on this thread, with the same io memory,
/// preemption timer and task queues as a shard, so [`spawn`] with a [`TaskClass`] works.
/// [`current_shard`] is `None` inside. For tools, tests and benchmarks.
///
/// Each thread keeps one executor for all its `block_on` calls, made on the first: creating one
/// costs ~6 ms (registering 16 MiB of io memory with three rings), and glommio 0.9 never frees
/// an executor's eventfd once it has run a task (`RawTask::destroy` does not drop the task
/// header's `Arc<SleepNotifier>`), so an executor per call would leak a file descriptor per call.
/// Reuse has one visible effect: tasks still pending when `future` returns are neither cancelled
/// nor dropped; they resume during the thread's next `block_on`, and are leaked when the thread
/// ends. Await or cancel what you spawn.
///
/// Callable any number of times in sequence on a thread and from many threads at once, but not
/// from inside a running executor (`run_shards` or another `block_on`): glommio allows one
/// running executor per thread.
///
/// Panics if the executor cannot be created; see [`try_block_on`].
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    match try_block_on(&RuntimeConfig::default(), future) {
        Ok(output) => output,
        Err(error) => panic!("block_on: {error}"),
    }
}

/// [`block_on`] with explicit io memory and preemption timer (`shard_count`, `pin_to_cores`,
/// `spin_before_park` and `name` do not apply to an unpinned executor on the caller's thread),
/// returning an error if the executor cannot be created. A call with different io memory or
/// preemption timer than the thread's previous one replaces the thread's executor.
pub fn try_block_on<T>(config: &RuntimeConfig, future: impl Future<Output = T>) -> Result<T> {
    assert!(
        LOCAL_QUEUES.with(Cell::get).is_none(),
        "block_on called from inside a running executor"
    );
    let executor = BLOCK_ON_EXECUTOR.with(|cached| -> Result<Rc<CachedExecutor>> {
        let mut cached = cached.borrow_mut();
        if let Some(executor) = cached.as_ref() {
            if executor.io_memory_bytes == config.io_memory_bytes
                && executor.preempt_timer == config.preempt_timer
            {
                return Ok(Rc::clone(executor));
            }
        }
        raise_memlock_limit(memlock_bytes_needed(1, config.io_memory_bytes));
        let executor = Rc::new(CachedExecutor {
            io_memory_bytes: config.io_memory_bytes,
            preempt_timer: config.preempt_timer,
            executor: make_executor(Placement::Unbound, config)?,
            queues: Cell::new(None),
        });
        *cached = Some(Rc::clone(&executor));
        Ok(executor)
    })?;
    let doorbell = Doorbell::register_current_thread();
    Ok(executor.executor.run(async {
        let queues = match executor.queues.get() {
            Some(queues) => queues,
            None => {
                let queues = create_queues(None);
                executor.queues.set(Some(queues));
                queues
            }
        };
        let _queues = enter_queues(queues);
        with_stall_guard(&doorbell, future).await
    }))
}

/// The executor [`block_on`] reuses on one thread, with the queues made on it.
struct CachedExecutor {
    io_memory_bytes: usize,
    preempt_timer: Duration,
    executor: LocalExecutor,
    queues: Cell<Option<LocalQueues>>,
}

thread_local! {
    /// This thread's [`block_on`] executor, made by its first call.
    static BLOCK_ON_EXECUTOR: RefCell<Option<Rc<CachedExecutor>>> = const { RefCell::new(None) };
}

/// Runs `future` while the stall guard wakes this task every [`STALL_GUARD_INTERVAL`] from
/// outside the executor.
///
/// Why: glommio 0.9's `LocalExecutor::run` parks whenever `run_task_queues` returns false, and
/// that also happens when a preemption is already pending (`need_preempt`: any completion in the
/// latency ring) before any queue ran, typically because the OS descheduled the thread for longer
/// than the preemption timer right after glommio armed it. The park consumes that completion and
/// sleeps with tasks still queued; if no timer or I/O is pending it never wakes. Under CPU
/// contention two shards ping-ponging over the mesh hit this within a few thousand round trips,
/// and about one executor start in two thousand hangs before polling its main task. A timer on
/// the executor itself does not help: the task that would re-arm it is among those left queued.
///
/// A wake from another thread goes through the executor's eventfd (glommio marks an executor as
/// wanting notifications before it sleeps), so the parked executor wakes up and its run loop runs
/// the queued tasks. The task woken is the executor's main task (this one): it registers its
/// waker on its first poll and withdraws it as soon as `future` completes, with no await in
/// between that could park unguarded. Before that first poll there is no waker to wake, so the
/// guard interrupts the thread's sleep with a signal instead (see [`KICK_SIGNAL_OFFSET`]).
///
/// The guard rings only an executor whose heartbeat (a task of its own, ticking every
/// [`STALL_HEARTBEAT_INTERVAL`]) has stood still for [`STALL_DETECT_AFTER`]: measured, an idle
/// broker is rung about 3 times in 45 s, and one under load with three CPU hogs on two cores 82
/// times in 80 s. Each ring is a spurious poll of `future`, so long-lived main futures should
/// wait on something that keeps one waker (an event, a join handle), not on glommio I/O.
///
/// The real fix is in glommio (do not park while a task queue is active). The vendored glommio
/// (`engine/vendor/glommio`) now has it; the guard stays as a backstop until a soak shows it
/// never rings.
async fn with_stall_guard<T>(doorbell: &Doorbell, future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut registered = false;
    let heartbeat = Arc::new(AtomicU64::new(0));
    let stopped = Rc::new(Cell::new(false));
    std::future::poll_fn(|context| {
        if !registered {
            // Every waker of a glommio task wakes the same task: register the first one.
            doorbell.set(DoorbellState::Running {
                waker: context.waker().clone(),
                heartbeat: Arc::clone(&heartbeat),
                last_seen: 0,
                seen_at: std::time::Instant::now(),
            });
            registered = true;
            // The heartbeat is a task of its own, so this (main) task is polled only when its
            // own work wakes it or the guard rings. A spurious poll is not free: a pending
            // glommio I/O future (an accept, a DMA read) keeps a clone of the waker for every
            // poll until it completes, and glommio 0.9's reference count is an `i16`.
            let beating = Arc::clone(&heartbeat);
            let stop = Rc::clone(&stopped);
            spawn_detached(TaskClass::Latency, async move {
                while !stop.get() {
                    beating.fetch_add(1, Ordering::Release);
                    glommio::timer::sleep(STALL_HEARTBEAT_INTERVAL).await;
                }
            });
        }
        let poll = future.as_mut().poll(context);
        if poll.is_ready() {
            doorbell.set(DoorbellState::Finished);
            stopped.set(true);
        }
        poll
    })
    .await
}

/// How often a running executor's heartbeat ticks (a timer on the executor itself).
const STALL_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(2);

/// How long a heartbeat may stand still before the guard rings: a few beats, so a shard that is
/// merely busy (a long poll between yields) is rarely rung, and a stalled one waits at most
/// this plus one guard interval.
const STALL_DETECT_AFTER: Duration = Duration::from_millis(8);

/// Which real-time signal (above `SIGRTMIN`) the stall guard uses to interrupt an executor stuck
/// before its main task first ran. Real-time signals have no default users; 7 stays clear of the
/// low ones that libraries sometimes claim. The handler does nothing: the signal only makes the
/// executor's `io_uring_enter` return early. If something else already handles this signal the
/// guard leaves it alone and does without.
const KICK_SIGNAL_OFFSET: libc::c_int = 7;

/// How long an executor may take to poll its main task before the guard signals its thread.
/// Starting an executor takes well under a millisecond; five intervals leaves room for a busy
/// machine, and the stall being cured is otherwise forever.
const STARTUP_KICK_AFTER: Duration = Duration::from_millis(5);

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

extern "C" fn ignore_kick(_signal: libc::c_int) {}

/// Installs the do-nothing handler for the kick signal once per process; false if the signal is
/// taken or the handler could not be installed.
fn kick_handler_installed() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let signal = kick_signal();
        // SAFETY: all-zeroes is a valid sigaction; sigaction only writes to `current`.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        if unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } != 0
            || current.sa_sigaction != libc::SIG_DFL
        {
            tracing::warn!(
                signal,
                "stall guard: kick signal unavailable; not installing"
            );
            return false;
        }
        // SAFETY: as above; `action` is fully initialised before use. No SA_RESTART, so that an
        // interrupted io_uring_enter returns instead of being restarted.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = ignore_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = 0;
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) == 0 }
    })
}

/// The process-wide stall guard: one thread that rings the doorbells of all running executors.
static STALL_GUARD: StallGuard = StallGuard {
    state: Mutex::new(StallGuardState {
        next_id: 0,
        doorbells: Vec::new(),
        thread_started: false,
    }),
    changed: Condvar::new(),
};

struct StallGuard {
    state: Mutex<StallGuardState>,
    changed: Condvar,
}

struct StallGuardState {
    next_id: u64,
    doorbells: Vec<DoorbellEntry>,
    thread_started: bool,
}

struct DoorbellEntry {
    id: u64,
    thread: libc::pthread_t,
    state: DoorbellState,
}

enum DoorbellState {
    /// The executor's main task has not run yet.
    Starting(std::time::Instant),
    /// Waking this waker wakes the executor. The guard rings only when `heartbeat` has not
    /// moved for [`STALL_DETECT_AFTER`].
    ///
    /// Why not ring every interval: every wake from another thread goes through glommio's queue
    /// of foreign wakes, and ringing the main task every millisecond made its reference count
    /// (an `i16` in glommio 0.9) reach 32767 after about 35 s of idling, aborting the process on
    /// glommio's "Waker invariant broken" assertion. Ringing only stalled executors keeps rings
    /// rare.
    Running {
        waker: std::task::Waker,
        heartbeat: Arc<AtomicU64>,
        last_seen: u64,
        seen_at: std::time::Instant,
    },
    /// The main future has completed; the executor is on its way out.
    Finished,
}

/// An executor's registration with the stall guard, made on its thread before the executor
/// runs and withdrawn when dropped (before the thread can end, so the guard never signals a
/// thread that is gone).
struct Doorbell {
    id: u64,
}

impl Doorbell {
    fn register_current_thread() -> Doorbell {
        let guard = &STALL_GUARD;
        let mut state = guard.state.lock().unwrap_or_else(PoisonError::into_inner);
        let id = state.next_id;
        state.next_id += 1;
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        let entry = DoorbellEntry {
            id,
            thread,
            state: DoorbellState::Starting(std::time::Instant::now()),
        };
        state.doorbells.push(entry);
        if !state.thread_started {
            let spawned = std::thread::Builder::new()
                .name("ringlog-stall-guard".into())
                .spawn(move || guard.ring_forever());
            match spawned {
                Ok(_) => state.thread_started = true,
                Err(error) => tracing::warn!(%error, "cannot start the executor stall guard"),
            }
        }
        guard.changed.notify_all();
        Doorbell { id }
    }

    fn set(&self, new_state: DoorbellState) {
        let mut state = STALL_GUARD
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = state.doorbells.iter_mut().find(|entry| entry.id == self.id) {
            entry.state = new_state;
        }
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        let mut state = STALL_GUARD
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.doorbells.retain(|entry| entry.id != self.id);
    }
}

impl StallGuard {
    fn ring_forever(&self) {
        let can_kick = kick_handler_installed();
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                while state.doorbells.is_empty() {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                // Rung under the lock: a doorbell withdrawn after this sees no more wakes, and a
                // registered thread has not exited.
                for entry in &mut state.doorbells {
                    match &mut entry.state {
                        DoorbellState::Running {
                            waker,
                            heartbeat,
                            last_seen,
                            seen_at,
                        } => {
                            let beat = heartbeat.load(Ordering::Acquire);
                            if beat != *last_seen {
                                *last_seen = beat;
                                *seen_at = std::time::Instant::now();
                            } else if seen_at.elapsed() > STALL_DETECT_AFTER {
                                waker.wake_by_ref();
                                *seen_at = std::time::Instant::now();
                            }
                        }
                        DoorbellState::Starting(since)
                            if can_kick && since.elapsed() > STARTUP_KICK_AFTER =>
                        {
                            // SAFETY: the thread registered itself and unregisters before exiting;
                            // we hold the lock that unregistering takes.
                            unsafe { libc::pthread_kill(entry.thread, kick_signal()) };
                        }
                        DoorbellState::Starting(_) | DoorbellState::Finished => {}
                    }
                }
            }
            std::thread::sleep(STALL_GUARD_INTERVAL);
        }
    }
}

/// The CPUs this process may run on (its affinity mask, which honours taskset and cgroups).
fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zeroes is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let status =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if status != 0 {
        let source = std::io::Error::last_os_error();
        return Err(Error::Runtime(format!("sched_getaffinity: {source}")));
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the number of bits in `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(Error::Runtime("sched_getaffinity returned no CPUs".into()));
    }
    Ok(cpus)
}

/// Locked memory `executor_count` executors need to register their io memory with every ring.
fn memlock_bytes_needed(executor_count: usize, io_memory_bytes: usize) -> u64 {
    let registered = io_memory_bytes
        .max(IO_MEMORY_MIN_BYTES)
        .next_multiple_of(IO_MEMORY_ALIGN_BYTES);
    (executor_count as u64)
        .saturating_mul(IO_URING_RINGS_PER_EXECUTOR as u64)
        .saturating_mul(registered as u64)
}

/// Raises `RLIMIT_MEMLOCK` to at least `bytes_needed` so io memory can be registered.
///
/// What glommio does otherwise: below 512 KiB it refuses to create an executor; above that, if
/// registering the buffers fails (ENOMEM when the limit is exceeded) it logs a warning through
/// the `log` crate and carries on with unregistered buffers, which work but cost a page-pinning
/// per I/O. Processes with `CAP_IPC_LOCK` (root) are not limited by the kernel at all. The limit
/// is compared with everything the user has pinned, so several concurrent `block_on` executors
/// may still exceed it; that only loses the registration, never correctness.
fn raise_memlock_limit(bytes_needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= bytes_needed {
        return;
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE; without it, go as high as the hard limit.
    let wanted = libc::rlimit {
        rlim_cur: bytes_needed,
        rlim_max: limit.rlim_max.max(bytes_needed),
    };
    let capped = libc::rlimit {
        rlim_cur: bytes_needed.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `wanted` is a valid rlimit.
    let raised = if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) } == 0 {
        true
    } else {
        // SAFETY: `capped` is a valid rlimit.
        let capped_ok = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &capped) } == 0;
        capped_ok && capped.rlim_cur >= bytes_needed
    };
    if !raised {
        tracing::warn!(
            bytes_needed,
            soft_limit = limit.rlim_cur,
            hard_limit = limit.rlim_max,
            "could not raise RLIMIT_MEMLOCK; without CAP_IPC_LOCK, io memory will not be \
             registered with io_uring"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_accounts_every_ring() {
        assert_eq!(memlock_bytes_needed(2, 16 << 20), 2 * 3 * (16 << 20));
        assert_eq!(memlock_bytes_needed(1, 0), 3 * 64 * 1024);
        assert_eq!(memlock_bytes_needed(1, 65537), 3 * (65536 + 4096));
    }

    #[test]
    fn shard_count_is_validated() {
        let config = RuntimeConfig {
            shard_count: Some(0),
            ..RuntimeConfig::default()
        };
        assert!(config.resolved_shard_count().is_err());
        let config = RuntimeConfig {
            shard_count: None,
            ..RuntimeConfig::default()
        };
        assert!(config.resolved_shard_count().is_ok_and(|count| count >= 1));
    }
}
