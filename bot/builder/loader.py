"""Reading flow files from disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FlowInvalid, FlowLoadError

if TYPE_CHECKING:
    from .compiled import CompiledFlow


def read_document(path: str | Path) -> Any:
    """The JSON document in ``path``; ``FlowLoadError`` saying where the JSON breaks."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowLoadError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise FlowLoadError(f"{p}: not UTF-8 text: byte {exc.start} cannot be decoded") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlowLoadError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:  # e.g. an integer longer than Python converts (4300 digits)
        raise FlowLoadError(f"{p}: not valid JSON: {exc}") from exc


def load_flow(path: str | Path, *, version: int = 1) -> CompiledFlow:
    """Read and compile a flow file; raises ``FlowLoadError`` or ``FlowInvalid``."""
    from .validate import compile_document  # on first use: reading a document needs no validator

    doc = read_document(path)
    try:
        return compile_document(doc, version=version)
    except FlowInvalid:
        raise
