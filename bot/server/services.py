"""The shared services of a salesbot process, built once from the config and closed once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from crm_bridge import CrmBackend, CrmRef, RedisCrm, is_kommo
from crm_bridge.directory import CrmDirectory
from crm_bridge.factory import build_backend, build_outbox, close_backend
from crm_bridge.outbox import CrmOutbox
from crm_bridge.redis_crm import move_old_layout

from ..builder.loader import read_document
from ..engine import events as ev
from ..engine.process import PROCESS_CHANNEL
from ..errors import FlowInvalid, FlowLoadError
from ..outward.actions import OutwardActions, signing_secret
from ..outward.lists import ContactLists
from ..runtime.applyjobs import ApplyJobs
from ..runtime.automations import AutomationEffects, EngineReactor
from ..runtime.chatevents import ChatEvents
from ..runtime.driver import Driver
from ..runtime.interest import FlowInterest
from ..runtime.leads import LeadService
from ..runtime.metrics import Metrics
from ..runtime.orderlinks import OrderLinks
from ..runtime.outbound import EmbeddedBook, OutboundService
from ..runtime.pacing import Pacer
from ..runtime.process_actions import ProcessActions
from ..runtime.processes import Processes
from ..runtime.processjobs import ProcessJobs
from ..runtime.requests import ServerRequests
from ..runtime.service import LEAD_CONVERSATIONS_KEY, ConversationService
from ..runtime.shop import Shop
from ..store.analytics import AnalyticsCounts
from ..store.bots import BotRegistry
from ..store.buckets import move_unbucketed
from ..store.clusterclient import ClusterRespClient, cluster_client, is_cluster
from ..store.conversations import ConversationStore
from ..store.embedded import EmbeddedRedis, default_maxmemory
from ..store.layout import (
    drop_derived_sets,
    move_activity_index,
    move_filter_sets,
    move_partitions,
    move_timer_buckets,
    moving,
    rename_old_keys,
)
from ..store.livehub import LiveHub
from ..store.memoryguard import MemoryGuard
from ..store.outbox import AccountLimits, ChannelSender, Outbox
from ..store.ratelimit import RedisLimiter, SharesLimits
from ..store.resp import RespClient
from ..store.timers import TimerWheel
from .auth import Auth
from .automation_docs import AutomationDocuments, crm_pipelines, load_automation_dir

if TYPE_CHECKING:
    from crm_bridge.kommo import KommoCrm, KommoEcho
    from crm_bridge.kommo.account import StageOrder

    from ..automations.events import LeadEvent
    from ..channels.base import ChannelAdapter, Poller
    from ..channels.registry import ChannelRegistry
    from ..config import Config
    from ..runtime.outbound_kommo import KommoBook

log = logging.getLogger("salesbot.server")

#: Channels whose messages reach the customer through the transcript itself.
TRANSCRIPT_CHANNELS = frozenset({"livechat"})
#: Worker threads for the turns of flows with slow work (see bot.runtime.driver).
SLOW_WORK_THREADS = 4


class _Router:
    def delivers_via_transcript(self, channel: str) -> bool:
        # a process conversation has no chat: its message steps are written to its transcript only
        return channel in TRANSCRIPT_CHANNELS or channel == PROCESS_CHANNEL


@dataclass
class Services:
    config: Config
    redis: Redis
    store: ConversationStore
    timers: TimerWheel
    bots: BotRegistry
    crm: CrmBackend
    metrics: Metrics
    conversations: ConversationService
    hub: LiveHub
    auth: Auth
    outbox: Outbox
    senders: dict[str, ChannelSender]  # account -> adapter (the outbox sends through it)
    embedded: EmbeddedRedis | None = None
    loaded_flows: list[str] = field(default_factory=list)
    loaded_automations: list[str] = field(default_factory=list)  # "<id> v<version>" of automations_dir's
    adapters: dict[str, ChannelAdapter] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None
    directory: CrmDirectory | None = None  # the embedded CRM's people-facing side (/api/crm)
    outward: OutwardActions | None = None  # send_webhook, send_email, create_form, meta_conversion
    crm_outbox: CrmOutbox | None = None  # CRM commands waiting out a temporary failure (worker retries)
    memory: MemoryGuard | None = None  # refuses new conversations near Redis's maxmemory
    outbound: OutboundService | None = None  # the bot writes first (POST /api/outbound, recipients)
    leads: LeadService = field(init=False)  # the lead queues (events, automations); set by _open
    jobs: ApplyJobs | None = field(init=False)  # apply_to_existing jobs (bot/runtime/applyjobs.py); set by _open
    chat: ChatEvents | None = None  # customer messages as lead events (bot/runtime/chatevents.py)
    processes: Processes | None = None  # flows started for contacts (bot/runtime/processes.py)
    process_jobs: ProcessJobs | None = None  # POST /api/processes/{id}/contacts batches
    order_links: OrderLinks | None = None  # quick-order links (bot/runtime/orderlinks.py, /order/<token>)
    shop: Shop = field(init=False)  # the catalogue and orders (bot/runtime/shop.py); set by _open

    def greeting_bot(self, account: str) -> str | None:
        acc = self.config.account(account)
        if acc is not None:
            return acc.greeting_bot
        return "demo" if account == "demo" else None

    def pollers(self) -> list[Poller]:
        """A poller for each account whose adapter polls and whose ``settings.mode`` is "polling"
        (Telegram's getUpdates instead of a webhook): the worker runs them."""
        if not self.adapters:  # no channel account: the channels' modules stay unloaded
            return []
        from ..channels.base import PollingAdapter  # loaded already by the adapters' modules

        out = []
        for name, adapter in self.adapters.items():
            acc = self.config.account(name)
            if isinstance(adapter, PollingAdapter) and acc is not None and acc.settings.get("mode") == "polling":
                out.append(adapter.poller(self))
        return out


def _flow_files(directory: Path) -> list[Path]:
    # schema.json, automations.schema.json: editors' schemas, not flows
    return [path for path in sorted(directory.glob("*.json")) if not path.name.endswith("schema.json")]


async def load_flow_dir(bots: BotRegistry, directory: Path) -> list[str]:
    """Upload every ``*.json`` flow of a folder (unchanged ones add no version); the files are
    read off the event loop."""
    from ..builder.problems import repeated_key_problems  # with the first flow: the models come with it

    loaded = []
    for path in await asyncio.to_thread(_flow_files, directory):
        try:
            repeated: list[str] = []
            doc = await asyncio.to_thread(read_document, path, repeated)
            info, _new = await bots.put(doc, repeated_key_problems(repeated))
            loaded.append(f"{info.bot} v{info.version}")
        except (FlowInvalid, FlowLoadError) as exc:
            log.error("bot.load_failed", extra={"file": str(path), "error": str(exc)})
    return loaded


@contextlib.asynccontextmanager
async def open_services(config: Config, *, start_hub: bool = True, load_flows: bool = True,
                        registry: ChannelRegistry | None = None) -> AsyncIterator[Services]:
    async with (contextlib.AsyncExitStack() as stack,
                _open(config, stack, start_hub=start_hub, load_flows=load_flows, registry=registry) as services):
        yield services


@contextlib.asynccontextmanager
async def _open(config: Config, stack: contextlib.AsyncExitStack, *, start_hub: bool, load_flows: bool,
                registry: ChannelRegistry | None) -> AsyncIterator[Services]:
    embedded = None
    url = config.redis_url
    if not url:
        maxmemory = default_maxmemory() if config.redis_maxmemory is None else int(config.redis_maxmemory)
        embedded = EmbeddedRedis(config.data_dir, persist=True, maxmemory=maxmemory)
        stack.push_async_callback(embedded.astop)  # also when the start fails (the data dir lock)
        url = await embedded.astart()
        embedded.supervise()  # restarts it if it dies (run.py exits when it gives up)
    redis, fast = _clients(config, url)
    try:
        await redis.ping()
        async with moving(redis):  # one process at a time (on a cluster some moves are not atomic)
            if not is_cluster(redis):
                await rename_old_keys(redis, shards=config.timer_shards)  # a store of an older version
            else:
                await move_activity_index(redis)
            await move_timer_buckets(redis, shards=config.timer_shards)  # once: the shards' members into buckets
            await move_filter_sets(redis)  # once: later starts read one key
            await move_partitions(redis)  # the activity index by channel and bot (once, as the above)
            await drop_derived_sets(redis)  # after the move: the sets of older versions, moved or not
            await move_old_layout(redis)  # the CRM's lists into their buckets (two HSCANs when done)
            await move_unbucketed(redis, LEAD_CONVERSATIONS_KEY, "")  # the leads' conversations: the same
        metrics = Metrics()
        store = ConversationStore(redis, fast=fast, lock_ttl=config.lock_ttl, ttl_days=config.conversation_ttl_days,
                                  transcript_max=config.transcript_max, shards=config.timer_shards)
        stack.push_async_callback(store.close)
        timers = TimerWheel(redis, shards=config.timer_shards, claim_ttl=config.timer_claim_ttl,
                            dead_after=config.timer_worker_dead_after, fast=fast)
        bots = BotRegistry(redis)
        crm = build_backend(config, redis, reader=fast)  # [crm] backend: embedded (default), kommo or webhook
        stack.push_async_callback(close_backend, crm)

        async def crm_command_failed(cid: str | None, ref: CrmRef, command: dict[str, Any], reason: str) -> None:
            if cid:  # a queued command the CRM refused for good: the conversation hears of it
                await conversations.deliver(cid, ev.CrmEvent("crm.command_failed", {
                    "do": command.get("do"), "lead": ref.lead_id, "error": reason}))

        crm_outbox = build_outbox(config, redis, crm, on_failed=crm_command_failed)
        public = config.public_url or f"http://{config.host}:{config.port}"
        directory = CrmDirectory(crm, users=[u.model_dump() for u in config.embedded_crm.users],
                                 teams=[t.model_dump() for t in config.embedded_crm.teams]) \
            if isinstance(crm, RedisCrm) else None
        if directory is not None:  # an older version's contacts: walked in the background, one process at a time
            directory.indexes.start()
            stack.push_async_callback(directory.indexes.close)
        secret = await signing_secret(redis, config)
        outward = OutwardActions(config=config, redis=redis, crm=crm, directory=directory, public_url=public,
                                 secret=secret)
        stack.push_async_callback(outward.close)
        requests = ServerRequests(redis=redis, crm=crm, public_url=public, outward=outward, crm_outbox=crm_outbox)
        order_links = OrderLinks(redis, secret=secret, public_url=public, ttl_days=config.actions.order_link_days)
        requests.order_links = order_links  # the flow action order_link
        # Turns of flows with slow work (regexes on customer text…) run here, off the event loop.
        slow_work = ThreadPoolExecutor(max_workers=SLOW_WORK_THREADS, thread_name_prefix="salesbot-slow")
        stack.callback(slow_work.shutdown, wait=False, cancel_futures=True)
        driver = Driver(bots, requests, executor=slow_work)
        conversations = ConversationService(store=store, flows=bots, driver=driver, crm=crm,
                                            router=_Router(), metrics=metrics, park_after=config.park_after)
        memory = MemoryGuard(redis, high_water=config.memory_high_water)
        memory.start()  # reads INFO memory now and every few seconds
        stack.push_async_callback(memory.stop)
        conversations.memory_guard = memory
        leads = LeadService(store=store, crm=crm, metrics=metrics, conversations=conversations,
                            park_after=config.park_after)
        outward.events = leads  # every e-mail send_email sends for a lead: its email.sent
        interest = FlowInterest(bots.loaded, bots.loaded_count)
        leads.listens = interest.wants  # events flows wait for or count as goals
        leads.goals = interest.goal  # ... and those a finished process still counts
        leads.hears = interest.hears  # ... and the chat messages a process waits for
        if isinstance(crm, RedisCrm):
            crm.sink = leads  # every change of the embedded CRM emits its events onto the lead queues
        if is_kommo(crm):  # our moves in Kommo emit their events; webhooks' stage ids get names
            crm.echo = _kommo_echo(redis, leads)
            leads.complete = _kommo_names(crm)
        hub = LiveHub(redis)
        admin = config.admin_token.get_secret_value() if config.admin_token else None
        if admin is None:
            admin = await _embedded_admin_token(redis, config)
        auth = Auth(admin_token=admin, tokens=[(t.token.get_secret_value(), t.role, t.name) for t in config.tokens])
        senders: dict[str, ChannelSender] = {}
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        stack.push_async_callback(http.close)
        adapters: dict[str, ChannelAdapter] = {}
        for name, acc in config.accounts.items():
            if acc.channel in TRANSCRIPT_CHANNELS:
                continue
            if registry is None:  # channels' modules: for a server with channel accounts only (startup)
                from ..channels.registry import ChannelRegistry

                registry = ChannelRegistry()
            adapter = registry.create(acc.channel, account=name, config=acc, http=http, public_url=public)
            stack.push_async_callback(adapter.close)
            adapters[name] = adapter
            senders[name] = adapter

        async def delivery_failed(cid: str, ref: str, reason: str) -> None:
            await conversations.deliver(cid, ev.DeliveryFailed(ref, reason))

        accounts = {  # an adapter's ``default_limits`` (the platform's), then the account's settings
            name: (acc.channel, AccountLimits(**{
                **getattr(adapters.get(name), "default_limits", {}),
                **{k: v for k, v in acc.settings.items() if k in ("rate", "chat_interval", "burst")}}))
            for name, acc in config.accounts.items() if acc.channel not in TRANSCRIPT_CHANNELS
        }
        limiter = RedisLimiter(redis)  # every account's rate, kept once for every process
        for adapter in adapters.values():
            if isinstance(adapter, SharesLimits):
                adapter.use_limiter(limiter)
        outbox = Outbox(redis, senders=senders, accounts=accounts, on_failed=delivery_failed,
                        max_attempts=config.outbox_max_attempts, limiter=limiter, fast=store.fast)
        conversations.replies = outbox  # a save's channel messages leave at once (the outbox records them)
        if config.analytics:  # funnel counts, with each save (docs/analytics.md)
            conversations.analytics = AnalyticsCounts(redis)
            if store.cluster:  # counted beside the script there: a NOSCRIPT resend would count twice
                await store.load_scripts()
        services = Services(config, redis, store, timers, bots, crm, metrics, conversations, hub, auth,
                            outbox, senders, embedded, adapters=adapters, http=http,
                            directory=directory, outward=outward, crm_outbox=crm_outbox, memory=memory,
                            order_links=order_links)
        book = EmbeddedBook(redis, crm, directory) if isinstance(crm, RedisCrm) and directory is not None \
            else _kommo_book(crm) if is_kommo(crm) else None  # where outbound finds contacts
        services.outbound = OutboundService(redis=redis, store=store, conversations=conversations,
                                            accounts=config.accounts, book=book)
        conversations.recipients = services.outbound
        services.processes = Processes(redis=redis, store=store, conversations=conversations, bots=bots,
                                       outbound=services.outbound)
        requests.processes = ProcessActions(
            processes=services.processes, outbound=services.outbound, lists=ContactLists(redis),
            accounts=config.accounts, smtp=config.smtp,
            unsubscribe=directory.set_unsubscribed if directory is not None else None)
        leads.processes = services.processes  # lead events reach the contact's processes
        services.process_jobs = ProcessJobs(redis, services.processes,
                                            pacer=Pacer(conversations.activity, rate=config.automations.apply_rate))
        services.leads = leads
        services.shop = Shop(redis=redis, directory=directory, leads=leads,
                             default_currency=config.shop.default_currency)
        pacer = Pacer(conversations.activity, rate=config.automations.apply_rate)  # jobs give way to conversations
        services.jobs = ApplyJobs(redis, leads, pacer=pacer) if isinstance(crm, RedisCrm) \
            else ApplyJobs(redis, leads, lister=crm, pacer=pacer) if is_kommo(crm) \
            else None  # Kommo's: listed by API
        services.chat = ChatEvents(leads, AutomationDocuments.of(redis, crm, bots).chat_pipelines,
                                   heard=interest.chat)
        conversations.chat = services.chat
        automation_docs = AutomationDocuments.of(redis, crm, bots, services.jobs, services.chat)
        pipelines: Mapping[str, Sequence[str]] = await crm_pipelines(crm) if isinstance(crm, RedisCrm) \
            else _stage_order(crm) if is_kommo(crm) else {}  # Kommo's: its catalogue's, when loaded
        leads.reactor = EngineReactor(automation_docs.documents, pipelines)
        leads.effects = AutomationEffects(redis=redis, fast=store.fast, crm=crm, requests=requests,
                                          outbound=services.outbound, directory=directory)
        leads.effects.processes = services.processes
        if load_flows and config.flows_dir.is_dir():
            services.loaded_flows = await load_flow_dir(bots, config.flows_dir)
        if load_flows and config.automations_dir.is_dir():  # after the bots: rules name them
            services.loaded_automations = await load_automation_dir(automation_docs, config.automations_dir)
        await bots.refresh()
        if start_hub:
            await hub.start()
        try:
            yield services
        finally:
            if services.jobs is not None:
                await services.jobs.stop()  # unfinished jobs are resumed by the next worker
            if services.process_jobs is not None:
                await services.process_jobs.stop()
            await leads.idle()  # lead queues being handled in the background finish (or recovery does)
            await outbox.idle()  # messages claimed for sending at once leave (or the poll sends them)
            if start_hub:
                await hub.stop()
    finally:
        # What the stack closes (the memory guard's loop, the store, the CRM, …) uses this client:
        # closed first, or a reading under way reconnects a client already closed (left unclosed).
        await stack.aclose()
        await redis.aclose()


# Kommo's parts, imported by a server on Kommo only (issue 14: startup; docs/architecture.md).
def _kommo_echo(redis: Redis, leads: LeadService) -> KommoEcho:
    from crm_bridge.kommo import KommoEcho

    return KommoEcho(redis, leads)


def _kommo_names(crm: KommoCrm) -> Callable[[LeadEvent], Awaitable[LeadEvent]]:
    from ..runtime.kommo_events import name_events

    return name_events(crm)


def _kommo_book(crm: KommoCrm) -> KommoBook:
    from ..runtime.outbound_kommo import KommoBook

    return KommoBook(crm)


def _stage_order(crm: KommoCrm) -> StageOrder:
    from crm_bridge.kommo.account import StageOrder

    return StageOrder(crm.account)


def _clients(config: Config, url: str) -> tuple[Redis, RespClient]:
    """The redis-py client and the hot-path client (the per-message scripts and CRM reads).

    One Redis: redis-py and the lean pipelined connection of resp.py. A Redis Cluster
    (``redis_cluster``): redis-py's cluster client for both (clusterclient.py); its commands are
    those of ``Redis``, which the rest of the code is typed against."""
    if config.redis_cluster:
        size, wait = config.redis_max_connections, config.redis_pool_timeout
        cluster = cluster_client(url, max_connections=size, pool_timeout=wait)
        hot = ClusterRespClient.from_url(url, max_connections=size, pool_timeout=wait)
        return cast(Redis, cluster), hot
    # No client-side retries: a retried script (save) whose first run did happen would trim
    # unprocessed events or queue messages twice. Failures surface and the work is redone safely.
    # A blocking pool: a burst beyond ``redis_max_connections`` waits for a free connection
    # (up to ``redis_pool_timeout``) instead of failing at once with "Too many connections".
    pool = BlockingConnectionPool.from_url(url, max_connections=config.redis_max_connections,
                                           timeout=config.redis_pool_timeout, decode_responses=False,
                                           health_check_interval=30, retry=Retry(NoBackoff(), 0))
    redis = Redis.from_pool(pool)  # owns the pool: closed with the client
    return redis, RespClient.like(redis)


async def _embedded_admin_token(redis: Redis, config: Config) -> str:
    """With no admin token configured: one generated once and kept in the store (printed at start)."""
    token = secrets.token_urlsafe(24)
    await redis.set("sb:admin_token", token, nx=True)
    stored = await redis.get("sb:admin_token")
    return stored.decode() if isinstance(stored, bytes) else str(stored)
