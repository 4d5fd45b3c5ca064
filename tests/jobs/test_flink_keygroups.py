"""``jobs.flink.keygroups`` assigns keys to subtasks exactly as Flink's ``KeyGroupRangeAssignment`` does
for the job's ``Row(key)`` keys (checked against the JVM through the PyFlink gateway)."""

from __future__ import annotations

import random

import pytest

from streamwarden.jobs.flink.keygroups import java_string_hash, subtask_of

pytestmark = [pytest.mark.engine]

_ALPHABET = "abcxyzABC0123456789|_-:.é✓\U0001f600"


def _keys(n: int) -> list[str]:
    rng = random.Random(7)
    keys = ["", "a", "1|acct_000001", "3|10.0.0.1", "0|evt-1"]
    keys += ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(n)]
    return keys


def test_java_string_hash_matches_known_values() -> None:
    assert java_string_hash("") == 0
    assert java_string_hash("a") == 97
    assert java_string_hash("abc") == 96354
    assert java_string_hash("polygenelubricants") == -(2**31)  # the classic Integer.MIN_VALUE string


def test_subtask_of_matches_flink_key_group_assignment() -> None:
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    mismatches = []
    for key in _keys(1_500):
        row = jvm.org.apache.flink.types.Row(1)
        row.setField(0, key)
        for parallelism, max_parallelism in ((1, 128), (2, 128), (3, 128), (5, 256), (7, 32_768)):
            want = int(assign(row, max_parallelism, parallelism))
            if subtask_of(key, parallelism, max_parallelism) != want:
                mismatches.append((key, parallelism, max_parallelism, want))
    assert not mismatches, mismatches[:5]
