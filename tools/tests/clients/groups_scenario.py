#!/usr/bin/env python3
"""Consumer groups end to end, run by tools/tests/consumer_groups.rs.

  rebalance BOOTSTRAP TOPIC GROUP COUNT EXTRA
        creates TOPIC (6 partitions), produces COUNT messages; three confluent-kafka consumers
        subscribe in GROUP: every partition assigned to exactly one member; one closes and the
        other two take its partitions over; all COUNT messages are consumed and committed; then
        EXTRA more messages are produced (not consumed)
  resume BOOTSTRAP TOPIC GROUP COUNT EXTRA
        (after a broker restart) the group's committed offsets are still there, and a new member
        of GROUP reads exactly the EXTRA messages produced after the commit
  kafka-python BOOTSTRAP TOPIC GROUP COUNT
        produces COUNT messages to TOPIC (created, 3 partitions); a kafka-python KafkaConsumer in
        GROUP reads them all and commits; a second consumer of GROUP finds nothing left to read
        and the committed offsets add up to COUNT
  static BOOTSTRAP TOPIC GROUP COUNT
        three static members (distinct group.instance.id, 10 s sessions) split TOPIC's 6
        partitions; each in turn is closed, which for a static member sends no LeaveGroup (the
        broker still lists it and the others see no revocation), and a new consumer with the
        same group.instance.id gets exactly the same partitions back while the other two see no
        rebalance callback at all; prints the time each took to get its partitions back
  expiry BOOTSTRAP TOPIC GROUP COUNT
        two members here and one in a child process (child-member) split TOPIC's 6 partitions;
        the child is SIGKILLed; the two survivors take its partitions over once its 6 s session
        expires (not sooner, and within the session timeout plus a margin; prints the time);
        COUNT messages (half before the kill, half after) are all consumed, nothing is read again
        below an offset that was committed, and the committed offsets add up to COUNT
  consumer-protocol BOOTSTRAP TOPIC GROUP ASSIGNOR COUNT
        the rebalance scenario with group.protocol=consumer (KIP-848) and the broker-side
        assignor ASSIGNOR (uniform or range): 2 partitions per member, one closes and the other
        two take over, all COUNT messages consumed and committed; DescribeConsumerGroups reports
        a CONSUMER group with the two members and their assignments
  child-member BOOTSTRAP TOPIC GROUP
        (the expiry scenario's child) joins GROUP as a classic member, prints "ASSIGNED p,q" (or
        "ASSIGNED -") on stdout at every assignment change and polls until it is killed, its
        parent goes away or CHILD_LIFETIME_S passes

Every wait is bounded. Exits 1 with "FAIL [groups] ..." on any mismatch.
"""

import collections
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500
# Joining, the initial rebalance delay (3 s) and a rebalance after a member leaves take a few
# seconds each; 60 s is far beyond any of them.
WAIT_S = 60

# Messages one poll takes at most. The members are polled in turn and an idle one waits 0.1 s:
# one message per poll would read about ten a second.
POLL_BATCH_COUNT = 500

# A static member's session: long enough that a restart fits well inside it, short enough that
# the broker forgets the closed members soon after the scenario ends.
STATIC_SESSION_TIMEOUT_MS = 10000
# How long the other members are watched after a static member closes and before its
# replacement starts: four heartbeats, so a LeaveGroup's rebalance would have reached them.
NO_LEAVE_WINDOW_S = 2.0
# How long every member is watched after a replacement got its partitions: four heartbeats, so a
# rebalance started by the rejoin would have reached the others.
SETTLE_S = 2.0

# After the session timeout the broker needs a heartbeat interval to tell the survivors, and a
# join and a sync to reassign; 4 s covers that on a loaded machine.
TAKEOVER_MARGIN_S = 4.0
# The killed member's last heartbeat was at most one interval before the kill, so its session
# cannot expire sooner than this after it; a takeover before then means the broker did not wait
# for the session (it reacted to the closed connection, which Kafka does not do).
TAKEOVER_MIN_S = (SESSION_TIMEOUT_MS - HEARTBEAT_INTERVAL_MS) / 1000 - 0.5

# The child member outlives no scenario: the parent kills it well before this.
CHILD_LIFETIME_S = 3 * WAIT_S

# librdkafka log lines kept per member for a failure report: with `debug: cgrp` that is the last
# few heartbeats and the assignment changes around them, and it keeps a report within the
# harness's 16 KiB of stderr.
CLIENT_LOG_LINES = 25

