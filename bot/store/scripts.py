"""Lua scripts queued in pipelines without redis-py's per-call ``SCRIPT EXISTS`` round trip.

redis-py checks ``SCRIPT EXISTS`` before every pipeline that holds a registered script; on the
hot path that doubles the round trips. Here scripts are loaded once, queued as plain
``EVALSHA``, and a pipeline that meets ``NOSCRIPT`` (a restarted or flushed Redis) loads them
and runs again from the command refused — every command we pipeline beside a script is
idempotent (ZADD, ZREM, GET) or harmless to repeat (a PUBLISH of "this conversation changed").
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, ResponseError

from .resp import RespClient, first_error

#: A lease's renewal by its holder: ``PEXPIRE KEYS[1] ARGV[2]`` if it still holds ``ARGV[1]`` (1, else 0).
RENEW_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
#: A lease's release by its holder: ``DEL KEYS[1]`` if it still holds ``ARGV[1]`` (1, else 0).
DROP_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: Claim up to ARGV[2] members due by ARGV[1] from a sorted set, leasing them until ARGV[3].
CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], m) end
return due
"""

#: Pop a queue's head only if it is still the item we handled; return what is left.
POP_HEAD = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) end
return redis.call('LLEN', KEYS[1])
"""

#: Renew a claim on a sorted set's member ARGV[1] to ARGV[3] (empty: release it) only while its score
#: is still ours (ARGV[2], compared as numbers: Redis and Python spell a double differently); 1 done, 0 lost.
RENEW_CLAIM = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not (s and tonumber(s) == tonumber(ARGV[2])) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1]) end
return 1
"""

#: Replace a queue's head (its attempt count) only if it is still the item we handled.
REPLACE_HEAD = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LSET', KEYS[1], 0, ARGV[2]) return 1 end
return 0
"""


class Lua:
    def __init__(self, redis: Redis, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._direct = redis.register_script(source)

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Any]) -> None:
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command, for ``send_commands``."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._direct(keys=list(keys), args=list(args))

    async def load(self) -> None:
        await self.redis.script_load(self.source)


async def run_pipeline(redis: Redis, build: Callable[[Pipeline], None], scripts: Sequence[Lua]) -> list[Any]:
    """Build and execute a pipeline; on NOSCRIPT load ``scripts`` and run it once more."""
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        build(pipe)
        try:
            return list(await pipe.execute())
        except (NoScriptError, ResponseError) as exc:
            missing = isinstance(exc, NoScriptError) or "NOSCRIPT" in str(exc) or "No matching script" in str(exc)
            if attempt == 2 or not missing:
                raise
            for script in scripts:
                await script.load()
    raise AssertionError("unreachable")


async def send_commands(client: RespClient, commands: Sequence[Sequence[Any]], scripts: Sequence[Lua],
                        check: int | None = None) -> list[Any]:
    """``run_pipeline`` for raw commands on the hot-path client: replies, or the first error raised
    (on ``NOSCRIPT``, ``scripts`` are loaded and the commands from the one refused on sent once
    more: a script before it ran, and must not run twice — on a Redis Cluster the save script's
    node may know it and the activity partition's not). Only the first ``check`` replies raise
    (all by default); later ones may be ``ResponseError`` values."""
    done: list[Any] = []
    sent = list(commands)
    for attempt in (1, 2):
        replies = done + list(await client.send(sent))
        error = first_error(replies[:check])
        if error is None:
            return replies
        if attempt == 2 or not isinstance(error, NoScriptError):
            raise error
        at = next(i for i, r in enumerate(replies) if isinstance(r, ResponseError))
        done, sent = replies[:at], list(commands[at:])
        for script in scripts:
            await script.load()
    raise AssertionError("unreachable")


Builder = Callable[[Pipeline], None]
Loader = Callable[[], Awaitable[None]]
