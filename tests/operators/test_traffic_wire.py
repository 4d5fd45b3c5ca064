"""The hand-rolled Event encoder must produce exactly what the generated protobuf code produces."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden.operators.traffic import ids
from streamwarden.operators.traffic.wire import (
    actor_chunk,
    content_chunk,
    created_field,
    created_fields,
    encode_event,
    target_chunk,
    varint,
)
from streamwarden.schemas import streamwarden_pb2 as pb

text = st.text(max_size=200)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
i64 = st.integers(min_value=0, max_value=2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(
    event_id=text,
    event_time_ms=i64,
    event_type=st.sampled_from(list(pb.Event.Type.values())),
    actor=st.tuples(text, text, text, u32, text, text),
    target=st.tuples(text, text),
    content=st.tuples(u32, u32, u32, text),
    play_duration_ms=i64,
    account_created_ms=i64,
    schema_version=u32,
)
def test_encoder_matches_generated_code(
    event_id,
    event_time_ms,
    event_type,
    actor,
    target,
    content,
    play_duration_ms,
    account_created_ms,
    schema_version,
):
    ours = encode_event(
        event_id,
        event_time_ms,
        event_type,
        actor_chunk(*actor),
        target_chunk(*target),
        content_chunk(*content),
        play_duration_ms,
        created_field(account_created_ms),
        schema_version,
    )
    expected = pb.Event(
        event_id=event_id,
        event_time_ms=event_time_ms,
        type=event_type,
        play_duration_ms=play_duration_ms,
        schema_version=schema_version,
        account_created_ms=account_created_ms,
    )
    a = pb.Actor(
        account_id=actor[0],
        ip=actor[1],
        device_id=actor[2],
        asn=actor[3],
        country=actor[4],
        user_agent=actor[5],
    )
    # An all-default sub-message is absent in proto3 when never set; we omit a target/content whose fields
    # are all default, but always emit the actor (every event has one).
    expected.actor.CopyFrom(a)
    if any(target):
        expected.target.CopyFrom(pb.Target(account_id=target[0], content_id=target[1]))
    if any(content):
        expected.content.CopyFrom(
            pb.ContentFacts(
                text_length=content[0],
                url_count=content[1],
                mention_count=content[2],
                content_hash=content[3],
            )
        )
    assert ours == expected.SerializeToString()
    assert pb.Event.FromString(ours) == expected


@given(
    st.one_of(
        st.integers(min_value=0, max_value=2**64 - 1),
        st.integers(min_value=2**35 - 2, max_value=2**42 + 2),  # the epoch-ms fast path and its edges
    )
)
def test_varint_round_trips(value):
    from google.protobuf.internal.decoder import _DecodeVarint

    encoded = varint(value)
    assert _DecodeVarint(encoded, 0) == (value, len(encoded))


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=2**64 - 1))
def test_mix64_is_injective_on_samples(a, b):
    assert (ids.mix64(a) == ids.mix64(b)) == (a == b)


def test_array_mixers_match_scalar_ones():
    import numpy as np

    xs = np.array([0, 1, 2, 12345, 2**40 + 7, 2**63 + 5], dtype=np.uint64)
    assert ids.mix64_array(xs).tolist() == [ids.mix64(int(x)) for x in xs]
    small = np.array([0, 1, 99, 2**31 + 3, 2**32 - 1], dtype=np.uint64)
    assert ids.mix32_array(small).tolist() == [ids.mix32(int(x)) for x in small]
    assert ids.unit_array(xs).tolist() == [ids.unit(int(x)) for x in xs]
    space = ids.IdSpace(seed=5)
    assert space.accounts(3, xs[:4]) == [space.account(3, int(x)) for x in xs[:4]]
    assert space.devices(0, xs[:4]) == [space.device(0, int(x)) for x in xs[:4]]
    assert space.ips(small) == [space.ip(int(x)) for x in small]


@given(st.lists(st.integers(min_value=0, max_value=2**62), max_size=20), st.integers(2**35, 2**42 - 1))
def test_vectorised_created_fields_match_scalar(values, epoch_ms):
    import numpy as np

    for batch in (values, [epoch_ms, epoch_ms + 1, 2**42 - 1]):
        array = np.array(batch, dtype=np.int64)
        assert created_fields(array) == [created_field(v) for v in batch]
