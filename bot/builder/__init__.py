"""Flow builder: schema (pydantic models), validation with JSON pointers, compilation, graph."""

from .compiled import CompiledFlow
from .graph import to_mermaid
from .loader import load_flow, read_document
from .validate import check_document, compile_document, parse_flow_model

__all__ = [
    "CompiledFlow", "check_document", "compile_document", "load_flow", "parse_flow_model",
    "read_document", "to_mermaid",
]
