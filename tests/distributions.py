"""A temporary installed distribution for entry point tests: a module and a ``*.dist-info`` whose
``entry_points.txt`` registers it, put on ``sys.path`` for as long as the context lasts (what
``pip install`` of another package leaves behind, without installing anything)."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path


@contextlib.contextmanager
def installed(root: Path, *, module: str, source: str, dist: str, group: str,
              entry_points: Mapping[str, str]) -> Iterator[None]:
    """``module`` (``source``) in distribution ``dist`` (``name-version``), registering
    ``entry_points`` (name -> target) in ``group``."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_', 1)}.dist-info"
    info.mkdir()
    name, _, version = dist.rpartition("-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(module, None)
        importlib.invalidate_caches()
