"""The app under fuzz: a real server on a loopback port, run in a thread of its own so that
hypothesis drives it from plain synchronous tests, plus a raw HTTP client that can send any
bytes (request line, headers, body) and a health check.

The server has role ``all`` (the worker runs), the live chat accounts ``demo`` (greeted by
flows/demo.json) and ``fz`` (greeted by ``fzbot``, the bot the flow fuzzer uploads), and one
account per webhook channel (Telegram, WhatsApp, Instagram, Twilio) whose outbound API is the
matching fake platform on loopback (tests/channels/fakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot.config import load_config
from bot.server.app import create_app
from tests.channels.fakes.graph import APP_SECRET, GraphFake, instagram_account, whatsapp_account
from tests.channels.fakes.telegram import FakeTelegram
from tests.channels.fakes.twilio_api import FakeTwilio, twilio_account
from tests.live_app import free_port
from tests.server.conftest import ADMIN, FLOWS, NO_AUTOMATIONS

AUTH = f"Bearer {ADMIN}"
TG_TOKEN = "654321:fuzz-token"
TG_SECRET = "fuzz-Secret_token-42"
TWILIO_SID = "AC" + "f" * 32
TWILIO_TOKEN = "fuzz-twilio-auth-token"
TWILIO_FROM = "+15005550006"
META_SECRET = APP_SECRET
#: A request that has not answered after this long is reported (no handler should take longer
#: except a long poll, whose ``wait`` the tests bound).
TIMEOUT = 8.0


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class LogTrap(logging.Handler):
    """Every ERROR record (with its traceback) any logger of the process emits."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.records.append(record)

    def mark(self) -> int:
        with self._lock:
            return len(self.records)

    def since(self, mark: int) -> list[logging.LogRecord]:
        with self._lock:
            return self.records[mark:]


def refused_by_parser(record: logging.LogRecord) -> bool:
    """A record of aiohttp's HTTP parser refusing a request (before any handler ran)."""
    exc = record.exc_info[1] if record.exc_info else None
    return record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError)


def flow_trace(record: logging.LogRecord) -> bool:
    """A flow's own trace at error level (``run.failed``: a mutated flow, a closed messaging
    window): the flow's outcome, reported to its operator, not a failure of the server."""
    return (record.name == "salesbot.runtime" and record.getMessage().startswith("run.")
            and not record.exc_info)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def summarize(records: list[logging.LogRecord], limit: int = 8) -> str:
    """The distinct errors logged (logger, message, exception, last frames), each with a count."""
    seen: dict[str, int] = {}
    for rec in records:
        line = f"[{rec.name}] {rec.getMessage()[:200]}"
        extra = {k: v for k, v in vars(rec).items() if k not in _STANDARD}
        if extra:
            line += f" {str(extra)[:300]}"
        if rec.exc_info and rec.exc_info[1] is not None:
            exc = rec.exc_info[1]
            tb = traceback.extract_tb(exc.__traceback__)
            ours = [f for f in tb if "/bot/" in f.filename or "/crm_bridge/" in f.filename]
            frames = tb[-1:] + ours[-3:] if ours and ours[-1] is not tb[-1] else (ours or tb)[-3:]
            where = " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}"
                                for f in reversed(frames))
            line += f"\n    {type(exc).__name__}: {str(exc)[:160]!r}\n    at {where}"
        seen[line] = seen.get(line, 0) + 1
    out = [f"{n}x {line}" for line, n in list(seen.items())[:limit]]
    if len(seen) > limit:
        out.append(f"... and {len(seen) - limit} more distinct")
    return "\n".join(out)


