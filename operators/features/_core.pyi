"""Type stub of the compiled window core (``core/src/lib.rs``)."""

from collections.abc import Callable, Sequence
from typing import Any

from streamwarden.operators.features.fanout import EventFacts
from streamwarden.operators.features.window import KindPlan, PartialFeatures

LAYOUT_VERSION: int
NO_TIME: int
N_FACTS: int
MAX_ATTR_TESTS: int
F_ACCOUNT_AGE_S: int

_Ops = tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]

class Plan:
    def __init__(
        self,
        owner: KindPlan,
        make_partial: Callable[[tuple[Any, ...]], PartialFeatures],
        kind: int,
        lateness_ms: int,
        exact_limit: int,
        hll_precision: int,
        fingerprint: int,
        windows: list[tuple[int, int]],
        n_cols: int,
        distinct_cols: list[int],
        programs: list[tuple[_Ops, list[tuple[int, int, int, _Ops]]]],
        ratios: list[tuple[int, int, float]],
        span_ms: int,
        attr_tests: list[tuple[str, str]] = ...,
    ) -> None: ...
    @property
    def n_out(self) -> int: ...

class KeyState:
    """All windows of one (entity kind, entity id). Not thread-safe; one owner at a time."""

    tick: int
    def __init__(self, plan: KindPlan) -> None: ...
    def on_event(self, facts: EventFacts) -> PartialFeatures: ...
    def values(self) -> tuple[float, ...]: ...
    def expiry_ms(self) -> int: ...
    @property
    def high_ms(self) -> int: ...
    @property
    def late_events(self) -> int: ...
    @property
    def plan(self) -> KindPlan: ...
    @property
    def distinct_modes(self) -> list[str]:
        """Per distinct aggregation: ``"exact"`` or ``"hll"``."""

def encode_state(state: KeyState) -> bytes: ...
def decode_state(plan: KindPlan, data: bytes) -> KeyState: ...
def item_hash(value: str) -> int: ...

class Batch:
    late_partials: int
    expired_keys: int
    max_keys: int
    def __init__(
        self,
        plans: Sequence[KindPlan],
        routes: list[list[tuple[int, int]]],
        defaults: list[float],
        ooo_ms: int,
        housekeeping_ms: int,
    ) -> None: ...
    def run(self, facts: list[EventFacts]) -> tuple[bytes, bytes]: ...
    def run_events(self, events: list[Any]) -> tuple[bytes, bytes]: ...
    def process(self, facts: EventFacts) -> tuple[tuple[float, ...], int]: ...
    @property
    def width(self) -> int: ...
    @property
    def live_keys(self) -> int: ...
    @property
    def max_seen_ms(self) -> int: ...
    def advance_to(self, watermark_ms: int) -> int: ...
    def encoded_sizes(self) -> list[tuple[int, int]]: ...
    def track_changes(self, on: bool) -> None:
        """Record keys an event was applied to (dirty) and keys ``advance_to`` dropped (removed)."""
    def take_changes(self) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """``(updated, removed)`` since the last call, both records cleared: ``(key, layout-v2 bytes)``
        of each dirty key still live, and each dropped key not live now (the lists are disjoint). A key
        is ``[kind byte] + entity id UTF-8``."""
    def load(self, key: bytes, data: bytes) -> None:
        """Insert or replace a key's state from its bytes (not marked dirty); ``ValueError`` if the
        key's kind has no plan or the bytes do not decode."""
    def restore_clock(self, max_seen_ms: int, next_housekeeping_ms: int | None = None) -> None:
        """Set the largest event time seen after a restore, and when housekeeping runs next (default:
        at the first event past ``max_seen_ms``)."""
    @property
    def next_housekeeping_ms(self) -> int: ...
