"""python-telegram-bot's HTTP transport over our shared ``aiohttp`` session, and its 429s read
without PTB's deprecation warnings; separate because it speaks PTB's transport interface."""

from __future__ import annotations

import json
import math
import warnings
from datetime import timedelta
from typing import Any

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram.error import NetworkError, RetryAfter, TimedOut
from telegram.request import BaseRequest, RequestData


class AiohttpRequest(BaseRequest):
    """python-telegram-bot's transport over the process's shared ``aiohttp`` session."""

    def __init__(self, http: aiohttp.ClientSession, *, read_timeout: float = 20.0,
                 connect_timeout: float = 10.0) -> None:
        self._http = http
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
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
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

