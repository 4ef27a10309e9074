"""Which partition a key belongs to: Kafka's default partitioner, as the Java client computes it.

``murmur2`` is ``org.apache.kafka.common.utils.Utils.murmur2`` (librdkafka's ``murmur2_random``), and
``partition_of`` is the Java client's ``toPositive(murmur2(key)) % numPartitions``. The engine's own producers
use it (streams.kafka.client), so a record is where its entity lives exactly when ``partition_of`` says so.

Compiled with mypyc (streams/_native.py): the worker runs it for every input record. The locals are ``i64``
so the arithmetic stays in machine words; a 32-bit value times the 31-bit constant never exceeds 2**63, so
masking after each product is enough. Interpreted, ``i64`` is only an annotation and the same code runs on
Python ints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from zlib import crc32

if TYPE_CHECKING:
    from mypy_extensions import i64

_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF
_SEED: Final = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of ``data``, as the Java client returns it (a signed int)."""
    n: i64 = len(data)
    h: i64 = (_SEED ^ n) & _MASK
    end: i64 = n - (n & 3)
    i: i64 = 0
    while i < end:
        k: i64 = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
        i += 4
    rest: i64 = n & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner (and librdkafka's murmur2_random) picks for a
    non-empty ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition_of(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (``consistent_random``) picks for a non-empty key: only
    to tell an operator which partitioner a misrouted record's producer used."""
    return crc32(key) % partitions
