"""A clock a test moves by hand, for the stores' ``clock`` seam: time passes without sleeping
(dedupe windows, recovery scores, the lock's expiry in the inbox's head)."""

from __future__ import annotations

#: A realistic epoch (14 Nov 2023), so scores look like the ones production writes.
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
