//! A model of one partition replicated on three brokers, driven by random events through the
//! replication state machines: acks=all and acks=1 appends, follower fetches (with KIP-279
//! truncation after every leader change), flushes, time passing, crashes that lose what was
//! not durable, controller-committed and refused ISR changes, fenced brokers and clean leader
//! elections. After every event the invariants that make acks=all mean something are checked,
//! above all: every acknowledged record is in the log of every ISR member, at its offset.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use ringlog_cluster::replication::{
    elect_leader, follower, AlterPartitionRequest, FollowerFetch, LeaderAction, LeaderEpochCache,
    LeaderState, NewLeader, PartitionEpoch, ReplicationConfig, ReplicationError, RequestToken,
    TruncationStep,
};
use ringlog_engine::{LeaderEpoch, NodeId, Offset};

const REPLICA_COUNT: usize = 3;
const LAG_MS: u64 = 30_000;

/// One record: the epoch of the leader that wrote it and a unique id standing for its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    epoch: LeaderEpoch,
    id: u64,
}

#[derive(Clone, Debug)]
struct Replica {
    id: NodeId,
    log: Vec<Record>,
    /// How much of `log` is on disk for sure; a crash keeps this and maybe some of the rest.
    durable: usize,
    cache: LeaderEpochCache,
    /// The high watermark the replica last heard as a follower.
    high_watermark: Offset,
    alive: bool,
    /// The leader epoch this replica has truncated for and follows; `None`: truncate first.
    following: Option<LeaderEpoch>,
}

impl Replica {
    fn log_end(&self) -> Offset {
        Offset(self.log.len() as i64)
    }

    fn truncate(&mut self, to: Offset) {
        let to = usize::try_from(to.0.max(0)).expect("offset fits");
        if to < self.log.len() {
            self.log.truncate(to);
        }
        self.durable = self.durable.min(self.log.len());
        self.cache.truncate_from_end(self.log_end());
        self.high_watermark = self.high_watermark.min(self.log_end());
    }

    /// Appends a record the way a log does: a record of a newer epoch starts it in the cache.
    fn append(&mut self, record: Record) {
        let offset = self.log_end();
        if self
            .cache
            .latest_epoch()
            .is_none_or(|latest| record.epoch > latest)
        {
            self.cache
                .assign(record.epoch, offset)
                .expect("valid epoch");
        }
        self.log.push(record);
    }
}

/// The controller's registration of the partition.
#[derive(Clone, Debug)]
struct Controller {
    leader: Option<NodeId>,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    isr: Vec<NodeId>,
}

#[derive(Clone, Copy, Debug)]
enum Event {
    /// `flush`: the leader syncs right after appending (flush.messages=1).
    Produce {
        count: u8,
        acks_all: bool,
        flush: bool,
    },
    Flush {
        node: usize,
    },
    /// `flush`: the follower syncs what it fetched before its next fetch (flush.messages=1).
    Fetch {
        node: usize,
        record_count_max: u8,
        flush: bool,
    },
    Tick {
        elapsed_ms: u64,
    },
    DeliverAlterPartition {
        accept: bool,
    },
    Crash {
        node: usize,
        tail_kept: u8,
    },
    Restart {
        node: usize,
    },
    Fence {
        node: usize,
    },
    Elect {
        move_leadership: bool,
    },
}

/// What a run did, to show that the model exercises what it claims to.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    acked_records: usize,
    refused_produces: usize,
    failed_after_append: usize,
    failed_not_leader: usize,
    elections: usize,
    truncated_records: usize,
    isr_shrinks: usize,
    isr_expansions: usize,
}

struct Sim {
    assignment: Vec<NodeId>,
    replicas: Vec<Replica>,
    controller: Controller,
    /// The state machine of the controller's leader, while that broker is alive.
    leader: Option<LeaderState>,
    in_flight: VecDeque<AlterPartitionRequest>,
    config: ReplicationConfig,
    now_ms: u64,
    next_record_id: u64,
    next_token: u64,
    /// acks=all produces not yet answered: token to (first offset, records).
    waiting: BTreeMap<u64, (usize, Vec<Record>)>,
    acked: Vec<(usize, Record)>,
    /// The high watermark the current leader last had, to check it never goes back.
    last_high_watermark: Option<(LeaderEpoch, Offset)>,
    stats: Stats,
}

fn node(index: usize) -> NodeId {
    NodeId(index as i32 + 1)
}

