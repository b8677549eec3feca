#!/usr/bin/env python3
"""The admin APIs of a running Ringlog broker, driven by real Kafka clients.

confluent-kafka's AdminClient (librdkafka): create_partitions, describe_configs, alter_configs,
incremental_alter_configs, delete_records, list_offsets, describe_cluster, and a consumer seek
with a leader epoch (which librdkafka validates with OffsetForLeaderEpoch). kafka-python's
KafkaAdminClient: describe_configs, alter_configs (legacy and incremental), create_partitions,
delete_records, describe_log_dirs, and an OffsetForLeaderEpoch request on its connection.

Usage: admin_clients.py [BOOTSTRAP] (default 127.0.0.1:19192). Needs `kafka-python` and
`confluent-kafka`. Prints one line per check and exits 1 if any failed. Topics get a random
suffix so the script can run again against the same broker.
"""

import logging
import sys
import time
import traceback
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CfTopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource as CfConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic as CfNewTopic,
    OffsetSpec,
)
from kafka import KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import KafkaAdminClient, NewTopic as KpNewTopic
from kafka.protocol.consumer import OffsetForLeaderEpochRequest

BOOTSTRAP = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:19192"
NODE_ID = 1
# How long one admin call may take before the check fails.
TIMEOUT_S = 15

RESULTS = []


def check(name):
    """Runs the decorated function as one named check, recording pass or fail."""

    def run(function):
        try:
            detail = function()
            RESULTS.append((name, True, detail))
            print(f"PASS {name}" + (f": {detail}" if detail else ""), flush=True)
        except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
            RESULTS.append((name, False, repr(error)))
            print(f"FAIL {name}: {error!r}", flush=True)
            traceback.print_exc()
        return function

    return run


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def kafka_error_code(future):
    """The librdkafka error name a failed admin future carries, or None if it succeeded."""
    try:
        future.result(timeout=TIMEOUT_S)
        return None
    except KafkaException as error:
        return error.args[0].name()


suffix = uuid.uuid4().hex[:8]
CF_TOPIC = f"adm-cf-{suffix}"
KP_TOPIC = f"adm-kp-{suffix}"

cf_admin = AdminClient({"bootstrap.servers": BOOTSTRAP})


def cf_partition_count(topic):
    return len(cf_admin.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions)


def cf_describe(resource_type, name):
    resource = CfConfigResource(resource_type, name)
    return cf_admin.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)


# ---------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka)


@check("confluent create_topics with a config override")
def _():
    futures = cf_admin.create_topics(
        [CfNewTopic(CF_TOPIC, 1, 1, config={"retention.ms": "3600000"})]
    )
    futures[CF_TOPIC].result(timeout=TIMEOUT_S)
    return CF_TOPIC


@check("confluent create_partitions validate_only changes nothing")
def _():
    futures = cf_admin.create_partitions([NewPartitions(CF_TOPIC, 3)], validate_only=True)
    futures[CF_TOPIC].result(timeout=TIMEOUT_S)
    count = cf_partition_count(CF_TOPIC)
    expect(count == 1, f"{count} partitions")


@check("confluent create_partitions grows 1 -> 3")
def _():
    futures = cf_admin.create_partitions([NewPartitions(CF_TOPIC, 3)])
    futures[CF_TOPIC].result(timeout=TIMEOUT_S)
    count = cf_partition_count(CF_TOPIC)
    expect(count == 3, f"{count} partitions")


@check("confluent create_partitions with assignments on this broker grows 3 -> 5")
def _():
    futures = cf_admin.create_partitions(
        [NewPartitions(CF_TOPIC, 5, replica_assignment=[[NODE_ID], [NODE_ID]])]
    )
    futures[CF_TOPIC].result(timeout=TIMEOUT_S)
    count = cf_partition_count(CF_TOPIC)
    expect(count == 5, f"{count} partitions")


@check("confluent create_partitions refusals")
def _():
    shrink = cf_admin.create_partitions([NewPartitions(CF_TOPIC, 2)])[CF_TOPIC]
    missing = cf_admin.create_partitions([NewPartitions(f"missing-{suffix}", 4)])
    elsewhere = cf_admin.create_partitions(
        [NewPartitions(CF_TOPIC, 6, replica_assignment=[[NODE_ID + 1]])]
    )[CF_TOPIC]
    codes = (
        kafka_error_code(shrink),
        kafka_error_code(missing[f"missing-{suffix}"]),
        kafka_error_code(elsewhere),
    )
    expect(
        codes == ("INVALID_PARTITIONS", "UNKNOWN_TOPIC_OR_PART", "INVALID_REPLICA_ASSIGNMENT"),
        codes,
    )
    return codes


