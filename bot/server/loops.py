"""Which asyncio event loop ``salesbot serve`` / ``salesbot worker`` run on.

uvloop is faster for this I/O-bound server and optional: ``event_loop = "auto"`` (the default)
uses it when it is installed (``pip install uvloop`` or ``pip install -e '.[fast]'``) and the
standard loop otherwise; ``"asyncio"`` or ``"uvloop"`` force one (the latter fails clearly when
uvloop is missing). Everything the server does works on both; the tests run both.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

from ..config import ConfigError

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory for ``choice`` (None: the standard loop)."""
    if choice == "asyncio" or (choice == "auto" and importlib.util.find_spec("uvloop") is None):
        return None
    try:
        import uvloop
    except ImportError as exc:
        raise ConfigError("event_loop = \"uvloop\" but uvloop is not installed (pip install uvloop)") from exc
    return uvloop.new_event_loop


def loop_name() -> str:
    """The running loop's kind, for the start banner and logs."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
