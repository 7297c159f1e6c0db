"""Compact states (issue 14): ``encode_state`` and ``decode_state``, the codec's ``0xc1 's'`` kind.

A state is written straight from its dataclasses as a map whose keys are ``codec``'s indexes
(``_compact_state``), a field at the value its reader gives an absent one left out, its common
values as tokens (``STATE_TOKENS``), ``last_message`` as the customer's message makes it as a
short list (``_LAST_FORM``); read back straight into the dataclasses. Every older compact form
(without tokens, with ``last_message`` as a map) and a plain state read as they did. Split from
``codec`` (its size), on ``compactmaps`` as ``codec`` is (no import cycle); ``codec`` re-exports
``encode_state`` and ``decode_state``, and reads a state blob by ``_state_from_compact``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from ..engine.state import ConversationState, Frame, Run, Wait
from .compactmaps import (
    _INDEX,
    _ITEMS,
    _LAST_MESSAGE_SHAPE,
    _STATE,
    COMPACT,
    Plan,
    _compile,
    _grow,
    _hex_id,
    _PlainKey,
    _shrink,
    pack,
)


def encode_state(state: ConversationState) -> bytes:
    """``_pack_compact(state.to_dict(), _STATE)``, the same bytes, built straight from the state:
    its maps are made with their keys' indexes rather than made with names and renamed (the
    renaming walk was most of a save's state CPU, issue 14 aim 1)."""
    try:
        small = _compact_state(state)
    except _PlainKey:
        return pack(state.to_dict())
    return _STATE_PREFIX + pack(small)


_STATE_PREFIX = COMPACT + _STATE
_LAST_MESSAGE_PLAN = _compile(_LAST_MESSAGE_SHAPE)
_NO_PLAN: Plan = ()
(_V, _ID, _CHANNEL, _ACCOUNT, _ORIGIN, _OWNER, _OWNER_USER, _CHAT_STATUS, _RUN, _LAST_MESSAGE, _SEQ, _TURN_STEPS,
 _CRM, _BOT, _VERSION, _STEP, _STATUS, _VARS, _JSON, _LVR, _WAIT, _AI, _CALLERS, _ERROR, _NEXT, _KIND, _TIMERS,
 _ON, _TOKEN, _REQUEST, _UNTIL, _HELD, _WIDGET_JSON) = (_INDEX[name] for name in (
    "v", "id", "channel", "account", "origin", "owner", "owner_user", "chat_status", "run", "last_message", "seq",
    "turn_steps", "crm", "bot", "version", "step", "status", "vars", "json", "lvr", "wait", "ai", "callers", "error",
    "next", "kind", "timers", "on", "token", "request", "until", "held", "widget_json"))
#: The fields ``_compact_state`` writes, per class: a field added to a class and not here stops the
#: import (``_check_fields``) rather than go unsaved.
_STATE_FIELDS = {
    ConversationState: ("id", "channel", "account", "origin", "owner", "owner_user", "chat_status", "run",
                        "last_message", "seq", "turn_steps", "crm", "timers"),
    Run: ("id", "bot", "version", "step", "status", "vars", "json", "last_validation_result", "wait",
          "action_index", "callers", "error", "splits", "goals"),
    Wait: ("kind", "step", "timers", "on", "token", "request", "until", "held", "widget_json"),
    Frame: ("bot", "version", "next", "vars", "json", "last_validation_result"),
}


def _check_fields() -> None:
    for cls, names in _STATE_FIELDS.items():
        fields = tuple(f.name for f in dataclasses.fields(cls))
        if fields != names:
            raise RuntimeError(f"bot.store.codec encodes {cls.__name__} as {names}, it has {fields}")


_check_fields()


