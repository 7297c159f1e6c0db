"""The configuration's models: pydantic validates the file and the environment into a frozen ``Config``
(``bot.config.load_config``; the models are offered as ``bot.config``'s names).

A start whose file and environment give only plain root values (``bot.config``, ``PLAIN``) does not
import this module before the server listens: it reads the defaults that ``python -m bot.config_models``
writes into ``bot/config_defaults.py`` (issue 14: startup).

No ``from __future__ import annotations`` here: pydantic would evaluate each field's annotation
from its string when it builds the models, ~7 M instructions (issue 14: startup).
"""

import ipaddress
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema


class _Frozen(BaseModel):
    #: ``defer_build``: a model's validator is built when it first validates (a section the file or
    #: environment gives; ``_Deferred``), not when the class is defined (issue 14: startup).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class _Deferred:
    """``Annotated[SomeConfig, DEFERRED]``: ``Config`` validates the section with the section's own
    model, built when a section is first given, so a start whose file and environment give only a few
    sections builds the validators of those only (the sections' schemas were most of ``Config``'s,
    issue 14: startup). Mistakes inside a section keep their full location (``smtp.port``): the
    section's ``ValidationError`` is merged into ``Config``'s, every problem reported at once."""

    def __get_pydantic_core_schema__(self, source: type[BaseModel], handler: GetCoreSchemaHandler) -> CoreSchema:
        def validate(value: object) -> BaseModel:
            return value if isinstance(value, source) else source.model_validate(value)

        def json_schema(_: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
            return handler(source.__pydantic_core_schema__)  # Config.model_json_schema(): the section inline

        return core_schema.no_info_plain_validator_function(validate, metadata={"pydantic_js_functions": [json_schema]})


DEFERRED = _Deferred()


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


class CrmUserConfig(_Frozen):
    """A person of the embedded CRM: responsible for leads, the sender of e-mails."""

    id: str
    name: str = ""
    email: str | None = None
    teams: list[str] = []


class CrmTeamConfig(_Frozen):
    id: str
    name: str = ""


class EmbeddedCrmConfig(_Frozen):
    """``[embedded_crm]``: pipelines (name -> ordered stages; none: one default pipeline), users, teams."""

    pipelines: dict[str, list[str]] = {}
    users: list[CrmUserConfig] = []
    teams: list[CrmTeamConfig] = []


class SmtpConfig(_Frozen):
    """``[smtp]``: where ``send_email`` sends. Without ``host`` the action is not configured."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    host: str | None = None
    port: int = 587
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field("salesbot@localhost", alias="from")
    starttls: bool = True  # upgrade with STARTTLS (required when true); false: plain or use_tls
    use_tls: bool = False  # implicit TLS (port 465)
    timeout: float = 30.0


class EmailTemplateConfig(_Frozen):
    subject: str
    text: str | None = None
    html: str | None = None


class ActionsConfig(_Frozen):
    """``[actions]``: outward actions of flows (send_webhook, send_email, create_form)."""

    allow_private_webhooks: bool = False
    webhook_allowlist: list[str] = []  # hosts or networks (CIDR) reachable even when private
    webhook_max_timeout: float = 25.0  # caps a step's timeout (the conversation waits for it)
    webhook_max_response: int = 262_144  # bytes of a response kept as the saved value
    email_templates_dir: Path | None = None  # <name>.txt and/or <name>.html, first line "Subject: …"
    email_templates: dict[str, EmailTemplateConfig] = {}
    secret: SecretStr | None = None  # signs unsubscribe and tracking links; absent: generated once, kept in the store
    email_tracking: bool = True  # send_email's HTML: an open pixel and click redirects (docs/crm.md)
    form_ttl_days: int = 30
    order_link_days: int = Field(30, ge=1, le=365)  # quick-order links' default lifetime (docs/customers.md)


class MetaConversionsConfig(_Frozen):
    """``[meta_conversions]``: the pixel (dataset) and token of Meta's Conversions API."""

    pixel_id: str | None = None
    access_token: SecretStr | None = None
    graph_base: str = "https://graph.facebook.com/v21.0"
    action_source: str = "chat"
    default_currency: str = "USD"
    test_event_code: str | None = None


class RateConfig(_Frozen):
    """A token bucket: ``per_minute`` sustained, up to ``burst`` at once."""

    per_minute: float = Field(gt=0, allow_inf_nan=False)
    burst: int = Field(ge=1)


def _rate(per_minute: float, burst: int) -> RateConfig:
    """A default bucket, built as validation would leave it (``per_minute`` a float) without
    building ``RateConfig``'s validator (``model_construct``: defaults are valid by construction)."""
    return RateConfig.model_construct(per_minute=float(per_minute), burst=burst)


class LimitsConfig(_Frozen):
    """``[limits]``: per-client limits on what anyone may send without a token (429 with
    ``Retry-After`` beyond them). Generous by default: a person never meets them, a script does.
    Counted per process (each web process allows this much). See docs/security.md."""

    enabled: bool = True
    #: Proxies (addresses or CIDR networks) whose ``X-Forwarded-For`` names the client. Loopback
    #: by default: a reverse proxy on the same host (the usual TLS setup) is believed.
    trusted_proxies: list[str] = ["127.0.0.0/8", "::1"]
    new_sessions_per_ip: RateConfig = _rate(30, 20)
    messages_per_session: RateConfig = _rate(30, 15)
    messages_per_ip: RateConfig = _rate(300, 60)
    ws_connects_per_ip: RateConfig = _rate(60, 20)
    public_per_ip: RateConfig = _rate(600, 120)  # pages, long polls, forms, …
    auth_failures_per_ip: RateConfig = _rate(20, 10)  # 401/403s: token guessing
    events_per_ip: RateConfig = _rate(3000, 500)  # POST /api/events: a sender's flood
    order_views_per_link: RateConfig = _rate(30, 20)  # GET /order/<token>, per link
    order_submits_per_ip: RateConfig = _rate(10, 5)  # POST /order/<token>, per client
    order_submits_per_link: RateConfig = _rate(6, 3)  # POST /order/<token>, per link
    orders_per_ip: RateConfig = _rate(600, 120)  # POST, PATCH /api/orders: a script's flood

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


#: The CRM backends of this package; others come from ``CRM_ENTRY_POINT_GROUP`` (docs/crm.md).
BUILTIN_CRM_BACKENDS = ("embedded", "kommo", "webhook")
#: The entry point group another package registers a ``[crm] backend`` in (``crm_bridge/factory.py``).
CRM_ENTRY_POINT_GROUP = "salesbot.crm_backends"


class CrmConfig(_Frozen):
    """``[crm]``: which CRM the flows' actions drive (see docs/crm.md).

    ``embedded`` (default): the CRM in the server's Redis (pipelines in ``[embedded_crm]``).
    ``kommo``: ``base_url`` ``https://<subdomain>.kommo.com`` and a long-lived ``token``;
    ``secret`` is the integration's client secret (verifies widget_request JWTs) and
    ``webhook_secret`` the ``?secret=`` of ``/webhooks/kommo/<account>``.
    ``webhook``: every operation POSTed to ``base_url``, signed with ``secret``.
    Any other name: a backend another package registers in the ``salesbot.crm_backends`` entry
    point group (``crm_bridge/factory.py``), which reads ``base_url``, ``token``, ``secret`` and
    its own free-form ``settings``.
    """

    backend: str = Field("embedded", pattern=r"^[A-Za-z0-9_.-]+$")
    settings: dict[str, Any] = Field(default_factory=dict, repr=False)  # a plugged-in backend's own (may hold secrets)
    base_url: str | None = None
    token: SecretStr | None = None
    secret: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    account: str | None = None  # kommo: the {account} of /webhooks/kommo/{account} (default: the subdomain)
    identity_field: str = "Salesbot ID"  # kommo: contact field holding channel identities ("" = phone/e-mail only)
    rate_limit: int = Field(7, ge=1)  # kommo: requests per second for the account, every process together
    timeout: float = Field(10.0, gt=0)
    retry_base: float = Field(1.0, gt=0)  # outbox backoff: base * 2**(attempt-1) seconds …
    retry_max: float = Field(300.0, gt=0)  # … capped here, never below the CRM's retry_after
    max_attempts: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> "CrmConfig":
        if self.backend == "kommo" and not (self.base_url and self.token):
            raise ValueError("the kommo backend needs base_url and token")
        if self.backend == "webhook" and not (self.base_url and self.secret):
            raise ValueError("the webhook backend needs base_url and secret")
        return self

    @field_validator("backend")
    @classmethod
    def _known(cls, backend: str) -> str:
        if backend not in BUILTIN_CRM_BACKENDS:
            from importlib.metadata import entry_points  # only for a backend another package registers

            plugged = {ep.name for ep in entry_points(group=CRM_ENTRY_POINT_GROUP)}
            if backend not in plugged:
                known = ", ".join([*BUILTIN_CRM_BACKENDS, *sorted(plugged)])
                raise ValueError(f"no CRM backend named {backend!r} (known: {known}; another package "
                                 f"adds one in the {CRM_ENTRY_POINT_GROUP!r} entry point group)")
        return backend


class EventsConfig(_Frozen):
    """``[events]``: ``POST /api/events``. With ``secret`` a system without a token may send
    events signed ``X-Salesbot-Signature: sha256=<hex HMAC-SHA256 of the body>`` (docs/server.md)."""

    secret: SecretStr | None = None


class ShopConfig(_Frozen):
    """``[shop]``: the catalogue and orders (docs/customers.md). ``default_currency``: the prices
    shown to a customer whose card names no currency (None: the first currency a product has)."""

    default_currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")


class AutomationsConfig(_Frozen):
    """``[automations]``: ``apply_rate``: the most leads/s an ``apply_to_existing`` job visits
    (0: no ceiling; it gives way to conversations all the same, bot/runtime/pacing.py)."""

    apply_rate: float = Field(0.0, ge=0)


class Config(_Frozen):
    """Everything the server and worker need, resolved. A model validator here must hold for the
    plain values ``bot.config.load_config`` takes without this model too (``PLAIN``)."""

    redis_url: str | None = None
    #: ``redis_url`` names one node of a Redis Cluster: talk the Cluster protocol (docs/deployment.md).
    redis_cluster: bool = False
    data_dir: Path = Path(".salesbot")
    #: The embedded Redis's maxmemory ("512MiB", bytes; 0: none). None: a quarter of the RAM.
    redis_maxmemory: ByteSize | None = None
    #: Above this share of Redis's maxmemory, new conversations are refused (503).
    memory_high_water: float = Field(0.9, gt=0, le=1)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)  # 0: any free port (tests); bot.config.PORTS
    public_url: str | None = None
    admin_token: SecretStr | None = None
    tokens: list[Annotated[TokenConfig, DEFERRED]] = []
    flows_dir: Path = Path("flows")
    automations_dir: Path = Path("automations")  # *.json automation documents uploaded at start
    accounts: dict[str, Annotated[AccountConfig, DEFERRED]] = {}
    timer_shards: int = Field(16, ge=1)
    timer_poll_interval: float = Field(0.25, gt=0, allow_inf_nan=False)
    #: The most a due timer waits to start with others when many fall due (bot/runtime/timerloop.py).
    timer_coalesce: float = Field(0.1, ge=0, le=1, allow_inf_nan=False)
    #: A worker silent (no heartbeat, sent every third of it) this long is dead: another takes over
    #: its timer claims. At least 1 s: an event loop busy for a moment must not look dead.
    timer_worker_dead_after: float = Field(3.0, ge=1, allow_inf_nan=False)
    #: A timer claim not acknowledged this long after it fell due (a failed delivery) is offered again.
    timer_claim_ttl: float = Field(30.0, ge=1, allow_inf_nan=False)
    lock_ttl: float = Field(30.0, gt=0, allow_inf_nan=False)
    conversation_ttl_days: int = Field(90, ge=1)
    #: Entries a transcript keeps (the oldest go): at least 1, the save's trim keeps the newest so many.
    transcript_max: int = Field(1000, ge=1)
    outbox_max_attempts: int = Field(8, ge=1)
    park_after: int = Field(5, ge=1)  # failed batches in a row before a conversation is parked
    redis_max_connections: int = Field(64, ge=2)  # redis-py pool; more concurrent callers wait …
    redis_pool_timeout: float = Field(10.0, gt=0, allow_inf_nan=False)  # … this long for a free connection, then fail
    shutdown_grace: float = Field(10.0, ge=0, allow_inf_nan=False)
    log_level: str = "INFO"
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"  # auto: uvloop when installed
    embedded_crm: Annotated[EmbeddedCrmConfig, DEFERRED] = EmbeddedCrmConfig.model_construct()
    smtp: Annotated[SmtpConfig, DEFERRED] = SmtpConfig.model_construct()
    actions: Annotated[ActionsConfig, DEFERRED] = ActionsConfig.model_construct()
    meta_conversions: Annotated[MetaConversionsConfig, DEFERRED] = MetaConversionsConfig.model_construct()
    crm: Annotated[CrmConfig, DEFERRED] = CrmConfig.model_construct()
    limits: Annotated[LimitsConfig, DEFERRED] = LimitsConfig.model_construct()
    events: Annotated[EventsConfig, DEFERRED] = EventsConfig.model_construct()
    automations: Annotated[AutomationsConfig, DEFERRED] = AutomationsConfig.model_construct()
    shop: Annotated[ShopConfig, DEFERRED] = ShopConfig.model_construct()
    #: Count the funnel of bot runs (docs/analytics.md); false: no counting on the save path.
    analytics: bool = True

    @model_validator(mode="after")
    def _cluster_needs_url(self) -> "Config":
        if self.redis_cluster and not self.redis_url:  # the embedded Redis is one node
            raise ValueError("redis_cluster needs redis_url (any node of the cluster)")
        return self

    def account(self, name: str) -> AccountConfig | None:
        return self.accounts.get(name)