@check("confluent describe_configs topic: values, sources, synonyms")
def _():
    configs = cf_describe(CfConfigResource.Type.TOPIC, CF_TOPIC)
    retention = configs["retention.ms"]
    expect(retention.value == "3600000", retention)
    expect(retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, retention.source)
    expect(not retention.is_default and not retention.is_read_only, retention)
    segment = configs["segment.bytes"]
    expect(segment.source == ConfigSource.DEFAULT_CONFIG.value, segment.source)
    expect(segment.is_default, "segment.bytes is a default")
    return f"{len(configs)} configs, retention.ms synonyms " + str(
        [(s.name, s.value) for s in retention.synonyms.values()]
    )


@check("confluent describe_configs broker 1")
def _():
    configs = cf_describe(CfConfigResource.Type.BROKER, str(NODE_ID))
    node = configs["node.id"]
    expect(node.value == str(NODE_ID), node)
    expect(node.source == ConfigSource.STATIC_BROKER_CONFIG.value, node.source)
    expect(node.is_read_only, "static broker configs are read-only")
    return sorted(configs)[:6]


@check("confluent describe_configs unknown topic")
def _():
    resource = CfConfigResource(CfConfigResource.Type.TOPIC, f"missing-{suffix}")
    code = kafka_error_code(cf_admin.describe_configs([resource])[resource])
    expect(code == "UNKNOWN_TOPIC_OR_PART", code)
    return code


@check("confluent alter_configs (legacy) replaces the overrides")
def _():
    resource = CfConfigResource(
        CfConfigResource.Type.TOPIC, CF_TOPIC, set_config={"segment.ms": "86400000"}
    )
    cf_admin.alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    configs = cf_describe(CfConfigResource.Type.TOPIC, CF_TOPIC)
    expect(configs["segment.ms"].value == "86400000", configs["segment.ms"])
    retention = configs["retention.ms"]
    expect(retention.source == ConfigSource.DEFAULT_CONFIG.value, "retention.ms was reset")


@check("confluent alter_configs invalid value")
def _():
    resource = CfConfigResource(
        CfConfigResource.Type.TOPIC, CF_TOPIC, set_config={"retention.ms": "soon"}
    )
    code = kafka_error_code(cf_admin.alter_configs([resource])[resource])
    expect(code == "INVALID_CONFIG", code)
    return code


