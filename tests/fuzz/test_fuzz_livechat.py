"""The live chat under hostile input: POST /chat/{account}/messages, the GET long poll and the
WebSocket. Never a 5xx, never a broken socket; what was accepted reads back (widget, API,
search); the server stays healthy (the ``live`` fixture checks it after each test)."""

from __future__ import annotations

import asyncio
import json
import math

import aiohttp
from hypothesis import example, given
from hypothesis import strategies as st

from .live import AUTH, LiveServer, quoted, summarize
from .strategies import (
    RAW_JSON,
    content_types,
    dump,
    fuzz_settings,
    garbage_bodies,
    hostile,
    sessions,
    short_text,
    small_json_values,
    valid_sessions,
)

accounts = st.one_of(st.sampled_from(["demo", "demo", "fz"]), short_text)
message_fields = {"session": sessions, "text": st.one_of(st.text(max_size=30), hostile),
                  "payload": st.one_of(st.text(max_size=30), hostile),
                  "client_msg_id": st.one_of(st.uuids().map(str), hostile),
                  "name": st.one_of(st.text(max_size=30), hostile), "type": hostile}
message_objects = st.fixed_dictionaries(
    {"session": valid_sessions},
    optional={k: v for k, v in message_fields.items() if k != "session"})
message_docs = st.one_of(message_objects, message_objects, st.fixed_dictionaries({}, optional=message_fields),
                         hostile)
bodies = st.one_of(st.builds(dump, message_docs, ascii_only=st.booleans()),
                   st.builds(dump, message_docs), garbage_bodies)


@fuzz_settings(60)
@given(account=accounts, body=bodies, content_type=content_types)
@example(account="demo", body=b'{"session": "abcdefgh1", "text": "\\ud800"}', content_type=b"application/json")
@example(account="demo", body=b"[" * 10_000 + b"]" * 10_000, content_type=b"application/json")
@example(account="demo", body=b'{"session": "abcdefgh1", "text": "hi", "name": "a\\u0000\\udfff"}',
         content_type=b"application/json")
@example(account="demo", body=b'{"session": "abcdefgh1", "text": NaN}', content_type=b"application/json")
@example(account="demo", body=b'{"session": "abcdefgh1", "text": "\xff"}', content_type=b"application/json")
def test_posting_a_message(live: LiveServer, account: str, body: bytes, content_type: bytes) -> None:
    path = f"/chat/{quoted(account)}/messages"
    what = f"POST {path} Content-Type: {content_type!r}\nbody: {body[:300]!r} ({len(body)} bytes)"
    r = live.no_5xx(what, lambda: live.raw("POST", path, body=body,
                                           headers=[("Content-Type", content_type)]))
    if r.status != 202:
        return
    cid = r.json()["conversation"]
    session = cid.split(":", 2)[2]
    # What was accepted reads back: the widget's poll, the conversation, the list and search.
    live.no_5xx(f"{what}\nthen the widget's read",
                lambda: live.raw("GET", f"/chat/{quoted(account)}/messages?session={session}&after=0"))
    auth = [("Authorization", AUTH)]
    live.no_5xx(f"{what}\nthen GET /api/conversations/{cid}",
                lambda: live.raw("GET", f"/api/conversations/{quoted(cid)}", headers=auth))
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # accepted anyway: the server's parser differs
        doc = None
    name = doc.get("name") if isinstance(doc, dict) else None
    search = quoted(name if isinstance(name, str) else session)
    live.no_5xx(f"{what}\nthen GET /api/conversations?q={search[:200]}",
                lambda: live.raw("GET", f"/api/conversations?q={search}", headers=auth))


def _blocks(wait: str) -> bool:
    """Whether a long poll with this ``wait`` may rightly hold the request (a positive number)."""
    try:
        seconds = float(wait)
    except ValueError:
        return False
    return not math.isnan(seconds) and seconds > 0.5


poll_keys = st.sampled_from(["session", "after", "wait", "session", "after", "wait", "x"])
poll_values = st.one_of(
    st.sampled_from(["0", "1", "-1", "0.2", "inf", "-inf", "nan", "NaN", "1e400", "-1e400", "1e-400",
                     "9" * 40, "1_0", " 1", "0x1", "１", "", "+0", "1.", ".5"]),
    st.integers(-10, 10).map(str), short_text, st.sampled_from([str(v) for v in RAW_JSON[:8]]))


