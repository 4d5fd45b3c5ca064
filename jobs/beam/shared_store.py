"""One object per DoFn per process, whichever copy of the DoFn asks (the Beam job's in-memory key stores).

A runner does not run the DoFn object a pipeline was built with: it runs unpickled copies, and may
make new ones (Beam 2.61's SDK harness tears an idle bundle processor down after 60 s and builds a new
one on the next bundle; the streaming DirectRunner runs a keyed DoFn in several threads). A
``SharedHandle`` is pickled with its DoFn as a token: every copy in this process gets the same object
from ``acquire``, and the object lives while any copy does (the pipeline graph's copy included, so a
bundle processor torn down and rebuilt mid-run finds its keys again). Unlike ``apache_beam.utils.shared``
(weak references, one object kept alive per process), nothing is dropped while the pipeline exists.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_LOCK = threading.Lock()
_OBJECTS: dict[str, Any] = {}
_HOLDERS: dict[str, int] = {}


def _hold(token: str) -> None:
    with _LOCK:
        _HOLDERS[token] = _HOLDERS.get(token, 0) + 1


def _release(token: str) -> None:
    with _LOCK:
        left = _HOLDERS.get(token, 0) - 1
        if left > 0:
            _HOLDERS[token] = left
        else:
            _HOLDERS.pop(token, None)
            _OBJECTS.pop(token, None)


def live_objects() -> int:
    """How many shared objects this process holds (tests: released once their pipelines are gone)."""
    with _LOCK:
        return len(_OBJECTS)


class SharedHandle(Generic[T]):
    """A token naming one object per process; see the module docstring."""

    def __init__(self) -> None:
        self._token = uuid.uuid4().hex
        self._track()

    def __getstate__(self) -> dict[str, str]:
        return {"token": self._token}

    def __setstate__(self, state: dict[str, str]) -> None:
        self._token = state["token"]
        self._track()

    def _track(self) -> None:
        _hold(self._token)
        weakref.finalize(self, _release, self._token)

    def acquire(self, make: Callable[[], T]) -> T:
        """The process's object for this token, made by ``make()`` on first use."""
        with _LOCK:
            obj = _OBJECTS.get(self._token)
            if obj is None:
                obj = _OBJECTS[self._token] = make()
            return obj


class GateClocks:
    """The lateness gates' clocks of the job's decoders in this process (one on the DirectRunner), for
    the keyed stages downstream: ``watermark_ms`` is the lowest of their watermarks, so no event any of
    them admitted (or will admit) is more than the allowed lateness behind it."""

    def __init__(self) -> None:
        self._clocks: list[Any] = []
        self._lock = threading.Lock()

    def add(self, clock: Any) -> None:
        """Publish a decoder's ``EventClock`` (it keeps using it; readers only read its watermark)."""
        with self._lock:
            self._clocks.append(clock)

    def remove(self, clock: Any) -> None:
        with self._lock:
            if clock in self._clocks:
                self._clocks.remove(clock)

    def watermark_ms(self) -> int | None:
        """The lowest published watermark; ``None`` while no decoder has published its clock."""
        with self._lock:
            clocks = list(self._clocks)
        if not clocks:
            return None
        return min(int(c.watermark_ms) for c in clocks)
