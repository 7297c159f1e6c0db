"""Channel webhooks under hostile input, signed (so the parsers see it) and unsigned or badly
signed (so the checks do): Telegram's secret header, Meta's ``X-Hub-Signature-256`` (WhatsApp,
Instagram), Twilio's ``X-Twilio-Signature`` (computed with twilio's ``RequestValidator``).
Never a 5xx; the server stays healthy (checked after each test by the ``live`` fixture)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from tests.channels.fakes.graph import IG_ID, dm, messaging_webhook, sign, wa_text
from tests.channels.fakes.telegram import text_update

from .live import META_SECRET, TG_SECRET, TWILIO_FROM, TWILIO_TOKEN, LiveServer, quoted
from .strategies import (
    content_types,
    dump,
    fuzz_settings,
    garbage_bodies,
    header_bytes,
    hostile,
    mutated,
    numbers,
    short_text,
    text,
)

Headers = list[tuple[str | bytes, str | bytes]]
#: The platforms' timestamps: now (once per run), so the replies are inside the messaging window.
AT = int(time.time())


def _telegram(update_id: int, chat: int, words: str) -> dict[str, Any]:
    update = text_update(update_id, chat, words)
    update["message"]["date"] = AT
    return update


def _whatsapp(sender: str, words: str, mid: str) -> dict[str, Any]:
    doc = wa_text(sender, words, mid=mid)
    doc["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = str(AT)
    return doc


def _instagram(sender: str, words: str, mid: str) -> dict[str, Any]:
    event = dm(sender, IG_ID, text=words, mid=mid)
    event["timestamp"] = AT * 1000
    doc = messaging_webhook("instagram", [event], IG_ID)
    doc["entry"][0]["time"] = AT * 1000
    return doc


ids = st.integers(1, 10**6)
words = st.one_of(st.text(max_size=30), text)
numbers_as_text = st.one_of(st.from_regex(r"\A[1-9][0-9]{6,14}\Z"), text)
json_bodies = st.booleans().flatmap(
    lambda ascii_only: st.one_of(
        st.builds(lambda v: dump(v, ascii_only=ascii_only), hostile), garbage_bodies))

telegram_docs = st.builds(_telegram, ids, st.integers(-2**40, 2**40), words).flatmap(mutated)
whatsapp_docs = st.builds(_whatsapp, numbers_as_text, words, ids.map(lambda n: f"wamid.F{n}")).flatmap(mutated)
instagram_docs = st.builds(_instagram, numbers_as_text, words, ids.map(lambda n: f"mid.F{n}")).flatmap(mutated)


def _body(docs: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.builds(dump, docs), st.builds(dump, docs), json_bodies)


def _send(live: LiveServer, path: str, body: bytes, headers: Headers) -> None:
    shown = [(k, "<the secret>" if v == TG_SECRET.encode() else v) for k, v in headers]
    what = f"POST {path} headers={shown}\nbody: {body[:400]!r} ({len(body)} bytes)"
    live.no_5xx(what, lambda: live.raw("POST", path, body=body, headers=headers))


secrets = st.one_of(st.just(TG_SECRET.encode()), st.just(TG_SECRET.encode()), st.none(), header_bytes)


@fuzz_settings(40)
@given(body=_body(telegram_docs), secret=secrets, content_type=content_types)
def test_telegram_webhooks(live: LiveServer, body: bytes, secret: bytes | None,
                           content_type: bytes) -> None:
    headers: Headers = [("Content-Type", content_type)]
    if secret is not None:
        headers.append(("X-Telegram-Bot-Api-Secret-Token", secret))
    _send(live, "/webhooks/telegram/tg", body, headers)


meta_signatures = st.one_of(st.just("sign"), st.just("sign"), st.just("sign"), st.none(), header_bytes,
                            st.just(b"sha256=" + b"0" * 64), st.just(b"sha256=" + b"\xff" * 64))


@fuzz_settings(40)
@given(channel=st.sampled_from(["whatsapp", "instagram"]), data=st.data(), signature=meta_signatures)
def test_meta_webhooks(live: LiveServer, channel: str, data: st.DataObject,
                       signature: str | bytes | None) -> None:
    body = data.draw(_body(whatsapp_docs if channel == "whatsapp" else instagram_docs), "body")
    headers: Headers = [("Content-Type", "application/json")]
    if signature == "sign":
        headers.append(("X-Hub-Signature-256", sign(META_SECRET, body)))
    elif signature is not None:
        headers.append(("X-Hub-Signature-256", signature))
    account = "wa" if channel == "whatsapp" else "ig"
    _send(live, f"/webhooks/{channel}/{account}", body, headers)


#: Form fields stay short (signing and parsing megabytes is slow); a large body is in garbage_bodies.
form_values = st.one_of(st.text(max_size=20), short_text, numbers.map(str), st.just("é" * 5000))
twilio_forms = st.fixed_dictionaries(
    {"MessageSid": ids.map(lambda n: f"SM{n:032x}"),
     "From": st.one_of(st.from_regex(r"\A[1-9][0-9]{6,14}\Z").map(lambda n: f"whatsapp:+{n}"),
                       form_values),
     "To": st.just(f"whatsapp:{TWILIO_FROM}"), "Body": form_values},
    optional={"NumMedia": st.one_of(st.sampled_from(["0", "1", "10", "11", "-1", "1e400", "nan", "１"]),
                                    form_values),
              "MediaUrl0": form_values, "MediaContentType0": form_values, "ProfileName": form_values,
              "ButtonPayload": form_values, "ButtonText": form_values, "Latitude": form_values,
              "Longitude": form_values, "MessageStatus": form_values, "ErrorCode": form_values,
              "ReferralSourceId": form_values, "SmsMessageSid": form_values})


def _form(fields: dict[str, str]) -> bytes:
    return "&".join(f"{quoted(k)}={quoted(v)}" for k, v in fields.items()).encode()


@fuzz_settings(40)
@given(body=st.one_of(twilio_forms.map(_form), twilio_forms.map(_form), garbage_bodies),
       signed=st.sampled_from(["sign", "sign", "none", "wrong", "bytes"]), bad=header_bytes,
       query=st.sampled_from(["", "", "?bodySHA256=x", "?a=%ff"]))
def test_twilio_webhooks(live: LiveServer, body: bytes, signed: str, bad: bytes, query: str) -> None:
    path = f"/webhooks/twilio/tw{query}"
    headers: Headers = [("Content-Type", "application/x-www-form-urlencoded")]
    if signed == "sign":  # what Twilio signs: the URL and the form's fields as the server reads them
        params = MultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(live.url + path, params)
        headers.append(("X-Twilio-Signature", signature))
    elif signed == "wrong":
        headers.append(("X-Twilio-Signature", "bm90LXRoZS1zaWduYXR1cmU="))
    elif signed == "bytes":
        headers.append(("X-Twilio-Signature", bad))
    _send(live, path, body, headers)
