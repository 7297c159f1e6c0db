"""Flow format additions of issue 13 for measuring: the ``split`` step and flow-level ``goals``.

Apart from ``models.py`` (which holds the rest of the format) so each stays small; both are
joined into the ``Step`` union and the ``Flow`` document there.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from .event_types import EVENT_TYPE_PATTERN
from .model_base import WHOLE, Duration, Model, StepId, TemplateValue

EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN)]
GoalName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
PathId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
#: Event ``data`` keys a ``match`` may name, and at most how many.
MatchData = Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], TemplateValue],
                      Field(max_length=20)]
MAX_PATHS = 10


class SplitPath(Model):
    id: PathId
    weight: Annotated[int, Field(ge=1, le=1_000_000), WHOLE] = 1
    next: StepId


class SplitWinner(Model):
    """When the test ends: after this many entries in all, or this long after the first one."""

    after_entries: Annotated[int, Field(ge=1, le=1_000_000_000), WHOLE] | None = None
    or_after: Duration | None = None

    @model_validator(mode="after")
    def _some_rule(self) -> SplitWinner:
        if self.after_entries is None and self.or_after is None:
            raise ValueError("a winner rule needs after_entries, or_after or both")
        if isinstance(self.or_after, int) and self.or_after < 1:
            raise ValueError("or_after must be at least 1 second")
        return self


class SplitStep(Model):
    type: Literal["split"]
    paths: Annotated[list[SplitPath], Field(min_length=2, max_length=MAX_PATHS)]
    goal: GoalName | None = None
    winner: SplitWinner | None = None

    @model_validator(mode="after")
    def _winner_needs_goal(self) -> SplitStep:
        # Paths with the same id are the validator's (bot.builder.splits): it names the path.
        if self.winner is not None and self.goal is None:
            raise ValueError("a winner is chosen by goal rate: name the split's goal")
        return self


class Goal(Model):
    """A flow-level goal: the event that reaches it, and where the run goes then."""

    on: EventType
    match: MatchData = Field(default_factory=dict)
    next: StepId | None = None