def defaults_source() -> str:
    """``bot/config_defaults.py``: what validating no values gives, as plain Python values, and which
    of them are models (their dicts stand for a section)."""
    models: list[tuple[str, ...]] = []

    def plain(value: object, path: tuple[str, ...], indent: str) -> str:
        if isinstance(value, BaseModel):
            models.append(path)
            inner = indent + "    "
            fields = "".join(f"{inner}{name!r}: {plain(getattr(value, name), (*path, name), inner)},\n"
                             for name in type(value).model_fields)
            return "{\n" + fields + indent + "}"
        if isinstance(value, Path):
            return f"Path({str(value)!r})"
        items = [*value.values()] if isinstance(value, dict) else value if isinstance(value, list) else [value]
        if all(item is None or isinstance(item, bool | int | float | str) for item in items):
            return repr(value)  # a scalar, or a flat list or dict (of field names or strs) of them
        raise TypeError(f"{'.'.join(path)}: no plain form for {value!r}")

    values = plain(Config.model_validate({}), (), "")
    return (
        '"""What ``Config`` holds when nothing is given: written by ``python -m bot.config_models`` from the\n'
        "models (tests/test_config.py checks it is up to date), read by ``bot.config.load_config`` for a\n"
        'start that gives only plain values, without importing pydantic (issue 14: startup)."""\n\n'
        "from pathlib import Path\nfrom typing import Any\n\n"
        f"DEFAULTS: dict[str, Any] = {values}\n"
        "#: The paths in ``DEFAULTS`` of the values that are models (sections and their rates).\n"
        "MODELS = (\n" + "".join(f"    {path!r},\n" for path in models[1:]) + ")\n")


if __name__ == "__main__":
    sys.stdout.write(defaults_source())
