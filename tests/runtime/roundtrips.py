"""Redis round trips counted in a test (the ``trips`` fixture of ``conftest.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoundTrips:
    """Every hot-path call (``_Protocol.send``, with its commands) and every redis-py write."""

    fast: list[list[tuple[Any, ...]]] = field(default_factory=list)
    redis_py: list[Any] = field(default_factory=list)
    #: The task that made each call of ``fast`` and ``redis_py`` (to tell what a caller waited for
    #: from what the tasks it started did meanwhile).
    fast_tasks: list[Any] = field(default_factory=list)
    redis_py_tasks: list[Any] = field(default_factory=list)

    def clear(self) -> None:
        self.fast.clear()
        self.redis_py.clear()
        self.fast_tasks.clear()
        self.redis_py_tasks.clear()

    def made_by(self, task: Any) -> tuple[list[list[tuple[Any, ...]]], list[Any]]:
        """The calls (fast, redis-py) ``task`` itself made."""
        return ([c for c, t in zip(self.fast, self.fast_tasks, strict=True) if t is task],
                [c for c, t in zip(self.redis_py, self.redis_py_tasks, strict=True) if t is task])

    def crm_reads(self) -> list[tuple[Any, ...]]:
        """The record reads (``crm_bridge/records.py``: a field of a bucket, or a company's key)."""
        return [c for call in self.fast for c in call
                if (c[0], str(c[1])[:11]) == ("HGET", "sb:crm:rec:")
                or (c[0] == "GET" and str(c[1]).startswith("sb:crm:"))]
