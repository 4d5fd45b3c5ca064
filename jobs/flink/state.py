"""Keyed state holding raw bytes, correct in both PyFlink execution modes.

The engine-free operators serialize their window state to ``bytes`` with a versioned layout; in Flink
that goes into a ``ValueState`` of Java ``byte[]`` (``Types.PRIMITIVE_ARRAY(Types.BYTE())``).
Process mode handles that type (``BinaryCoder``). Thread mode (PyFlink 2.3) does not: its state
converter treats ``byte[]`` as a generic array, so reading an empty state raises
``TypeError: 'NoneType' object is not iterable`` and a stored value would come back as a tuple of ints.
PEMJA itself maps ``byte[]`` <-> ``bytes``, so the fix is to use the identity converter for that state.
"""

from __future__ import annotations

from typing import Any

from pyflink.common.time import Time
from pyflink.common.typeinfo import Types
from pyflink.datastream import RuntimeContext
from pyflink.datastream.state import (
    MapState,
    MapStateDescriptor,
    StateTtlConfig,
    ValueState,
    ValueStateDescriptor,
)


def _bytes_type() -> Any:
    return Types.PRIMITIVE_ARRAY(Types.BYTE())


def _ttl_config(ttl_ms: int) -> StateTtlConfig:
    """Processing-time TTL refreshed on every write; expired values are never returned."""
    return (
        StateTtlConfig.new_builder(Time.milliseconds(ttl_ms))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .build()
    )


def _identity_for_bytes(state: Any, attr: str) -> None:
    """Thread mode only: swap PyFlink's array converter for the identity converter (see module doc)."""
    try:
        from pyflink.fn_execution.embedded.converters import ArrayDataConverter, IdentityDataConverter
    except ImportError:  # pragma: no cover - embedded runtime absent (process worker without pemja)
        return
    if isinstance(getattr(state, attr, None), ArrayDataConverter):
        setattr(state, attr, IdentityDataConverter())


def bytes_value_state(ctx: RuntimeContext, name: str, ttl_ms: int | None = None) -> ValueState:
    """A ``ValueState[bytes]`` (``None`` when empty), optionally expiring ``ttl_ms`` after the last write."""
    descriptor = ValueStateDescriptor(name, _bytes_type())
    if ttl_ms is not None:
        descriptor.enable_time_to_live(_ttl_config(ttl_ms))
    state = ctx.get_state(descriptor)
    _identity_for_bytes(state, "_value_converter")
    return state


def bytes_map_state(ctx: RuntimeContext, name: str, key_type: Any, ttl_ms: int | None = None) -> MapState:
    """A ``MapState[key, bytes]`` (key_type e.g. ``Types.LONG()``), optionally with a TTL per entry."""
    descriptor = MapStateDescriptor(name, key_type, _bytes_type())
    if ttl_ms is not None:
        descriptor.enable_time_to_live(_ttl_config(ttl_ms))
    state = ctx.get_map_state(descriptor)
    _identity_for_bytes(state, "_v_converter")  # used by get/put/items/values
    dict_converter = getattr(state, "_value_converter", None)  # used by put_all
    if dict_converter is not None:
        _identity_for_bytes(dict_converter, "_value_converter")
    return state
