"""The hot path's key lists (``keys.push_keys``, ``keys.save_keys``) name a conversation's keys
as ``ConversationKey`` does, in the order the push and save scripts take them."""

from __future__ import annotations

import pytest

from bot.store import keys as k


@pytest.mark.parametrize("cid", ["livechat:demo:s-0001234567", "telegram:shop:42", "odd id:{x}:%41"])
def test_the_key_lists_name_what_conversation_key_names(cid: str) -> None:
    key = k.ConversationKey(cid)
    assert k.push_keys(cid) == [key.inbox, key.seen, key.state, key.meta, key.old_seen]
    assert k.save_keys(cid) == [key.state, key.inbox, key.transcript, key.log, key.meta, key.out, key.counter]
