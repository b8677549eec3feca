#!/usr/bin/env python3
"""The end-to-end scenario through confluent-kafka (librdkafka), run by tools/tests/kafka_clients.rs.

  all BOOTSTRAP PREFIX                   topics PREFIX-*: CreateTopics, keyed messages with headers
                                         and timestamps, null keys and values, a 1 MiB message,
                                         gzip/snappy/lz4/zstd batches, the idempotent producer,
                                         acks=0; each read back and compared
  produce-acks-all BOOTSTRAP TOPIC COUNT RECORD
                                         creates TOPIC, produces COUNT messages with acks=all,
                                         writes where each was acknowledged to RECORD (JSON)
  verify BOOTSTRAP TOPIC RECORD          reads TOPIC back and checks it holds exactly what RECORD
                                         says was acknowledged

Partitions are assigned explicitly and read from the beginning; no group is joined and nothing is
committed (librdkafka wants a group.id, but with assign() and no commits it never needs the group
coordinator). Exits 1 with "FAIL [confluent-kafka] step '...': ..." on any mismatch.
"""

import argparse
import json
import sys
import time

from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, Consumer, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

import scenario
from scenario import Failure, Message, Received

CLIENT = "confluent-kafka"
STEPS = scenario.Steps(CLIENT)


def create_topics(bootstrap, topics):
    """Creates `topics` ([(name, partitions, configs)]) and waits until each has a leader on every
    partition."""
    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new_topics = [NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs)
                  for name, partitions, configs in topics]
    futures = admin.create_topics(new_topics, operation_timeout=30, request_timeout=30)
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as error:
            raise Failure(f"CreateTopics {name}: {error}")
    deadline = time.monotonic() + scenario.READ_TIMEOUT_S
    while True:
        metadata = admin.list_topics(timeout=10)
        missing = []
        for name, partitions, _ in topics:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                missing.append(f"{name}: {None if topic is None else topic.error}")
            elif len(topic.partitions) != partitions:
                missing.append(f"{name}: {len(topic.partitions)} partitions, want {partitions}")
            elif any(partition.leader < 0 for partition in topic.partitions.values()):
                missing.append(f"{name}: a partition has no leader")
        if not missing:
            return
        if time.monotonic() > deadline:
            raise Failure(f"created topics not in Metadata with leaders: {missing}")
        time.sleep(0.2)


def produce(bootstrap, topic, messages, config=None, partition=None, acknowledged=True):
    """Produces `messages` in order and records each one's acknowledged partition and offset;
    fails on any delivery error or a message still undelivered after the flush."""
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "message.timeout.ms": 60000,
        "linger.ms": 5,
        **(config or {}),
    })
    errors = []

    def on_delivery_for(message):
        def on_delivery(error, delivered):
            if error is not None:
                errors.append(f"message {message.index}: {error}")
            else:
                message.partition = delivered.partition()
                message.offset = delivered.offset()
        return on_delivery

    for message in messages:
        arguments = dict(key=message.key, value=message.value,
                         headers=message.headers or None, timestamp=message.timestamp_ms,
                         on_delivery=on_delivery_for(message))
        if partition is not None:
            arguments["partition"] = partition
        while True:
            try:
                producer.produce(topic, **arguments)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    undelivered = producer.flush(scenario.FLUSH_TIMEOUT_S)
    if errors:
        raise Failure(f"{len(errors)} delivery errors, first: {errors[:5]}")
    if undelivered:
        raise Failure(f"{undelivered} messages still undelivered {scenario.FLUSH_TIMEOUT_S} s "
                      f"after flush")
    if acknowledged:
        return scenario.expected_by_partition(messages)
    return None