#: Keys no map compacted before holds (``_shrink``: strings only): ``last_message``'s hex id as
#: its 16 bytes, a wait's timers with the conversation's ids short (``_own_timers``); at the
#: state's top, ``last_message`` as the customer's message makes it (``_LAST_FORM``).
_HEX_ID = _OWN_TIMERS = -1
_LAST_FORM = -2
#: At the state's top: its timers are its wait's own, each due at its ``until`` (``tm`` left out),
#: and ``crm`` as the turn makes it (``_CRM_KEYS``, text) as ``[contact, lead]`` (its company empty)
#: or ``[contact, lead, company]``.
_TM_WAIT, _CRM_FORM = -3, -4
_CRM_KEYS = ("contact_id", "lead_id", "company_id")
#: The keys of ``last_message`` as ``interpreter.on_message`` makes it: written as ``[text, kind,
#: id]`` at ``_LAST_FORM`` when ``payload``, ``attachments`` and ``start_param`` are empty.
_LAST_KEYS = ("text", "payload", "kind", "id", "attachments", "start_param")
#: Values written as a token in a compact state (issue 14 aim 3, 46 B an idle chat): at ``origin``,
#: ``chat_status``, a run's ``status``, its wait's ``kind`` and own timers' purposes, and
#: ``last_message``'s kind in its ``_LAST_FORM``, a number from -1 to -32 stands for the value
#: ``STATE_TOKENS`` gives it; a state that holds such a number there itself is written plain.
#: Append only (a number, once written, names its value for ever).
STATE_TOKENS = {-1 - i: value for i, value in enumerate((
    "message", "comment", "referral", "answered", "unanswered", "closed", "running", "waiting", "stopped",
    "failed", "reply", "pause", "token", "widget", "no_answer", "working_hours", "widget_timeout", "text",
    "bot", "human"))}
_STATE_TOKEN_OF = {value: token for token, value in STATE_TOKENS.items()}


def _tok(value: Any) -> Any:
    """``value`` as written at a token's place (raises ``_PlainKey`` for a number a token reads as)."""
    if value.__class__ is str:
        return _STATE_TOKEN_OF.get(value, value)
    if value.__class__ is int and -32 <= value < 0:
        raise _PlainKey
    return value


def _untok(value: Any) -> Any:
    return STATE_TOKENS.get(value, value) if value.__class__ is int and value < 0 else value


def _compact_state(s: ConversationState) -> dict[int | str, Any]:
    """``_shrink(s.to_dict(), _PLANS[_STATE])`` without the dict of names, smaller (issue 14 aim 3): a
    field at the value ``decode_state`` gives an absent one left out, the wait's timer ids short
    (``_own_timers``), a ``tm`` due time equal to its ``until`` nil, ``_HEX_ID``."""
    run = s.run
    compact_run: dict[int | str, Any] | None = None
    until = run.wait.until if run is not None and run.wait is not None else None
    own_keys: tuple[str, ...] | None = None
    if run is not None:
        w = run.wait
        compact_run = {_ID: run.id, _BOT: run.bot, _VERSION: run.version}
        if run.step is not None:
            compact_run[_STEP] = run.step
        if run.status != "running":
            compact_run[_STATUS] = _tok(run.status)
        if run.vars:
            compact_run[_VARS] = run.vars
        if run.json is not None:
            compact_run[_JSON] = run.json
        if run.last_validation_result is not None:
            compact_run[_LVR] = run.last_validation_result
        if w is not None:
            compact_wait: dict[int | str, Any] = {_KIND: _tok(w.kind)}
            if w.step != run.step or w.step.__class__ is not str:  # absent: the run's (always there before)
                compact_wait[_STEP] = w.step
            if w.timers:
                own = _own_timers(w.timers, s.id)
                if own is None:
                    compact_wait[_TIMERS] = w.timers
                else:
                    compact_wait[_OWN_TIMERS] = own
                    own_keys = tuple(own)
            if w.on:
                compact_wait[_ON] = list(w.on)
            if w.token is not None:
                compact_wait[_TOKEN] = w.token
            if w.request is not None:
                compact_wait[_REQUEST] = w.request
            if until is not None:
                compact_wait[_UNTIL] = until
            if w.held:
                compact_wait[_HELD] = list(w.held)
            if w.widget_json is not None:
                compact_wait[_WIDGET_JSON] = w.widget_json
            compact_run[_WAIT] = compact_wait
        if run.action_index.__class__ is not int or run.action_index:
            compact_run[_AI] = run.action_index
        if run.callers:
            compact_run[_CALLERS] = [{_BOT: f.bot, _VERSION: f.version, _NEXT: f.next, _VARS: f.vars, _JSON: f.json,
                                      _LVR: f.last_validation_result} for f in run.callers]
        if run.error is not None:
            compact_run[_ERROR] = run.error
        if run.splits or run.goals:  # as ``Run.to_dict``: plain names (not in ``_NAMES``), only when set
            compact_run["sp"], compact_run["gl"] = [list(x) for x in run.splits], list(run.goals)
    out: dict[int | str, Any] = {_V: 1, _ID: s.id, _CHANNEL: s.channel, _ACCOUNT: s.account}
    if s.origin is not None:
        out[_ORIGIN] = _tok(s.origin)
    if s.owner != "bot":
        out[_OWNER] = s.owner
    if s.owner_user is not None:
        out[_OWNER_USER] = s.owner_user
    if s.chat_status != "unanswered":
        out[_CHAT_STATUS] = _tok(s.chat_status)
    if compact_run is not None:
        out[_RUN] = compact_run
    last, crm = s.last_message, s.crm
    if last is not None:
        if last.__class__ is dict and tuple(last) == _LAST_KEYS and (form := _last_form(last)) is not None:
            out[_LAST_FORM] = form
        else:
            out[_LAST_MESSAGE] = _last_message(last) if isinstance(last, dict) else last
    if s.seq.__class__ is not int or s.seq:
        out[_SEQ] = s.seq
    if s.turn_steps.__class__ is not int or s.turn_steps:
        out[_TURN_STEPS] = s.turn_steps
    if crm is not None:
        if crm.__class__ is dict and tuple(crm) == _CRM_KEYS and all(v.__class__ is str for v in crm.values()):
            c, lead, company = crm.values()
            out[_CRM_FORM] = [c, lead, company] if company else [c, lead]
        else:
            out[_CRM] = _shrink(crm, _NO_PLAN) if isinstance(crm, dict) else crm
    if s.timers:  # as ``ConversationState.to_dict``: a plain name, only when there are timers
        tm: dict[str, Any] = s.timers_dict()
        if until.__class__ is float and until:
            tm = {t: None if at.__class__ is float and at == until else at for t, at in tm.items()}
            if tuple(tm) == own_keys and all(at is None for at in tm.values()):
                out[_TM_WAIT] = 1
                return out
        out["tm"] = tm
    return out


