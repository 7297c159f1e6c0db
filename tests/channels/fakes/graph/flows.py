"""The flows the channel tests run on every channel (the shop walk-through, business-initiated
messages, a question whose delivery may fail, one hello per conversation)."""

from __future__ import annotations

from typing import Any

#: The conversation the acceptance tests walk through on every channel: a public comment reply
#: when it began with a comment, 3 reply buttons, a list, a 2-second pause, an image, 5 and 13
#: options (list / quick replies / numbered text depending on the channel).
SHOP_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "shop", "name": "Shop", "start": "origin",
    "steps": {
        "origin": {"type": "condition",
                   "branches": [{"if": {"field": "chat.origin", "op": "eq", "value": "comment"}, "next": "public"}],
                   "else": "menu"},
        "public": {"type": "comment", "text": "Thanks! We sent you a DM.", "next": "menu"},
        "menu": {"type": "message", "text": "Hi! What would you like?",
                 "buttons": [{"title": "Drinks", "next": "drinks"}, {"title": "Sizes", "next": "sizes"},
                             {"title": "Nothing", "next": "bye"}],
                 "other_answer": "sorry"},
        "sorry": {"type": "message", "text": "Please pick one of the options.", "next": "bye"},
        "drinks": {"type": "list", "header": "Menu", "text": "Pick a drink", "footer": "Prices incl. VAT",
                   "button": "Open menu",
                   "sections": [{"title": "Hot", "rows": [
                       {"id": "tea", "title": "Tea", "description": "Black or green", "next": "brew"},
                       {"id": "coffee", "title": "Coffee", "next": "brew"}]},
                       {"title": "Cold", "rows": [{"id": "lemonade", "title": "Lemonade", "next": "brew"}]}]},
        "brew": {"type": "message", "text": "One {{ message.text }} coming up.", "next": "wait"},
        "wait": {"type": "pause", "until": [{"on": "timer", "after": "2s", "next": "receipt"}]},
        "receipt": {"type": "message", "text": "Here is your receipt.",
                    "attachments": [{"kind": "image", "url": "https://example.com/receipt.jpg", "name": "receipt"}],
                    "next": "sizes"},
        "sizes": {"type": "message", "text": "Which size?",
                  "buttons": [{"title": t, "next": "flavours"} for t in ("XS", "S", "M", "L", "XL")]},
        "flavours": {"type": "message", "text": "Which flavour?",
                     "buttons": [{"title": f"Flavour {i}", "next": "thanks"} for i in range(1, 14)]},
        "thanks": {"type": "message", "text": "Thanks, {{ message.text }} it is!", "next": "bye"},
        "bye": {"type": "stop"},
    },
}

#: Business-initiated messages, for the 24-hour window: one with a template, one without.
REMIND_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "remind", "name": "Reminder", "start": "nudge",
    "steps": {
        "nudge": {"type": "message", "text": "Your order is ready.", "template": "order_ready",
                  "next": "plain", "failed": "nudge_failed"},
        "plain": {"type": "message", "text": "Anything else?", "next": "hold", "failed": "plain_failed"},
        # The run must still be active when the outbox reports the failure.
        "hold": {"type": "pause",
                 "until": [{"on": "message", "next": "done"}, {"on": "timer", "after": "1h", "next": "done"}]},
        "nudge_failed": {"type": "internal_message", "text": "template failed", "next": "plain"},
        "plain_failed": {"type": "internal_message", "text": "window closed: could not send", "next": "done"},
        "done": {"type": "stop"},
    },
}

#: A waiting question whose delivery may fail (statuses arrive while it waits).
ASK_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "ask", "name": "Ask", "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "Still interested?", "buttons": [{"title": "Yes", "next": "done"}],
                "failed": "ask_failed", "no_answer": {"after": "1h", "next": "done"}},
        "ask_failed": {"type": "internal_message", "text": "delivery failed", "next": "done"},
        "done": {"type": "stop"},
    },
}

#: One message per conversation, for bursts.
HELLO_FLOW: dict[str, Any] = {
    "format": "salesbot.flow/1", "id": "hello", "name": "Hello", "start": "hello",
    "steps": {"hello": {"type": "message", "text": "Hello {{ contact.name }}!", "next": "done"},
              "done": {"type": "stop"}},
}

ALL_FLOWS = (SHOP_FLOW, REMIND_FLOW, ASK_FLOW, HELLO_FLOW)

