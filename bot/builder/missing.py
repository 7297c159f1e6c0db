"""``MISSING``: what a template expression yields for a name or key that is not there.

Its own module, free of jinja2, so ``bot.engine.state`` (and the store's codec) can tell it
apart without importing the template engine at start (issue 14: startup).
"""

from __future__ import annotations

from typing import Any


class _Missing:
    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