def read(bootstrap, topic, counts, config=None):
    """Reads partitions `counts` ({partition: count}) of `topic` from the beginning until each has
    `count` messages, then checks each partition's high watermark is exactly `count` (nothing
    extra, nothing duplicated)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "ringlog-e2e-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 100,
        **(config or {}),
    })
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in counts])
    received = {partition: [] for partition in counts}
    errors = []
    deadline = time.monotonic() + scenario.READ_TIMEOUT_S
    try:
        while any(len(received[partition]) < count for partition, count in counts.items()):
            if time.monotonic() > deadline:
                progress = {partition: len(records) for partition, records in received.items()}
                raise Failure(f"{topic}: read {progress} in {scenario.READ_TIMEOUT_S} s, expected "
                              f"{counts}; consumer errors: {errors[:5]}")
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                errors.append(str(message.error()))
                print(f"[{CLIENT}] consumer error: {message.error()}", file=sys.stderr)
                if message.error().fatal():
                    raise Failure(f"fatal consumer error: {message.error()}")
                continue
            timestamp_type, timestamp = message.timestamp()
            received.setdefault(message.partition(), []).append(Received(
                partition=message.partition(),
                offset=message.offset(),
                key=message.key(),
                value=message.value(),
                headers=message.headers() or [],
                timestamp_ms=timestamp,
                create_time=timestamp_type == TIMESTAMP_CREATE_TIME,
            ))
        for partition, count in counts.items():
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=10)
            if (low, high) != (0, count):
                raise Failure(f"{topic} partition {partition}: watermarks ({low}, {high}), "
                              f"expected (0, {count})")
    finally:
        consumer.close()
    return received


def produce_and_check(bootstrap, topic, partitions, messages, producer_config=None,
                      consumer_config=None):
    expected = produce(bootstrap, topic, messages, producer_config)
    counts = {partition: len(expected.get(partition, [])) for partition in range(partitions)}
    received = read(bootstrap, topic, counts, consumer_config)
    scenario.compare(expected, received, range(partitions))
    return counts


def run_all(bootstrap, prefix, precreated=False):
    keyed = f"{prefix}-keyed"
    big = f"{prefix}-big"
    idempotent = f"{prefix}-idempotent"
    acks0 = f"{prefix}-acks0"
    codec_topics = {codec: f"{prefix}-{codec}" for codec in scenario.CODECS}

    STEPS.begin("CreateTopics")
    create_topics(bootstrap, [] if precreated else [
        (keyed, scenario.PARTITIONS, {}),
        (big, 1, {"max.message.bytes": str(scenario.BIG_TOPIC_MAX_MESSAGE_BYTES)}),
        (idempotent, scenario.PARTITIONS, {}),
        (acks0, 1, {}),
        *[(topic, 1, {}) for topic in codec_topics.values()],
    ])
    STEPS.ok()

    STEPS.begin("keyed messages with headers, timestamps, null keys and values")
    counts = produce_and_check(bootstrap, keyed, scenario.PARTITIONS,
                               scenario.keyed_messages(CLIENT))
    STEPS.ok(f"per partition {counts}")

    STEPS.begin("1 MiB message")
    produce_and_check(bootstrap, big, 1, scenario.big_messages(),
                      producer_config={"message.max.bytes":
                                       scenario.BIG_TOPIC_MAX_MESSAGE_BYTES},
                      consumer_config={"fetch.message.max.bytes": 4 << 20})
    STEPS.ok()

    for codec, topic in codec_topics.items():
        STEPS.begin(f"{codec} batches")
        produce_and_check(bootstrap, topic, 1, scenario.codec_messages(codec),
                          producer_config={"compression.type": codec, "linger.ms": 50})
        STEPS.ok()

    STEPS.begin("idempotent producer")
    messages = scenario.sequence_messages("idempotent", scenario.IDEMPOTENT_COUNT)
    counts = produce_and_check(bootstrap, idempotent, scenario.PARTITIONS, messages,
                               producer_config={"enable.idempotence": True, "acks": "all",
                                                "max.in.flight.requests.per.connection": 5,
                                                "linger.ms": 1, "batch.num.messages": 50})
    STEPS.ok(f"per partition {counts}")

    STEPS.begin("acks=0")
    produce(bootstrap, acks0, scenario.sequence_messages("acks0", scenario.ACKS0_COUNT),
            config={"acks": 0}, acknowledged=False)
    received = read(bootstrap, acks0, {0: scenario.ACKS0_COUNT})
    scenario.check_sequence(received, scenario.ACKS0_COUNT, "acks0")
    STEPS.ok()


def acks_all_messages(count, timestamps=None):
    messages = scenario.sequence_messages("acks-all", count)
    for message in messages:
        if timestamps is not None:
            message.timestamp_ms = timestamps[message.index]
    return messages


def run_produce_acks_all(bootstrap, topic, count, record, precreated=False):
    STEPS.begin("CreateTopics")
    create_topics(bootstrap, [] if precreated else [(topic, scenario.PARTITIONS, {})])
    STEPS.ok()
    STEPS.begin(f"produce {count} with acks=all")
    messages = acks_all_messages(count)
    produce(bootstrap, topic, messages, config={"acks": "all", "linger.ms": 2})
    with open(record, "w") as file:
        json.dump([[message.index, message.partition, message.offset, message.timestamp_ms]
                   for message in messages], file)
    STEPS.ok()


def run_verify(bootstrap, topic, record):
    STEPS.begin("read back what was acknowledged")
    with open(record) as file:
        rows = json.load(file)
    messages = acks_all_messages(len(rows), {index: timestamp for index, _, _, timestamp in rows})
    for message, (index, partition, offset, _) in zip(messages, rows):
        assert message.index == index
        message.partition, message.offset = partition, offset
    expected = scenario.expected_by_partition(messages)
    counts = {partition: len(expected.get(partition, []))
              for partition in range(scenario.PARTITIONS)}
    received = read(bootstrap, topic, counts)
    scenario.compare(expected, received, range(scenario.PARTITIONS))
    STEPS.ok(f"per partition {counts}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("all")
    command.add_argument("bootstrap")
    command.add_argument("prefix")
    command.add_argument("--precreated", action="store_true",
                         help="the topics exist already: skip CreateTopics (for trying the "
                              "scenario on a broker without it, such as librdkafka's mock "
                              "cluster)")
    command = commands.add_parser("produce-acks-all")
    command.add_argument("bootstrap")
    command.add_argument("topic")
    command.add_argument("count", type=int)
    command.add_argument("record")
    command.add_argument("--precreated", action="store_true", help="the topic exists already")
    command = commands.add_parser("verify")
    command.add_argument("bootstrap")
    command.add_argument("topic")
    command.add_argument("record")
    arguments = parser.parse_args()
    try:
        if arguments.command == "all":
            run_all(arguments.bootstrap, arguments.prefix, arguments.precreated)
        elif arguments.command == "produce-acks-all":
            run_produce_acks_all(arguments.bootstrap, arguments.topic, arguments.count,
                                 arguments.record, arguments.precreated)
        else:
            run_verify(arguments.bootstrap, arguments.topic, arguments.record)
    except Failure as failure:
        STEPS.fail(str(failure))
    except KafkaException as error:
        STEPS.fail(f"KafkaException: {error}")
    print(f"[{CLIENT}] PASS", flush=True)


if __name__ == "__main__":
    main()
