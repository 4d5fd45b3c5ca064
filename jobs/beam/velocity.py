"""Velocity stage, keyed by entity: the key's sliding-window state in a ``ReadModifyWriteState``.

The state's coder is the engine-free versioned byte layout (``operators/features/state_codec.py``,
never pickle). The SDK harness caches state values between bundles, so the live ``KeyState`` is
decoded only on a cache miss and encoded once per key per bundle when the state is committed, instead
of a decode and an encode per event (about 200 µs per key-event here, the stage's dominant cost
otherwise). The state object is updated in place: on the DirectRunner a failed bundle fails the
pipeline, and a restart starts from empty state (the DirectRunner keeps state in memory only).

Expiry: the DirectRunner's event-time timers fire at the end of every bundle, not at the watermark,
so the stage expires from the watermark it observes (max event time of its input minus the
out-of-orderness): a state past ``expiry_ms()`` is dropped when its key is next seen. Events here
passed the lateness gate, so this changes no output. Keys never seen again keep their state until the
job stops.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.windowed_value import WindowedValue

from streamwarden.jobs.beam.assemble import AssemblyInput, BundleJoin
from streamwarden.jobs.beam.coders import StateBytesCoder
from streamwarden.jobs.beam.decode import METRICS_NAMESPACE, WithEventPartial
from streamwarden.operators.features.assemble import event_partial
from streamwarden.operators.features.fanout import EventFacts
from streamwarden.operators.features.state_codec import StateFormatError, decode_state, encode_state
from streamwarden.operators.features.window import KeyState, KindPlan, PartialFeatures
from streamwarden.operators.pipeline import EVENT_KIND, KEY_SEP, EventClock, Stages, StagesConfig

# Key states name their kind and spec fingerprint in their header (state_codec: ``<3sBBBI...``):
# magic, layout version, kind, window count, fingerprint. The coder resolves the plan from them.
_HEADER = struct.Struct("<3sBBBI")
_PLANS: dict[tuple[int, int], KindPlan] = {}
_EVENT_ROUTE = f"{EVENT_KIND}{KEY_SEP}"


def register_plans(stages: Stages) -> None:
    """Make ``KeyStateCoder`` able to decode states of ``stages``' feature spec in this process."""
    for kind, plan in stages.plans.items():
        _PLANS[(kind, plan.fingerprint)] = plan


class KeyStateCoder(StateBytesCoder):
    """``KeyState`` ↔ its versioned bytes; the plan is looked up from the bytes' header."""

    def encode(self, value: KeyState) -> bytes:
        return encode_state(value)

    def decode(self, encoded: bytes) -> KeyState:
        _, _, kind, _, fingerprint = _HEADER.unpack_from(encoded, 0)
        plan = _PLANS.get((kind, fingerprint))
        if plan is None:
            raise StateFormatError(f"no feature spec with fingerprint {fingerprint} for kind {kind} loaded")
        return decode_state(plan, encoded)


WINDOW = ReadModifyWriteStateSpec("window", KeyStateCoder())
_WINDOW = beam.DoFn.StateParam(WINDOW)


class VelocityFn(beam.DoFn):
    """``(entity key, facts | WithEventPartial)`` → partials via ``Stages.velocity_object`` on the key's
    state (plus the event-level partial for a ``WithEventPartial``); the event-level route
    (``"0|<event id>"``) keeps no state.

    With ``join_in_bundle`` (the job's setting) the partials go through a ``BundleJoin``, as the Flink
    velocity stage groups them: out come ``(event id, FeatureVector)`` for events complete within the
    bundle and, at its end, ``(event id, (partial, ...))`` for the rest, both for ``AssembleFn``.
    Without it, ``(event id, PartialFeatures)`` per partial."""

    def __init__(self, config: StagesConfig, *, join_in_bundle: bool = False) -> None:
        self._config = config
        self._join_in_bundle = join_in_bundle
        self._late = Metrics.counter(METRICS_NAMESPACE, "late_partials")
        self._expired = Metrics.counter(METRICS_NAMESPACE, "expired_keys")

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)
        register_plans(self._stages)
        self._clock: EventClock = self._stages.event_clock()
        self._join = BundleJoin(self._stages) if self._join_in_bundle else None

    def start_bundle(self) -> None:
        if self._join is not None:
            self._join.clear()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._join is not None:
            yield from self._join.leftovers()

    def process(
        self,
        element: tuple[str, EventFacts | WithEventPartial],
        window: Any = _WINDOW,
        ts: Any = beam.DoFn.TimestampParam,
        win: Any = beam.DoFn.WindowParam,
    ) -> Iterator[tuple[str, AssemblyInput]]:
        key, value = element
        for partial in self._partials(key, value, window):
            if self._join is None:
                yield partial[0], partial
            else:
                joined = self._join.add(partial, ts, win)
                if joined is not None:
                    yield joined

    def _partials(self, key: str, value: EventFacts | WithEventPartial, window: Any) -> list[PartialFeatures]:
        out: list[PartialFeatures] = []
        facts: EventFacts
        if type(value) is WithEventPartial:
            facts = value.facts
            out.append(event_partial(facts))
        else:
            facts = value  # type: ignore[assignment]  # type() is, not isinstance: mypy cannot narrow it
        if key.startswith(_EVENT_ROUTE):
            partial, _, _ = self._stages.velocity_object(None, key, facts)
            out.append(partial)
            return out
        watermark_ms = self._clock.observe(facts[1])
        partial, state, expired = self._stages.velocity_object(window.read(), key, facts, watermark_ms)
        window.write(state)
        if expired:
            self._expired.inc()
        if partial[3]:
            self._late.inc()
        out.append(partial)
        return out
