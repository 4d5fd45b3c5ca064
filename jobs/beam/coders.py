"""Beam coders for the project's own versioned state bytes (never pickled objects)."""

from __future__ import annotations

from apache_beam.coders import Coder


class StateBytesCoder(Coder):
    """Base of the keyed-state coders: subclasses only ``encode``/``decode`` between a live state object
    and its versioned byte layout. Deterministic, and equal to any other instance of the same class."""

    def is_deterministic(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))
