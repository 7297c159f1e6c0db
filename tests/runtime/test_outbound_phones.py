"""How a contact's phone becomes a chat id on the phone-number channels (``chat_id_for_phone``)."""

from __future__ import annotations

import pytest

from bot.runtime.outbound import chat_id_for_phone


@pytest.mark.parametrize(("channel", "phone", "expected"), [
    ("whatsapp", "+90 555 111 22 33", "905551112233"),
    ("whatsapp", "+1 (650) 555-9876", "16505559876"),
    ("twilio", "+1 650 555 9876", "+16505559876"),
    ("sms", "+44 20 7946 0958", "+442079460958"),
    ("whatsapp", "0555 111 22 33", None),  # no country code: which country is unknown
    ("whatsapp", "+1 2", None),  # not a possible number
    ("whatsapp", "call me", None),
    ("whatsapp", None, None),
    ("telegram", "+90 555 111 22 33", None),  # not a phone-number channel
    ("instagram", "+90 555 111 22 33", None),
])
def test_chat_ids_of_phones(channel: str, phone: str | None, expected: str | None) -> None:
    assert chat_id_for_phone(channel, phone) == expected