# Every member's librdkafka log (only for members that ask for one), by member name.
CLIENT_LOGS = {}


class Failure(Exception):
    pass


def log(message):
    print(f"[groups] {message}", flush=True)


def create_topic(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)


def produce(bootstrap, topic, start, count):
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for index in range(start, start + count):
        # Keys spread the messages over every partition.
        producer.produce(topic, key=str(index).encode(), value=f"message-{index}".encode())
    left = producer.flush(30)
    if left:
        raise Failure(f"{left} messages not delivered")


class ClientLog(logging.Handler):
    """A member's last librdkafka log lines; notices the broker refusing a request librdkafka
    needs, which librdkafka itself only logs and retries forever."""

    def __init__(self):
        super().__init__()
        self.lines = collections.deque(maxlen=CLIENT_LOG_LINES)
        self.unsupported = None

    def emit(self, record):
        line = record.getMessage()
        self.lines.append(line)
        if self.unsupported is None and "not supported by broker" in line:
            self.unsupported = line


def client_logger(name):
    """A logger for librdkafka's `logger` setting that keeps the lines in CLIENT_LOGS[name]."""
    handler = ClientLog()
    CLIENT_LOGS[name] = handler
    logger = logging.getLogger(f"librdkafka.{name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.handlers = [handler]
    return logger


def classic_settings(session_timeout_ms=SESSION_TIMEOUT_MS):
    return {
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        # The eager protocol: a revoke takes every partition, an assign gives the full set.
        "partition.assignment.strategy": "range",
    }


def describe_group(admin, group):
    try:
        return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    except Exception as error:
        raise Failure(f"describe_consumer_groups({group}) failed: {error!r}")


class Member:
    """One confluent-kafka consumer in the group, with what it was assigned and read.

    `incremental` members (KIP-848) get only the partitions added or taken away in each callback;
    the others (eager) get the whole new assignment and lose everything on a revoke. A member with
    a `ledger` commits what it read before it gives partitions up, and records every read and
    commit in the ledger."""

    def __init__(self, bootstrap, group, topic, name, settings=None, incremental=False,
                 ledger=None):
        from confluent_kafka import Consumer
        self.name = name
        self.assigned = set()
        # (monotonic time, "assign" | "revoke", partitions) for every rebalance callback.
        self.events = []
        self.incremental = incremental
        self.ledger = ledger
        config = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
        config.update(classic_settings() if settings is None else settings)
        self.consumer = Consumer(config)
        self.consumer.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, consumer, partitions):
        added = {partition.partition for partition in partitions}
        self.events.append((time.monotonic(), "assign", sorted(added)))
        self.assigned = self.assigned | added if self.incremental else added
        log(f"{self.name} assigned {sorted(added)}, now {sorted(self.assigned)}")

    def on_revoke(self, consumer, partitions):
        taken = {partition.partition for partition in partitions}
        self.events.append((time.monotonic(), "revoke", sorted(taken)))
        if self.ledger is not None:
            self.commit()
        self.assigned = self.assigned - taken if self.incremental else set()
        if self.incremental:
            log(f"{self.name} revoked {sorted(taken)}, now {sorted(self.assigned)}")

    def commit(self):
        """Commits what was read so far; a member that read nothing new has nothing to commit."""
        from confluent_kafka import KafkaError, KafkaException
        try:
            offsets = self.consumer.commit(asynchronous=False)
        except KafkaException as error:
            if error.args[0].code() != KafkaError._NO_OFFSET:
                log(f"{self.name}: commit failed: {error}")
            return
        if self.ledger is not None:
            self.ledger.committed(offsets)

    def poll(self, seen, timeout_s=0.1):
        log_lines = CLIENT_LOGS.get(self.name)
        if log_lines is not None and log_lines.unsupported is not None:
            raise Failure(f"{self.name}: the broker does not support what the client needs;"
                          f" librdkafka says: {log_lines.unsupported}")
        for message in self.consumer.consume(num_messages=POLL_BATCH_COUNT, timeout=timeout_s):
            if message.error():
                log(f"{self.name}: {message.error()}")
                continue
            seen.add(message.value().decode())
            if self.ledger is not None:
                self.ledger.read(self.name, message)