@check("confluent incremental_alter_configs SET, APPEND, DELETE")
def _():
    resource = CfConfigResource(
        CfConfigResource.Type.TOPIC,
        CF_TOPIC,
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
            ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    cf_admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    configs = cf_describe(CfConfigResource.Type.TOPIC, CF_TOPIC)
    values = {key: configs[key].value for key in ("retention.ms", "cleanup.policy", "segment.ms")}
    expect(values["retention.ms"] == "7200000", values)
    expect(values["cleanup.policy"] == "compact,delete", values)
    expect(configs["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value, values)
    return values


@check("confluent incremental_alter_configs SUBTRACT")
def _():
    resource = CfConfigResource(
        CfConfigResource.Type.TOPIC,
        CF_TOPIC,
        incremental_configs=[
            ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
        ],
    )
    cf_admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    value = cf_describe(CfConfigResource.Type.TOPIC, CF_TOPIC)["cleanup.policy"].value
    expect(value == "compact", value)
    return value


@check("confluent incremental_alter_configs refusals")
def _():
    append_long = CfConfigResource(
        CfConfigResource.Type.TOPIC,
        CF_TOPIC,
        incremental_configs=[
            ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND),
        ],
    )
    broker = CfConfigResource(
        CfConfigResource.Type.BROKER,
        str(NODE_ID),
        incremental_configs=[
            ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    codes = (
        kafka_error_code(cf_admin.incremental_alter_configs([append_long])[append_long]),
        kafka_error_code(cf_admin.incremental_alter_configs([broker])[broker]),
    )
    expect(codes == ("INVALID_CONFIG", "INVALID_REQUEST"), codes)
    return codes


@check("confluent produce 10 records to partition 0")
def _():
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 0})
    for index in range(10):
        producer.produce(CF_TOPIC, value=f"record {index}".encode(), partition=0)
    remaining = producer.flush(TIMEOUT_S)
    expect(remaining == 0, f"{remaining} undelivered")


@check("confluent delete_records to offset 4, then list_offsets")
def _():
    partition = CfTopicPartition(CF_TOPIC, 0, 4)
    deleted = cf_admin.delete_records([partition])[partition].result(timeout=TIMEOUT_S)
    expect(deleted.low_watermark == 4, deleted.low_watermark)
    key = CfTopicPartition(CF_TOPIC, 0)
    earliest = cf_admin.list_offsets({key: OffsetSpec.earliest()})[key].result(timeout=TIMEOUT_S)
    latest = cf_admin.list_offsets({key: OffsetSpec.latest()})[key].result(timeout=TIMEOUT_S)
    expect((earliest.offset, latest.offset) == (4, 10), (earliest.offset, latest.offset))
    return f"low watermark {deleted.low_watermark}, earliest {earliest.offset}, latest {latest.offset}"


@check("confluent delete_records past the high watermark")
def _():
    partition = CfTopicPartition(CF_TOPIC, 0, 50)
    code = kafka_error_code(cf_admin.delete_records([partition])[partition])
    expect(code == "OFFSET_OUT_OF_RANGE", code)
    return code


@check("confluent describe_cluster")
def _():
    cluster = cf_admin.describe_cluster().result(timeout=TIMEOUT_S)
    ids = [node.id for node in cluster.nodes]
    expect(ids == [NODE_ID] and cluster.controller.id == NODE_ID, (ids, cluster.controller))
    return f"cluster {cluster.cluster_id}, nodes {ids}"


@check("confluent consumer seek with leader epoch 0 (OffsetForLeaderEpoch validation)")
def _():
    lines = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("librdkafka-capture")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Capture())
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"adm-{suffix}",
            "enable.auto.commit": False,
            "debug": "protocol,fetch",
        },
        logger=logger,
    )
    try:
        consumer.assign([CfTopicPartition(CF_TOPIC, 0, 6, leader_epoch=0)])
        deadline = time.time() + TIMEOUT_S
        message = None
        while time.time() < deadline and message is None:
            polled = consumer.poll(0.5)
            if polled is not None and polled.error() is None:
                message = polled
            elif polled is not None and polled.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(polled.error())
    finally:
        consumer.close()
    expect(message is not None, "no record consumed")
    expect(message.offset() == 6, message.offset())
    epoch_lines = [line for line in lines if "OffsetForLeaderEpoch" in line]
    expect(epoch_lines, "librdkafka sent no OffsetForLeaderEpoch")
    return f"consumed offset {message.offset()}; " + epoch_lines[-1][:160]


# ---------------------------------------------------------------------------------------------
# kafka-python

kp_admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=TIMEOUT_S * 1000)


@check("kafka-python create_topics")
def _():
    kp_admin.create_topics([KpNewTopic(KP_TOPIC, 1, 1)])
    return KP_TOPIC


@check("kafka-python create_partitions 1 -> 2, then with assignments 2 -> 3")
def _():
    kp_admin.create_partitions({KP_TOPIC: 2})
    kp_admin.create_partitions({KP_TOPIC: {"count": 3, "assignments": [[NODE_ID]]}})
    topics = kp_admin.describe_topics([KP_TOPIC])
    count = len(topics[0]["partitions"])
    expect(count == 3, f"{count} partitions")


@check("kafka-python describe_configs topic (all, with synonyms)")
def _():
    described = kp_admin.describe_configs(
        [KpConfigResource("TOPIC", KP_TOPIC)], include_synonyms=True, config_filter="all"
    )
    configs = described["topic"][KP_TOPIC]
    retention = configs["retention.ms"]
    expect(retention["config_source"] == "DEFAULT_CONFIG", retention)
    expect(retention.get("config_type") in (None, "LONG"), retention)
    modified = kp_admin.describe_configs([KpConfigResource("TOPIC", KP_TOPIC)])
    expect(modified["topic"][KP_TOPIC] == {}, modified)
    return f"{len(configs)} configs; retention.ms {retention}"


@check("kafka-python describe_configs broker")
def _():
    described = kp_admin.describe_configs(
        [KpConfigResource("BROKER", str(NODE_ID))], config_filter="all"
    )
    configs = described["broker"][str(NODE_ID)]
    expect(configs["node.id"]["value"] == str(NODE_ID), configs["node.id"])
    return sorted(configs)[:6]