def _own_timers(timers: dict[str, str], sid: str) -> dict[str, str] | None:
    """A wait's timers with the conversation's ids as ``tm`` keeps them (no ``<id>:``, read back by
    the ``:`` they then lack); None when an id has neither form (then written whole)."""
    prefix = sid + ":"
    n = len(prefix)
    out: dict[str, str] = {}
    for t, purpose in timers.items():
        if t.__class__ is not str:
            return None
        if t.startswith(prefix) and ":" not in t[n:]:
            t = t[n:]
        elif ":" not in t:
            return None
        out[t] = _tok(purpose)
    return out


def _last_form(last: dict[str, Any]) -> list[Any] | None:
    """``last_message`` as ``[text, kind, id]`` (``_LAST_FORM``; None: not of that form): the
    customer's message without payload, attachments or start parameter, its id as ``_HEX_ID``."""
    text, payload, kind, mid, attachments, start = last.values()
    if payload is not None or start is not None or attachments.__class__ is not list or attachments:
        return None
    if text.__class__ is not str or kind.__class__ is not str:
        return None
    if mid.__class__ is str:
        if len(mid) == 32 and (raw := _hex_id(mid)) is not None:
            mid = raw
    elif mid is not None:
        return None
    return [text, _tok(kind), mid]


def _last_message(last: dict[str, Any]) -> dict[Any, Any]:
    small = _shrink(last, _LAST_MESSAGE_PLAN)
    mid = small.get(_ID)
    if mid.__class__ is str and len(mid) == 32 and (raw := _hex_id(mid)) is not None:
        return {(_HEX_ID if key == _ID else key): (raw if key == _ID else item) for key, item in small.items()}
    return small


def decode_state(data: bytes) -> ConversationState:
    """``ConversationState.from_dict(unpack(data))``, the same state; a compact one is built
    straight from its maps by their keys' indexes rather than renamed first (the renaming walk
    was most of a decode: a timer's fire in a process that did not save the state, issue 14)."""
    if data[:2] == _STATE_PREFIX:
        return _state_from_compact(msgpack.unpackb(data[2:], raw=False, strict_map_key=False))
    return ConversationState.from_dict(msgpack.unpackb(data, raw=False, strict_map_key=False))


