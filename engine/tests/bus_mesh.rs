//! Tests of the runtime facade, the channel mesh and the cross-core bus on two shards, using a
//! small example protocol of named request and response structs (the engine's shard module
//! defines the real one).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringlog_engine::bus::BusBuilder;
use ringlog_engine::rt::mesh::Mesh;
use ringlog_engine::rt::{self, RuntimeConfig, ShardContext, TaskClass};
use ringlog_engine::{Error, ShardId};

/// The test machines have two cores; the tests pin one shard to each.
const SHARD_COUNT: usize = 2;

/// Sequential calls each shard makes to each shard: enough to cycle every mesh channel (256
/// slots) many times, few enough to finish in well under a second.
const SEQUENTIAL_CALLS: u64 = 2_000;

/// Tasks per shard calling at the same time, to keep several calls pending at once.
const CONCURRENT_CALLERS: u64 = 8;

/// Calls each concurrent caller makes.
const CALLS_PER_CALLER: u64 = 250;

/// How long the slow request of the shutdown test takes: far longer than a failed call needs.
const SLOW_REQUEST: Duration = Duration::from_secs(2);

/// 1 ms waits for a detached task to run: a second, far beyond any scheduling delay.
const DETACHED_TASK_WAITS: usize = 1_000;

/// Asks the destination shard to echo a sequence number and a payload size back.
#[derive(Debug)]
struct EchoRequest {
    sequence: u64,
    payload: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
struct EchoResponse {
    sequence: u64,
    caller: ShardId,
    served_by: ShardId,
    payload_bytes: usize,
}

/// Asks the destination shard to take `delay` before answering.
#[derive(Debug)]
struct SlowRequest {
    delay: Duration,
}

#[derive(Debug, PartialEq, Eq)]
struct SlowResponse {
    served_by: ShardId,
}

#[derive(Debug)]
enum ShardRequest {
    Echo(EchoRequest),
    Slow(SlowRequest),
}

#[derive(Debug, PartialEq, Eq)]
enum ShardResponse {
    Echo(EchoResponse),
    Slow(SlowResponse),
}

fn echo(sequence: u64) -> ShardRequest {
    ShardRequest::Echo(EchoRequest {
        sequence,
        payload: vec![0; (sequence % 64) as usize],
    })
}

fn expected_echo(sequence: u64, caller: ShardId, served_by: ShardId) -> ShardResponse {
    ShardResponse::Echo(EchoResponse {
        sequence,
        caller,
        served_by,
        payload_bytes: (sequence % 64) as usize,
    })
}

/// The handler every shard installs.
async fn handle(served_by: ShardId, caller: ShardId, request: ShardRequest) -> ShardResponse {
    match request {
        ShardRequest::Echo(EchoRequest { sequence, payload }) => {
            ShardResponse::Echo(EchoResponse {
                sequence,
                caller,
                served_by,
                payload_bytes: payload.len(),
            })
        }
        ShardRequest::Slow(SlowRequest { delay }) => {
            rt::sleep(delay).await;
            ShardResponse::Slow(SlowResponse { served_by })
        }
    }
}

fn two_pinned_shards(name: &str) -> RuntimeConfig {
    RuntimeConfig {
        shard_count: Some(SHARD_COUNT),
        pin_to_cores: true,
        name: name.into(),
        ..RuntimeConfig::default()
    }
}

type TestBus = ringlog_engine::bus::Bus<ShardRequest, ShardResponse>;

async fn join_and_serve(
    builder: &BusBuilder<ShardRequest, ShardResponse>,
    context: &ShardContext,
) -> Rc<TestBus> {
    let bus = builder.join(context).await.expect("joining the bus");
    let served_by = context.shard_id;
    bus.serve(move |caller, request| handle(served_by, caller, request));
    bus
}

#[test]
fn each_shard_calls_the_other_and_itself() {
    let builder = BusBuilder::<ShardRequest, ShardResponse>::new(SHARD_COUNT);
    let outputs = rt::run_shards(&two_pinned_shards("bus-calls"), move |context| {
        let builder = builder.clone();
        async move {
            assert_eq!(rt::current_shard(), Some(context.shard_id));
            let bus = join_and_serve(&builder, &context).await;
            let me = context.shard_id;
            let mut calls = 0_u64;

            for sequence in 0..SEQUENTIAL_CALLS {
                for to in context.shard_ids() {
                    let response = bus.call(to, echo(sequence)).await.expect("echo");
                    assert_eq!(response, expected_echo(sequence, me, to));
                    calls += 1;
                }
            }

            // Several callers at once keep many calls pending on both shards.
            let made = Rc::new(Cell::new(0_u64));
            let callers: Vec<_> = (0..CONCURRENT_CALLERS)
                .map(|caller| {
                    let bus = Rc::clone(&bus);
                    let made = Rc::clone(&made);
                    rt::spawn(TaskClass::Latency, async move {
                        for index in 0..CALLS_PER_CALLER {
                            let sequence = caller * CALLS_PER_CALLER + index;
                            let to = ShardId((sequence % SHARD_COUNT as u64) as u16);
                            let response = bus.call(to, echo(sequence)).await.expect("echo");
                            assert_eq!(response, expected_echo(sequence, me, to));
                            made.set(made.get() + 1);
                        }
                    })
                })
                .collect();
            for caller in callers {
                caller.await;
            }
            calls += made.get();

            // One batch with mixed destinations: results come back in request order.
            let batch: Vec<(ShardId, ShardRequest)> = (0..6)
                .map(|sequence| (ShardId((sequence % 3 % 2) as u16), echo(sequence)))
                .collect();
            let destinations: Vec<ShardId> = batch.iter().map(|(to, _)| *to).collect();
            let results = bus.call_each(batch).await;
            assert_eq!(results.len(), destinations.len());
            for (sequence, (result, to)) in results.into_iter().zip(destinations).enumerate() {
                assert_eq!(
                    result.expect("echo"),
                    expected_echo(sequence as u64, me, to)
                );
            }
            calls += 6;
            (me, calls)
        }
    })
    .expect("running the shards");

    let expected_calls =
        SEQUENTIAL_CALLS * SHARD_COUNT as u64 + CONCURRENT_CALLERS * CALLS_PER_CALLER + 6;
    assert_eq!(
        outputs,
        vec![(ShardId(0), expected_calls), (ShardId(1), expected_calls)]
    );
}

#[test]
fn only_messages_that_cross_the_mesh_are_counted() {
    let builder = BusBuilder::<ShardRequest, ShardResponse>::new(SHARD_COUNT);
    let outputs = rt::run_shards(&two_pinned_shards("bus-stats"), move |context| {
        let builder = builder.clone();
        async move {
            let bus = join_and_serve(&builder, &context).await;
            if context.shard_id != ShardId(0) {
                // Shard 1 only serves; its `Closing` may reach shard 0 before it counts.
                return None;
            }
            bus.call(ShardId(0), echo(0)).await.expect("echo to itself");
            for sequence in 1..=3 {
                bus.call(ShardId(1), echo(sequence)).await.expect("echo");
            }
            Some(bus.stats())
        }
    })
    .expect("running the shards");
    let stats = outputs[0].expect("shard 0 counted");
    // Three requests out, three responses back; the call to itself crossed nothing.
    assert_eq!(stats.messages_sent, 3, "{stats:?}");
    assert!((3..=4).contains(&stats.messages_received), "{stats:?}");
}

#[test]
fn calls_fail_with_shard_unavailable_after_close() {
    let builder = BusBuilder::<ShardRequest, ShardResponse>::new(SHARD_COUNT);
    rt::run_shards(&two_pinned_shards("bus-close"), move |context| {
        let builder = builder.clone();
        async move {
            let bus = join_and_serve(&builder, &context).await;
            let me = context.shard_id;
            let other = ShardId(1 - me.0);
            assert!(bus.call(other, echo(1)).await.is_ok());
            // Waits for the other shard to close too: both first made a successful call.
            bus.close().await;
            assert!(matches!(bus.call(other, echo(2)).await, Err(Error::ShardUnavailable(shard)) if shard == other.0));
            assert!(matches!(bus.call(me, echo(3)).await, Err(Error::ShardUnavailable(shard)) if shard == me.0));
        }
    })
    .expect("running the shards");
}

#[test]
fn a_pending_call_fails_when_its_shard_stops() {
    let builder = BusBuilder::<ShardRequest, ShardResponse>::new(SHARD_COUNT);
    rt::run_shards(&two_pinned_shards("bus-stop"), move |context| {
        let builder = builder.clone();
        async move {
            let bus = join_and_serve(&builder, &context).await;
            if context.shard_id == ShardId(0) {
                // Let shard 1's slow request arrive, then stop without waiting for it.
                rt::sleep(Duration::from_millis(50)).await;
                bus.close_with_grace(Duration::ZERO).await;
            } else {
                let started = Instant::now();
                let result = bus
                    .call(
                        ShardId(0),
                        ShardRequest::Slow(SlowRequest {
                            delay: SLOW_REQUEST,
                        }),
                    )
                    .await;
                assert!(
                    matches!(result, Err(Error::ShardUnavailable(0))),
                    "{result:?}"
                );
                assert!(
                    started.elapsed() < SLOW_REQUEST,
                    "the call failed without waiting for the handler"
                );
            }
        }
    })
    .expect("running the shards");
}

#[test]
fn a_shard_outlives_its_main_until_the_others_are_done() {
    // Shard 0 returns at once; shard 1 keeps calling it, which works because shard 0 serves until
    // shard 1 has finished with the bus too.
    let builder = BusBuilder::<ShardRequest, ShardResponse>::new(SHARD_COUNT);
    rt::run_shards(&two_pinned_shards("bus-linger"), move |context| {
        let builder = builder.clone();
        async move {
            let bus = join_and_serve(&builder, &context).await;
            if context.shard_id == ShardId(1) {
                for sequence in 0..100 {
                    rt::sleep(Duration::from_micros(100)).await;
                    let response = bus.call(ShardId(0), echo(sequence)).await.expect("echo");
                    assert_eq!(response, expected_echo(sequence, ShardId(1), ShardId(0)));
                }
            }
        }
    })
    .expect("running the shards");
}

#[test]
fn the_mesh_delivers_in_order_between_shards() {
    const MESSAGES: u64 = 1_000;
    let mesh = Mesh::<u64>::with_capacity(SHARD_COUNT, 8);
    let received = rt::run_shards(&two_pinned_shards("mesh"), move |context| {
        let mesh = mesh.clone();
        async move {
            let (senders, receivers) = mesh.join(&context).await.expect("joining the mesh");
            let other = ShardId(1 - context.shard_id.0);
            let loops = receivers.spawn_each(TaskClass::Latency, move |receiver| async move {
                assert_eq!(receiver.from(), other);
                let mut next = 0;
                while let Some(message) = receiver.recv().await {
                    assert_eq!(message, next, "in order, none lost");
                    next += 1;
                }
                next
            });
            for message in 0..MESSAGES {
                senders.send_to(other, message).await.expect("sending");
            }
            senders.close();
            let mut received = 0;
            for receive_loop in loops {
                received += receive_loop.await;
            }
            received
        }
    })
    .expect("running the shards");
    assert_eq!(received, vec![MESSAGES, MESSAGES]);
}

#[test]
fn unpinned_single_shard_runs_and_calls_itself() {
    let builder = BusBuilder::<ShardRequest, ShardResponse>::new(1);
    let config = RuntimeConfig {
        shard_count: Some(1),
        pin_to_cores: false,
        ..RuntimeConfig::default()
    };
    let outputs = rt::run_shards(&config, move |context| {
        let builder = builder.clone();
        async move {
            let bus = join_and_serve(&builder, &context).await;
            let response = bus.call(ShardId(0), echo(7)).await.expect("echo");
            assert_eq!(response, expected_echo(7, ShardId(0), ShardId(0)));
            context.cpu
        }
    })
    .expect("running the shard");
    assert_eq!(outputs, vec![None]);
}

#[test]
fn too_many_pinned_shards_is_a_config_error() {
    let config = RuntimeConfig {
        shard_count: Some(4096),
        pin_to_cores: true,
        ..RuntimeConfig::default()
    };
    let result = rt::run_shards(&config, |_context| async {});
    assert!(
        matches!(result, Err(Error::InvalidConfig { .. })),
        "{result:?}"
    );
}

/// What one `block_on` run checks: both task queues, timers, and that it is not a shard.
async fn exercise_runtime(round: u64) -> u64 {
    assert_eq!(rt::current_shard(), None);
    let latency = rt::spawn(TaskClass::Latency, async move { round * 2 });
    let background = rt::spawn(TaskClass::Background, async move {
        rt::yield_if_needed().await;
        round * 3
    });
    let detached_ran = Rc::new(Cell::new(false));
    let flag = Rc::clone(&detached_ran);
    rt::spawn_detached(TaskClass::Background, async move { flag.set(true) });
    // Task queues take turns in no promised order: wait for the detached task, boundedly.
    for _ in 0..DETACHED_TASK_WAITS {
        if detached_ran.get() {
            break;
        }
        rt::sleep(Duration::from_millis(1)).await;
    }
    assert!(detached_ran.get());
    assert_eq!(
        rt::timeout(Duration::from_millis(1), std::future::pending::<()>()).await,
        None
    );
    assert_eq!(
        rt::timeout(Duration::from_secs(5), async { round }).await,
        Some(round)
    );
    latency.await + background.await
}

#[test]
fn block_on_runs_repeatedly_on_one_thread() {
    for round in 0..50 {
        assert_eq!(rt::block_on(exercise_runtime(round)), round * 5);
    }
}

#[test]
fn block_on_runs_on_many_threads_at_once() {
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            std::thread::spawn(move || {
                for round in 0..10 {
                    let round = thread * 100 + round;
                    assert_eq!(rt::block_on(exercise_runtime(round)), round * 5);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("block_on thread");
    }
}