class ChildMember:
    """The expiry scenario's member in a child process, seen through the lines it prints."""

    def __init__(self, bootstrap, topic, group):
        self.name = "child"
        self.assigned = set()
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "child-member", bootstrap, topic, group],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self.read_lines, daemon=True).start()

    def read_lines(self):
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def poll(self, seen):
        """Takes in what the child printed; the child's reads are its own and never committed."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line.startswith("ASSIGNED "):
                listed = line.split(" ", 1)[1]
                self.assigned = set() if listed == "-" else {int(p) for p in listed.split(",")}
            else:
                print(f"(child) {line}", flush=True)
        status = self.process.poll()
        if status is not None:
            raise Failure(f"the child member exited by itself with status {status}")

    def kill(self):
        """SIGKILL by its PID: it gets no chance to leave the group or close its connections."""
        os.kill(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise Failure(f"the child member (PID {self.process.pid}) survived SIGKILL for 10 s")

    def reap(self):
        """Makes sure the child is gone, whatever happened to the scenario."""
        if self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


class Ledger:
    """Every message the in-process members read, by (partition, offset), and the highest offset
    committed per partition: a message may be read again only at or above it (its first read was
    never committed)."""

    def __init__(self):
        self.reads = collections.Counter()
        self.committed_offsets = {}
        self.rereads = 0

    def read(self, name, message):
        key = (message.partition(), message.offset())
        committed = self.committed_offsets.get(message.partition(), 0)
        if self.reads[key] and message.offset() < committed:
            raise Failure(f"{name} read partition {key[0]} offset {key[1]} again although"
                          f" offset {committed} was committed")
        if self.reads[key]:
            self.rereads += 1
        self.reads[key] += 1

    def committed(self, offsets):
        for partition in offsets or []:
            if partition.error is None and partition.offset >= 0:
                before = self.committed_offsets.get(partition.partition, 0)
                self.committed_offsets[partition.partition] = max(before, partition.offset)


def wait_for_assignment(members, seen, what):
    """Polls every member until their assignments split the partitions exactly and evenly."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for member in members:
            member.poll(seen)
        assignments = [member.assigned for member in members]
        union = set().union(*assignments)
        disjoint = sum(len(assigned) for assigned in assignments) == len(union)
        sizes = [len(assigned) for assigned in assignments]
        even = max(sizes) - min(sizes) <= 1
        if union == set(range(PARTITIONS)) and disjoint and even and all(assignments):
            log(f"{what}: " + ", ".join(f"{m.name}={sorted(m.assigned)}" for m in members))
            return
    raise Failure(f"{what}: no complete, even assignment within {WAIT_S} s: "
                  + ", ".join(f"{m.name}={sorted(m.assigned)}" for m in members))