def _state_from_compact(d: dict[Any, Any]) -> ConversationState:
    """``ConversationState.from_dict(_grow(d, _STATE_SHAPE))`` without the dict of names."""
    get = d.get
    sid, run, last, crm = d[_ID], get(_RUN), get(_LAST_MESSAGE), get(_CRM)
    run = _run_from_compact(run, sid) if run else None
    if (form := get(_LAST_FORM)) is not None:
        mid = form[2]
        last = {"text": form[0], "payload": None, "kind": _untok(form[1]),
                "id": mid.hex() if mid.__class__ is bytes else mid, "attachments": [], "start_param": None}
    elif isinstance(last, dict):
        if _HEX_ID in last:  # the hex id's bytes (``_last_message``), in its place
            last = {(_ID if key == _HEX_ID else key): (item.hex() if key == _HEX_ID else item)
                    for key, item in last.items()}
        last = _grow(last, _LAST_MESSAGE_SHAPE)
    timers: dict[str, float] = {}
    tm = dict.fromkeys(d[_RUN][_WAIT][_OWN_TIMERS]) if get(_TM_WAIT) else get("tm")
    if tm:
        until: Any = run.wait.until if run is not None and run.wait is not None else None
        timers = {(t if ":" in t else f"{sid}:{t}"): float(until if at is None else at) for t, at in tm.items()}
    return ConversationState(
        sid, get(_CHANNEL, "livechat"), get(_ACCOUNT, "default"), _untok(get(_ORIGIN)), get(_OWNER, "bot"),
        get(_OWNER_USER), _untok(get(_CHAT_STATUS, "unanswered")), run, last, get(_SEQ, 0), get(_TURN_STEPS, 0),
        _crm_of(d[_CRM_FORM]) if _CRM_FORM in d else _grow(crm, _ITEMS) if isinstance(crm, dict) else crm,
        timers)


def _crm_of(form: list[str]) -> dict[str, str]:
    return {"contact_id": form[0], "lead_id": form[1], "company_id": form[2] if len(form) > 2 else ""}


def _run_from_compact(r: dict[Any, Any], sid: str) -> Run:
    """``Run.from_dict`` of the run's map grown by ``_STATE_SHAPE`` (its wait, its callers)."""
    get = r.get
    w, callers, splits, goals, step = get(_WAIT), get(_CALLERS), get("sp"), get("gl"), get(_STEP)
    # (no comprehension for what is empty, as it mostly is: each costs a function's call)
    if not callers:
        callers = []
    elif isinstance(callers, (list, tuple)):
        callers = [_frame_from_compact(f) if isinstance(f, dict) else Frame.from_dict(f) for f in callers]
    else:
        callers = [Frame.from_dict(f) for f in callers]
    return Run(
        r[_ID], r[_BOT], r[_VERSION], step, _untok(get(_STATUS, "running")), dict(get(_VARS) or {}), get(_JSON),
        get(_LVR), (_wait_from_compact(w, sid, step) if isinstance(w, dict) else Wait.from_dict(w)) if w else None,
        get(_AI, 0), callers, get(_ERROR),
        tuple([(str(x[0]), str(x[1]), str(x[2]), int(x[3]), str(x[4])) for x in splits]) if splits else (),
        tuple([str(g) for g in goals]) if goals else (),
    )


def _wait_from_compact(w: dict[Any, Any], sid: str, step: Any) -> Wait:
    get = w.get
    own = get(_OWN_TIMERS)
    timers = {(t if ":" in t else f"{sid}:{t}"): _untok(purpose) for t, purpose in own.items()} if own else dict(
        get(_TIMERS) or {})
    return Wait(_untok(w[_KIND]), get(_STEP, step), timers, tuple(get(_ON) or ()), get(_TOKEN), get(_REQUEST),
                get(_UNTIL), tuple(get(_HELD) or ()), get(_WIDGET_JSON))


def _frame_from_compact(f: dict[Any, Any]) -> Frame:
    get = f.get
    return Frame(f[_BOT], f[_VERSION], f[_NEXT], f[_VARS], get(_JSON), get(_LVR))