fn index(id: NodeId) -> usize {
    (id.0 - 1) as usize
}

impl Sim {
    fn new(min_insync_replicas: usize) -> Sim {
        let assignment: Vec<NodeId> = (0..REPLICA_COUNT).map(node).collect();
        let replicas = assignment
            .iter()
            .map(|&id| Replica {
                id,
                log: Vec::new(),
                durable: 0,
                cache: LeaderEpochCache::new(),
                high_watermark: Offset::ZERO,
                alive: true,
                following: None,
            })
            .collect();
        let mut sim = Sim {
            controller: Controller {
                leader: None,
                leader_epoch: LeaderEpoch(-1),
                partition_epoch: PartitionEpoch(0),
                isr: assignment.clone(),
            },
            assignment,
            replicas,
            leader: None,
            in_flight: VecDeque::new(),
            config: ReplicationConfig {
                replica_lag_time_max_ms: LAG_MS,
                min_insync_replicas,
            },
            now_ms: 0,
            next_record_id: 0,
            next_token: 0,
            waiting: BTreeMap::new(),
            acked: Vec::new(),
            last_high_watermark: None,
            stats: Stats::default(),
        };
        sim.elect(false);
        sim
    }

    fn leader_index(&self) -> Option<usize> {
        self.leader.as_ref().map(|leader| index(leader.local()))
    }