def poll_for(members, seen, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for member in members:
            member.poll(seen)


def high_watermarks(bootstrap, topic):
    """Each partition's high watermark, in one ListOffsets request of an admin client (a
    consumer's own watermark query waits behind its fetch long poll, 0.5 s per partition)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = {TopicPartition(topic, partition): OffsetSpec.latest()
               for partition in range(PARTITIONS)}
    try:
        return {partition.partition: future.result(timeout=15).offset
                for partition, future in admin.list_offsets(request, request_timeout=10).items()}
    except Exception as error:
        raise Failure(f"list_offsets({topic}) failed: {error!r}")


def consume_and_commit(bootstrap, members, seen, topic, count):
    """Polls until messages 0..count are all seen and every partition's current owner has read
    it to its end, commits every member's position and checks the committed offsets add up to
    `count`. (A member that left may have read a partition to its end without committing it: its
    new owner must read it again before there is anything to commit.)"""
    from confluent_kafka import TopicPartition
    ends = high_watermarks(bootstrap, topic)
    if sum(ends.values()) != count:
        raise Failure(f"the partitions' high watermarks add up to {sum(ends.values())},"
                      f" want {count}: {ends}")
    expected = {f"message-{index}" for index in range(count)}

    def behind():
        """Partitions whose owner has not read them to the end, with where it is."""
        positions = {}
        for member in members:
            tps = [TopicPartition(topic, partition) for partition in sorted(member.assigned)]
            for position in member.consumer.position(tps) if tps else []:
                positions[position.partition] = position.offset
        return {partition: positions.get(partition) for partition, end in ends.items()
                if end > 0 and positions.get(partition) != end}

    deadline = time.monotonic() + WAIT_S
    while (not expected <= seen or behind()) and time.monotonic() < deadline:
        for member in members:
            member.poll(seen)
    if not expected <= seen:
        raise Failure(f"consumed {len(expected & seen)} of {count} messages")
    if behind():
        raise Failure(f"partitions not read to their ends {ends} by their owners: {behind()}")
    log(f"consumed all {count} messages")
    for member in members:
        member.commit()
    committed = members[0].consumer.committed(
        [TopicPartition(topic, partition) for partition in range(PARTITIONS)], timeout=10)
    total = sum(partition.offset for partition in committed)
    if total != count:
        raise Failure(f"committed offsets add up to {total}, want {count}: {committed}")
    log(f"committed offsets add up to {total}")


def rebalance(bootstrap, topic, group, count, extra):
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, 0, count)
    seen = set()
    members = [Member(bootstrap, group, topic, f"member-{index}") for index in range(3)]
    wait_for_assignment(members, seen, "three members")
    leaving = members.pop(0)
    before = set(leaving.assigned)
    leaving.consumer.close()
    log(f"{leaving.name} closed; its partitions {sorted(before)} must move")
    wait_for_assignment(members, seen, "two members")
    consume_and_commit(bootstrap, members, seen, topic, count)
    for member in members:
        member.consumer.close()
    produce(bootstrap, topic, count, extra)
    print(f"OK rebalance: 3 members, then 2 after one left; {count} messages consumed and committed")


def resume(bootstrap, topic, group, count, extra):
    from confluent_kafka import TopicPartition
    member = Member(bootstrap, group, topic, "resumer")
    committed = member.consumer.committed(
        [TopicPartition(topic, partition) for partition in range(PARTITIONS)], timeout=30)
    total = sum(partition.offset for partition in committed)
    if total != count:
        raise Failure(f"after the restart the committed offsets add up to {total}, want {count}")
    seen = set()
    expected = {f"message-{index}" for index in range(count, count + extra)}
    deadline = time.monotonic() + WAIT_S
    while not expected <= seen and time.monotonic() < deadline:
        member.poll(seen)
    # A little longer: anything from before the commit would show up now.
    settle = time.monotonic() + 2
    while time.monotonic() < settle:
        member.poll(seen)
    member.consumer.close()
    if seen != expected:
        old = sorted(seen - expected)[:5]
        raise Failure(f"resumed and read {len(seen)} messages, want exactly the {extra} new ones"
                      f" (missing {len(expected - seen)}, already committed ones: {old})")
    print(f"OK resume: committed offsets survived the restart; read exactly the {extra} new messages")


def kafka_python(bootstrap, topic, group, count):
    from kafka import KafkaConsumer, TopicPartition
    create_topic(bootstrap, topic, 3)
    produce(bootstrap, topic, 0, count)

    def consumer():
        return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=SESSION_TIMEOUT_MS, consumer_timeout_ms=5000)

    first = consumer()
    seen = set()
    deadline = time.monotonic() + WAIT_S
    while len(seen) < count and time.monotonic() < deadline:
        for records in first.poll(timeout_ms=500).values():
            seen.update(record.value.decode() for record in records)
    if len(seen) != count:
        raise Failure(f"kafka-python consumed {len(seen)} of {count} messages")
    first.commit()
    first.close()
    second = consumer()
    more = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        for records in second.poll(timeout_ms=500).values():
            more.extend(records)
    total = sum(second.committed(TopicPartition(topic, partition)) or 0 for partition in range(3))
    second.close()
    if more:
        raise Failure(f"a second consumer of the group read {len(more)} already committed messages")
    if total != count:
        raise Failure(f"kafka-python committed offsets add up to {total}, want {count}")
    print(f"OK kafka-python: {count} messages consumed and committed; nothing read twice")


def static_membership(bootstrap, topic, group, count):
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, 0, count)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    seen = set()

    def static_member(index):
        settings = classic_settings(STATIC_SESSION_TIMEOUT_MS)
        settings["group.instance.id"] = f"static-{index}"
        return Member(bootstrap, group, topic, f"static-{index}", settings)

    members = [static_member(index) for index in range(3)]
    wait_for_assignment(members, seen, "three static members")
    # The group's first generation may still be settling: only a quiet group counts.
    poll_for(members, seen, SETTLE_S)
    for member in members:
        member.events.clear()
    rejoin_times = []
    # Every member in turn, so that the group's leader (whichever it is) is among them.
    for index in range(len(members)):
        leaving = members[index]
        others = members[:index] + members[index + 1:]
        before = set(leaving.assigned)
        old_member_id = leaving.consumer.memberid()
        leaving.consumer.close()
        closed_at = time.monotonic()
        # No LeaveGroup: the broker still has the closed member, under its old member id.
        description = describe_group(admin, group)
        listed = {member.member_id: member.group_instance_id for member in description.members}
        if listed.get(old_member_id) != leaving.name:
            raise Failure(f"after {leaving.name} closed the broker lists {listed}, not its member"
                          f" {old_member_id}: did the static member send LeaveGroup?")
        poll_for(others, seen, NO_LEAVE_WINDOW_S)
        for other in others:
            if other.events:
                raise Failure(f"{other.name} saw {other.events} after static {leaving.name} closed:"
                              " the close made the group rebalance")
        started_at = time.monotonic()
        replacement = static_member(index)
        members[index] = replacement
        # Only the replacement, polled often, so that its assign callback is timed closely; the
        # others' callbacks wait in their queues for the settle window below.
        deadline = started_at + WAIT_S
        while not replacement.assigned and time.monotonic() < deadline:
            replacement.poll(seen, timeout_s=0.01)
        if not replacement.assigned:
            raise Failure(f"the restarted {leaving.name} got no partitions within {WAIT_S} s")
        assigned_at = replacement.events[-1][0]
        if replacement.assigned != before:
            raise Failure(f"the restarted {leaving.name} got {sorted(replacement.assigned)},"
                          f" it had {sorted(before)}")
        if assigned_at - closed_at >= STATIC_SESSION_TIMEOUT_MS / 1000:
            raise Failure(f"the restarted {leaving.name} got its partitions back"
                          f" {assigned_at - closed_at:.1f} s after the close: after its session")
        rejoin_times.append(assigned_at - started_at)
        log(f"{leaving.name} restarted and got {sorted(before)} back in"
            f" {assigned_at - started_at:.3f} s ({assigned_at - closed_at:.3f} s after the close)")
        poll_for(members, seen, SETTLE_S)
        for other in others:
            if other.events:
                raise Failure(f"{other.name} saw {other.events} while {leaving.name} restarted:"
                              " the rejoin made the group rebalance")
        if [kind for _, kind, _ in replacement.events] != ["assign"]:
            raise Failure(f"the restarted {leaving.name} saw {replacement.events}, want one assign")
        replacement.events.clear()
        description = describe_group(admin, group)
        listed = {member.member_id: member.group_instance_id for member in description.members}
        new_member_id = replacement.consumer.memberid()
        if (description.state != ConsumerGroupState.STABLE or len(listed) != 3
                or listed.get(new_member_id) != leaving.name or old_member_id in listed):
            raise Failure(f"after {leaving.name} restarted the group is {description.state} with"
                          f" {listed}; want Stable, 3 members, {new_member_id} in place of"
                          f" {old_member_id}")
    for member in members:
        member.consumer.close()
    times = ", ".join(f"{seconds:.3f} s" for seconds in rejoin_times)
    print(f"OK static: each of 3 static members restarted without a LeaveGroup and got the same"
          f" partitions back in {times}; the others saw no rebalance")


def expiry(bootstrap, topic, group, count):
    create_topic(bootstrap, topic, PARTITIONS)
    half = count // 2
    produce(bootstrap, topic, 0, half)
    ledger = Ledger()
    seen = set()
    child = ChildMember(bootstrap, topic, group)
    try:
        survivors = [Member(bootstrap, group, topic, f"survivor-{index}", ledger=ledger)
                     for index in range(2)]
        wait_for_assignment(survivors + [child], seen, "two members and the child")
        orphaned = set(child.assigned)
        child.kill()
        killed_at = time.monotonic()
        log(f"child (PID {child.process.pid}) killed; its partitions {sorted(orphaned)} must move"
            f" once its session expires")
        wait_for_assignment(survivors, seen, "two survivors")
        takeover_s = time.monotonic() - killed_at
        limit_s = SESSION_TIMEOUT_MS / 1000 + TAKEOVER_MARGIN_S
        if takeover_s > limit_s:
            raise Failure(f"the survivors took the child's partitions over {takeover_s:.1f} s"
                          f" after the kill, want at most {limit_s:.1f} s")
        if takeover_s < TAKEOVER_MIN_S:
            raise Failure(f"the survivors took the child's partitions over {takeover_s:.1f} s"
                          f" after the kill, before its {SESSION_TIMEOUT_MS} ms session expired")
        log(f"the survivors took over {takeover_s:.3f} s after the kill")
        produce(bootstrap, topic, half, count - half)
        consume_and_commit(bootstrap, survivors, seen, topic, count)
        for member in survivors:
            member.consumer.close()
    finally:
        child.reap()
    print(f"OK expiry: the killed member's partitions moved {takeover_s:.3f} s after SIGKILL"
          f" (session {SESSION_TIMEOUT_MS} ms); {count} messages consumed and committed"
          f" ({ledger.rereads} uncommitted reads repeated)")


def child_member(bootstrap, topic, group):
    parent = os.getppid()
    member = Member(bootstrap, group, topic, "child")
    printed = None
    deadline = time.monotonic() + CHILD_LIFETIME_S
    seen = set()
    while time.monotonic() < deadline and os.getppid() == parent:
        member.poll(seen)
        if member.assigned != printed:
            printed = set(member.assigned)
            listed = ",".join(str(p) for p in sorted(printed)) or "-"
            sys.stdout.write(f"ASSIGNED {listed}\n")
            sys.stdout.flush()


def consumer_protocol(bootstrap, topic, group, assignor, count):
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType
    from confluent_kafka.admin import AdminClient
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, 0, count)
    seen = set()

    def member(index):
        name = f"{assignor}-{index}"
        # No session.timeout.ms, heartbeat.interval.ms or partition.assignment.strategy: with
        # this protocol the broker owns them, and librdkafka refuses them.
        settings = {
            "group.protocol": "consumer",
            "group.remote.assignor": assignor,
            "debug": "cgrp",
            "logger": client_logger(name),
        }
        return Member(bootstrap, group, topic, name, settings, incremental=True)

    members = [member(index) for index in range(3)]
    wait_for_assignment(members, seen, f"three members ({assignor})")
    leaving = members.pop(0)
    before = set(leaving.assigned)
    leaving.consumer.close()
    log(f"{leaving.name} closed; its partitions {sorted(before)} must move")
    wait_for_assignment(members, seen, f"two members ({assignor})")
    consume_and_commit(bootstrap, members, seen, topic, count)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    want = {member.consumer.memberid(): member.assigned for member in members}
    deadline = time.monotonic() + WAIT_S
    while True:
        description = describe_group(admin, group)
        listed = {described.member_id: {p.partition for p in described.assignment.topic_partitions}
                  for described in description.members}
        if (description.type == ConsumerGroupType.CONSUMER
                and description.state == ConsumerGroupState.STABLE and listed == want):
            break
        if time.monotonic() >= deadline:
            raise Failure(f"describe_consumer_groups reports a {description.type} group in"
                          f" {description.state} with members {listed}; want a STABLE CONSUMER"
                          f" group with {want}")
        poll_for(members, seen, 0.5)
    log(f"described: {description.type}, {description.state}, assignor"
        f" {description.partition_assignor!r}, members {listed}")
    for member in members:
        member.consumer.close()
    print(f"OK consumer-protocol ({assignor}): 3 members with 2 partitions each, then 2 after one"
          f" left; {count} messages consumed and committed; described as a CONSUMER group")


# mode → (function, how its arguments after GROUP are converted).
MODES = {
    "rebalance": (rebalance, [int, int]),
    "resume": (resume, [int, int]),
    "kafka-python": (kafka_python, [int]),
    "static": (static_membership, [int]),
    "expiry": (expiry, [int]),
    "consumer-protocol": (consumer_protocol, [str, int]),
    "child-member": (child_member, []),
}


def main():
    mode, bootstrap, topic, group = sys.argv[1:5]
    try:
        if mode not in MODES:
            raise Failure(f"unknown mode {mode}")
        function, converters = MODES[mode]
        values = sys.argv[5:]
        if len(values) != len(converters):
            raise Failure(f"{mode} takes {len(converters)} arguments after GROUP, got {values}")
        function(bootstrap, topic, group,
                 *(convert(value) for convert, value in zip(converters, values)))
    except Failure as failure:
        for name, handler in CLIENT_LOGS.items():
            print(f"--- {name}: last librdkafka log lines ---", file=sys.stderr)
            for line in handler.lines:
                print(line, file=sys.stderr)
        print(f"FAIL [groups] {mode}: {failure}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
