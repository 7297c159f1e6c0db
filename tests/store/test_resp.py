"""The lean hot-path Redis client (``bot/store/resp.py``) against real redis-servers.

Raw replies, redis-py's command builders, pipelining under concurrency, error replies,
scripts, cancelled callers, lost connections, the timeout watchdog and authentication.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.store.embedded import free_port, redis_server_binary
from bot.store.resp import FEED_CHUNK, RespClient, RespTransaction
from bot.store.scripts import Lua, run_pipeline, send_commands
from tests.procs import stop_process
from tests.waiting import wait_for

pytestmark = pytest.mark.both_loops  # the server may run on uvloop: everything here runs on both


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[RespClient]:
    c = RespClient.like(redis)
    try:
        yield c
    finally:
        await c.aclose()


async def _client_id(c: RespClient) -> int:
    (cid,) = await c.send([("CLIENT", "ID")])
    assert isinstance(cid, int)
    return cid


async def _blocked_on(redis: Redis, name: str, command: str, *, queued: bool = False) -> bool:
    """Whether the connection named ``name`` is inside ``command`` (seen by the server);
    ``queued``: with more commands already received behind it (its query buffer)."""
    for row in await redis.client_list():
        if row.get("name") == name and row.get("cmd") == command:
            return not queued or int(row.get("qbuf", 0)) > 0
    return False


# ---------------------------------------------------------------------------- settings, replies


async def test_like_talks_to_the_same_server_and_database(redis: Redis, redis_url: str) -> None:
    other = Redis.from_url(_with_db(redis_url, 3))
    fast = RespClient.like(other)
    fast0 = RespClient.like(redis)
    try:
        assert fast.db == 3
        await other.flushdb()
        await other.set("resp:db3", b"from redis-py")
        assert await fast.get("resp:db3") == b"from redis-py"
        assert await fast0.get("resp:db3") is None  # db 0 does not have it: the SELECT happened
        assert await fast.set("resp:written", "by resp") == b"OK"
        assert await other.get("resp:written") == b"by resp"
        assert await redis.exists("resp:written") == 0
    finally:
        await other.flushdb()
        await fast.aclose()
        await fast0.aclose()
        await other.aclose()


async def test_replies_are_raw_resp_values(client: RespClient) -> None:
    replies = await client.send([
        ("SET", "k", "v"), ("GET", "k"), ("GET", "missing"), ("INCRBY", "n", 41), ("INCR", "n"),
        ("RPUSH", "l", "a", "b"), ("LRANGE", "l", 0, -1), ("HSET", "h", "f", "v"),
        ("EVAL", "return {1, {2, 'x', {}}, 'y'}", 0), ("PING",),
    ])
    assert replies == [b"OK", b"v", None, 41, 42, 2, [b"a", b"b"], 1, [1, [2, b"x", []], b"y"], b"PONG"]
    # redis-py's builders, without redis-py's response callbacks
    assert await client.hgetall("h") == [b"f", b"v"]  # the flat reply, not a dict
    assert await client.exists("k", "missing") == 1
    assert await client.get("k") == b"v"
    assert await client.set("k2", "w", ex=60) == b"OK"
    assert 0 < await client.ttl("k2") <= 60


async def test_pipeline_uses_redis_py_builders(client: RespClient, redis: Redis) -> None:
    sha = await redis.script_load("return redis.call('ZSCORE', KEYS[1], ARGV[1])")
    pipe = client.pipeline()
    pipe.zadd("z", {"m": 1.5}, nx=True)
    pipe.zadd("z", {"m": 9}, nx=True)  # NX: not updated
    pipe.zscore("z", "m").evalsha(sha, 1, "z", "m")  # builders chain, like redis-py's pipeline
    assert len(pipe) == 4
    assert await pipe.execute() == [1, 0, b"1.5", b"1.5"]
    assert len(pipe) == 0 and await pipe.execute() == []  # executed commands are not sent again
    assert await redis.zscore("z", "m") == 1.5


async def test_transaction_pipelines_are_refused(client: RespClient) -> None:
    with pytest.raises(ValueError, match="plain pipelines"):
        client.pipeline(transaction=True)


async def test_replies_larger_and_smaller_than_a_feed_chunk_read_whole_across_chunks(client: RespClient) -> None:
    """A read is fed to the parser ``FEED_CHUNK`` bytes at a time: replies that straddle a chunk's
    end, are longer than a chunk, or arrive many to a read (one call of hundreds) read whole, in order."""
    sizes = [0, 1, FEED_CHUNK - 7, FEED_CHUNK, FEED_CHUNK + 1, 3 * FEED_CHUNK + 5, 100, 5000]
    values = [bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]
    await client.send([("SET", f"chunk:{i}", value) for i, value in enumerate(values)])
    calls = [("GET", f"chunk:{i % len(values)}") for i in range(300)] + [("HGETALL", "chunk:none"), ("PING",)]
    replies = await client.send(calls)
    assert replies == [values[i % len(values)] for i in range(300)] + [[], b"PONG"]
    nested = await client.send([("EVAL", "return {ARGV[1], {ARGV[2], 7}}", 0, values[3], values[5])] * 3)
    assert nested == [[values[3], [values[5], 7]]] * 3


async def test_many_concurrent_callers_each_get_their_own_replies_in_order(client: RespClient) -> None:
    assert await client.ping() == b"PONG"  # connected: every call below is written in call order

    async def caller(i: int) -> tuple[int, int, bytes, list[object]]:
        counted = await client.incr("shared")
        mine = await client.incrby(f"own:{i}", i)
        read = await client.get(f"own:{i}")
        both = await client.send([("INCRBY", f"own:{i}", 1), ("GET", f"own:{i}")])
        return counted, mine, read, both

    results = await asyncio.gather(*(caller(i) for i in range(500)))
    # The first calls of all tasks were written in task order: the shared counter says so.
    assert [r[0] for r in results] == list(range(1, 501))
    for i, (_, mine, read, both) in enumerate(results):
        assert (mine, read, both) == (i, str(i).encode(), [i + 1, str(i + 1).encode()])


# ---------------------------------------------------------------------------- errors, scripts


async def test_an_error_reply_raises_from_execute_but_is_a_value_from_send(client: RespClient) -> None:
    pipe = client.pipeline()
    pipe.set("s", "v").lpush("s", "x").get("s")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await pipe.execute()
    pipe.set("s", "w").lpush("s", "x").get("s")
    ok, error, value = await pipe.execute(raise_on_error=False)
    assert (ok, value) == (b"OK", b"w") and isinstance(error, ResponseError)  # the rest still ran
    replies = await client.send([("LPUSH", "s", "x"), ("GET", "s")])
    assert isinstance(replies[0], ResponseError) and "WRONGTYPE" in str(replies[0])
    assert replies[1] == b"w"
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await client.lpush("s", "x")
    assert await client.get("s") == b"w"  # the connection is fine after errors


async def test_noscript_raises_redis_py_noscripterror(client: RespClient) -> None:
    with pytest.raises(NoScriptError):
        await client.evalsha("0" * 40, 0)
    pipe = client.pipeline()
    pipe.set("a", 1).evalsha("0" * 40, 0)
    with pytest.raises(NoScriptError):
        await pipe.execute()
    (reply,) = await client.send([("EVALSHA", "0" * 40, 0)])
    assert type(reply) is ResponseError and str(reply).startswith("NOSCRIPT")  # a value from send


async def test_run_pipeline_loads_flushed_scripts_and_runs_once_more(client: RespClient, redis: Redis) -> None:
    script = Lua(redis, "return redis.call('INCR', KEYS[1])")
    await redis.script_flush()
    assert await redis.script_exists(script.sha) == [False]

    def build(pipe: object) -> None:
        script.queue(pipe, ["count"], [])  # type: ignore[arg-type]
        pipe.zadd("seen", {"x": 1})  # type: ignore[attr-defined]

    # The first attempt's ZADD did run (a pipeline is not atomic): the retry's ZADD adds nothing.
    assert await run_pipeline(client, build, [script]) == [1, 0]  # type: ignore[arg-type]
    assert await redis.script_exists(script.sha) == [True]
    assert await run_pipeline(client, build, [script]) == [2, 0]  # type: ignore[arg-type]
    assert await redis.get("count") == b"2"  # the failed first attempt did not run the script


# ---------------------------------------------------------------------------- cancellation


async def test_a_cancelled_caller_does_not_desync_later_calls(client: RespClient, redis: Redis) -> None:
    await client.send([("CLIENT", "SETNAME", "resp-cancel")])
    waiting = asyncio.create_task(client.execute_command("BLPOP", "q", 0))
    await wait_for(lambda: _blocked_on(redis, "resp-cancel", "blpop"), what="the BLPOP to block")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # Calls written behind the BLPOP wait for it; its reply must go to nobody, not to them.
    later = asyncio.create_task(client.send([("ECHO", "after"), ("INCR", "n")]))
    await redis.rpush("q", "item")
    assert await later == [b"after", 1]
    assert await redis.llen("q") == 0  # the cancelled call's BLPOP did pop the item
    assert await client.get("n") == b"1"
    assert await client.echo("again") == b"again"


async def test_cancelling_one_of_many_pending_callers(client: RespClient, redis: Redis) -> None:
    await client.send([("CLIENT", "SETNAME", "resp-cancel-many")])
    first = asyncio.create_task(client.execute_command("BLPOP", "q", 0))
    await wait_for(lambda: _blocked_on(redis, "resp-cancel-many", "blpop"), what="the BLPOP to block")
    behind = [asyncio.create_task(client.send([("INCR", "n"), ("ECHO", str(i))])) for i in range(10)]
    await wait_for(lambda: _blocked_on(redis, "resp-cancel-many", "blpop", queued=True),
                   what="the calls to reach the server behind the BLPOP")
    behind[3].cancel()
    behind[7].cancel()
    await redis.rpush("q", "item")
    assert await first == [b"q", b"item"]
    for i, task in enumerate(behind):
        if i in (3, 7):
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            assert await task == [i + 1, str(i).encode()]  # INCR ran for the cancelled ones too
    assert await client.get("n") == b"10"


# ---------------------------------------------------------------------------- connection loss


async def test_a_killed_connection_fails_calls_in_flight_and_the_next_call_reconnects(
        client: RespClient, redis: Redis) -> None:
    await client.send([("CLIENT", "SETNAME", "resp-kill")])
    before = await _client_id(client)
    blocked = asyncio.create_task(client.execute_command("BLPOP", "q", 0))
    await wait_for(lambda: _blocked_on(redis, "resp-kill", "blpop"), what="the BLPOP to block")
    behind = asyncio.create_task(client.echo("behind"))
    await wait_for(lambda: _blocked_on(redis, "resp-kill", "blpop", queued=True),
                   what="a second call in flight")
    assert await redis.execute_command("CLIENT", "KILL", "ID", before) == 1
    with pytest.raises(RedisConnectionError):
        await blocked
    with pytest.raises(RedisConnectionError):
        await behind
    assert await client.ping() == b"PONG"  # reconnected
    after = await _client_id(client)
    assert after != before
    assert await client.execute_command("CLIENT", "GETNAME") is None  # a new connection
    await redis.rpush("q", "left alone")
    assert await redis.lrange("q", 0, -1) == [b"left alone"]  # the killed BLPOP took nothing


async def test_client_kill_type_normal_then_the_next_call_works(client: RespClient, redis: Redis) -> None:
    assert await client.set("k", "v") == b"OK"
    await client.send([("CLIENT", "SETNAME", "resp-kill-type")])
    before = await _client_id(client)
    blocked = asyncio.create_task(client.execute_command("BLPOP", "q", 0))
    await wait_for(lambda: _blocked_on(redis, "resp-kill-type", "blpop"), what="the BLPOP to block")
    killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "normal")  # SKIPME yes: not redis-py's
    assert killed >= 1
    with pytest.raises(RedisConnectionError):
        await blocked
    assert await client.get("k") == b"v"
    assert await _client_id(client) != before


async def test_the_timeout_watchdog_fails_a_slow_call_and_the_next_call_works(redis: Redis) -> None:
    slow = RespClient.like(redis, socket_timeout=0.2)
    try:
        assert slow.socket_timeout == 0.2
        assert await slow.ping() == b"PONG"
        before = await _client_id(slow)
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await slow.execute_command("BLPOP", "never", 2)
        assert 0.15 <= time.monotonic() - started < 1.5
        assert await slow.send([("SET", "k", "v"), ("GET", "k")]) == [b"OK", b"v"]
        assert await _client_id(slow) != before  # the timed-out socket was dropped
    finally:
        await slow.aclose()


async def test_the_watchdog_fails_every_call_behind_the_slow_one(redis: Redis) -> None:
    slow = RespClient.like(redis, socket_timeout=0.2)
    try:
        await slow.send([("CLIENT", "SETNAME", "resp-watchdog")])
        # Written at once behind the BLPOP, on its connection (waiting to see it block first could
        # outlast the watchdog's 0.2 s on a loaded machine: the echoes would go on a new connection).
        calls = [asyncio.create_task(slow.execute_command("BLPOP", "never", 2))]
        calls += [asyncio.create_task(slow.echo(str(i))) for i in range(3)]
        for task in calls:
            with pytest.raises(RedisTimeoutError):
                await task
        assert await slow.echo("fresh") == b"fresh"
    finally:
        await slow.aclose()


async def test_aclose_fails_calls_in_flight_and_a_new_call_reconnects(client: RespClient, redis: Redis) -> None:
    await client.send([("CLIENT", "SETNAME", "resp-close")])
    before = await _client_id(client)
    blocked = asyncio.create_task(client.execute_command("BLPOP", "q", 0))
    await wait_for(lambda: _blocked_on(redis, "resp-close", "blpop"), what="the BLPOP to block")
    await client.aclose()
    with pytest.raises(RedisConnectionError, match="closed"):
        await blocked
    async def dropped() -> bool:
        return not await _blocked_on(redis, "resp-close", "blpop")

    await wait_for(dropped, what="the server to drop the closed connection")
    assert await client.echo("back") == b"back"
    assert await _client_id(client) != before


# ---------------------------------------------------------------------------- authentication


@dataclass
class AuthServer:
    port: int
    socket: str
    password: str = "s3cret"


@pytest.fixture
def auth_process(tmp_path: Path) -> Iterator[tuple[AuthServer, subprocess.Popen[bytes]]]:
    """A second redis-server that wants a password (TCP and a unix socket); stopped after the test."""
    server = AuthServer(free_port(), str(tmp_path / "redis.sock"))
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(server.port), "--bind", "127.0.0.1",
         "--requirepass", server.password, "--save", "", "--appendonly", "no",
         "--unixsocket", server.socket, "--unixsocketperm", "700", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield server, proc
    finally:
        stop_process(proc, timeout=5)


@pytest.fixture
async def auth_server(auth_process: tuple[AuthServer, subprocess.Popen[bytes]]) -> AuthServer:
    server, proc = auth_process

    async def up() -> bool:
        assert proc.poll() is None, "the password-protected redis-server exited"
        probe = Redis(host="127.0.0.1", port=server.port, password=server.password)
        try:
            return bool(await probe.ping())
        except RedisConnectionError:
            return False
        finally:
            await probe.aclose()

    await wait_for(up, 5.0, what="the password-protected redis-server to answer")
    return server


async def test_like_authenticates_and_selects_the_database(auth_server: AuthServer) -> None:
    url = f"redis://:{auth_server.password}@127.0.0.1:{auth_server.port}/2"
    admin = Redis.from_url(url)
    fast = RespClient.like(admin)
    try:
        assert (fast.password, fast.db, fast.port) == (auth_server.password, 2, auth_server.port)
        assert await fast.set("auth:k", "v") == b"OK"
        assert await admin.get("auth:k") == b"v"  # written in db 2 ...
        db0 = Redis(host="127.0.0.1", port=auth_server.port, password=auth_server.password, db=0)
        try:
            assert await db0.get("auth:k") is None  # ... not in db 0
        finally:
            await db0.aclose()
        await fast.aclose()
        assert await fast.get("auth:k") == b"v"  # a new connection authenticates and selects again
    finally:
        await fast.aclose()
        await admin.aclose()


async def test_like_with_a_username_and_a_unix_socket(auth_server: AuthServer) -> None:
    admin = Redis(unix_socket_path=auth_server.socket, username="default", password=auth_server.password, db=5)
    fast = RespClient.like(admin)
    try:
        assert (fast.path, fast.username, fast.db) == (auth_server.socket, "default", 5)
        await admin.set("unix:k", "through the socket")
        assert await fast.get("unix:k") == b"through the socket"
        (user,) = await fast.send([("ACL", "WHOAMI")])
        assert user == b"default"
    finally:
        await fast.aclose()
        await admin.aclose()


async def test_a_wrong_password_or_none_gives_a_clear_error(auth_server: AuthServer) -> None:
    wrong = RespClient(port=auth_server.port, password="nope", db=2)
    anonymous = RespClient(port=auth_server.port)
    try:
        for _ in range(2):  # again: no unauthenticated connection was kept from the first try
            with pytest.raises((ResponseError, RedisConnectionError), match=r"WRONGPASS|invalid"):
                await wrong.ping()
        with pytest.raises(ResponseError, match="NOAUTH"):
            await anonymous.get("k")
    finally:
        await wrong.aclose()
        await anonymous.aclose()


async def test_an_unreachable_server_is_a_connection_error() -> None:
    nobody = RespClient(port=free_port(), connect_timeout=2.0)
    try:
        with pytest.raises(RedisConnectionError, match="cannot connect"):
            await nobody.ping()
    finally:
        await nobody.aclose()


async def test_redis_py_helpers_for_two_word_commands_work(client: RespClient, redis: Redis) -> None:
    sha = await client.script_load("return 41 + 1")  # "SCRIPT LOAD" is sent as two words
    assert sha == (await redis.script_load("return 41 + 1")).encode()
    assert await client.evalsha(sha, 0) == 42
    assert isinstance(await client.client_id(), int)
    pipe = client.pipeline()
    pipe.client_setname("hot-path")
    pipe.client_getname()
    assert await pipe.execute() == [b"OK", b"hot-path"]


async def test_a_command_that_cannot_be_packed_fails_alone(client: RespClient) -> None:
    await client.send([("SET", "a", "value-a"), ("SET", "b", "value-b")])
    with pytest.raises(TypeError):
        await client.send([("SET", "k", None)])  # type: ignore[list-item]
    assert await client.send([("GET", "a")]) == [b"value-a"]  # nobody takes another's reply
    assert await client.send([("GET", "b")]) == [b"value-b"]
    assert await client.send([]) == []


async def test_callers_waiting_for_a_connection_share_one_attempt() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts, never answers AUTH

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RespClient(port=port, password="pw", connect_timeout=0.3)
    try:
        results = await asyncio.gather(*(client.send([("PING",)]) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
        assert len(accepted) == 1  # one attempt for the five callers, not five in a row
    finally:
        await client.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_transaction_runs_its_commands_together_and_raises_their_first_error(
        client: RespClient, redis: Redis) -> None:
    tx = RespTransaction(client)
    tx.set("tx:a", "1")
    tx.incrby("tx:n", 2)
    others = [asyncio.ensure_future(client.send([("INCR", "tx:n")])) for _ in range(3)]  # callers meanwhile
    assert await tx.execute() == [b"OK", 2]
    await asyncio.gather(*others)
    assert await redis.get("tx:n") == b"5"
    failing = RespTransaction(client)
    failing.set("tx:b", "1")
    failing.incrby("tx:a", 1)
    failing.execute_command("HSET", "tx:a", "f", "v")  # wrong type: fails inside EXEC, the rest ran
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await failing.execute()
    assert await redis.get("tx:a") == b"2" and await redis.get("tx:b") == b"1"
    queued = RespTransaction(client)
    queued.set("tx:c", "1")
    queued.execute_command("NOSUCHCOMMAND")  # refused when queued: nothing runs
    with pytest.raises(ResponseError):
        await queued.execute()
    assert await redis.get("tx:c") is None


async def test_send_commands_resends_from_the_refused_script_with_every_reply_in_order(
        client: RespClient, redis: Redis) -> None:
    """``NOSCRIPT``: the commands before the refused one ran and are not sent again (an ``INCR``
    counts once); from it on they are, and the replies come back complete and in order."""
    known = Lua(redis, "return redis.call('INCR', KEYS[1])")
    missing = Lua(redis, "return redis.call('INCRBY', KEYS[1], 10)")
    await redis.script_flush()
    await known.load()
    replies = await send_commands(client, [("INCR", "before"), known.command(["ran"], []),
                                           missing.command(["refused"], []), ("GET", "refused")], [known, missing])
    assert replies == [1, 1, 10, b"10"]
    assert await redis.mget("before", "ran", "refused") == [b"1", b"1", b"10"]
