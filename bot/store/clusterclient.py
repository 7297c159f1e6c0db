"""The hot-path client's interface on a Redis Cluster, built on redis-py's ``RedisCluster``.

The per-message code sends raw commands through ``send(commands)`` (bot/store/resp.py). On a
cluster those commands may belong to several slots: redis-py's cluster pipeline routes each by
its key's slot (the slot map, ``MOVED``/``ASK`` redirections and a changed topology after a
failover are its job, not ours), sends one pipeline per node concurrently and gives the replies
back in the order of the commands. Commands of one slot reach their node in order, which is all
the callers rely on: a script and the reads of the same conversation share a slot
(``{<cid>}``); the cross-slot commands sent beside a script (timer shards, indexes) do not depend
on its order. ``NOSCRIPT`` comes back as a value and ``send_commands`` loads the scripts through
the main cluster client (``SCRIPT LOAD`` goes to every primary) and sends once more.

Replies are raw RESP values, as the lean client's: this client has its own ``RedisCluster``
whose response callbacks are cut down to the ones its topology discovery needs. No retries
(``Retry(NoBackoff(), 0)``): a script whose first run did happen must not run twice; a failure
surfaces and the work is redone safely, as on one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterCrossSlotError, ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from .resp import Command, RespClient, _words

#: Replies that are a cluster's state, not a command's answer: the call failed.
_MOVING = (AskError, ClusterDownError, TryAgainError, ClusterCrossSlotError)

C = TypeVar("C", bound=Sequence[Any])

#: Each node's pool holds this many times the calls allowed in flight (see ``WaitingCluster``).
POOL_MARGIN = 2

#: The response callbacks the cluster client needs for itself (its slot map and command table).
_OWN_CALLBACKS = ("CLUSTER", "COMMAND")


class WaitingCluster(RedisCluster):
    """redis-py's cluster client, whose calls beyond ``turns`` in flight wait (up to
    ``pool_timeout``) for a free turn instead of failing at once with ``MaxConnectionsError``:
    the blocking pool the single-node client has. A call holds one connection per node at most,
    but redis-py also holds some briefly outside any call (a redirection's retry inside a
    pipeline, a connection being recycled in the background), so each node's pool is given
    ``POOL_MARGIN`` times the turns (a burst of 300 reads saw ``MaxConnectionsError`` without it)."""

    def __init__(self, *args: Any, turns: int = 100, pool_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(turns)
        self._pool_timeout = pool_timeout

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise RedisConnectionError("Too many connections: no free turn within the pool timeout") from None
        try:
            yield
        finally:
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def waiting(raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
            async with self.turn():
                return await execute(raise_on_error=raise_on_error, allow_redirections=allow_redirections)

        pipe.execute = waiting  # type: ignore[method-assign]
        return pipe


def cluster_client(url: str, *, max_connections: int, pool_timeout: float = 10.0, raw: bool = False) -> RedisCluster:
    """A cluster client for ``url`` (any node): no client-side retries (see the module doc);
    ``raw``: replies without redis-py's response callbacks (the hot path parses them itself)."""
    client = WaitingCluster.from_url(url, max_connections=max_connections * POOL_MARGIN, turns=max_connections,
                                     decode_responses=False, health_check_interval=30,
                                     retry=Retry(NoBackoff(), 0), pool_timeout=pool_timeout)
    if raw:
        callbacks = client.response_callbacks  # one dict shared with every node's connections
        keep = {name: fn for name, fn in callbacks.items() if name.startswith(_OWN_CALLBACKS)}
        callbacks.clear()
        callbacks.update(keep)
    return client


class ClusterRespClient(RespClient):
    """``RespClient``'s calls (``send``, ``execute_command``, ``pipeline``, ``aclose``) over a
    cluster. It is a ``RespClient`` so the hot-path code takes either; none of the lean
    client's socket machinery is used."""

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__()
        self.client = cluster

    @classmethod
    def from_url(cls, url: str, *, max_connections: int, pool_timeout: float = 10.0) -> ClusterRespClient:
        return cls(cluster_client(url, max_connections=max_connections, pool_timeout=pool_timeout, raw=True))

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        """Every reply of ``commands`` in order (errors are returned as ``ResponseError`` values;
        a node that cannot be reached raises, as the lean client does)."""
        if not commands:
            return []
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*_words(tuple(command)))
        replies = list(await pipe.execute(raise_on_error=False))
        for reply in replies:  # a node unreachable or the slots moving: the call failed, as on one Redis
            if isinstance(reply, Exception) and (not isinstance(reply, ResponseError) or isinstance(reply, _MOVING)):
                raise reply
        return replies

    async def aclose(self) -> None:
        await self.client.aclose()


def is_cluster(redis: object) -> bool:
    """Whether ``redis`` is redis-py's cluster client: a MULTI/EXEC there spans one slot only."""
    return isinstance(redis, RedisCluster)


def _key_of(command: Sequence[Any]) -> bytes:
    key = command[1]
    return key if isinstance(key, bytes) else str(key).encode()


def split_slot(commands: Sequence[C], key: str | None) -> tuple[list[C], list[C]]:
    """``(outside, inside)``: the commands (each keyed by its first argument) outside and inside
    the slot of ``key`` (None: of the first command), for a MULTI/EXEC on a cluster."""
    if not commands:
        return [], []
    slot = key_slot(key.encode() if key is not None else _key_of(commands[0]))
    outside = [c for c in commands if key_slot(_key_of(c)) != slot]
    inside = [c for c in commands if key_slot(_key_of(c)) == slot]
    return outside, inside


async def send_plain(redis: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """``commands`` in one plain pipeline of redis-py's client (routed by slot on a cluster)."""
    pipe = redis.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(await pipe.execute())
