#!/usr/bin/env python3
"""The end-to-end scenario through kafka-python (pure Python), run by tools/tests/kafka_clients.rs.

  all BOOTSTRAP PREFIX    topics PREFIX-*: CreateTopics (KafkaAdminClient), keyed messages with
                          headers and timestamps, null keys and values, a 1 MiB message,
                          gzip/snappy/lz4/zstd batches and the idempotent producer; each read back
                          and compared

Partitions are assigned explicitly (KafkaConsumer(group_id=None), assign, seek_to_beginning): no
group is joined and nothing is committed. Exits 1 with "FAIL [kafka-python] step '...': ..." on
any mismatch.
"""

import argparse
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

import scenario
from scenario import Failure, Received

CLIENT = "kafka-python"
STEPS = scenario.Steps(CLIENT)
# kafka-python's ConsumerRecord.timestamp_type for CreateTime.
CREATE_TIME = 0


def create_topics(bootstrap, topics):
    """Creates `topics` ([(name, partitions, configs)]) and waits until each has a leader on every
    partition (wait_for_metadata)."""
    if not topics:
        return
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1, "configs": configs}
             for name, partitions, configs in topics},
            timeout_ms=30000, wait_for_metadata=True)
    except KafkaError as error:
        raise Failure(f"CreateTopics: {error!r}")
    finally:
        admin.close()


def produce(bootstrap, topic, messages, **config):
    """Produces `messages` in order and records each one's acknowledged partition and offset."""
    settings = dict(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False, linger_ms=5,
                    delivery_timeout_ms=60000, request_timeout_ms=30000)
    settings.update(config)
    producer = KafkaProducer(**settings)
    try:
        futures = [
            (message, producer.send(topic, key=message.key, value=message.value,
                                    headers=message.headers, timestamp_ms=message.timestamp_ms))
            for message in messages
        ]
        producer.flush(timeout=scenario.FLUSH_TIMEOUT_S)
        errors = []
        for message, future in futures:
            try:
                metadata = future.get(timeout=1)
            except KafkaError as error:
                errors.append(f"message {message.index}: {error!r}")
                continue
            message.partition, message.offset = metadata.partition, metadata.offset
        if errors:
            raise Failure(f"{len(errors)} delivery errors, first: {errors[:5]}")
    finally:
        producer.close(timeout=10)
    return scenario.expected_by_partition(messages)


def read(bootstrap, topic, counts, **config):
    """Reads partitions `counts` ({partition: count}) of `topic` from the beginning until each has
    `count` messages, then checks each partition's end offset is exactly `count`."""
    settings = dict(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                    auto_offset_reset="earliest", fetch_max_wait_ms=100,
                    request_timeout_ms=30000)
    settings.update(config)
    consumer = KafkaConsumer(**settings)
    try:
        partitions = [TopicPartition(topic, partition) for partition in counts]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        received = {partition: [] for partition in counts}
        deadline = time.monotonic() + scenario.READ_TIMEOUT_S
        while any(len(received[partition]) < count for partition, count in counts.items()):
            if time.monotonic() > deadline:
                progress = {partition: len(records) for partition, records in received.items()}
                raise Failure(f"{topic}: read {progress} in {scenario.READ_TIMEOUT_S} s, "
                              f"expected {counts}")
            for topic_partition, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    received.setdefault(topic_partition.partition, []).append(Received(
                        partition=topic_partition.partition,
                        offset=record.offset,
                        key=record.key,
                        value=record.value,
                        headers=[tuple(header) for header in (record.headers or [])],
                        timestamp_ms=record.timestamp,
                        create_time=record.timestamp_type == CREATE_TIME,
                    ))
        beginnings = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        for topic_partition in partitions:
            low, high = beginnings[topic_partition], ends[topic_partition]
            count = counts[topic_partition.partition]
            if (low, high) != (0, count):
                raise Failure(f"{topic} partition {topic_partition.partition}: offsets "
                              f"({low}, {high}), expected (0, {count})")
    finally:
        consumer.close()
    return received


def produce_and_check(bootstrap, topic, partitions, messages, producer_config=None,
                      consumer_config=None):
    expected = produce(bootstrap, topic, messages, **(producer_config or {}))
    counts = {partition: len(expected.get(partition, [])) for partition in range(partitions)}
    received = read(bootstrap, topic, counts, **(consumer_config or {}))
    scenario.compare(expected, received, range(partitions))
    return counts


def run_all(bootstrap, prefix, precreated=False):
    keyed = f"{prefix}-keyed"
    big = f"{prefix}-big"
    idempotent = f"{prefix}-idempotent"
    codec_topics = {codec: f"{prefix}-{codec}" for codec in scenario.CODECS}

    STEPS.begin("CreateTopics")
    create_topics(bootstrap, [] if precreated else [
        (keyed, scenario.PARTITIONS, {}),
        (big, 1, {"max.message.bytes": str(scenario.BIG_TOPIC_MAX_MESSAGE_BYTES)}),
        (idempotent, scenario.PARTITIONS, {}),
        *[(topic, 1, {}) for topic in codec_topics.values()],
    ])
    STEPS.ok()

    STEPS.begin("keyed messages with headers, timestamps, null keys and values")
    counts = produce_and_check(bootstrap, keyed, scenario.PARTITIONS,
                               scenario.keyed_messages(CLIENT))
    STEPS.ok(f"per partition {counts}")

    STEPS.begin("1 MiB message")
    produce_and_check(bootstrap, big, 1, scenario.big_messages(),
                      producer_config={"max_request_size": scenario.BIG_TOPIC_MAX_MESSAGE_BYTES},
                      consumer_config={"max_partition_fetch_bytes": 4 << 20})
    STEPS.ok()

    for codec, topic in codec_topics.items():
        STEPS.begin(f"{codec} batches")
        produce_and_check(bootstrap, topic, 1, scenario.codec_messages(codec),
                          producer_config={"compression_type": codec, "linger_ms": 50})
        STEPS.ok()

    STEPS.begin("idempotent producer")
    messages = scenario.sequence_messages("idempotent", scenario.IDEMPOTENT_COUNT)
    counts = produce_and_check(bootstrap, idempotent, scenario.PARTITIONS, messages,
                               producer_config={"enable_idempotence": True, "acks": "all",
                                                "max_in_flight_requests_per_connection": 5,
                                                "batch_size": 2048})
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
    arguments = parser.parse_args()
    try:
        run_all(arguments.bootstrap, arguments.prefix, arguments.precreated)
    except Failure as failure:
        STEPS.fail(str(failure))
    except KafkaError as error:
        STEPS.fail(f"{error!r}")
    print(f"[{CLIENT}] PASS", flush=True)


if __name__ == "__main__":
    main()
