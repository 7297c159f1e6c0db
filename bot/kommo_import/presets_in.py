"""Kommo's ``preset`` handlers → a small subflow of our steps.

``contacts.validate_base_info`` looks for a phone number and an e-mail address in the reply, asks
for whichever is missing (its texts ``empty_phone``, ``empty_email``, ``empty_all``), waits, looks
again, and when both are known saves them on the contact and says ``success``. We build exactly
that loop with validation steps (``contains phone`` / ``contains email``), keeping what was found in
``vars.kommo_phone`` / ``vars.kommo_email`` across replies. ``contacts.get_base_info`` saves what the
reply holds without asking.

The subflow's first step carries ``x-kommo`` (``handler``: the original, ``next``: where the
subflow goes on, ``steps``: its other steps), which the flow format keeps and ignores, so export
writes the preset back instead of refusing the steps it is made of.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .build import Builder, Cont, params_of
from .result import KommoImportError, pointer_join

_NOT_MODELLED = ("invalid_phone", "check_doubles", "phone_doubles", "email_doubles", "all_doubles",
                 "use_quick_replies")


def preset(b: Builder, h: Mapping[str, Any], pointer: str, cont: Cont, sid: str) -> Cont | None:
    """The subflow's first step (named ``sid``), or None for an unknown preset (the caller keeps it as custom)."""
    p = params_of(h, pointer)
    name = p.get("name")
    q = p.get("params", {})
    at = pointer_join(pointer, "params", "params")
    if not isinstance(q, Mapping):
        raise KommoImportError(at, "preset: params must be an object")
    then = b.target(cont)
    before = set(b.steps)
    if name == "contacts.validate_base_info":
        found = _validate_base_info(b, q, pointer, at, cont, sid)
    elif name == "contacts.get_base_info":
        found = _collect(b, pointer, sid, then=_save(b, pointer, sid, then), reset=True)
    else:
        return None
    # The original handler, where the subflow goes on and its steps: export writes the preset back.
    inner = sorted(set(b.steps) - before - {sid, then or ""})
    b.steps[sid]["x-kommo"] = {"handler": dict(h), "next": then, "steps": inner}
    return found


def _collect(b: Builder, pointer: str, sid: str, then: str, reset: bool) -> Cont:
    """Steps that look for a phone and an e-mail in the last message, then go to ``then``; the first is ``sid``."""
    email = b.add(b.new_id(f"{sid}_email"), {
        "type": "validation", "rules": [{"check": "contains", "kind": "email"}], "save_as": "kommo_email",
        "pass": then, "fail": then}, pointer)
    phone = b.add(b.new_id(f"{sid}_phone") if reset else sid, {
        "type": "validation", "rules": [{"check": "contains", "kind": "phone"}], "save_as": "kommo_phone",
        "pass": email, "fail": email}, pointer)
    if reset:
        b.add(sid, {"type": "action", "actions": [
            {"do": "set_variable", "name": "kommo_phone", "value": ""},
            {"do": "set_variable", "name": "kommo_email", "value": ""}], "next": phone}, pointer)
    return Cont(sid)


def _save(b: Builder, pointer: str, sid: str, then: str | None) -> str:
    return b.add(b.new_id(f"{sid}_save"), {"type": "action", "actions": [
        {"do": "set_field", "entity": "contact", "field": "phone", "value": "{{ vars.kommo_phone }}"},
        {"do": "set_field", "entity": "contact", "field": "email", "value": "{{ vars.kommo_email }}"}],
        "next": then}, pointer)


def _validate_base_info(b: Builder, q: Mapping[str, Any], pointer: str, at: str, cont: Cont, sid: str) -> Cont:
    texts = {}
    for key in ("empty_email", "empty_phone", "empty_all", "success"):
        if key in q:
            texts[key] = b.text(q[key], pointer_join(at, key))
    for key in _NOT_MODELLED:
        if q.get(key):
            b.approximate(pointer_join(at, key), f"{key} is not modelled: the bot only checks that a phone number "
                                                 f"and an e-mail address are there")
    then = b.target(cont)
    if "success" in texts:
        then = b.add(b.new_id(f"{sid}_success"), {"type": "message", "text": texts["success"], "next": then}, pointer)
    save = _save(b, pointer, sid, then)
    again = b.new_id(f"{sid}_again")  # where a new reply is looked at: keeps what earlier replies gave

    def ask(key: str, fallback: str) -> str:
        text = texts.get(key) or texts.get("empty_all") or fallback
        return b.add(b.new_id(f"{sid}_{key}"), {"type": "message", "text": text,
                                                "next": b.target(Cont(again, wait=True))}, pointer)

    decide = b.add(b.new_id(f"{sid}_decide"), {"type": "condition", "branches": [
        {"if": {"all": [{"field": "vars.kommo_phone", "op": "not_empty"},
                        {"field": "vars.kommo_email", "op": "not_empty"}]}, "next": save},
        {"if": {"field": "vars.kommo_email", "op": "not_empty"},
         "next": ask("empty_phone", "Please send your phone number")},
        {"if": {"field": "vars.kommo_phone", "op": "not_empty"},
         "next": ask("empty_email", "Please send your e-mail address")}],
        "else": ask("empty_all", "Please send your phone number and e-mail address")}, pointer)
    _collect(b, pointer, again, then=decide, reset=False)
    b.add(sid, {"type": "action", "actions": [
        {"do": "set_variable", "name": "kommo_phone", "value": ""},
        {"do": "set_variable", "name": "kommo_email", "value": ""}], "next": again}, pointer)
    return Cont(sid)
