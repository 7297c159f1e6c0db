"""The CRM backend a server uses, built from its configuration (``[crm]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit

from redis.asyncio import Redis

from bot.store.ratelimit import RedisLimiter

from .interface import CrmBackend
from .outbox import CrmOutbox, FailedHook
from .redis_crm import RecordReader, RedisCrm
from .webhook_backend import WebhookCrm

if TYPE_CHECKING:
    from pydantic import SecretStr

    from bot.config import Config, CrmConfig


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _cooldown(crm: CrmConfig) -> float:
    """How long an unreachable CRM is not tried again (the retry schedule's scale, at most 5 s)."""
    return min(5.0, crm.retry_max, max(crm.retry_base, 0.1) * 5)


def build_backend(config: Config, redis: Redis, *, reader: RecordReader | None = None) -> CrmBackend:
    """``embedded`` (default): ``RedisCrm`` with ``[embedded_crm]`` pipelines; ``kommo``; ``webhook``;
    any other name: a backend of the ``salesbot.crm_backends`` entry point group (``plugged_backend``).

    ``reader``: a faster client for the embedded CRM's per-turn reads (see ``RedisCrm``).
    """
    crm = config.crm
    if crm.backend == "kommo":
        from .kommo import KommoCrm  # Kommo's modules: only a server on Kommo loads them (issue 14: startup)

        assert crm.base_url is not None
        return KommoCrm(crm.base_url, _secret(crm.token), rate=crm.rate_limit, timeout=crm.timeout,
                        identity_field=crm.identity_field or None, cooldown=_cooldown(crm),
                        limiter=RedisLimiter(redis))  # the account's limit, once for every process
    if crm.backend == "webhook":
        assert crm.base_url is not None
        return WebhookCrm(crm.base_url, _secret(crm.secret), timeout=crm.timeout, cooldown=_cooldown(crm))
    if crm.backend != "embedded":
        return plugged_backend(config, redis)
    embedded = getattr(config, "embedded_crm", None)
    pipelines = dict(getattr(embedded, "pipelines", None) or {}) or None
    return RedisCrm(redis, pipelines=pipelines, reader=reader)


#: What ``isinstance(backend, CrmBackend)`` looks for, named in the error when it fails.
_MEMBERS = ("name", "identify", "snapshot", "execute")


def plugged_backend(config: Config, redis: Redis) -> CrmBackend:
    """The backend another package registers as ``[crm] backend`` in the ``salesbot.crm_backends``
    entry point group: ``name = "package.module:factory"``, called as ``factory(config=CrmConfig,
    redis=Redis)``. A ``ConfigError`` names the entry point and its distribution when it cannot
    be loaded, or what the object it returned lacks."""
    from importlib.metadata import entry_points

    from bot.config import CRM_ENTRY_POINT_GROUP, ConfigError

    name = config.crm.backend
    found = [ep for ep in entry_points(group=CRM_ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise ConfigError(f"[crm] backend {name!r}: no such backend (none in {CRM_ENTRY_POINT_GROUP!r})")
    ep = found[0]
    dist = ep.dist.name if ep.dist is not None else "an unnamed distribution"
    where = f"[crm] backend {name!r} (entry point of {dist}: {ep.value!r})"
    try:
        factory = ep.load()
    except Exception as exc:  # an import that fails however it fails: named, not a bare traceback
        raise ConfigError(f"{where}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not callable(factory):
        raise ConfigError(f"{where}: names a {type(factory).__name__}, not a factory")
    try:
        backend = factory(config=config.crm, redis=redis)
    except ConfigError:
        raise
    except Exception as exc:  # a wrong signature, settings it refuses
        raise ConfigError(f"{where}: the factory failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(backend, CrmBackend):
        missing = [m for m in _MEMBERS if not hasattr(backend, m)]
        raise ConfigError(f"{where}: the factory returned a {type(backend).__name__}, not a CrmBackend "
                          f"(missing: {', '.join(missing)})")
    return backend


def build_outbox(config: Config, redis: Redis, crm: CrmBackend, *,
                 on_failed: FailedHook | None = None) -> CrmOutbox:
    c = config.crm
    return CrmOutbox(redis, crm, on_failed=on_failed, max_attempts=c.max_attempts,
                     base_delay=c.retry_base, max_delay=c.retry_max)


def kommo_account(crm: CrmConfig) -> str | None:
    """The ``{account}`` of ``/webhooks/kommo/{account}``: ``account``, else the subdomain."""
    if crm.account:
        return crm.account
    host = urlsplit(crm.base_url or "").hostname or ""
    return host.split(".")[0] if host.count(".") >= 2 else None


@runtime_checkable
class _Closable(Protocol):
    async def aclose(self) -> None: ...


async def close_backend(crm: CrmBackend) -> None:
    """Close what a backend holds open (the HTTP session of Kommo's and the webhook's)."""
    if isinstance(crm, _Closable):
        await crm.aclose()
