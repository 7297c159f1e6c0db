"""How the embedded CRM and the outbox store values in Redis: msgpack documents and text replies.

One place knows that msgpack ships no type hints and that redis-py types replies as ``bytes | str``
(ours are bytes: no client of ours sets ``decode_responses``).
"""

from __future__ import annotations

from typing import Any

import msgpack


def pack(value: object) -> bytes:
    """A record, note or queued command as a msgpack document."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack(data: bytes | str) -> Any:
    """A msgpack document as plain data (str keys and text, lists, numbers): parsed, so ``Any``.

    ``str`` is in the signature because redis-py types every reply so; it only comes from a client
    that decodes replies, which has already mangled the document.
    """
    if isinstance(data, str):
        raise TypeError("a msgpack document read as text: the Redis client must not decode responses")
    return msgpack.unpackb(data, raw=False)


def text(reply: bytes | str) -> str:
    """A Redis reply as text (an id, a tag, a key)."""
    return reply.decode() if isinstance(reply, bytes) else reply
