"""The JSON Schema of flow format v1, generated from the pydantic models.

``flows/schema.json`` is this schema, for editors and builders; a test keeps it in step with
the models. Refresh it with ``python -m bot.builder.schema`` (or give another path).

The schema covers the *shape* of a document only: step references, limits across steps,
templates, regular expressions and loops are checked by ``salesbot flows validate``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import models

SCHEMA_ID = "urn:salesbot:flow:1"
TITLE = f"Salesbot flow ({models.FORMAT})"
#: Where the repository keeps the generated schema.
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "flows" / "schema.json"


def flow_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a flow document, keys as written in documents."""
    schema = models.Flow.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": TITLE,
    }


def schema_text() -> str:
    """The schema as stored in ``flows/schema.json``."""
    return json.dumps(flow_json_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: str | Path = DEFAULT_PATH) -> Path:
    """(Re)write the schema file; returns its path."""
    p = Path(path)
    p.write_text(schema_text(), encoding="utf-8")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or any(a.startswith("-") for a in args):
        sys.stderr.write("usage: python -m bot.builder.schema [PATH]  (default: flows/schema.json)\n")
        return 2
    written = write_schema(args[0] if args else DEFAULT_PATH)
    sys.stdout.write(f"wrote {written}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
