"""Redis round trips counted in a test (the ``trips`` fixture of ``conftest.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoundTrips:
    """Every hot-path call (``_Protocol.send``, with its commands) and every redis-py write."""

    fast: list[list[tuple[Any, ...]]] = field(default_factory=list)
    redis_py: list[Any] = field(default_factory=list)

    def clear(self) -> None:
        self.fast.clear()
        self.redis_py.clear()

    def crm_reads(self) -> list[tuple[Any, ...]]:
        return [c for call in self.fast for c in call if c[0] == "GET" and str(c[1]).startswith("sb:crm:")]
