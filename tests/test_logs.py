"""What a log line may show (bot/logs.py): no secret, no live chat session (a credential), one
line per record whatever a value holds. Formatted as the server writes them, and end to end:
a request aiohttp's parser refuses with a token in the bad header, a live chat conversation."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bot.logs import VALUE_MAX, KeyValueFormatter, ParserRejectionFilter, log_value
from tests.live_app import running_app
from tests.rawhttp import raw_request

SESSION = "visitorsess01secret"


def _line(**extra: Any) -> str:
    record = logging.LogRecord("salesbot.test", logging.INFO, __file__, 1, "test.event", (), None)
    record.__dict__.update(extra)
    return KeyValueFormatter().format(record)


def test_secret_fields_are_masked() -> None:
    line = _line(admin_token="t0ps3cret", api_key="k3y", key="raw", authorization="Bearer x", cid="c1")
    assert "t0ps3cret" not in line and "k3y" not in line and "raw" not in line and "Bearer" not in line
    assert "cid=c1" in line


def test_a_live_chat_session_shows_as_a_stable_hash_in_any_value() -> None:
    cid = f"livechat:demo:{SESSION}"
    line = _line(cid=cid, error=f"lost lock of {cid}", other="livechat:demo:anothersession1")
    assert SESSION not in line
    shown = log_value("cid", cid)
    assert shown.startswith("livechat:demo:~") and shown in line and line.count(shown) == 2  # the same hash
    assert log_value("cid", "livechat:demo:anothersession1") != shown
    assert log_value("cid", "telegram:tg:4401") == "telegram:tg:4401"  # other channels' ids are no credential
    assert SESSION not in log_value("url", f"/chat/demo/messages?session={SESSION}&after=0")


@pytest.mark.parametrize("shape", ["livechat:acme.com:{}", "livechat:shop@x:{}", "livechat:my%20shop:{}",
                                   "livechat%3Ademo%3A{}", "sb:conv:{{livechat:demo:{}}}:meta",
                                   "livechat:" + "a" * 100 + ":{}", "/chat/demo/messages?session={}&after=1"])
def test_a_session_is_hidden_whatever_the_account_or_the_encoding(shape: str) -> None:
    shown = log_value("cid", shape.format(SESSION))
    assert SESSION not in shown and log_value("cid", f"livechat:demo:{SESSION}").split(":")[-1] in shown


def test_the_message_and_the_traceback_hide_sessions_too() -> None:
    try:
        raise RuntimeError(f"lost livechat:demo:{SESSION}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed for livechat:demo:%s\nforged",
                                   (SESSION,), sys.exc_info())
    line = KeyValueFormatter().format(record)
    assert SESSION not in line  # in the message and in the traceback
    first, _, trace = line.partition("\n")
    assert first.endswith("\\nforged'")  # the message's line break escaped: one line
    assert trace.startswith("Traceback") and "RuntimeError: lost livechat:demo:~" in trace


@pytest.mark.parametrize("value", ["a\nforged line", "x\rz", "tab\there", "nul\x00", "\x1bansi", "ls\u2028ps"])
def test_a_value_with_control_characters_stays_on_one_line(value: str) -> None:
    line = _line(step=value)
    assert "\n" not in line and "\r" not in line and "\x00" not in line and "\u2028" not in line
    assert line.endswith(f"step={value!r}")


def test_a_huge_value_is_cut() -> None:
    line = _line(step="s" * 200_000)
    assert len(line) < VALUE_MAX + 200 and line.endswith(f"…(+{200_000 - VALUE_MAX})")


@pytest.fixture
def server_lines() -> Iterator[io.StringIO]:
    """Every record of the process formatted as the server writes it, with aiohttp's parser filter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(KeyValueFormatter())
    root, parser, access = logging.getLogger(), logging.getLogger("aiohttp.server"), logging.getLogger("aiohttp.access")
    root.addHandler(handler)
    quiet = ParserRejectionFilter()
    parser.addFilter(quiet)
    levels = root.level, access.level
    root.setLevel(logging.INFO)
    access.setLevel(logging.WARNING)  # as ``logs.configure`` sets it (a URL holds the session)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        parser.removeFilter(quiet)
        root.setLevel(levels[0])
        access.setLevel(levels[1])


async def test_a_refused_header_does_not_put_its_token_in_the_log(
        redis: Any, redis_url: str, server_lines: io.StringIO) -> None:
    async with running_app(redis_url) as app:
        for name, value in ((b"Authorization", b"Bearer ADMINTOKEN-sekret-0123456789\x01"),
                            (b"Cookie", b"sb_live=COOKIESECRET-0123\x00"),
                            (b"X-Telegram-Bot-Api-Secret-Token", b"TGSECRET-0123456789\x01")):
            status, _ = await raw_request(app.url, "GET", b"/api/bots", [(name, value)])
            assert status == 400
    text = server_lines.getvalue()
    assert text.count("http.bad_request") == 3
    for secret in ("ADMINTOKEN-sekret", "COOKIESECRET", "TGSECRET"):
        assert secret not in text


async def test_a_live_chat_conversation_never_logs_its_session(
        redis: Any, redis_url: str, server_lines: io.StringIO) -> None:
    async with running_app(redis_url) as app:
        await app.say(SESSION, "hello")
    text = server_lines.getvalue()
    assert "run.started" in text and "livechat:demo:~" in text  # logged, with the session hashed
    assert SESSION not in text
