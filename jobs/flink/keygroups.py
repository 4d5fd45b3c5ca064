"""Which subtask of a keyed stage owns a key, computed in Python exactly as Flink does.

The job keys its streams with ``Row(key)`` built by the Java selector (``job.key_by_field0``). Flink
assigns such a key to key group ``murmur(Row.hashCode()) % max_parallelism`` and the key group to
subtask ``group * parallelism // max_parallelism`` (``KeyGroupRangeAssignment``). ``Row.hashCode`` of a
one-field INSERT row holding a ``String`` is ``String.hashCode() + 62`` (32-bit), and
``String.hashCode`` runs over UTF-16 code units. A test checks this against the JVM for thousands of
random keys and several parallelisms.

The decode stage uses it to tell the velocity stage how many of an event's routes a subtask receives,
so that subtask can pass the event's partials on together (``jobs/flink/velocity.py``).
"""

from __future__ import annotations

__all__ = ["java_string_hash", "murmur_hash", "row_key_hash", "subtask_of"]

_MASK = 0xFFFFFFFF


def _i32(x: int) -> int:
    x &= _MASK
    return x - (1 << 32) if x & 0x80000000 else x


def java_string_hash(s: str) -> int:
    """``java.lang.String.hashCode()``: ``h = 31 * h + c`` over UTF-16 code units, 32-bit signed."""
    h = 0
    if s.isascii():
        for c in s.encode("ascii"):
            h = (31 * h + c) & _MASK
    else:
        b = s.encode("utf-16-le")
        for i in range(0, len(b), 2):
            h = (31 * h + (b[i] | (b[i + 1] << 8))) & _MASK
    return _i32(h)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def murmur_hash(code: int) -> int:
    """Flink's ``MathUtils.murmurHash(int)``: non-negative."""
    c = (code * 0xCC9E2D51) & _MASK
    c = _rotl(c, 15)
    c = (c * 0x1B873593) & _MASK
    c = _rotl(c, 13)
    c = (c * 5 + 0xE6546B64) & _MASK
    c ^= 4
    c ^= c >> 16
    c = (c * 0x85EBCA6B) & _MASK
    c ^= c >> 13
    c = (c * 0xC2B2AE35) & _MASK
    c ^= c >> 16
    signed = _i32(c)
    if signed >= 0:
        return signed
    return -signed if signed != -(1 << 31) else 0


def row_key_hash(key: str) -> int:
    """``Row.of(key).hashCode()`` for a ``String`` key."""
    return _i32(java_string_hash(key) + 62)


def subtask_of(key: str, parallelism: int, max_parallelism: int) -> int:
    """The subtask index (``0 .. parallelism - 1``) of a stage keyed by ``Row(key)``."""
    if parallelism == 1:
        return 0
    group = murmur_hash(row_key_hash(key)) % max_parallelism
    return group * parallelism // max_parallelism
