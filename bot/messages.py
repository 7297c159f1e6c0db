"""Parts of a normalised outbound message, shared by the builder, the runtime and the channels."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutButton:
    title: str
    payload: str | None = None  # None for URL buttons
    url: str | None = None
    number: int | None = None  # the number a customer may type instead (reply buttons)


@dataclass(frozen=True, slots=True)
class OutRow:
    id: str
    title: str
    description: str | None
    number: int


@dataclass(frozen=True, slots=True)
class OutList:
    button: str
    header: str | None
    footer: str | None
    sections: tuple[tuple[str, tuple[OutRow, ...]], ...]


@dataclass(frozen=True, slots=True)
class OutAttachment:
    kind: str
    url: str
    name: str | None = None
