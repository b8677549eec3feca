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

Every wait is bounded. Exits 1 with "FAIL [groups] ..." on any mismatch.
"""

import sys
import time

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
# Joining, the initial rebalance delay (3 s) and a rebalance after a member leaves take a few
# seconds each; 60 s is far beyond any of them.
WAIT_S = 60


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


class Member:
    """One confluent-kafka consumer in the group, with what it was assigned and read."""

    def __init__(self, bootstrap, group, topic, name):
        from confluent_kafka import Consumer
        self.name = name
        self.assigned = set()
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # The eager protocol: a revoke takes every partition, an assign gives the full set.
            "partition.assignment.strategy": "range",
        })
        self.consumer.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, consumer, partitions):
        self.assigned = {partition.partition for partition in partitions}
        log(f"{self.name} assigned {sorted(self.assigned)}")

    def on_revoke(self, consumer, partitions):
        self.assigned = set()

    def poll(self, seen):
        message = self.consumer.poll(0.1)
        if message is None:
            return
        if message.error():
            log(f"{self.name}: {message.error()}")
            return
        seen.add(message.value().decode())


def wait_for_assignment(members, seen, what):
    """Polls every member until their assignments split the partitions exactly."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for member in members:
            member.poll(seen)
        assignments = [member.assigned for member in members]
        union = set().union(*assignments)
        disjoint = sum(len(assigned) for assigned in assignments) == len(union)
        if union == set(range(PARTITIONS)) and disjoint and all(assignments):
            log(f"{what}: " + ", ".join(f"{m.name}={sorted(m.assigned)}" for m in members))
            return
    raise Failure(f"{what}: no complete assignment within {WAIT_S} s: "
                  + ", ".join(f"{m.name}={sorted(m.assigned)}" for m in members))


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
    expected = {f"message-{index}" for index in range(count)}
    deadline = time.monotonic() + WAIT_S
    while not expected <= seen and time.monotonic() < deadline:
        for member in members:
            member.poll(seen)
    if not expected <= seen:
        raise Failure(f"consumed {len(expected & seen)} of {count} messages")
    log(f"consumed all {count} messages")
    for member in members:
        member.consumer.commit(asynchronous=False)
    from confluent_kafka import TopicPartition
    committed = members[0].consumer.committed(
        [TopicPartition(topic, partition) for partition in range(PARTITIONS)], timeout=10)
    total = sum(partition.offset for partition in committed)
    if total != count:
        raise Failure(f"committed offsets add up to {total}, want {count}: {committed}")
    log(f"committed offsets add up to {total}")
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


def main():
    mode, bootstrap, topic, group = sys.argv[1:5]
    numbers = [int(value) for value in sys.argv[5:]]
    try:
        if mode == "rebalance":
            rebalance(bootstrap, topic, group, *numbers)
        elif mode == "resume":
            resume(bootstrap, topic, group, *numbers)
        elif mode == "kafka-python":
            kafka_python(bootstrap, topic, group, *numbers)
        else:
            raise Failure(f"unknown mode {mode}")
    except Failure as failure:
        print(f"FAIL [groups] {mode}: {failure}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