    fn step(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Produce {
                count,
                acks_all,
                flush,
            } => {
                self.produce(count, acks_all)?;
                if flush {
                    if let Some(leader_index) = self.leader_index() {
                        self.flush(leader_index)?;
                    }
                }
            }
            Event::Flush { node } => self.flush(node)?,
            Event::Fetch {
                node,
                record_count_max,
                flush,
            } => {
                self.fetch(node, record_count_max)?;
                if flush {
                    self.flush(node)?;
                }
            }
            Event::Tick { elapsed_ms } => {
                self.now_ms += elapsed_ms;
                if let Some(leader) = self.leader.as_mut() {
                    let actions = leader.tick(self.now_ms);
                    self.carry_out(actions)?;
                }
            }
            Event::DeliverAlterPartition { accept } => self.deliver_alter_partition(accept)?,
            Event::Crash { node, tail_kept } => self.crash(node, tail_kept)?,
            Event::Restart { node } => {
                let replica = &mut self.replicas[node];
                if !replica.alive {
                    replica.alive = true;
                    replica.following = None;
                }
            }
            Event::Fence { node } => self.fence(node)?,
            Event::Elect { move_leadership } => self.elect(move_leadership),
        }
        self.check()
    }

    fn produce(&mut self, count: u8, acks_all: bool) -> Result<(), String> {
        let Some(leader_index) = self.leader_index() else {
            return Ok(());
        };
        let leader = self.leader.as_mut().expect("a leader");
        if acks_all && leader.check_acks_all_append().is_err() {
            self.stats.refused_produces += 1;
            return Ok(());
        }
        let epoch = leader.leader_epoch();
        let replica = &mut self.replicas[leader_index];
        let first = replica.log.len();
        let mut records = Vec::new();
        for _ in 0..count.max(1) {
            let record = Record {
                epoch,
                id: self.next_record_id,
            };
            self.next_record_id += 1;
            replica.append(record);
            records.push(record);
        }
        let end = replica.log_end();
        leader
            .log_appended(end)
            .map_err(|error| error.to_string())?;
        if acks_all {
            let token = self.next_token;
            self.next_token += 1;
            self.waiting.insert(token, (first, records));
            let actions = leader
                .await_replication(end, RequestToken(token))
                .map_err(|error| error.to_string())?;
            self.carry_out(actions)?;
        }
        Ok(())
    }

    fn flush(&mut self, node: usize) -> Result<(), String> {
        let replica = &mut self.replicas[node];
        if !replica.alive {
            return Ok(());
        }
        replica.durable = replica.log.len();
        let durable = replica.log_end();
        if self.leader_index() == Some(node) {
            let actions = self
                .leader
                .as_mut()
                .expect("a leader")
                .log_flushed(durable)
                .map_err(|error| error.to_string())?;
            self.carry_out(actions)?;
        }
        Ok(())
    }

    fn fetch(&mut self, node: usize, record_count_max: u8) -> Result<(), String> {
        let Some(leader_index) = self.leader_index() else {
            return Ok(());
        };
        if leader_index == node || !self.replicas[node].alive {
            return Ok(());
        }
        let epoch = self.controller.leader_epoch;
        if self.replicas[node].following != Some(epoch) {
            self.truncate_for_new_leader(node, leader_index)?;
            self.replicas[node].following = Some(epoch);
        }
        let follower = &self.replicas[node];
        let request = FollowerFetch {
            replica: follower.id,
            current_leader_epoch: Some(epoch),
            fetch_offset: follower.log_end(),
            durable_offset: Offset(follower.durable as i64),
        };
        let leader = self.leader.as_mut().expect("a leader");
        let decision = leader
            .follower_fetch(request, self.now_ms)
            .map_err(|error| format!("fetch by {node} after truncation refused: {error}"))?;
        let from = self.replicas[node].log.len();
        let to = self.replicas[leader_index]
            .log
            .len()
            .min(from + usize::from(record_count_max));
        let records = self.replicas[leader_index].log[from..to].to_vec();
        let follower = &mut self.replicas[node];
        for record in records {
            follower.append(record);
        }
        follower.high_watermark = decision.high_watermark.min(follower.log_end());
        self.carry_out(decision.actions)
    }

    /// KIP-279 truncation, as a follower's fetcher would run it against the leader.
    fn truncate_for_new_leader(&mut self, node: usize, leader_index: usize) -> Result<(), String> {
        let epoch = self.controller.leader_epoch;
        let follower = &self.replicas[node];
        let mut step = follower::start_truncation(
            &follower.cache,
            follower.log_end(),
            follower.high_watermark,
        );
        for _ in 0..follower::TRUNCATION_ROUNDS_MAX {
            let replica = &mut self.replicas[node];
            let before = replica.log.len();
            replica.truncate(step.truncate_to());
            self.stats.truncated_records += before - replica.log.len();
            let TruncationStep::AskLeader { epoch: asked, .. } = step else {
                return Ok(());
            };
            let answer = self
                .leader
                .as_ref()
                .expect("a leader")
                .offset_for_leader_epoch(Some(epoch), asked, &self.replicas[leader_index].cache)
                .map_err(|error| error.to_string())?;
            let replica = &self.replicas[node];
            step = follower::after_leader_answer(&replica.cache, replica.log_end(), asked, answer);
        }
        Err("truncation did not settle".to_string())
    }

    fn deliver_alter_partition(&mut self, accept: bool) -> Result<(), String> {
        let Some(request) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let controller = &mut self.controller;
        let valid = controller.leader == Some(request.leader)
            && controller.leader_epoch == request.leader_epoch
            && controller.partition_epoch == request.partition_epoch
            && request.new_isr.contains(&request.leader);
        if accept && valid {
            if request.new_isr.len() < controller.isr.len() {
                self.stats.isr_shrinks += 1;
            } else {
                self.stats.isr_expansions += 1;
            }
            controller.isr = request.new_isr.clone();
            controller.partition_epoch.0 += 1;
            let (leader_epoch, partition_epoch) =
                (controller.leader_epoch, controller.partition_epoch);
            if let Some(leader) = self.leader.as_mut() {
                let actions = leader
                    .isr_committed(leader_epoch, partition_epoch, &request.new_isr)
                    .map_err(|error| error.to_string())?;
                self.carry_out(actions)?;
            }
        } else if let Some(leader) = self.leader.as_mut() {
            leader.isr_change_failed(&request);
        }
        Ok(())
    }

    fn crash(&mut self, node: usize, tail_kept: u8) -> Result<(), String> {
        let replica = &mut self.replicas[node];
        if !replica.alive {
            return Ok(());
        }
        replica.alive = false;
        replica.following = None;
        // The unsynced tail is lost, all of it or some: a write may have reached the disk.
        let unsynced = replica.log.len() - replica.durable;
        let kept = replica.durable + usize::from(tail_kept) % (unsynced + 1);
        replica.truncate(Offset(kept as i64));
        if self.leader_index() == Some(node) {
            let leader = self.leader.take().expect("a leader");
            self.in_flight.clear();
            // The controller sees the broker's session end and takes leadership away.
            self.controller.leader = None;
            self.carry_out(leader.resign())?;
        }
        Ok(())
    }

    /// KRaft fences a broker whose session ended and drops it from ISRs (never the last one).
    fn fence(&mut self, node: usize) -> Result<(), String> {
        let id = node_id(node);
        let controller = &mut self.controller;
        if self.replicas[node].alive
            || controller.leader.is_none()
            || controller.leader == Some(id)
            || !controller.isr.contains(&id)
        {
            return Ok(());
        }
        controller.isr.retain(|member| *member != id);
        controller.partition_epoch.0 += 1;
        self.stats.isr_shrinks += 1;
        let (leader_epoch, partition_epoch) = (controller.leader_epoch, controller.partition_epoch);
        let isr = controller.isr.clone();
        if let Some(leader) = self.leader.as_mut() {
            let actions = leader
                .isr_committed(leader_epoch, partition_epoch, &isr)
                .map_err(|error| error.to_string())?;
            self.carry_out(actions)?;
        }
        Ok(())
    }

    fn elect(&mut self, move_leadership: bool) {
        let mut live: BTreeSet<NodeId> = self
            .replicas
            .iter()
            .filter(|replica| replica.alive)
            .map(|replica| replica.id)
            .collect();
        match self.controller.leader {
            None => {}
            Some(current) if move_leadership => {
                live.remove(&current);
            }
            Some(_) => return,
        }
        let Some(election) = elect_leader(&self.assignment, &self.controller.isr, &live, false)
        else {
            return;
        };
        assert!(!election.unclean);
        if let Some(old) = self.leader.take() {
            let actions = old.resign();
            self.carry_out(actions)
                .expect("resignation only fails produces");
        }
        let mut isr = election.isr.clone();
        if let Some(current) = self.controller.leader {
            // A moved leadership keeps the old leader, alive, in the ISR.
            if self.controller.isr.contains(&current) && !isr.contains(&current) {
                isr.push(current);
            }
        }
        self.stats.elections += 1;
        self.in_flight.clear();
        self.controller.leader = Some(election.leader);
        self.controller.leader_epoch.0 += 1;
        self.controller.partition_epoch.0 += 1;
        self.controller.isr = isr.clone();
        for replica in &mut self.replicas {
            replica.following = None;
        }
        let replica = &mut self.replicas[index(election.leader)];
        replica
            .cache
            .assign(self.controller.leader_epoch, replica.log_end())
            .expect("valid epoch");
        let leader = LeaderState::new(
            NewLeader {
                local: election.leader,
                leader_epoch: self.controller.leader_epoch,
                partition_epoch: self.controller.partition_epoch,
                replicas: self.assignment.clone(),
                isr,
                log_end_offset: replica.log_end(),
                durable_end_offset: Offset(replica.durable as i64),
                high_watermark: replica.high_watermark,
            },
            self.config,
            self.now_ms,
        )
        .expect("the controller's registration is valid");
        self.last_high_watermark = Some((leader.leader_epoch(), leader.high_watermark()));
        self.leader = Some(leader);
    }

    fn carry_out(&mut self, actions: Vec<LeaderAction>) -> Result<(), String> {
        for action in actions {
            match action {
                LeaderAction::AlterPartition(request) => self.in_flight.push_back(request),
                LeaderAction::HighWatermarkAdvanced(_) => {}
                LeaderAction::CompleteProduce { token, result } => {
                    let (first, records) = self
                        .waiting
                        .remove(&token.0)
                        .ok_or_else(|| format!("token {} answered twice", token.0))?;
                    match result {
                        Ok(()) => {
                            for (position, record) in records.into_iter().enumerate() {
                                self.acked.push((first + position, record));
                                self.stats.acked_records += 1;
                            }
                        }
                        Err(ReplicationError::NotEnoughReplicasAfterAppend { .. }) => {
                            self.stats.failed_after_append += 1;
                        }
                        Err(_) => self.stats.failed_not_leader += 1,
                    }
                }
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        if let Some(leader) = &self.leader {
            let high_watermark = leader.high_watermark();
            if let Some((epoch, last)) = self.last_high_watermark {
                if epoch == leader.leader_epoch() && high_watermark < last {
                    return Err(format!(
                        "high watermark went back from {last} to {high_watermark}"
                    ));
                }
            }
            self.last_high_watermark = Some((leader.leader_epoch(), high_watermark));
            if !leader.isr().contains(&leader.local()) {
                return Err(format!("the ISR {:?} lacks the leader", leader.isr()));
            }
            let mut controller_isr = self.controller.isr.clone();
            controller_isr.sort();
            if leader.isr() != controller_isr {
                return Err(format!(
                    "leader ISR {:?} differs from the controller's {controller_isr:?}",
                    leader.isr()
                ));
            }
            for member in &self.controller.isr {
                let durable = self.replicas[index(*member)].durable as i64;
                if high_watermark.0 > durable {
                    return Err(format!(
                        "high watermark {high_watermark} is past ISR member {}'s durable end {durable}",
                        member.0
                    ));
                }
            }
            if leader.waiting_produce_count() != self.waiting.len() {
                return Err("a produce is waiting that the model does not know".to_string());
            }
        }
        if let Some(leader) = self.controller.leader {
            if !self.controller.isr.contains(&leader) {
                return Err("the controller's ISR lacks the leader".to_string());
            }
        }
        // Not only in the log: in its durable part, so that no crash can take it away.
        for member in &self.controller.isr {
            let replica = &self.replicas[index(*member)];
            let durable_log = &replica.log[..replica.durable];
            for (offset, record) in &self.acked {
                if durable_log.get(*offset) != Some(record) {
                    return Err(format!(
                        "acknowledged {record:?} at {offset} is not in ISR member {}'s durable \
                         log (found {:?}, durable end {})",
                        member.0,
                        replica.log.get(*offset),
                        replica.durable
                    ));
                }
            }
        }
        Ok(())
    }
}

fn node_id(index: usize) -> NodeId {
    node(index)
}

fn event() -> impl Strategy<Value = Event> {
    let node = 0..REPLICA_COUNT;
    prop_oneof![
        6 => (1..4u8, any::<bool>(), any::<bool>())
            .prop_map(|(count, acks_all, flush)| Event::Produce { count, acks_all, flush }),
        5 => node.clone().prop_map(|node| Event::Flush { node }),
        10 => (node.clone(), 1..6u8, any::<bool>()).prop_map(|(node, record_count_max, flush)| {
            Event::Fetch { node, record_count_max, flush }
        }),
        // Mostly short steps; now and then one past replica.lag.time.max.ms.
        2 => prop_oneof![4 => 0..5_000u64, 1 => 0..2 * LAG_MS]
            .prop_map(|elapsed_ms| Event::Tick { elapsed_ms }),
        3 => (0..4u8).prop_map(|roll| Event::DeliverAlterPartition { accept: roll != 0 }),
        1 => (node.clone(), any::<u8>())
            .prop_map(|(node, tail_kept)| Event::Crash { node, tail_kept }),
        2 => node.clone().prop_map(|node| Event::Restart { node }),
        1 => node.prop_map(|node| Event::Fence { node }),
        1 => any::<bool>().prop_map(|move_leadership| Event::Elect { move_leadership }),
    ]
}

fn run(min_insync_replicas: usize, events: &[Event]) -> Result<Stats, String> {
    let mut sim = Sim::new(min_insync_replicas);
    for (position, event) in events.iter().enumerate() {
        sim.step(*event)
            .map_err(|error| format!("after event {position} {event:?}: {error}"))?;
    }
    Ok(sim.stats)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any sequence of events keeps the replication invariants; above all, no acknowledged
    /// record is ever missing from an ISR member (and so from a cleanly elected leader).
    #[test]
    fn acknowledged_records_survive_any_event_sequence(
        min_insync_replicas in 1..=3usize,
        events in prop::collection::vec(event(), 1..300),
    ) {
        if let Err(error) = run(min_insync_replicas, &events) {
            prop_assert!(false, "{}", error);
        }
    }
}

/// The model must exercise what it claims to: over a fixed set of generated runs, records are
/// acknowledged, leaders change, followers truncate, and the ISR both shrinks and grows.
#[test]
fn the_model_exercises_every_rule() {
    let mut runner = TestRunner::deterministic();
    let strategy = (1..=3usize, prop::collection::vec(event(), 1..300));
    let mut total = Stats::default();
    for _ in 0..200 {
        let (min_insync_replicas, events) = strategy
            .new_tree(&mut runner)
            .expect("a generated run")
            .current();
        let stats = run(min_insync_replicas, &events).expect("invariants hold");
        total.acked_records += stats.acked_records;
        total.refused_produces += stats.refused_produces;
        total.failed_after_append += stats.failed_after_append;
        total.failed_not_leader += stats.failed_not_leader;
        total.elections += stats.elections;
        total.truncated_records += stats.truncated_records;
        total.isr_shrinks += stats.isr_shrinks;
        total.isr_expansions += stats.isr_expansions;
    }
    println!("{total:?}");
    assert!(total.acked_records > 500, "{total:?}");
    assert!(total.refused_produces > 100, "{total:?}");
    assert!(total.failed_after_append > 30, "{total:?}");
    assert!(total.failed_not_leader > 100, "{total:?}");
    assert!(total.elections > 300, "{total:?}");
    assert!(total.truncated_records > 300, "{total:?}");
    assert!(total.isr_shrinks > 50, "{total:?}");
    assert!(total.isr_expansions > 30, "{total:?}");
}

/// Runs `events` on a fresh three-broker partition, failing on any broken invariant.
fn scenario(min_insync_replicas: usize, events: &[Event]) -> Sim {
    continue_scenario(Sim::new(min_insync_replicas), events)
}

fn continue_scenario(mut sim: Sim, events: &[Event]) -> Sim {
    for (position, event) in events.iter().enumerate() {
        if let Err(error) = sim.step(*event) {
            panic!("after event {position} {event:?}: {error}");
        }
    }
    sim
}

fn produce(count: u8, acks_all: bool, flush: bool) -> Event {
    Event::Produce {
        count,
        acks_all,
        flush,
    }
}

fn fetch(node: usize, flush: bool) -> Event {
    Event::Fetch {
        node,
        record_count_max: u8::MAX,
        flush,
    }
}

/// KIP-101 scenario 1 end to end: broker 2 fetched m1 and m2 but heard a high watermark of
/// only 1 when it restarted; then leader 1 dies. Truncating to its high watermark on restart
/// would have dropped the acknowledged m2 from the next leader. It truncates by epoch instead,
/// keeps m2, and leads with it.
#[test]
fn kip101_follower_restart_then_leader_loss_keeps_acknowledged_records() {
    let sim = scenario(
        2,
        &[
            produce(1, true, true),
            fetch(1, true),
            fetch(2, true),
            fetch(1, false), // reports m1 durable; 3 still holds the high watermark at 0
            fetch(2, false), // the high watermark reaches 1: m1 acknowledged
            produce(1, true, true),
            fetch(1, true),
            fetch(2, true),
            fetch(1, false),
            fetch(2, false), // the high watermark reaches 2: m2 acknowledged; 2 heard only 1
            Event::Crash {
                node: 1,
                tail_kept: 0,
            },
            Event::Restart { node: 1 },
        ],
    );
    assert_eq!(sim.acked.len(), 2);
    assert_eq!(
        sim.replicas[1].high_watermark,
        Offset(1),
        "the high watermark lagged"
    );
    let sim = continue_scenario(
        sim,
        &[
            fetch(1, false), // truncation by epoch: nothing to cut
            Event::Crash {
                node: 0,
                tail_kept: 0,
            },
            Event::Elect {
                move_leadership: false,
            },
        ],
    );
    assert_eq!(sim.stats.truncated_records, 0);
    assert_eq!(sim.controller.leader, Some(NodeId(2)));
    let new_leader_log = &sim.replicas[1].log;
    for (offset, record) in &sim.acked {
        assert_eq!(new_leader_log.get(*offset), Some(record));
    }
}

/// KIP-101 scenario 2 end to end: both brokers lose power; broker 2 only had m1 on disk, 1 had
/// m1 and m2 (never acknowledged). Broker 2 comes back first, leads and writes m3 at offset 1.
/// When 1 comes back it must cut m2 and take m3, or the two logs differ at offset 1 forever.
#[test]
fn kip101_replicas_do_not_diverge_after_a_double_failure() {
    let sim = scenario(
        1,
        &[
            produce(1, false, true),
            fetch(1, true),
            fetch(2, true),
            produce(1, false, true),
            Event::Crash {
                node: 0,
                tail_kept: 0,
            },
            Event::Crash {
                node: 1,
                tail_kept: 0,
            },
            Event::Crash {
                node: 2,
                tail_kept: 0,
            },
            Event::Restart { node: 1 },
            Event::Elect {
                move_leadership: false,
            },
            produce(1, true, true),
            Event::Restart { node: 0 },
            fetch(0, true),
        ],
    );
    assert_eq!(sim.controller.leader, Some(NodeId(2)));
    let (old_leader, new_leader) = (&sim.replicas[0].log, &sim.replicas[1].log);
    assert_eq!(new_leader.len(), 2);
    assert_eq!(old_leader, new_leader, "the logs agree");
    assert!(sim.stats.truncated_records >= 1, "m2 was cut");
}
