"""What one step of ours says in Kommo's handlers, where no jump is involved: messages, internal
messages, predicates (``condition`` / ``conditions`` / a ``buttons`` route), validation rules and
widget requests; the inverse of the matching parts of convert_in.py. Jumps are convert_out.py's.
"""

from __future__ import annotations

import re
from typing import Any

from bot.builder import models as m

from .actions_out import Exporter

Handler = dict[str, Any]
#: Our comparison operators → Kommo's ``condition`` operations (the documented ones).
OPERATIONS = {"eq": "=", "ne": "!=", "in": "in", "not_in": "not_in", "between": "in_range"}
_FLAGS = re.compile(r"^\(\?([ims]+)\)")
_NEGATED = re.compile(r"^\^\(\?s\)\(\?!\.\*\(\?:(.*)\)\)$", re.DOTALL)


def message_checks(x: Exporter, step: m.MessageStep, at: str, *, root_error: bool) -> None:
    """Refuse what a Kommo message cannot carry."""
    if step.template is not None:
        x.refuse(f"{at}/template", "Kommo has no message templates in a bot's code")
    if step.attachments:
        x.refuse(f"{at}/attachments", "Kommo has no attachments in a bot's code (only its own file ids)")
    if step.no_answer is not None:
        x.refuse(f"{at}/no_answer", "Kommo has no timer on waiting for an answer")
    if step.channels is not None:
        x.refuse(f"{at}/channels", "Kommo names channels by account-specific ids: leave the channels out")
    if step.channel_mode is not None and step.recipients == "chat":
        x.refuse(f"{at}/channel_mode", "Kommo chooses the channel only of a message to the lead's contacts "
                 "(recipients main_contact or all_contacts)")
    elif step.channel_mode == "selected":
        x.refuse(f"{at}/channel_mode", 'Kommo has no "selected" channel mode (primary is its any_first)')
    if step.failed is not None and step.recipients == "chat" and not root_error:
        x.refuse(f"{at}/failed", "Kommo has no way on when a message to this chat is not delivered, but for "
                 "the whole bot's (send it to main_contact instead)")
    if any(b.next is not None for b in step.buttons) and any(b.url is not None for b in step.buttons):
        x.refuse(f"{at}/buttons", "Kommo has no message with both link buttons and answer buttons")


def show(x: Exporter, step: m.MessageStep, at: str, on_error: Handler | None, *, root_error: bool) -> Handler:
    """``show`` (this chat), or ``send_external_message`` (the lead's contacts, or a way on when undelivered)."""
    text = x.text(step.text or "", f"{at}/text")
    if step.recipients != "chat" or (step.failed is not None and not root_error) or step.channel_mode:
        buttons = [{"type": "url", "text": b.title, "url": x.text(b.url, f"{at}/buttons/{i}/url")}
                   if b.url is not None else {"type": "inline", "text": b.title} for i, b in enumerate(step.buttons)]
        message: dict[str, Any] = {"type": "external", "text": text}
        if buttons:
            message["buttons"] = buttons
        way = "any_first" if step.channel_mode == "primary" else "over_all"
        recipients = "main_contact" if step.recipients == "chat" else step.recipients
        return {"handler": "send_external_message", "params": {
            "message": message, "recipient": {"type": recipients, "way_of_communication": way},
            "channels": [], "on_error": on_error}}
    if any(b.next is not None for b in step.buttons):
        return {"handler": "show", "params": {"type": "buttons", "value": text,
                                              "buttons": [b.title for b in step.buttons]}}
    links = [{"text": b.title, "url": x.text(b.url, f"{at}/buttons/{i}/url")}
             for i, b in enumerate(step.buttons) if b.url is not None]
    if links:
        return {"handler": "show", "params": {"type": "buttons_url", "value": text, "buttons": links}}
    return {"handler": "show", "params": {"type": "text", "value": text}}


def internal(x: Exporter, step: m.InternalMessageStep, at: str) -> list[Handler]:
    """One ``send_internal`` per recipient (the lead's chat when none)."""
    base: Handler = {"entity_id": "{{lead.id}}", "entity_type": 2, "message": x.text(step.text, f"{at}/text")}
    out = [] if step.to else [{"handler": "send_internal", "params": base}]
    for i, to in enumerate(step.to):
        kind, _, who = to.partition(":")
        if kind == "user":
            user = x.kommo_id("users", who, f"{at}/to/{i}", "user")
            out.append({"handler": "send_internal", "params": {**base, "user_id": user}})
        elif who.isdigit():
            out.append({"handler": "send_internal", "params": {**base, "group_id": int(who)}})
        else:
            x.refuse(f"{at}/to/{i}", f'Kommo names user groups by id: write "team:<id>", not "{to}"')
    return out


# ---------------------------------------------------------------- predicates
def route(x: Exporter, p: m.Predicate, at: str) -> Handler | None:
    """A ``buttons`` route (``value`` or ``regex`` on the reply) for a predicate, if it is one."""
    if not isinstance(p, m.LeafPredicate) or p.field != "message.text" or not isinstance(p.value, str):
        return None
    if p.op == "eq":
        return {"value": x.text(p.value, f"{at}/value")}
    if p.op == "matches":
        return {"regex": kommo_regex(p.value)}
    return None