@dataclass(repr=False)
class LiveServer:
    url: str
    port: int
    trap: LogTrap
    loop: asyncio.AbstractEventLoop
    sessions: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:  # hypothesis prints it with every failing example
        return f"LiveServer({self.url!r})"

    # ------------------------------------------------------------------ raw HTTP
    def raw(self, method: str | bytes, target: str | bytes, *, body: bytes = b"",
            headers: Sequence[tuple[str | bytes, str | bytes]] = (),
            timeout: float = TIMEOUT) -> Reply:
        """One request on a fresh connection, exactly these bytes (no client-side checks)."""
        def b(v: str | bytes) -> bytes:
            return v if isinstance(v, bytes) else v.encode("utf-8", "surrogateescape")

        lines = [b(method) + b" " + b(target) + b" HTTP/1.1",
                 b"Host: 127.0.0.1:%d" % self.port, b"Connection: close",
                 b"Content-Length: %d" % len(body)]
        lines += [b(k) + b": " + b(v) for k, v in headers]
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            # the server may answer early (413) and close: its answer is still readable
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            resp = http.client.HTTPResponse(sock)
            try:
                resp.begin()
                payload = resp.read()
            finally:
                resp.close()
            return Reply(resp.status, payload, {k.lower(): v for k, v in resp.getheaders()})

    def json(self, method: str, path: str, doc: Any = None, *, token: bool = False,
             timeout: float = TIMEOUT) -> Reply:
        headers: list[tuple[str | bytes, str | bytes]] = [("Content-Type", "application/json")]
        if token:
            headers.append(("Authorization", AUTH))
        body = b"" if doc is None else json.dumps(doc).encode()
        return self.raw(method, path, body=body, headers=headers, timeout=timeout)

    # ------------------------------------------------------------------ checks
    def no_5xx(self, what: str, send: Any) -> Reply:
        """Run ``send()``; fail with the request, the response and the server's traceback if the
        answer is a 5xx, the connection breaks or the server does not answer in time."""
        mark = self.trap.mark()
        try:
            reply: Reply = send()
        except (OSError, http.client.HTTPException) as exc:
            raise AssertionError(f"{what}\n-> no answer ({type(exc).__name__}: {exc})\n"
                                 f"{summarize(self.trap.since(mark))}") from None
        if reply.status >= 500:
            raise AssertionError(f"{what}\n-> {reply.status} {reply.body[:1500]!r}\n"
                                 f"server log:\n{summarize(self.trap.since(mark))}")
        return reply

    def say(self, account: str = "demo", text: str = "hello") -> list[str]:
        """A customer writes on the live chat; returns the bot's replies (at least one)."""
        session = "health-" + uuid.uuid4().hex[:12]
        r = self.json("POST", f"/chat/{account}/messages",
                      {"session": session, "text": text, "client_msg_id": uuid.uuid4().hex})
        assert r.status == 202, f"live chat POST -> {r.status} {r.body[:500]!r}"
        deadline = time.monotonic() + 10
        after = 0
        texts: list[str] = []
        while not texts:
            assert time.monotonic() < deadline, "no bot reply on the live chat within 10 s"
            q = f"session={session}&after={after}&wait=1"
            got = self.raw("GET", f"/chat/{account}/messages?{q}")
            assert got.status == 200, f"long poll -> {got.status} {got.body[:500]!r}"
            body = got.json()
            after = body["last"]
            texts += [m["text"] for m in body["messages"] if m["role"] == "bot"]
        return texts

    def assert_healthy(self, since: int | None = None) -> None:
        """/healthz is 200, a live chat conversation gets its bot reply, and (with ``since``)
        nothing was logged at ERROR since that mark (but flows' own ``run.*`` traces, and
        aiohttp's tracebacks for requests its HTTP parser refused: test_fuzz_http.py reports
        those once)."""
        r = self.raw("GET", "/healthz")
        assert r.status == 200, f"/healthz -> {r.status} {r.body!r}"
        assert self.say(), "the demo bot did not answer"
        if since is not None:
            errors = [rec for rec in self.trap.since(since)
                      if not refused_by_parser(rec) and not flow_trace(rec)]
            assert not errors, f"the server logged {len(errors)} error(s):\n{summarize(errors)}"


def quoted(value: str | bytes) -> str:
    """``value`` percent-encoded for a query string or path segment (any bytes survive)."""
    data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return quote(data, safe="")


class _AlwaysOpen(dict[str, float]):
    """Every customer wrote just now (the fake's 24-hour window is always open)."""

    def get(self, key: str, default: Any = None) -> float:
        return time.time()


def _accounts(tg: str, graph: str, twilio: FakeTwilio) -> dict[str, Any]:
    return {
        "fz": {"channel": "livechat", "greeting_bot": "fzbot"},
        "tg": {"channel": "telegram", "greeting_bot": "demo", "api_base_url": tg,
               "credentials": {"token": TG_TOKEN, "secret_token": TG_SECRET}},
        "wa": whatsapp_account(graph, greeting_bot="demo"),
        "ig": instagram_account(graph, greeting_bot="demo"),
        "tw": twilio_account(twilio, "twilio", from_number=TWILIO_FROM, greeting_bot="demo"),
    }


@contextlib.asynccontextmanager
async def _serve(redis_url: str, port: int) -> AsyncIterator[None]:
    url = f"http://127.0.0.1:{port}"
    async with contextlib.AsyncExitStack() as stack:
        telegram = await stack.enter_async_context(FakeTelegram())
        telegram.add_bot(TG_TOKEN)
        graph = GraphFake()
        graph.windows = _AlwaysOpen()  # fuzzed senders never "wrote" to the fake: no 131047
        await graph.start()
        stack.push_async_callback(graph.close)
        twilio = await stack.enter_async_context(
            FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN))
        config = load_config(env={}, overrides={
            "redis_url": redis_url, "flows_dir": str(FLOWS), "automations_dir": str(NO_AUTOMATIONS),
            "admin_token": ADMIN, "public_url": url, "timer_poll_interval": 0.05,
            "shutdown_grace": 5, "accounts": _accounts(telegram.url, graph.base_url, twilio),
            # Every request comes from 127.0.0.1 in bursts: the per-client limits (tested in
            # tests/server/test_limits.py) would answer 429 before the input is looked at.
            "limits": {"enabled": False}})
        # Shutdown waits at most 10 s for requests still open (a long poll given up by its client).
        runner = web.AppRunner(create_app(config, role="all"), shutdown_timeout=10)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield


@contextlib.contextmanager
def live_server(redis_url: str) -> Iterator[LiveServer]:
    """The app in a background thread's event loop, until the block ends."""
    port = free_port()
    trap = LogTrap()
    logging.getLogger().addHandler(trap)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            async with _serve(redis_url, port):
                ready.set()
                await stop.wait()
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="fuzz-server")
    thread.start()
    try:
        assert ready.wait(30), "the server did not start within 30 s"
        if failure:
            raise failure[0]
        yield LiveServer(f"http://127.0.0.1:{port}", port, trap, loop)
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        assert not thread.is_alive(), "the server did not shut down within 60 s"
        loop.close()
        logging.getLogger().removeHandler(trap)
