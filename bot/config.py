"""Configuration: one TOML file plus ``SALESBOT_*`` environment variables, read once at the edge.

``load_config`` returns a frozen ``Config``; nothing else in the project reads the environment.
Secrets (tokens, API keys) are ``SecretStr`` and never logged or returned by the API.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import SalesbotError


class ConfigError(SalesbotError):
    """The configuration file or environment could not be read."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AccountConfig(_Frozen):
    """One channel account: which channel, its credentials, and the bot that greets."""

    channel: str
    greeting_bot: str | None = None
    api_base_url: str | None = None
    credentials: dict[str, SecretStr] = {}
    settings: dict[str, Any] = {}


class TokenConfig(_Frozen):
    token: SecretStr
    role: Literal["admin", "operator", "support"]
    name: str = ""


class Config(_Frozen):
    """Everything the server and worker need, resolved."""

    redis_url: str | None = None
    data_dir: Path = Path(".salesbot")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    admin_token: SecretStr | None = None
    tokens: list[TokenConfig] = []
    flows_dir: Path = Path("flows")
    accounts: dict[str, AccountConfig] = Field(default_factory=dict)
    timer_shards: int = 16
    timer_poll_interval: float = 0.25
    lock_ttl: float = 30.0
    conversation_ttl_days: int = 90
    transcript_max: int = 1000
    outbox_max_attempts: int = 8
    shutdown_grace: float = 10.0
    log_level: str = "INFO"

    def account(self, name: str) -> AccountConfig | None:
        return self.accounts.get(name)


_ENV_KEYS = {
    "SALESBOT_REDIS_URL": "redis_url",
    "SALESBOT_DATA_DIR": "data_dir",
    "SALESBOT_HOST": "host",
    "SALESBOT_PORT": "port",
    "SALESBOT_PUBLIC_URL": "public_url",
    "SALESBOT_ADMIN_TOKEN": "admin_token",
    "SALESBOT_FLOWS_DIR": "flows_dir",
    "SALESBOT_TIMER_SHARDS": "timer_shards",
    "SALESBOT_TIMER_POLL_INTERVAL": "timer_poll_interval",
    "SALESBOT_LOCK_TTL": "lock_ttl",
    "SALESBOT_LOG_LEVEL": "log_level",
}


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
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        data = {**data.pop("server", {}), **data}
    for var, key in _ENV_KEYS.items():
        if env.get(var):
            data[key] = env[var]
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
