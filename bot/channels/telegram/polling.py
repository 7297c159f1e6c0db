"""``getUpdates`` long polling, for accounts that take no webhook (``settings.mode = "polling"``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from telegram import Bot
from telegram.error import Conflict, RetryAfter

from ...store import replies
from ..base import ChannelAdapter, Inbound, MalformedWebhook
from ..host import ChannelHost
from ..webhooks import dispatch
from .transport import redact, retry_seconds
from .updates import parse_update

log = logging.getLogger("salesbot.channels.telegram")


class TelegramPoller:
    """``getUpdates`` long polling for an account with ``settings.mode = "polling"``.

    One worker at a time polls an account (a Redis lease), the offset is kept in Redis, and
    each update goes through the same path as a webhook (``webhooks.dispatch``), so a
    redelivered update is handled once. ``run(stop)`` returns soon after ``stop`` is set.
    """

    def __init__(self, adapter: ChannelAdapter, bot: Bot, host: ChannelHost, *, account: str,
                 settings: Mapping[str, Any], timeout: float | None = None, lease: float = 60.0) -> None:
        self.adapter = adapter
        self.bot = bot
        self.host = host
        self.account = account
        self.timeout = float(settings.get("poll_timeout", 25) if timeout is None else timeout)
        self.lease = lease
        self.owner = secrets.token_hex(8)
        self.lease_key = f"sb:tg:poll:{{{account}}}"
        self.offset_key = f"sb:tg:offset:{{{account}}}"
        self.polls = 0

    async def _hold_lease(self) -> bool:
        redis = self.host.redis
        if await redis.set(self.lease_key, self.owner, nx=True, px=int(self.lease * 1000)):
            return True
        if replies.text(await redis.get(self.lease_key) or b"") == self.owner:
            await redis.pexpire(self.lease_key, int(self.lease * 1000))
            return True
        return False

    async def deliver(self, items: list[Inbound]) -> None:
        await dispatch(self.host, self.account, self.adapter, items)


    async def poll_once(self, timeout: float) -> int:
        """One ``getUpdates`` call and the delivery of what it returned; returns the update count."""
        redis = self.host.redis
        raw = await redis.get(self.offset_key)
        fetched = await self.bot.get_updates(
            offset=int(raw) if raw else None, timeout=int(timeout), allowed_updates=["message", "callback_query"],
            read_timeout=timeout + 10)
        self.polls += 1
        updates = [u.to_dict() for u in fetched]  # back to Bot API JSON: one parser for both paths
        for update in updates:
            try:
                items = parse_update(update)
            except MalformedWebhook as exc:
                log.warning("telegram.update_unreadable", extra={"account": self.account, "reason": str(exc)})
                items = []
            await self.deliver(items)
            if isinstance(update, dict) and isinstance(update.get("update_id"), int):
                await redis.set(self.offset_key, update["update_id"] + 1)
        return len(updates)

    async def run(self, stop: asyncio.Event) -> None:
        account = self.account
        webhook_removed = False
        pause = 0.0
        while not stop.is_set():
            if pause:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                if stop.is_set():
                    return
            pause = 0.0
            try:
                if not await self._hold_lease():
                    pause = self.lease / 3
                    continue
                if not webhook_removed:  # getUpdates does not work while a webhook is set
                    await self.bot.delete_webhook(drop_pending_updates=False)
                    webhook_removed = True
                poll = asyncio.ensure_future(self.poll_once(self.timeout))
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                if not poll.done():  # stopping: what was fetched and not acknowledged comes back later
                    await _cancel(poll)
                    return
                poll.result()
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                pause = retry_seconds(exc)
                log.warning("telegram.poll_flood", extra={"account": account, "retry_after": pause})
            except Conflict as exc:
                pause = 5.0
                log.warning("telegram.poll_conflict", extra={"account": account,
                                                             "error": redact(str(exc), self.bot.token)})
            except Exception as exc:  # network trouble, Redis hiccups: log and try again
                pause = 2.0  # its text may quote a URL, and a Bot API URL holds the token: redacted
                log.warning("telegram.poll_failed", extra={"account": account,
                                                           "error": redact(repr(exc), self.bot.token)})
        with contextlib.suppress(Exception):
            if replies.text(await self.host.redis.get(self.lease_key) or b"") == self.owner:
                await self.host.redis.delete(self.lease_key)


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for its end, asking again while it runs on: a cancellation that
    lands in a Redis call between two long polls can be lost, and the poll would then hold up
    shutdown for a whole ``getUpdates`` timeout."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
