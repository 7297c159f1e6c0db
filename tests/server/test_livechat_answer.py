"""The live chat's 202 answer is written without ``json.dumps`` (issue 14 aim 1): the same text."""

from __future__ import annotations

import json

import pytest

from bot.channels.livechat import conversation
from bot.server.livechat import accepted_json


@pytest.mark.parametrize("duplicate", [False, True])
@pytest.mark.parametrize("session", ["PtuEFBNOfQ5xj7t2", "a_b-c" * 12, "x"])
@pytest.mark.parametrize("account", ["demo", "shop"])
def test_the_accepted_answer_is_what_json_dumps_writes(duplicate: bool, session: str, account: str) -> None:
    cid = conversation(account, session)
    body = {"accepted": True, "duplicate": duplicate, "conversation": cid}
    assert accepted_json(duplicate, cid) == json.dumps(body)


@pytest.mark.parametrize("cid", ['a"b\\c', "é:ü:\u2028", "tab\there", "\x00\x1f", "{x}:y:%41"])
def test_any_conversation_id_is_escaped_as_json_dumps_escapes_it(cid: str) -> None:
    assert accepted_json(False, cid) == json.dumps({"accepted": True, "duplicate": False, "conversation": cid})
