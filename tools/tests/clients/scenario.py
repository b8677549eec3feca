"""What the client scripts produce and how they check what they read back.

Shared by confluent_scenario.py and kafka_python_scenario.py so both clients are held to the same
expectations: every message read back exactly once, in offset order per partition, with its key,
value, headers and timestamp unchanged.
"""

import dataclasses
import random
import sys
import time

# Messages in the keyed scenario, plus the special ones appended after them.
KEYED_COUNT = 300
# Distinct keys among the keyed messages: several messages share each key, so the check that one
# key always lands on one partition means something.
KEY_SPACE = 37
NULL_KEY_COUNT = 10
# Partitions of the topics created with CreateTopics.
PARTITIONS = 3
# The large message: 1 MiB of value.
BIG_VALUE_BYTES = 1 << 20
# max.message.bytes of the large-message topic (Kafka's default, 1 MiB + 12, is one record batch
# header too small for a 1 MiB value) and the producers' request limit.
BIG_TOPIC_MAX_MESSAGE_BYTES = 8 << 20
# Messages per compression codec; with linger they go in a few multi-record batches.
CODEC_COUNT = 200
CODECS = ("gzip", "snappy", "lz4", "zstd")
# Messages through the idempotent producer.
IDEMPOTENT_COUNT = 1000
# Messages through the acks=0 producer.
ACKS0_COUNT = 50
# How long a consumer keeps polling for the messages it expects.
READ_TIMEOUT_S = 60.0
# How long a producer flush may take.
FLUSH_TIMEOUT_S = 90.0
# Timestamps are set explicitly, ten minutes in the past: inside any broker's accepted window and
# far from the broker's own clock, so a broker that overwrote them would be caught.
TIMESTAMP_AGE_MS = 10 * 60 * 1000


class Failure(Exception):
    """A mismatch between what was produced and what came back."""


@dataclasses.dataclass
class Message:
    """One produced message and the place the broker acknowledged for it."""
    index: int
    key: bytes | None
    value: bytes | None
    headers: list
    timestamp_ms: int
    partition: int = -1
    offset: int = -1


@dataclasses.dataclass
class Received:
    """One consumed message, in client-neutral form."""
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    timestamp_ms: int
    create_time: bool


class Steps:
    """Names the step in progress, so a failure says which one failed."""

    def __init__(self, client):
        self.client = client
        self.current = "start"
        self.started = time.monotonic()

    def begin(self, name):
        self.current = name
        print(f"[{self.client}] {name} ...", flush=True)

    def ok(self, detail=""):
        elapsed = time.monotonic() - self.started
        print(f"[{self.client}] {self.current}: ok {detail} ({elapsed:.1f} s)", flush=True)

    def fail(self, message):
        print(f"FAIL [{self.client}] step '{self.current}': {message}", file=sys.stderr, flush=True)
        sys.exit(1)


def base_timestamp_ms():
    return int(time.time() * 1000) - TIMESTAMP_AGE_MS


def keyed_messages(client):
    """The keyed scenario: keys shared by several messages, two headers of the same name, an empty
    header value, then null keys, an empty key, an empty value and a null value."""
    base = base_timestamp_ms()
    messages = []
    for index in range(KEYED_COUNT):
        messages.append(Message(
            index=index,
            key=f"key-{index % KEY_SPACE}".encode(),
            value=f"{client} value {index} ".encode() + b"." * (index % 64),
            headers=[
                ("index", str(index).encode()),
                ("client", client.encode()),
                ("repeated", b"first"),
                ("repeated", b"second"),
                ("empty", b""),
            ],
            timestamp_ms=base + index,
        ))
    index = KEYED_COUNT
    for null_key in range(NULL_KEY_COUNT):
        messages.append(Message(index, None, f"null key {null_key}".encode(),
                                [("index", str(index).encode())], base + index))
        index += 1
    specials = [
        (b"", b"empty key"),
        (b"empty-value", b""),
        (b"null-value", None),
        (None, b""),
    ]
    for key, value in specials:
        messages.append(Message(index, key, value, [("index", str(index).encode())], base + index))
        index += 1
    return messages


def big_messages():
    """A small message, a 1 MiB one of incompressible bytes, and a small one after it."""
    base = base_timestamp_ms()
    big = random.Random(20240601).randbytes(BIG_VALUE_BYTES)
    return [
        Message(0, b"before", b"small before", [], base),
        Message(1, b"big", big, [("size", str(BIG_VALUE_BYTES).encode())], base + 1),
        Message(2, b"after", b"small after", [], base + 2),
    ]


def codec_messages(codec):
    """Compressible messages, so every codec really has something to do."""
    base = base_timestamp_ms()
    return [
        Message(index, f"k{index}".encode(),
                (f"{codec} message {index} " * 20).encode(),
                [("codec", codec.encode())], base + index)
        for index in range(CODEC_COUNT)
    ]


