"""Bearer tokens with roles: ``admin`` (everything), ``operator`` (bots), ``support`` (conversations)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from ..inputs import header_bytes

ROLES = ("admin", "operator", "support")


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    name: str


class Auth:
    def __init__(self, *, admin_token: str, tokens: Iterable[tuple[str, str, str]] = ()) -> None:
        self._tokens: list[tuple[bytes, Principal]] = [(admin_token.encode(), Principal("admin", "admin"))]
        for token, role, name in tokens:
            if len(token) < 8:  # an empty or trivial token would let "Bearer " in
                raise ValueError(f"the token of {name or role!r} is too short (at least 8 characters)")
            self._tokens.append((token.encode(), Principal(role, name or role)))
        self.admin_token = admin_token

    def identify(self, header: str | None) -> Principal | None:
        if not header or not header.startswith("Bearer "):
            return None
        given = header_bytes(header[7:].strip())  # None: bytes that are not UTF-8
        if not given:
            return None
        found = None
        for token, principal in self._tokens:  # compare with every token: constant time per token
            if hmac.compare_digest(token, given):
                found = principal
        return found

    @staticmethod
    def allows(principal: Principal, *roles: str) -> bool:
        return principal.role == "admin" or principal.role in roles