@check("kafka-python alter_configs legacy (incremental=False)")
def _():
    result = kp_admin.alter_configs(
        [KpConfigResource("TOPIC", KP_TOPIC, {"retention.ms": "1000"})], incremental=False
    )
    expect(result == {"topic": {KP_TOPIC: "OK"}}, result)
    modified = kp_admin.describe_configs([KpConfigResource("TOPIC", KP_TOPIC)])
    value = modified["topic"][KP_TOPIC]["retention.ms"]["value"]
    expect(value == "1000", modified)
    return result


@check("kafka-python alter_configs incremental APPEND")
def _():
    result = kp_admin.alter_configs(
        [KpConfigResource("TOPIC", KP_TOPIC, {"cleanup.policy": ("APPEND", "compact")})],
        incremental=True,
    )
    expect(result == {"topic": {KP_TOPIC: "OK"}}, result)
    modified = kp_admin.describe_configs([KpConfigResource("TOPIC", KP_TOPIC)])["topic"][KP_TOPIC]
    expect(modified["cleanup.policy"]["value"] == "compact,delete", modified)
    expect(modified["retention.ms"]["value"] == "1000", "incremental keeps other overrides")
    return sorted(modified)


@check("kafka-python alter_configs invalid value")
def _():
    result = kp_admin.alter_configs(
        [KpConfigResource("TOPIC", KP_TOPIC, {"segment.bytes": "12"})], incremental=True
    )
    outcome = result["topic"][KP_TOPIC]
    expect("InvalidConfig" in outcome, outcome)
    return outcome


@check("kafka-python produce and delete_records")
def _():
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP)
    for index in range(5):
        producer.send(KP_TOPIC, value=f"record {index}".encode(), partition=0)
    producer.flush(TIMEOUT_S)
    producer.close()
    result = kp_admin.delete_records({KpTopicPartition(KP_TOPIC, 0): 3})
    partition = result[KpTopicPartition(KP_TOPIC, 0)]
    expect(partition["low_watermark"] == 3, partition)
    return partition


@check("kafka-python describe_log_dirs")
def _():
    brokers = kp_admin.describe_log_dirs()
    expect(len(brokers) == 1 and brokers[0]["broker"] == NODE_ID, brokers)
    dirs = brokers[0]["log_dirs"]
    expect(len(dirs) == 1 and dirs[0]["error_code"] == 0, dirs)
    sizes = {
        (topic["name"], partition["partition_index"]): partition["partition_size"]
        for topic in dirs[0]["topics"]
        for partition in topic["partitions"]
    }
    expect(sizes.get((KP_TOPIC, 0), 0) > 0, sizes)
    expect((CF_TOPIC, 4) in sizes, "every partition of every topic is listed")
    return f"{dirs[0]['log_dir']}: {len(sizes)} partitions, total_bytes {dirs[0].get('total_bytes')}"


@check("kafka-python OffsetForLeaderEpoch request")
def _():
    partition = OffsetForLeaderEpochRequest.OffsetForLeaderTopic.OffsetForLeaderPartition
    request = OffsetForLeaderEpochRequest(
        replica_id=-1,
        topics=[
            (
                KP_TOPIC,
                [
                    partition(partition=0, current_leader_epoch=0, leader_epoch=0),
                    partition(partition=1, current_leader_epoch=-1, leader_epoch=3),
                    partition(partition=2, current_leader_epoch=5, leader_epoch=0),
                ],
            ),
            (f"missing-{suffix}", [partition(partition=0, current_leader_epoch=-1, leader_epoch=0)]),
        ],
    )

    async def send():
        return await kp_admin._manager.send(request, node_id=NODE_ID)

    response = kp_admin._manager.run(send)
    answers = [
        (topic.topic, p.partition, p.error_code, p.leader_epoch, p.end_offset)
        for topic in response.topics
        for p in topic.partitions
    ]
    expected = [
        (KP_TOPIC, 0, 0, 0, 5),
        (KP_TOPIC, 1, 0, -1, -1),
        # UNKNOWN_LEADER_EPOCH: the client has seen a newer epoch than the leader's.
        (KP_TOPIC, 2, 75, -1, -1),
        (f"missing-{suffix}", 0, 3, -1, -1),
    ]
    expect(answers == expected, answers)
    return answers


kp_admin.close()

failed = [name for name, passed, _ in RESULTS if not passed]
print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed")
for name in failed:
    print(f"  failed: {name}")
sys.exit(1 if failed else 0)
