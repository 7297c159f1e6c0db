"""A lean Redis connection for the conversation hot path (push, load, save, CRM snapshot).

Why not redis-py here: on this path redis-py costs 80-170 µs of CPU per call or pipeline
(pool checkout, retry and timeout wrappers, a task per read, per-command response callbacks),
and a customer message makes two or three of them: most of a message's CPU. This client writes
every call's commands in one ``write`` on one shared socket (concurrent calls pipeline
naturally) and parses replies with hiredis, the parser redis-py itself uses; a call is one
future. Replies are raw RESP values (bytes, ints, lists): no response callbacks. Everything
else keeps using redis-py; ``pipeline()`` records commands through redis-py's own command
builders, so the two take the same arguments.

Failure model: a connection error or a reply slower than ``socket_timeout`` fails every call in
flight with redis-py's ``ConnectionError`` / ``TimeoutError`` and drops the socket; the next
call reconnects. Nothing is retried here (the store's scripts are not safe to repeat blindly).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.commands.core import CoreCommands
from redis.event import EventDispatcher, EventDispatcherInterface
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = Sequence[Any]
#: Bytes of a read fed to the parser at a time (``_Protocol.data_received``).
FEED_CHUNK = 4096


class _Call:
    __slots__ = ("future", "left", "replies", "sent")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, sent: float) -> None:
        self.future = future
        self.left = count
        self.replies: list[Any] = []
        self.sent = sent


class _Protocol(asyncio.Protocol):
    """One socket: calls are answered in the order they were written (Redis pipelining)."""

    def __init__(self, timeout: float | None) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.calls: collections.deque[_Call] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.timeout = timeout
        self.closed = False
        self._watch: asyncio.TimerHandle | None = None
        self.error: Exception | None = None
        self._out: list[bytes] = []
        self._flush_soon = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the Transport methods without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        calls = self.calls
        size = len(data)
        # Fed ``FEED_CHUNK`` bytes at a time: hiredis moves the rest of its buffer down after each
        # reply once 1 KiB is read, so a read of many replies fed whole (a round of 100 timers'
        # pushes: ~100 KiB) costs about twice the parsing in copies (issue 14 aim 5).
        for start in range(0, size, FEED_CHUNK):
            reader.feed(data, start, min(FEED_CHUNK, size - start))
            while True:
                try:
                    reply = reader.gets()
                except hiredis.ProtocolError as exc:
                    self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                    return
                if reply is False:
                    break
                if not calls:  # a reply nobody asked for: the stream is out of step
                    self._fail(RedisConnectionError("unexpected reply from Redis"))
                    return
                call = calls[0]
                call.replies.append(reply)
                call.left -= 1
                if call.left == 0:
                    calls.popleft()
                    if not call.future.done():  # a cancelled caller: its replies are consumed all the same
                        call.future.set_result(call.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self.error or RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail(self, error: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        if self._watch is not None:
            self._watch.cancel()
        while self.calls:
            call = self.calls.popleft()
            if not call.future.done():
                call.future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, loop: asyncio.AbstractEventLoop, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        if self.closed or self.transport is None:
            raise self.error or RedisConnectionError("not connected to Redis")
        pack = hiredis.pack_command
        # first: a bad argument must not leave a call queued (a tuple is packed as it is, not copied)
        data = [pack(c if type(c) is tuple else tuple(c)) for c in commands]
        future: asyncio.Future[list[Any]] = loop.create_future()
        now = loop.time()
        self.calls.append(_Call(future, len(commands), now))
        self._out.extend(data)
        if not self._flush_soon:  # the calls made in this loop iteration leave in one write
            self._flush_soon = True
            loop.call_soon(self._flush)
        if self.timeout is not None and self._watch is None:
            self._watch = loop.call_at(now + self.timeout, self._check, loop)
        return future

    def _flush(self) -> None:
        self._flush_soon = False
        if self.closed or self.transport is None or not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self.transport.write(data)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the connection if its oldest call waits longer than the timeout."""
        self._watch = None
        if self.closed or not self.calls or self.timeout is None:
            return
        oldest = self.calls[0].sent
        if loop.time() - oldest >= self.timeout:
            self._fail(RedisTimeoutError(f"no reply from Redis within {self.timeout} s"))
        else:
            self._watch = loop.call_at(oldest + self.timeout, self._check, loop)


#: redis-py's command mixins declare an event dispatcher; none of the commands we send uses it.
_NO_EVENTS = EventDispatcher()


