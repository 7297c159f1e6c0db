"""Structured logs: ``time level logger event key=value …`` with stable dotted event names.

Extra fields whose names look secret (token, secret, password, authorization, api_key, or named
``key``) are masked. A live chat session id is a credential: in any value, the message and a
traceback, a live chat conversation id ``livechat:<account>:<session>`` (or a URL's
``session=``) shows the session as a short hash (the same session, the same hash: lines still
join up). A value or message with a control character is quoted with it escaped (one record is
one line: no forged lines), and a value over ``VALUE_MAX`` characters is cut.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

from .store.outages import store_outage

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SECRET_WORDS = ("token", "secret", "password", "authorization", "api_key", "apikey")
#: The most characters of one value a line shows.
VALUE_MAX = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: A live chat conversation id's session (plain or percent-encoded, whatever the account's
#: name), or a URL's ``session=``: the session is ``[A-Za-z0-9_-]{8,64}`` (bot/channels/livechat.py).
_SESSION = re.compile(r"(livechat(?::|%3[Aa])[^:\s'\"]{1,200}?(?::|%3[Aa])|session=)([A-Za-z0-9_-]{8,64})")


def _hashed(match: re.Match[str]) -> str:
    return f"{match[1]}~{hashlib.blake2s(match[2].encode(), digest_size=5).hexdigest()}"


def hide_sessions(text: str) -> str:
    """``text`` with every live chat session in it as its hash."""
    if "livechat" in text or "session=" in text:
        return _SESSION.sub(_hashed, text)
    return text


def log_value(key: str, value: object) -> str:
    """One extra field's value as the line shows it (see the module docstring)."""
    if key == "key" or any(w in key.lower() for w in _SECRET_WORDS):
        return "***"
    text = hide_sessions(str(value))
    if len(text) > VALUE_MAX:
        text = f"{text[:VALUE_MAX]}…(+{len(text) - VALUE_MAX})"
    if " " in text or not text or _CONTROL.search(text):
        text = repr(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = hide_sessions(record.getMessage())
        if _CONTROL.search(message):  # a library's message quoting what a client sent
            message = repr(message)
        parts = [f"{stamp}.{int(record.msecs):03d}Z", record.levelname.lower(), record.name, message]
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            parts.append(f"{key}={log_value(key, value)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + hide_sessions(self.formatException(record.exc_info))
        return line


class OutageFilter(logging.Filter):
    """While the store is down every loop and request fails the same way, many times a second:
    one line per (logger, event, error type) every ``window`` seconds, without the traceback,
    with ``suppressed=N`` counting the lines left out since. Other records pass untouched.

    A record is an outage one when its exception is a Redis connection, timeout or
    out-of-memory error or ``StoreFull``, or when it was logged with ``extra={"_outage": True}``.
    """

    def __init__(self, window: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not (_is_outage(exc) or getattr(record, "_outage", False)):
            return True
        now = self._clock()
        key = (record.name, str(record.msg), type(exc).__name__ if exc is not None else "")
        last, left_out = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.window:
            self._seen[key] = (last, left_out + 1)
            return False
        if len(self._seen) > 1000:  # event names are a fixed set; this only bounds a surprise
            self._seen.clear()
        self._seen[key] = (now, 0)
        if exc is not None:
            record.error = f"{type(exc).__name__}: {exc}"
            record.exc_info = None
            record.exc_text = None
        if left_out:
            record.suppressed = left_out
        return True


class ParserRejectionFilter(logging.Filter):
    """aiohttp answers a request its HTTP parser refuses (bytes that are not HTTP, a line over
    8 KiB, a control character in a header) with a 400 but logs it at ERROR with a traceback.
    That is expected hostile input: one warning line, ``http.bad_request``, without the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.msg, record.args = "http.bad_request", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            # The parser's message quotes the raw line (an Authorization header's token, a
            # cookie): only its words before the first quote or colon are kept.
            said = re.split(r"[:'\"]", str(exc.message), maxsplit=1)[0].strip()
            record.reason = f"{type(exc).__name__}: {said}"[:200]
        return True


def quiet_parser_rejections() -> None:
    """Install ``ParserRejectionFilter`` on aiohttp's server logger (once per process)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserRejectionFilter) for f in server.filters):
        server.addFilter(ParserRejectionFilter())


def _is_outage(exc: BaseException | None) -> bool:
    return exc is not None and (isinstance(exc, ConnectionError) or store_outage(exc) is not None)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler.addFilter(OutageFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