def predicate(x: Exporter, p: m.Predicate, at: str) -> Handler:
    """``condition`` (one comparison) or ``conditions`` (all / any of several), without its result."""
    if isinstance(p, m.LeafPredicate) or _negated_tag(p):
        return {"handler": "condition", "params": term(x, p, at)}
    if isinstance(p, (m.AllPredicate, m.AnyPredicate)):
        key, leaves = ("all", p.all) if isinstance(p, m.AllPredicate) else ("any", p.any)
        terms = []
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, m.LeafPredicate) or _negated_tag(leaf):
                terms.append(term(x, leaf, f"{at}/{key}/{i}"))
            else:
                x.refuse(f"{at}/{key}/{i}", "Kommo has no nested conditions")
        return {"handler": "conditions", "params": {"logic": "and" if key == "all" else "or", "conditions": terms}}
    kind = "not" if isinstance(p, m.NotPredicate) else "expr"
    x.refuse(f"{at}/{kind}", f'Kommo has no "{kind}" condition'
             + (" (but on tags: not has is !=)" if kind == "not" else ""))
    return {"handler": "condition", "params": {}}


def _negated_tag(p: m.Predicate) -> bool:
    inner = p.not_ if isinstance(p, m.NotPredicate) else None
    return isinstance(inner, m.LeafPredicate) and inner.op == "has" and inner.field.endswith(".tags")


def term(x: Exporter, p: m.Predicate, at: str) -> dict[str, Any]:
    """``{term1, term2, operation}``; a tag test ``has`` is Kommo's ``=`` on ``lead.tags``, ``not has`` its ``!=``."""
    if isinstance(p, m.NotPredicate):
        assert isinstance(p.not_, m.LeafPredicate)
        leaf, operation, at = p.not_, "!=", f"{at}/not"
    else:
        assert isinstance(p, m.LeafPredicate)
        leaf, operation = p, ("=" if p.op == "has" and p.field.endswith(".tags") else OPERATIONS.get(p.op, ""))
    if not operation:
        x.refuse(f"{at}/op", f'Kommo has no operator "{leaf.op}" in conditions (it has eq, ne, in, not_in, '
                 "between, and has on tags)")
    term2: Any
    if leaf.op == "between":
        assert isinstance(leaf.value, list)
        term2 = {"from": x.value(leaf.value[0], f"{at}/value/0"), "to": x.value(leaf.value[1], f"{at}/value/1")}
    else:
        term2 = x.value(leaf.value, f"{at}/value")
    # Tags as Kommo documents them ("term1": "lead.tags"); any other subject is a placeholder.
    tags = leaf.field in ("lead.tags", "contact.tags")
    field = leaf.field if tags else x.text("{{ " + leaf.field + " }}", f"{at}/field")
    return {"term1": field, "term2": term2, "operation": operation}


def kommo_regex(pattern: str) -> str:
    """A pattern of ours (inline flags ``(?i)``) as Kommo writes it: ``/…/i``."""
    flags = ""
    found = _FLAGS.match(pattern)
    if found:
        flags, pattern = found.group(1), pattern[found.end():]
    return "/" + pattern + "/" + flags


# ---------------------------------------------------------------- validation rules
def rule(x: Exporter, r: m.Rule, value: str, at: str) -> dict[str, Any]:
    def out(kind: str, condition: Any, operation: str) -> dict[str, Any]:
        return {"client_value": value, "type": kind, "condition_value": condition, "operation": operation}

    if r.check == "regex" and r.pattern is not None:
        negated = _NEGATED.match(r.pattern)
        if negated:
            return out("regex", kommo_regex(negated.group(1)), "not_contains")
        return out("regex", kommo_regex(r.pattern), "contains")
    if r.check in ("equals", "not_equals"):
        return out("simple", str(r.value), "equal" if r.check == "equals" else "not_equal")
    if r.check == "length":
        if r.min is not None and r.min == r.max:
            return out("simple", _number(r.min), "length")
        x.refuse(f"{at}/check", "Kommo has no length range: its length check takes one number (min = max)")
        return {}
    if r.kind in ("phone", "email"):
        return out(r.kind, "", r.check)
    if r.kind == "range" and r.min is not None and r.max is not None:
        return out("range_numbers", {"from": _number(r.min), "to": _number(r.max)}, r.check)
    if r.kind == "text":
        return out("simple", str(r.value), r.check)
    x.refuse(f"{at}/kind", "Kommo has no range with one bound only" if r.kind == "range"
             else f'Kommo has no "{r.kind}" check')
    return {}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# ---------------------------------------------------------------- widgets
def widget_request(x: Exporter, step: m.WidgetStep, at: str) -> Handler:
    """``widget_request``: Kommo waits for its return_url as our http_request widget with ``wait`` does."""
    if step.widget != "http_request":
        x.refuse(f"{at}/widget", f'Kommo has no widget "{step.widget}" (only http_request, as widget_request)')
    if step.failed is not None:
        x.refuse(f"{at}/failed", "Kommo has no way on when a widget request fails")
    if step.wait is None:
        x.refuse(f"{at}/wait", "Kommo's widget_request always waits for its return_url: add wait")
    elif step.wait.on_timeout is not None:
        x.refuse(f"{at}/wait/on_timeout", "Kommo has no timeout on a widget request")
    params: dict[str, Any] = {}
    for key, value in step.params.items():
        if key in ("url", "data"):
            params[key] = x.value(value, f"{at}/params/{key}")
        else:
            x.refuse(f"{at}/params/{key}", f'Kommo\'s widget_request has no "{key}"')
    return {"handler": "widget_request", "params": params}
