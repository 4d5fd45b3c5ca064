"""Claim leases: a claimed job belongs to its reviewer until the lease ends, then returns to its queue.

Times are epoch milliseconds (wall clock: leases are about people, not event time)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    until_ms: int

    def live(self, now_ms: int) -> bool:
        """Still held at ``now_ms`` (the end is exclusive: at ``until_ms`` the job is free again)."""
        return now_ms < self.until_ms

    def held_by(self, who: str, now_ms: int) -> bool:
        return self.holder == who and self.live(now_ms)


def lease_until(now_ms: int, lease_s: float) -> int:
    """When a lease taken (or renewed) at ``now_ms`` ends."""
    return now_ms + round(lease_s * 1000)


def claimable(status: str, lease: Lease | None, now_ms: int) -> bool:
    """A job can be claimed when it is pending, or claimed under a lease that has ended."""
    if status == "pending":
        return True
    return status == "claimed" and (lease is None or not lease.live(now_ms))


def remaining_s(lease: Lease, now_ms: int) -> float:
    return max(0.0, (lease.until_ms - now_ms) / 1000.0)