class RespClient(CoreCommands):
    """Pipelined calls on one lazily opened connection, settings taken from a redis-py client.

    redis-py's command methods work on it (``await client.get(key)``) and return raw replies.
    """

    _event_dispatcher: EventDispatcherInterface = _NO_EVENTS

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6379, path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, socket_timeout: float | None = 10.0,
                 connect_timeout: float = 10.0) -> None:
        self.host, self.port, self.path = host, port, path
        self.db, self.username, self.password = db, username, password
        self.ssl_context = ssl_context
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._attempt: asyncio.Future[_Protocol] | None = None

    @classmethod
    def like(cls, redis: Redis, *, socket_timeout: float | None = 10.0) -> RespClient:
        """A client for the same server, database and credentials as a redis-py client."""
        kw = redis.connection_pool.connection_kwargs
        cls_ = redis.connection_pool.connection_class
        context = None
        if issubclass(cls_, SSLConnection):
            context = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"), capath=kw.get("ssl_ca_path"),
                                                 cadata=kw.get("ssl_ca_data"))
            reqs = kw.get("ssl_cert_reqs", "required")
            if kw.get("ssl_check_hostname") is False or reqs in ("none", "optional", ssl.CERT_NONE, ssl.CERT_OPTIONAL):
                context.check_hostname = False
            if reqs in ("none", ssl.CERT_NONE):
                context.verify_mode = ssl.CERT_NONE
            elif reqs in ("optional", ssl.CERT_OPTIONAL):
                context.verify_mode = ssl.CERT_OPTIONAL
            if kw.get("ssl_certfile"):
                context.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"), kw.get("ssl_password"))
        path = kw.get("path") if issubclass(cls_, UnixDomainSocketConnection) else None
        return cls(host=kw.get("host", "127.0.0.1"), port=int(kw.get("port", 6379)), path=path,
                   db=int(kw.get("db", 0) or 0), username=kw.get("username"), password=kw.get("password"),
                   ssl_context=context, socket_timeout=kw.get("socket_timeout") or socket_timeout,
                   connect_timeout=kw.get("socket_connect_timeout") or 10.0)

    async def _connect(self) -> _Protocol:
        """Every caller waiting for a connection shares one attempt (and its error, if it fails)."""
        if self._attempt is None:
            self._attempt = asyncio.ensure_future(self._open())
            self._attempt.add_done_callback(self._opened)
        return await asyncio.shield(self._attempt)

    def _opened(self, attempt: asyncio.Future[_Protocol]) -> None:
        self._attempt = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._proto = attempt.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        proto = _Protocol(self.socket_timeout)
        where = self.path or f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path:
                    await loop.create_unix_connection(lambda: proto, self.path)
                else:
                    await loop.create_connection(lambda: proto, self.host, self.port, ssl=self.ssl_context)
                    sock = proto.transport.get_extra_info("socket") if proto.transport else None
                    if sock is not None:  # a half-open idle socket is noticed, as redis-py does
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                hello: list[Command] = []
                if self.password:
                    hello.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
                if self.db:
                    hello.append(("SELECT", self.db))
                error = first_error(await proto.send(loop, hello)) if hello else None
                if error is not None:
                    raise error
        except (OSError, TimeoutError) as exc:
            proto._fail(RedisConnectionError(f"cannot connect to Redis: {exc}"))
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
        except BaseException:
            proto._fail(RedisConnectionError("connection setup failed"))
            raise
        return proto

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        """Every reply of ``commands`` (errors are returned as ``ResponseError`` values)."""
        if not commands:
            return []
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connect()
        return await proto.send(asyncio.get_running_loop(), commands)

    async def execute_command(self, *args: Any, **_options: Any) -> Any:
        replies = await self.send([_words(args)])
        error = first_error(replies)
        if error is not None:
            raise error
        return replies[0]

    def pipeline(self, transaction: bool = False) -> RespPipeline:
        if transaction:
            raise ValueError("RespClient pipelines are plain pipelines (use a Lua script for atomicity)")
        return RespPipeline(self)

    async def aclose(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and not proto.closed:
            proto._fail(RedisConnectionError("client closed"))


def _words(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """redis-py names some commands in one string (``"CLIENT ID"``): send them as words."""
    name = args[0]
    if isinstance(name, str) and " " in name:
        return (*name.split(), *args[1:])
    return args


def first_error(replies: Sequence[Any]) -> ResponseError | None:
    """The first error among ``replies``, as redis-py raises it (``NoScriptError`` included)."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            message = str(reply)
            return NoScriptError(message) if message.startswith("NOSCRIPT") else reply
    return None


class RespPipeline(CoreCommands):
    """Records commands with redis-py's builders (``pipe.zadd(...)``); ``execute`` sends them at once."""

    _event_dispatcher: EventDispatcherInterface = _NO_EVENTS

    def __init__(self, client: RespClient) -> None:
        self.client = client
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any, **_options: Any) -> RespPipeline:
        self.commands.append(_words(args))
        return self

    def __len__(self) -> int:
        return len(self.commands)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands, self.commands = self.commands, []
        if not commands:
            return []
        replies = await self.client.send(commands)
        error = first_error(replies) if raise_on_error else None
        if error is not None:
            raise error
        return replies


class RespTransaction(RespPipeline):
    """A ``MULTI``/``EXEC`` on the lean connection (one Redis, not a cluster). The commands of one
    ``send`` leave together on its one connection, so no other caller's command lands between
    ``MULTI`` and ``EXEC``. ``execute`` raises the first error, queued or run (as redis-py's
    transactions do) and returns the replies of the commands inside."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands, self.commands = self.commands, []
        if not commands:
            return []
        replies = await self.client.send([("MULTI",), *commands, ("EXEC",)])
        ran = replies[-1] if isinstance(replies[-1], list) else []
        error = first_error(replies) or first_error(ran)
        if error is not None and raise_on_error:
            raise error
        return ran
