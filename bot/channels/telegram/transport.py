"""Bot API calls over our shared ``aiohttp`` session: ``BotApi`` for the send path (plain JSON in
and out), python-telegram-bot's transport for the rest (polling), and 429s read without PTB's
deprecation warnings; separate because it speaks PTB's transport and error interface."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from datetime import timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import BaseRequest, RequestData

_JSON_HEADERS = {"Content-Type": "application/json", "User-Agent": BaseRequest.USER_AGENT}
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class BotApi:
    """The send path's Bot API calls, straight over the shared ``aiohttp`` session (keep-alive).

    Parameters are plain JSON (``outbound.plan`` builds them so) encoded once; the answer's
    ``result`` comes back as parsed JSON. PTB's ``Bot`` turns every call's parameters into
    ``RequestParameter`` objects and every answer into a ``Message`` tree: more CPU than the
    call itself. Errors are PTB's exceptions, raised as its ``BaseRequest`` would raise them
    (the adapter maps them to delivery errors), so both paths fail alike.
    """

    def __init__(self, http: aiohttp.ClientSession, base_url: str, *, secret: str = "", read_timeout: float = 20.0,
                 connect_timeout: float = 10.0) -> None:
        self._http = http
        self._base = base_url  # https://api.telegram.org/bot<token>
        self._secret = secret  # the bot token, kept out of error texts
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)

    async def call(self, method: str, params: Mapping[str, Any]) -> Any:
        """``method`` with ``params`` (None values left out, as PTB does); its ``result``."""
        body = _ENCODE({k: v for k, v in params.items() if v is not None}).encode()
        try:
            async with self._http.post(f"{self._base}/{method}", data=body, headers=_JSON_HEADERS,
                                       timeout=self._timeout) as resp:
                status, payload = resp.status, await resp.read()
        except TimeoutError as exc:
            raise TimedOut() from exc
        except aiohttp.ClientError as exc:
            raise network_error(exc, self._secret) from None
        if 200 <= status <= 299:
            try:
                return json.loads(payload)["result"]
            except (ValueError, KeyError, TypeError) as exc:
                raise TelegramError("Invalid server response") from exc
        raise _failure(status, payload)


def redact(text: str, secret: str) -> str:
    """``text`` without the bot token (as written, or percent-encoded as a URL may carry it)."""
    if not secret:
        return text
    for form in {secret, quote(secret, safe=""), quote(secret)}:
        text = text.replace(form, "<token>")
    return text


class _TokenFilter(logging.Filter):
    """Cuts the bot tokens out of python-telegram-bot's own log records: its ``Bot`` logs its API
    URL (``…/bot<token>``) at DEBUG when built. Runs only for records the level lets through."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a record whose arguments do not fit: left to the handler
            return True
        clean = message
        for token in self.tokens:
            clean = redact(clean, token)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_TOKEN_FILTER = _TokenFilter()
_PTB_LOGGERS = ("telegram.Bot", "telegram.request.BaseRequest")


def keep_out_of_logs(token: str) -> None:
    """Redact ``token`` from python-telegram-bot's log records (call before building its ``Bot``)."""
    _TOKEN_FILTER.tokens.add(token)
    for name in _PTB_LOGGERS:
        logging.getLogger(name).addFilter(_TOKEN_FILTER)  # once: a filter already there is not added


def network_error(exc: aiohttp.ClientError, secret: str) -> NetworkError:
    """PTB's ``NetworkError`` for an aiohttp failure of either path. aiohttp's texts quote the URL
    (a redirect's target, an invalid URL), and a Bot API URL holds the bot token: it is cut out
    here, and the caller raises ``from None`` so no traceback carries the original either."""
    return NetworkError(redact(f"aiohttp.{type(exc).__name__}: {exc}", secret))


def _failure(status: int, payload: bytes) -> TelegramError:
    """PTB's exception for a Bot API error answer (``BaseRequest._request_wrapper``'s mapping)."""
    if status == 429:
        return _retry_after(payload) or RetryAfter(1)
    try:
        message = f"{HTTPStatus(status).phrase} ({status})"
    except ValueError:
        message = f"Unknown HTTPError ({status})"
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if isinstance(data, dict):
        message = str(data.get("description") or message)
        parameters = data.get("parameters")
        if isinstance(parameters, dict):
            if parameters.get("migrate_to_chat_id"):
                return ChatMigrated(parameters["migrate_to_chat_id"])
            if parameters.get("retry_after"):
                return _retry_after(payload) or RetryAfter(1)
    if status == 403:
        return Forbidden(message)
    if status in (401, 404):
        return InvalidToken(message)
    if status == 400:
        return BadRequest(message)
    if status == 409:
        return Conflict(message)
    return NetworkError(message)


class AiohttpRequest(BaseRequest):
    """python-telegram-bot's transport over the process's shared ``aiohttp`` session."""

    def __init__(self, http: aiohttp.ClientSession, *, secret: str = "", read_timeout: float = 20.0,
                 connect_timeout: float = 10.0) -> None:
        self._http = http
        self._secret = secret  # the bot token, kept out of error texts
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None  # the session belongs to the services

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: Any = BaseRequest.DEFAULT_NONE, write_timeout: Any = BaseRequest.DEFAULT_NONE,
                         connect_timeout: Any = BaseRequest.DEFAULT_NONE,
                         pool_timeout: Any = BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:
        read = self._read_timeout if isinstance(read_timeout, DefaultValue) else read_timeout
        connect = self._connect_timeout if isinstance(connect_timeout, DefaultValue) else connect_timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        kwargs: dict[str, Any] = {}
        headers = {"User-Agent": self.USER_AGENT}
        if request_data is not None:
            files = request_data.multipart_data
            if files:
                form = aiohttp.FormData()
                for name, value in request_data.json_parameters.items():
                    form.add_field(name, value)
                for name, (filename, content, mime) in files.items():
                    form.add_field(name, content, filename=filename, content_type=mime)
                kwargs["data"] = form
            else:
                kwargs["data"] = request_data.json_payload
                headers["Content-Type"] = "application/json"
        try:
            async with self._http.request(method, url, headers=headers, timeout=timeout, **kwargs) as resp:
                status, body = resp.status, await resp.read()
        except TimeoutError as exc:
            raise TimedOut() from exc
        except aiohttp.ClientError as exc:
            raise network_error(exc, self._secret) from None
        if status == 429:
            raise _retry_after(body) or RetryAfter(1)
        return status, body


def _retry_after(body: bytes) -> RetryAfter | None:
    """PTB's own ``RetryAfter`` for a 429 body, made without its deprecation warning (PTB 22
    warns when the exception reads its int-typed ``retry_after`` for its message)."""
    try:
        seconds = json.loads(body)["parameters"]["retry_after"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return None
    with warnings.catch_warnings():  # synchronous: no other task runs inside
        warnings.simplefilter("ignore")
        return RetryAfter(max(1, math.ceil(seconds)))


def retry_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` in seconds, whichever type this PTB version returns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)

