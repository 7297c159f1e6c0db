"""The mutation tier's catalogue (``bench/mutation_catalog.py``) stays true to the code.

The tier itself is slow and run by hand (docs/testing.md, "Mutation tier"); this keeps its list
from rotting in between: a snippet the code no longer holds exactly once, a test file that does
not exist, a repeated id or a mutated Python file that no longer compiles fails here, in CI.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _catalog() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_catalog", ROOT / "bench" / "mutation_catalog.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


CATALOG = _catalog()
MUTATIONS = CATALOG.MUTATIONS


def test_ids_are_unique_and_modules_known() -> None:
    repeated = [i for i, n in Counter(m.id for m in MUTATIONS).items() if n > 1]
    assert not repeated, f"repeated mutation ids: {repeated}"
    assert {m.module for m in MUTATIONS} <= set(CATALOG.MODULES)


@pytest.mark.parametrize("m", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_mutation_is_applicable(m: Any) -> None:
    """The snippet is found exactly once, the replacement differs and (Python) still compiles,
    and every test file it names exists."""
    source = (ROOT / m.file).read_text()
    count = source.count(m.original)
    assert count == 1, f"{m.id}: snippet found {count} times in {m.file}"
    assert m.replacement != m.original
    if m.file.endswith(".py"):
        compile(source.replace(m.original, m.replacement), m.file, "exec")
    assert m.tests, f"{m.id} names no test file"
    missing = [t for t in m.tests if not (ROOT / t).is_file()]
    assert not missing, f"{m.id}: test files that do not exist: {missing}"
