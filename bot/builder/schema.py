"""The JSON Schemas of the document formats, generated from their pydantic models.

``flows/schema.json`` is the flow format's schema, for editors and builders; a test keeps it in
step with the models. Refresh it with ``python -m bot.builder.schema`` (or give another path).
``flows/automations.schema.json`` is the automation format's (``bot.automations.schema``),
made by the same ``SchemaFile``.

A schema covers the *shape* of a document only: step references, limits across steps,
templates, regular expressions and loops are checked by ``salesbot flows validate`` (stages,
bots and events of automations by ``salesbot automations validate``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import models

SCHEMA_ID = "urn:salesbot:flow:1"
TITLE = f"Salesbot flow ({models.FORMAT})"
#: Where the repository keeps the generated schema.
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "flows" / "schema.json"


@dataclass(frozen=True, slots=True)
class SchemaFile:
    """A format's schema (draft 2020-12, keys as written in documents) and the file that holds it."""

    model: type[BaseModel]
    schema_id: str
    title: str
    path: Path
    module: str  # the ``python -m`` that refreshes it

    def schema(self) -> dict[str, Any]:
        schema = self.model.model_json_schema(by_alias=True)
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": self.schema_id,
                **schema, "title": self.title}

    def text(self) -> str:
        """The schema as stored in its file."""
        return json.dumps(self.schema(), indent=2, ensure_ascii=False) + "\n"

    def write(self, path: str | Path | None = None) -> Path:
        """(Re)write the schema file; returns its path."""
        p = Path(path) if path is not None else self.path
        p.write_text(self.text(), encoding="utf-8")
        return p

    def main(self, argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        if len(args) > 1 or any(a.startswith("-") for a in args):
            sys.stderr.write(f"usage: python -m {self.module} [PATH]  (default: {self.path.parent.name}/"
                             f"{self.path.name})\n")
            return 2
        written = self.write(args[0] if args else None)
        sys.stdout.write(f"wrote {written}\n")
        return 0


FLOW_SCHEMA = SchemaFile(models.Flow, SCHEMA_ID, TITLE, DEFAULT_PATH, "bot.builder.schema")


def flow_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a flow document, keys as written in documents."""
    return FLOW_SCHEMA.schema()


def schema_text() -> str:
    """The schema as stored in ``flows/schema.json``."""
    return FLOW_SCHEMA.text()


def write_schema(path: str | Path = DEFAULT_PATH) -> Path:
    """(Re)write the schema file; returns its path."""
    return FLOW_SCHEMA.write(path)


def main(argv: Sequence[str] | None = None) -> int:
    return FLOW_SCHEMA.main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