@st.composite
def poll_queries(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A query string (the raw bytes sent) and the ``wait`` the server reads (the first)."""
    pairs: list[tuple[str, str]] = []
    # Mostly a real session and numbers, so the reads behind the checks are reached.
    choices = (("session", valid_sessions, sessions), ("after", st.integers(-3, 3).map(str), poll_values),
               ("wait", st.sampled_from(["0", "0.1", "-1"]), poll_values))
    for key, usual, odd in choices:
        roll = draw(st.integers(0, 9))
        if roll < 6:
            pairs.append((key, draw(usual)))
        elif roll < 9:
            pairs.append((key, draw(odd)))
    pairs += draw(st.lists(st.tuples(poll_keys, poll_values), max_size=2))
    pairs = draw(st.permutations(pairs))
    wait = next((v for k, v in pairs if k == "wait"), None)
    if draw(st.integers(0, 9)) == 0:  # unencoded bytes in the request target
        raw = "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
        raw = raw.replace(b" ", b"+").replace(b"\r", b"").replace(b"\n", b"").replace(b"#", b"")
        return raw, wait
    return "&".join(f"{quoted(k)}={quoted(v)}" for k, v in pairs).encode(), wait


@fuzz_settings(60)
@given(account=st.one_of(st.just("demo"), accounts), query=poll_queries())
@example(account="demo", query=(b"session=abcdefgh1&after=-1", None))
@example(account="demo", query=(b"session=abcdefgh1&after=99999999999999999999", None))
@example(account="demo", query=(b"session=abcdefgh1&wait=nan", "nan"))
@example(account="demo", query=(b"session=abcdefgh1&wait=-inf", "-inf"))
def test_the_long_poll(live: LiveServer, account: str, query: tuple[bytes, str | None]) -> None:
    target = f"/chat/{quoted(account)}/messages?".encode() + query[0]
    wait = query[1]
    timeout = 2.0 if wait is not None and _blocks(wait) else 6.0
    try:
        live.no_5xx(f"GET {target[:500]!r}", lambda: live.raw("GET", target, timeout=timeout))
    except AssertionError as exc:
        if wait is not None and _blocks(wait) and "timed out" in str(exc):
            return  # a long poll that waits as asked
        raise


@st.composite
def ws_frames(draw: st.DrawFn) -> list[str]:
    """Text frames: widget messages with hostile fields, other JSON, not JSON."""
    frames = []
    fields = {k: st.one_of(st.text(max_size=20), small_json_values)
              for k in ("session", "text", "payload", "client_msg_id", "name")}
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["message", "message", "json", "garbage"]))
        if kind == "message":
            doc = {"type": "message", **draw(st.fixed_dictionaries({}, optional=fields))}
            frames.append(dump(doc).decode())
        elif kind == "json":
            frames.append(dump(draw(small_json_values)).decode())
        else:
            frames.append(draw(st.text(max_size=50)))
    return frames


async def _websocket(live: LiveServer, query: str, frames: list[str]) -> str | None:
    """Sends the frames then a ping; returns what went wrong (None: the socket answered pong)."""
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(f"{live.url}/chat/demo/ws?{query}",
                                       timeout=aiohttp.ClientWSTimeout(ws_close=5))
        except aiohttp.WSServerHandshakeError as exc:
            return f"handshake answered {exc.status}" if exc.status >= 500 else None
        async with ws:
            try:
                for frame in frames:
                    await ws.send_str(frame)
                await ws.send_str('{"type": "ping"}')
                async with asyncio.timeout(8):
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") == "pong":
                            return None
            except (TimeoutError, ConnectionError) as exc:
                return f"no pong ({type(exc).__name__})"
            return f"the socket closed without a pong (code {ws.close_code})"


ws_queries = st.one_of(
    valid_sessions.map(lambda s: f"session={s}"),
    st.tuples(valid_sessions, poll_values).map(lambda t: f"session={t[0]}&after={quoted(t[1])}"),
    st.tuples(sessions, poll_values).map(lambda t: f"session={quoted(t[0])}&after={quoted(t[1])}"))


@fuzz_settings(25)
@given(query=ws_queries, frames=ws_frames())
@example(query="session=abcdefgh1&after=-1", frames=['{"type": "message", "text": "hi"}'])
@example(query="session=abcdefgh1", frames=["[" * 10_000 + "]" * 10_000])
@example(query="session=abcdefgh1", frames=['{"type": "message", "text": "\\ud800"}'])
def test_the_websocket(live: LiveServer, query: str, frames: list[str]) -> None:
    mark = live.trap.mark()
    problem = asyncio.run(_websocket(live, query, frames))
    assert problem is None, (f"WS /chat/demo/ws?{query[:300]}\nframes: {[f[:200] for f in frames]}\n"
                             f"-> {problem}\nserver log:\n{summarize(live.trap.since(mark))}")
