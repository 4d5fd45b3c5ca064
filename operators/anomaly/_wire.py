"""Little-endian struct packing for operator state: versioned, compact, never pickle."""

from __future__ import annotations

import struct
from array import array

from streamwarden.operators.errors import StreamwardenError


class StateFormatError(StreamwardenError, ValueError):
    """Serialized anomaly state is truncated, of an unknown version, or for another config."""


_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


class Writer:
    """Append fixed-width fields to a byte buffer."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def u8(self, value: int) -> Writer:
        self._buf += _U8.pack(value)
        return self

    def u32(self, value: int) -> Writer:
        self._buf += _U32.pack(value)
        return self

    def i64(self, value: int) -> Writer:
        self._buf += _I64.pack(value)
        return self

    def f64(self, value: float) -> Writer:
        self._buf += _F64.pack(value)
        return self

    def fixed(self, layout: struct.Struct, *values: float | int) -> Writer:
        """Several fixed-width fields in one call (the hot path packs its header this way)."""
        self._buf += layout.pack(*values)
        return self

    def text(self, value: str) -> Writer:
        data = value.encode("utf-8")
        return self.blob(data)

    def blob(self, data: bytes) -> Writer:
        self.u32(len(data))
        self._buf += data
        return self

    def floats(self, values: array[float]) -> Writer:
        """A float32 array (``array('f')``), length-prefixed."""
        self.u32(len(values))
        self._buf += values.tobytes()
        return self

    def getvalue(self) -> bytes:
        return bytes(self._buf)


class Reader:
    """Read back what a ``Writer`` wrote; any shortfall raises ``StateFormatError``."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> memoryview:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise StateFormatError(f"{self._what}: state truncated at byte {self._pos}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return int(_U8.unpack(self._take(1))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self._take(8))[0])

    def f64(self) -> float:
        return float(_F64.unpack(self._take(8))[0])

    def fixed(self, layout: struct.Struct) -> tuple[float | int, ...]:
        return tuple(layout.unpack(self._take(layout.size)))

    def text(self) -> str:
        return bytes(self.blob()).decode("utf-8")

    def blob(self) -> bytes:
        return bytes(self._take(self.u32()))

    def floats(self) -> array[float]:
        n = self.u32()
        out = array("f")
        out.frombytes(bytes(self._take(4 * n)))
        return out

    def version(self, expected: int) -> None:
        got = self.u8()
        if got != expected:
            raise StateFormatError(f"{self._what}: state version {got}, this code reads {expected}")

    def done(self) -> None:
        if self._pos != len(self._data):
            raise StateFormatError(f"{self._what}: {len(self._data) - self._pos} trailing bytes in state")
