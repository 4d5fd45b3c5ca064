"""Process-level tuning of Beam 2.61's in-process SDK harness for keyed state (DirectRunner).

The SDK harness caches user state between bundles (a 100 MB LRU in the DirectRunner's embedded
worker) and weighs every value it caches with ``objsize.get_deep_size``. objsize 0.6/0.7 rebuilds its
exclusion set from the globals of every loaded module on each call: with Beam, onnxruntime and numpy
loaded that is ~1,500 modules, about 1.5 ms per state write, clear or cache miss. A keyed pipeline
touches state several times per event, so this alone capped the job at ~100 events/s (profiled: 43 s
of a 52 s run in ``_iter_modules_globals``).

``tune_state_cache()`` replaces the weigher with a shallow estimate (``sys.getsizeof`` of the cached
list and of its items, plus a flat allowance for objects that hold more): the cache still evicts by
an approximate size, and nothing else changes. It is idempotent and only affects this process.
"""

from __future__ import annotations

import sys
from typing import Any

from apache_beam.runners.worker import statecache

OBJECT_ALLOWANCE_BYTES = 2_048
"""Weight added per cached item that is not bytes/str (e.g. a live window state with its buckets)."""

_original_get_deep_size = statecache.get_deep_size


def estimate_size(*objs: Any) -> int:
    """A cheap stand-in for ``statecache.get_deep_size``: shallow sizes, one level into lists."""
    total = 0
    for obj in objs:
        total += sys.getsizeof(obj)
        if isinstance(obj, list | tuple):
            for item in obj:
                total += sys.getsizeof(item)
                if not isinstance(item, bytes | str | int | float):
                    total += OBJECT_ALLOWANCE_BYTES
    return max(total, 8)


def tune_state_cache() -> None:
    """Install ``estimate_size`` as the SDK state cache's weigher (idempotent)."""
    statecache.get_deep_size = estimate_size


def restore_state_cache() -> None:
    """Put Beam's own weigher back (tests)."""
    statecache.get_deep_size = _original_get_deep_size
