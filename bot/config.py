"""Configuration: one TOML file plus ``SALESBOT_*`` environment variables, read once at the edge.

``load_config`` returns a frozen ``Config``; nothing else in the project reads the environment.
Secrets (tokens, API keys) are ``SecretStr`` and never logged or returned by the API.

The models (``Config``, ``SmtpConfig``, …) live in ``bot.config_models`` and load with their first
use here (PEP 562): importing pydantic and defining them is ~390 M instructions, the largest part of
a start. A start whose file and environment give only plain values (``PLAIN``: the Redis URL, the
address, the folders, …; no section, no secret) gets a ``ConfigView`` of the defaults instead,
which reads the same and turns into the validated ``Config`` for anything but reading a value
(``model_dump``, ``==``, …): such a start imports pydantic after it listens (issue 14: startup).
Anything else, or a value not in the one form ``PLAIN`` takes, is validated by the models, which
report every mistake at once with its location.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsIndex

from .config_defaults import DEFAULTS, MODELS
from .errors import SalesbotError
from .lazy import exports

if TYPE_CHECKING:
    from .config_models import (
        CRM_ENTRY_POINT_GROUP,
        AccountConfig,
        ActionsConfig,
        AutomationsConfig,
        Config,
        CrmConfig,
        CrmTeamConfig,
        CrmUserConfig,
        EmailTemplateConfig,
        EmbeddedCrmConfig,
        EventsConfig,
        LimitsConfig,
        MetaConversionsConfig,
        RateConfig,
        ShopConfig,
        SmtpConfig,
        TokenConfig,
    )

__all__ = [
    "CRM_ENTRY_POINT_GROUP", "AccountConfig", "ActionsConfig", "AutomationsConfig", "Config", "ConfigError",
    "ConfigView", "CrmConfig",
    "CrmTeamConfig", "CrmUserConfig", "EmailTemplateConfig", "EmbeddedCrmConfig", "EventsConfig", "LimitsConfig",
    "MetaConversionsConfig", "RateConfig", "ShopConfig", "SmtpConfig", "TokenConfig", "load_config", "unknown_env",
]
#: ``..config_models``: relative to this module, ``bot.config_models``.
__getattr__ = exports(__name__, {name: ".config_models" for name in __all__
                                 if name.endswith("Config") or name == "CRM_ENTRY_POINT_GROUP"})


class ConfigError(SalesbotError):
    """The configuration file or environment could not be read."""


#: Root values the plain start takes without pydantic, each in the one form whose validation is
#: known: a str (exactly ``str``) kept as it is (``str`` fields), digits read as an ``int``, a non-empty str as a
#: ``Path``. tests/test_config.py checks that these fields are of that type with no constraint (but
#: ``port``'s range, ``PORTS``) and that the values read as the validated ``Config``'s; any other key
#: or form goes to the models.
PLAIN: dict[str, type] = {
    "redis_url": str, "host": str, "public_url": str, "log_level": str, "port": int,
    "data_dir": Path, "flows_dir": Path, "automations_dir": Path,
}
_DIGITS = re.compile(r"0|[1-9][0-9]{0,4}")
#: The ``int`` values the plain start takes (``port``'s range in ``Config``); any other: the models.
PORTS = range(65536)


def _plain(kind: type, value: object) -> object:
    """``value`` as validation would leave it in a ``kind`` field, or ``_NOT_PLAIN``."""
    if type(value) is int:  # exactly: a bool is validated by the models
        return value if kind is int and value in PORTS else _NOT_PLAIN
    if not isinstance(value, str) or type(value) is not str:  # a subclass: validation gives a plain str
        return _NOT_PLAIN
    if kind is str:
        return value
    if kind is int:
        return int(value) if _DIGITS.fullmatch(value) and int(value) in PORTS else _NOT_PLAIN
    return Path(value) if kind is Path and value else _NOT_PLAIN


_NOT_PLAIN = object()


class ConfigView:
    """What a ``Config`` (or one of its sections) validated from plain values holds, read as
    attributes without pydantic. Anything else (``model_dump``, ``model_copy``, ``==``, ``repr``, ``str``,
    setting a value: refused, frozen) is asked of the ``Config`` validated from the same values,
    made at the first such use."""

    def __init__(self, values: Mapping[str, Any], validated: Callable[[], Any]) -> None:
        vars(self).update(values)
        vars(self)["_validated"] = validated

    def account(self, name: str) -> Any:  # as Config.account: each live chat request asks
        return self.accounts.get(name)

    def _model(self) -> Any:
        own = vars(self)
        if "_made" not in own:
            own["_made"] = own["_validated"]()
        return own["_made"]

    def __getattr__(self, name: str) -> Any:  # not a value: the model's method or attribute
        return getattr(self._model(), name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self._model(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._model(), name)

    def __eq__(self, other: object) -> bool:
        same: bool = self._model() == (other._model() if isinstance(other, ConfigView) else other)
        return same

    def __hash__(self) -> int:
        return hash(self._model())

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Callable[[Any], Any], tuple[Any]]:
        return _itself, (self._model(),)  # a copy or a pickle is the Config's

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self._model())

    def __repr__(self) -> str:
        return repr(self._model())

    def __str__(self) -> str:  # pydantic's str is not its repr
        return str(self._model())


def _itself(value: Any) -> Any:
    return value


def _view(values: dict[str, Any], data: dict[str, Any]) -> Config:
    """The defaults with ``values`` over them, as a ``ConfigView`` whose ``Config`` (and each
    section's model) is the one validating ``data`` gives, made once."""
    made: list[Any] = []

    def config() -> Any:
        if not made:
            made.append(_validated(data))
        return made[0]

    def view(fields: Mapping[str, Any], path: tuple[str, ...]) -> ConfigView:
        return ConfigView({name: view(value, (*path, name)) if (*path, name) in MODELS else value
                           for name, value in fields.items()}, lambda: functools.reduce(getattr, path, config()))

    return view({**copy.deepcopy(DEFAULTS), **values}, ())  # type: ignore[return-value]  # reads as a Config


_ENV_KEYS = {
    "SALESBOT_REDIS_URL": "redis_url",
    "SALESBOT_REDIS_CLUSTER": "redis_cluster",
    "SALESBOT_DATA_DIR": "data_dir",
    "SALESBOT_REDIS_MAXMEMORY": "redis_maxmemory",
    "SALESBOT_HOST": "host",
    "SALESBOT_PORT": "port",
    "SALESBOT_PUBLIC_URL": "public_url",
    "SALESBOT_ADMIN_TOKEN": "admin_token",
    "SALESBOT_FLOWS_DIR": "flows_dir",
    "SALESBOT_AUTOMATIONS_DIR": "automations_dir",
    "SALESBOT_TIMER_SHARDS": "timer_shards",
    "SALESBOT_TIMER_POLL_INTERVAL": "timer_poll_interval",
    "SALESBOT_TIMER_COALESCE": "timer_coalesce",
    "SALESBOT_TIMER_WORKER_DEAD_AFTER": "timer_worker_dead_after",
    "SALESBOT_TIMER_CLAIM_TTL": "timer_claim_ttl",
    "SALESBOT_LOCK_TTL": "lock_ttl",
    "SALESBOT_LOG_LEVEL": "log_level",
    "SALESBOT_EVENT_LOOP": "event_loop",
    "SALESBOT_ANALYTICS": "analytics",
}
#: CRM secrets may come from the environment instead of the file (``[crm]`` keys).
_CRM_ENV_KEYS = {"SALESBOT_CRM_TOKEN": "token", "SALESBOT_CRM_SECRET": "secret",
                 "SALESBOT_CRM_WEBHOOK_SECRET": "webhook_secret"}


#: ``SALESBOT_*`` variables that are not settings but the test suite's and the benches' own.
_NOT_SETTINGS = ("SALESBOT_TEST_", "SALESBOT_FUZZ_", "SALESBOT_REQUIRE_ALL_TIERS")


def unknown_env(env: Mapping[str, str] | None = None) -> list[str]:
    """A line for each ``SALESBOT_*`` variable that names no setting (``..._POLL_INTERVALL``):
    read nowhere, so a typo would silently leave the default in force."""
    env = os.environ if env is None else env
    known = [*_ENV_KEYS, *_CRM_ENV_KEYS]
    out = []
    for name in sorted(env):
        if name.startswith("SALESBOT_") and name not in known and not name.startswith(_NOT_SETTINGS):
            import difflib  # only for a name that is wrong

            close = difflib.get_close_matches(name, known, n=1)
            out.append(f"{name} is not a setting, ignored" + (f" (did you mean {close[0]}?)" if close else ""))
    return out


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """File (``path`` or ``./salesbot.toml`` when present), then environment, then overrides."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is None and Path("salesbot.toml").is_file():
        path = "salesbot.toml"
    if path is not None:
        import tomllib  # with a file only

        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        server = data.pop("server", {})
        if not isinstance(server, dict):
            raise ConfigError(f"{path}: server: must be a table ([server]), not {type(server).__name__}")
        data = {**server, **data}
    for var, key in _ENV_KEYS.items():
        if env.get(var):
            data[key] = env[var]
    for var, key in _CRM_ENV_KEYS.items():
        if env.get(var):
            crm = data.get("crm") or {}  # not a table: left for the models to report
            data["crm"] = {**crm, key: env[var]} if isinstance(crm, dict) else crm
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    plain = {key: _plain(PLAIN[key], value) if key in PLAIN else _NOT_PLAIN for key, value in data.items()}
    if any(value is _NOT_PLAIN for value in plain.values()):
        return _validated(data)
    return _view(plain, data)


def _validated(data: dict[str, Any]) -> Config:
    """``data`` (the file's, the environment's and the command line's values) as a ``Config``, or a
    ``ConfigError`` that lists every mistake with its location."""
    from pydantic import ValidationError

    from .config_models import Config

    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
