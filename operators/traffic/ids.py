"""Deterministic, collision-free entity ids.

Every id is a bijective 64-bit (32-bit for IPv4) mix of an integer index xor a seed-derived salt, so
distinct indices give distinct ids, another seed gives other ids, and nothing in an id tells organic
entities from abusive ones: their index ranges differ, the strings look alike. Only the labels file
says which is which.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1

# Index spaces: the top byte names the source (0 = organic, 1.. = a scenario), the next byte the kind.
KIND_ACCOUNT = 1
KIND_DEVICE = 2
KIND_CONTENT = 3
KIND_EVENT = 4
KIND_HASH = 5


def mix64(x: int) -> int:
    """splitmix64 finaliser: a bijection on 64-bit integers with good avalanche."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def mix32(x: int) -> int:
    """murmur3 fmix32: a bijection on 32-bit integers."""
    x &= _M32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _M32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def mix64_array(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``mix64`` over an array (uint64 arithmetic wraps, as the scalar version masks)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def mix32_array(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``mix32`` over an array (values are reduced to 32 bits first)."""
    m = np.uint64(_M32)
    x = x & m
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x85EBCA6B)) & m
    x = x ^ (x >> np.uint64(13))
    x = (x * np.uint64(0xC2B2AE35)) & m
    return x ^ (x >> np.uint64(16))


def unit(x: int) -> float:
    """A float in [0, 1) from a 64-bit integer (its mix), for per-entity attributes without an RNG."""
    return (mix64(x) >> 11) * (1.0 / (1 << 53))


def unit_array(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """``unit`` over an array."""
    return (mix64_array(x) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def index64(source: int, kind: int, i: int) -> int:
    """The 64-bit index of entity ``i`` of ``kind`` owned by ``source`` (disjoint across the three)."""
    return (source << 56) | (kind << 48) | i


def ip_index(source: int, i: int) -> int:
    """32-bit index of IP ``i`` of ``source``: organic ones (source 0) stay below 2**31, scenario ones
    (source >= 1) above, so they never collide."""
    return i if source == 0 else (1 << 31) | (source << 24) | i


class IdSpace:
    """Id strings for one seed."""

    def __init__(self, seed: int) -> None:
        self.salt64 = mix64(seed ^ 0x1D5)
        self.salt32 = self.salt64 & _M32

    def _hex(self, source: int, kind: int, i: int) -> str:
        return f"{mix64(index64(source, kind, i) ^ self.salt64):016x}"

    def account(self, source: int, i: int) -> str:
        return "acc_" + self._hex(source, KIND_ACCOUNT, i)

    def device(self, source: int, i: int) -> str:
        return "dev_" + self._hex(source, KIND_DEVICE, i)

    def content(self, source: int, i: int) -> str:
        return "trk_" + self._hex(source, KIND_CONTENT, i)

    def content_hash(self, source: int, i: int) -> str:
        return self._hex(source, KIND_HASH, i)

    def ip(self, index: int) -> str:
        """Dotted IPv4 for a 32-bit index (see ``ip_index``)."""
        x = mix32(index ^ self.salt32)
        return f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"

    def accounts(self, source: int, index: npt.NDArray[np.uint64], prefix: str = "acc_") -> list[str]:
        """``account`` for many indices at once (same strings)."""
        return self._many(source, KIND_ACCOUNT, index, prefix)

    def devices(self, source: int, index: npt.NDArray[np.uint64]) -> list[str]:
        """``device`` for many indices at once (same strings)."""
        return self._many(source, KIND_DEVICE, index, "dev_")

    def _many(self, source: int, kind: int, index: npt.NDArray[np.uint64], prefix: str) -> list[str]:
        base = np.uint64(index64(source, kind, 0))
        return hex_ids(prefix, mix64_array((base | index) ^ np.uint64(self.salt64)))

    def ips(self, index: npt.NDArray[np.uint64]) -> list[str]:
        """``ip`` for many indices at once (same strings)."""
        x = mix32_array(index ^ np.uint64(self.salt32)).tolist()
        return [f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}" for v in x]


_HEX_PAIRS = np.frombuffer(b"".join(b"%02x" % k for k in range(256)), dtype=np.uint8).reshape(256, 2)


def hex_ids(prefix: str, values: npt.NDArray[np.uint64]) -> list[str]:
    """``f"{prefix}{v:016x}"`` for every value, formatted with array operations (no per-value f-string)."""
    n = len(values)
    if n == 0:
        return []
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    width = len(head) + 16
    digits = _HEX_PAIRS[values.astype(">u8").view(np.uint8).reshape(n, 8)].reshape(n, 16)
    text = np.concatenate((np.broadcast_to(head, (n, len(head))), digits), axis=1).tobytes().decode("ascii")
    return [text[j : j + width] for j in range(0, n * width, width)]
