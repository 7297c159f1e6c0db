"""The JWT of a Kommo Salesbot ``widget_request``, verified; apart because it needs no API call."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from bot.errors import CrmError

if TYPE_CHECKING:
    from jwt.types import Options


class InvalidWidgetToken(CrmError):
    """The JWT of a Kommo ``widget_request`` is missing, forged, expired or for someone else."""


def verify_widget_jwt(token: str, secret: str, *, audience: str | None = None,
                      leeway: float = 5.0) -> dict[str, Any]:
    """The claims of a ``widget_request`` token, verified as Kommo signs it: HS512 with the
    integration's client secret, ``exp`` required (and ``aud`` when ``audience`` is given).

    Claims include ``account_id``, ``subdomain``, ``entity_id``, ``entity_type`` (2 leads,
    12 customers), ``bot_type`` and ``client_uuid``. Raises ``InvalidWidgetToken``.
    """
    if not token or not secret:
        raise InvalidWidgetToken("no token or no client secret")
    import jwt  # on first use: off the start path

    options: Options = {"require": ["exp"], "verify_aud": audience is not None}
    short_key = getattr(jwt, "InsecureKeyLengthWarning", None)  # only recent PyJWT warns about short keys
    try:
        with warnings.catch_warnings():
            if short_key is not None:  # the key is Kommo's client secret: not ours to lengthen
                warnings.simplefilter("ignore", short_key)
            claims = jwt.decode(token, secret, algorithms=["HS512"], audience=audience, leeway=leeway,
                                options=options)
    except jwt.PyJWTError as exc:
        raise InvalidWidgetToken(f"widget token rejected: {exc}") from None
    return dict(claims)
