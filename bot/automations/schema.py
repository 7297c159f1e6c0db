"""The JSON Schema of the automation format (``salesbot.automations/1``), from its models.

``flows/automations.schema.json``, next to the flow format's schema, for editors; a test keeps
it in step with the models. Refresh it with ``python -m bot.automations.schema`` (or give a
path). It covers the shape only: stages, bots, fields, event types and triggers that could
never fire are ``bot.automations.validate``'s (``salesbot automations validate``).
"""

from __future__ import annotations

import sys
from typing import Any

from ..builder.schema import DEFAULT_PATH as FLOW_SCHEMA_PATH
from ..builder.schema import SchemaFile
from .models import FORMAT, Automations

SCHEMA_ID = "urn:salesbot:automations:1"
AUTOMATIONS_SCHEMA = SchemaFile(Automations, SCHEMA_ID, f"Salesbot automations ({FORMAT})",
                                FLOW_SCHEMA_PATH.parent / "automations.schema.json", "bot.automations.schema")
DEFAULT_PATH = AUTOMATIONS_SCHEMA.path


def automations_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an automation document, keys as written in documents."""
    return AUTOMATIONS_SCHEMA.schema()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(AUTOMATIONS_SCHEMA.main())
