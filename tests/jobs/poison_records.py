"""Records from the extremes, shared by the engines' poison tests (Beam and Flink on the real broker)."""

from __future__ import annotations

from hypothesis import strategies as st

from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SCHEMA_VERSION

T0 = 1_735_689_600_000
_EXTREME_INTS = st.sampled_from([0, -1, 1, 2**31 - 1, 2**32, 2**53, 2**62, 2**63 - 1, -(2**63)])
_LONG = st.sampled_from([0, 1, 1_100, 9_000, 70_000])


@st.composite
def poison(draw: st.DrawFn) -> bytes | None:
    """One record from the extremes: null and empty values, random bytes, oversized, truncated and nested
    payloads, events with huge and negative integers and long or odd strings."""
    shape = draw(st.sampled_from(["event", "truncated", "nested", "random", "oversized", "empty", "null"]))
    if shape == "null":
        return None
    if shape == "empty":
        return b""
    if shape == "random":
        return draw(st.binary(min_size=1, max_size=512))
    if shape == "oversized":  # over the 256 KiB record limit, under the broker's 1 MB message limit
        return b"\x0a" + b"x" * draw(st.sampled_from([300_000, 900_000]))
    event = pb.Event(
        event_id=draw(st.sampled_from(["", "p", "\u202e\u0000id"])) + "x" * draw(_LONG),
        event_time_ms=draw(st.one_of(_EXTREME_INTS, st.just(T0))),
        type=draw(st.sampled_from([0, 1, 4, 11])),  # type: ignore[arg-type]
        schema_version=draw(st.sampled_from([0, SCHEMA_VERSION, 2**32 - 1])),
        actor=pb.Actor(
            account_id="a" * draw(_LONG),
            ip=draw(st.text(max_size=40)),
            user_agent="u" * draw(_LONG),
            asn=draw(st.sampled_from([0, 2**32 - 1])),
        ),
        play_duration_ms=draw(_EXTREME_INTS),
        account_created_ms=draw(_EXTREME_INTS),
    )
    raw = event.SerializeToString()
    if shape == "truncated":
        return raw[: draw(st.integers(min_value=0, max_value=max(0, len(raw) - 1)))]
    if shape == "nested":
        return (
            pb.Event(event_id="n", actor=pb.Actor(account_id="n")).SerializeToString()
            + b"\x2a\x05\x0a\x03"
            + raw
        )
    return raw
