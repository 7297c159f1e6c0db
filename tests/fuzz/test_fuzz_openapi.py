"""Schemathesis against the live ``/api/openapi.json``: every documented operation gets requests
generated from its schema (valid and invalid ones), sent with the admin token; none may answer
a 5xx. One test per operation, so a failure names it; the server's traceback is attached."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from bot.server.openapi import document

from .live import AUTH, LiveServer, summarize
from .strategies import fuzz_settings

#: Streams and long polls hold the request open by design (the long poll and the WebSocket have
#: their own tests in test_fuzz_livechat.py).
HELD_OPEN = {"GET /api/live", "GET /chat/{account}/messages", "GET /chat/{account}/ws"}
LABELS = [f"{method.upper()} {path}" for path, ops in document()["paths"].items() for method in ops
          if f"{method.upper()} {path}" not in HELD_OPEN]


#: What schemathesis's ``generation.hypothesis.setup()`` patches in hypothesis, process-wide, the
#: first time it builds a strategy: a printer that prints nothing (every later falsifying example
#: of the suite would read ``x=,``), larger buffers, its own PRNG registration.
_PATCHED = [("hypothesis.core", "RepresentationPrinter"), ("hypothesis.core", "BUFFER_SIZE"),
            ("hypothesis.internal.conjecture.engine", "BUFFER_SIZE"),
            ("hypothesis.strategies._internal.collections", "BUFFER_SIZE"),
            ("hypothesis.internal.entropy", "register_random"),
            ("hypothesis.strategies._internal.core", "is_first_param_referenced_in_function")]


@pytest.fixture(autouse=True)
def hypothesis_as_it_was() -> Iterator[None]:
    """Undo schemathesis's patches of hypothesis after each test (it redoes them when needed)."""
    from schemathesis.generation import hypothesis as st_hypothesis

    modules = [importlib.import_module(name) for name, _ in _PATCHED]
    saved = [getattr(module, attr) for module, (_, attr) in zip(modules, _PATCHED, strict=True)]
    yield
    for module, (_, attr), value in zip(modules, _PATCHED, saved, strict=True):
        setattr(module, attr, value)
    st_hypothesis.setup._is_patched = False  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def schema(live_app: LiveServer) -> Iterator[schemathesis.BaseSchema]:
    yield schemathesis.openapi.from_url(f"{live_app.url}/api/openapi.json")


@pytest.mark.parametrize("label", LABELS)
def test_documented_operation(live: LiveServer, schema: schemathesis.BaseSchema, label: str) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served /api/openapi.json"
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @fuzz_settings(8)
    @given(case=cases)
    def call(case: schemathesis.Case[Any]) -> None:
        mark = live.trap.mark()
        try:
            case.call_and_validate(base_url=live.url, headers={"Authorization": AUTH},
                                   checks=[not_a_server_error], timeout=10)
        except BaseException as exc:
            raise AssertionError(f"{exc}\nserver log:\n{summarize(live.trap.since(mark))}") from exc

    call()