def sequence_messages(stem, count, keyed=True):
    """`count` small messages whose value carries their index."""
    base = base_timestamp_ms()
    return [
        Message(index, f"k{index % 11}".encode() if keyed else None,
                f"{stem} {index}".encode(), [], base + index)
        for index in range(count)
    ]


def index_of(value):
    """The index a sequence message's value ends with."""
    return int(value.rsplit(b" ", 1)[1])


def describe(value, limit=80):
    if value is None:
        return "None"
    if len(value) <= limit:
        return repr(value)
    return f"<{len(value)} bytes starting {value[:24]!r}>"


def expected_by_partition(messages):
    """Groups acknowledged messages by partition, checks the acknowledged offsets are 0, 1, 2, ...
    on each (the topics are fresh and nothing else writes to them), that one key always went to
    one partition, and that each partition kept the order the messages were produced in."""
    by_partition = {}
    key_partition = {}
    for message in messages:
        if message.partition < 0 or message.offset < 0:
            raise Failure(f"message {message.index} has no acknowledged position "
                          f"(partition {message.partition}, offset {message.offset})")
        by_partition.setdefault(message.partition, []).append(message)
        if message.key is not None:
            first = key_partition.setdefault(message.key, message.partition)
            if first != message.partition:
                raise Failure(f"key {message.key!r} went to partitions {first} and "
                              f"{message.partition}")
    for partition, group in by_partition.items():
        group.sort(key=lambda message: message.offset)
        offsets = [message.offset for message in group]
        if offsets != list(range(len(group))):
            raise Failure(f"partition {partition}: acknowledged offsets are {offsets[:20]}..., "
                          f"expected 0..{len(group) - 1}")
        indexes = [message.index for message in group]
        if indexes != sorted(indexes):
            raise Failure(f"partition {partition}: produce order was not kept: indexes by offset "
                          f"{indexes[:40]}...")
    return by_partition


def compare(expected, received, partitions, check_timestamps=True):
    """Checks `received` (partition -> [Received]) against `expected` (partition -> [Message]),
    field by field, over every partition in `partitions`."""
    for partition in partitions:
        want = expected.get(partition, [])
        got = received.get(partition, [])
        if len(got) != len(want):
            raise Failure(f"partition {partition}: read {len(got)} messages, expected {len(want)}; "
                          f"offsets read: {[message.offset for message in got][:40]}")
        for position, (message, record) in enumerate(zip(want, got)):
            where = f"partition {partition} offset {record.offset} (message {message.index})"
            if record.offset != position:
                raise Failure(f"partition {partition}: message {position} has offset "
                              f"{record.offset}")
            if record.key != message.key:
                raise Failure(f"{where}: key {describe(record.key)}, expected "
                              f"{describe(message.key)}")
            if record.value != message.value:
                raise Failure(f"{where}: value {describe(record.value)}, expected "
                              f"{describe(message.value)}")
            if list(record.headers) != list(message.headers):
                raise Failure(f"{where}: headers {record.headers}, expected {message.headers}")
            if check_timestamps:
                if not record.create_time:
                    raise Failure(f"{where}: timestamp type is not CreateTime")
                if record.timestamp_ms != message.timestamp_ms:
                    raise Failure(f"{where}: timestamp {record.timestamp_ms}, expected "
                                  f"{message.timestamp_ms}")


def check_sequence(received, count, stem):
    """For messages whose position is not acknowledged (acks=0, or read after a crash): every
    index 0..count-1 exactly once, in increasing order on each partition, offsets 0, 1, 2, ..."""
    seen = []
    for partition, records in sorted(received.items()):
        offsets = [record.offset for record in records]
        if offsets != list(range(len(records))):
            raise Failure(f"partition {partition}: offsets {offsets[:40]}..., expected 0, 1, 2, ...")
        indexes = []
        for record in records:
            if record.value is None or not record.value.startswith(stem.encode()):
                raise Failure(f"partition {partition} offset {record.offset}: unexpected value "
                              f"{describe(record.value)}")
            indexes.append(index_of(record.value))
        if indexes != sorted(indexes):
            raise Failure(f"partition {partition}: indexes out of order: {indexes[:40]}...")
        seen.extend(indexes)
    if sorted(seen) != list(range(count)):
        missing = sorted(set(range(count)) - set(seen))
        duplicated = sorted({index for index in seen if seen.count(index) > 1})
        raise Failure(f"read {len(seen)} messages for {count} produced: missing {missing[:20]} "
                      f"(of {len(missing)}), duplicated {duplicated[:20]} (of {len(duplicated)})")
