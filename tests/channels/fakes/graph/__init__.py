"""A fake Meta Graph API on loopback, following the documented API closely enough to catch
mistakes, plus builders for the webhooks Meta posts and a harness that runs our app against it.

Graph side (``GraphFake``):

* WhatsApp Cloud: ``POST /{version}/{PHONE_NUMBER_ID}/messages`` answers
  ``{"messaging_product": "whatsapp", "contacts": [...], "messages": [{"id": "wamid..."}]}``;
  bodies are checked against the documented limits (3 reply buttons, titles ≤ 20 and unique,
  ≤ 10 list rows, row title ≤ 24, description ≤ 72, list button ≤ 20, interactive body
  ≤ 1024, text ≤ 4096, media by link or id, templates with name and language); a free-form
  message outside the customer's 24-hour window gets 131047 (or, with
  ``window_errors="async"``, is accepted and fails later in a status webhook); more than
  ``throughput`` messages per second on the number get 130429.
* Instagram / Messenger: ``POST /{version}/me/messages`` (recipient ``id`` or ``comment_id``)
  answers ``{"recipient_id", "message_id"}``; ≤ 13 quick replies with titles ≤ 20; text
  ≤ 1000 bytes (Instagram) or 2000 characters (Messenger); the 24-hour window (code 10,
  subcode 2018278), the ``HUMAN_AGENT`` tag for 7 days, one private reply per comment within
  7 days; ``POST /{version}/{comment-id}/replies?message=…`` answers ``{"id"}``.
* Every error has Graph's shape ``{"error": {"message", "type", "code", "error_subcode",
  "fbtrace_id"}}``. The Bearer token (or ``access_token``) is checked (190 otherwise).

The customer side: ``customer_wrote`` / ``commented`` tell the fake what Meta would know (the
webhook helpers call them), and ``GraphFake.post_webhook`` posts a payload to our server the
way Meta does: compact JSON with non-ASCII escaped, ``X-Hub-Signature-256`` over those bytes.

The package: ``meta`` (ids, secrets, signing), ``api`` (``GraphFake``), ``webhooks`` (payload
builders), ``harness`` (accounts, ``running_app``) and ``flows``; everything is re-exported here.
"""

from __future__ import annotations

from .api import Call, Comment, GraphError, GraphFake
from .flows import ALL_FLOWS, ASK_FLOW, HELLO_FLOW, REMIND_FLOW, SHOP_FLOW
from .harness import (
    Harness,
    instagram_account,
    messenger_account,
    running_app,
    whatsapp_account,
    write_flow,
    write_flows,
)
from .meta import (
    APP_SECRET,
    DAY,
    DISPLAY_NUMBER,
    IG_ID,
    PAGE_ID,
    PHONE_NUMBER_ID,
    TOKEN,
    VERIFY_TOKEN,
    VERSION,
    WABA_ID,
    dumps,
    sign,
)
from .webhooks import (
    dm,
    fb_delivery,
    fb_dm,
    fb_postback,
    ig_comment,
    ig_dm,
    ig_echo,
    ig_read,
    ig_story_mention,
    messaging_webhook,
    wa_button_reply,
    wa_image,
    wa_list_reply,
    wa_message,
    wa_status,
    wa_template_button,
    wa_text,
    wa_webhook,
)

__all__ = [
    "ALL_FLOWS",
    "APP_SECRET",
    "ASK_FLOW",
    "DAY",
    "DISPLAY_NUMBER",
    "HELLO_FLOW",
    "IG_ID",
    "PAGE_ID",
    "PHONE_NUMBER_ID",
    "REMIND_FLOW",
    "SHOP_FLOW",
    "TOKEN",
    "VERIFY_TOKEN",
    "VERSION",
    "WABA_ID",
    "Call",
    "Comment",
    "GraphError",
    "GraphFake",
    "Harness",
    "dm",
    "dumps",
    "fb_delivery",
    "fb_dm",
    "fb_postback",
    "ig_comment",
    "ig_dm",
    "ig_echo",
    "ig_read",
    "ig_story_mention",
    "instagram_account",
    "messaging_webhook",
    "messenger_account",
    "running_app",
    "sign",
    "wa_button_reply",
    "wa_image",
    "wa_list_reply",
    "wa_message",
    "wa_status",
    "wa_template_button",
    "wa_text",
    "wa_webhook",
    "whatsapp_account",
    "write_flow",
    "write_flows",
]
