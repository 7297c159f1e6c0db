"""Reading flow files from disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FlowLoadError
from ..inputs import RepeatedKeys

if TYPE_CHECKING:
    from .compiled import CompiledFlow


def read_document(path: str | Path, repeated: list[str] | None = None) -> Any:
    """The JSON document in ``path``; ``FlowLoadError`` saying where the JSON breaks. With
    ``repeated``, the pointers of keys an object repeats (the last one wins) are appended to it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowLoadError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FlowLoadError(f"{p}: not UTF-8 text: byte {exc.start} cannot be decoded") from exc
    hook = RepeatedKeys()
    try:
        doc = json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        raise FlowLoadError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:  # e.g. an integer longer than Python converts (4300 digits)
        raise FlowLoadError(f"{p}: not valid JSON: {exc}") from exc
    if repeated is not None:
        repeated += hook.pointers(doc)
    return doc


def load_flow(path: str | Path, *, version: int = 1) -> CompiledFlow:
    """Read and compile a flow file; raises ``FlowLoadError`` or ``FlowInvalid`` (a repeated key
    is a problem too)."""
    from .validate import compile_document  # on first use: reading a document needs no validator

    repeated: list[str] = []
    doc = read_document(path, repeated)
    return compile_document(doc, version=version, repeated=repeated)
