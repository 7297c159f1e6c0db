"""Flow builder: schema (pydantic models), validation with JSON pointers, compilation, graph.

The names below load their module on first use (PEP 562): the interpreter imports
``bot.builder.compiled`` and templates only, and a process that never validates a flow
document does not load the pydantic models, the validator or the graph (issue 14: startup).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .compiled import CompiledFlow
    from .graph import to_mermaid
    from .loader import load_flow, read_document
    from .validate import check_document, compile_document, parse_flow_model

__all__ = [
    "CompiledFlow", "check_document", "compile_document", "load_flow", "parse_flow_model",
    "read_document", "to_mermaid",
]
_HOME = {
    "CompiledFlow": "compiled", "to_mermaid": "graph", "load_flow": "loader", "read_document": "loader",
    "check_document": "validate", "compile_document": "validate", "parse_flow_model": "validate",
}

__getattr__ = exports(__name__, _HOME)
