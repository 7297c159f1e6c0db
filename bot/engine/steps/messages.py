"""Steps that send messages (message, list, subscribe, comment, internal) and matching a reply to them."""

from __future__ import annotations

from collections.abc import Callable

from ...builder import compiled as c
from ...builder.normalize import normalize
from ...builder.templates import TemplateFailed
from .. import effects as fx
from .. import events as ev
from ..state import Wait
from ..turn import WAIT, Target, TurnContext


def message(t: TurnContext, s: c.CMessage) -> Target:
    buttons = s.static_buttons
    if buttons is None:
        number = 0
        rendered = []
        for b in s.buttons:
            if b.next is not None:
                number += 1
                rendered.append(fx.OutButton(t.render(b.title), b.payload, None, number))
            else:
                rendered.append(fx.OutButton(t.render(b.title), None, t.render(b.url)))
        buttons = tuple(rendered)
    flow = t.flow
    state = t.state
    run = state.run
    assert flow is not None and run is not None
    # t.render, t.message_ref and t.send, inline: this is the step most turns run.
    text = s.text
    if text is None:
        body = ""
    elif text.constant is not None:
        body = text.constant
    else:
        try:
            body = text.render(t.cached_context or t.context())
        except TemplateFailed as exc:
            t.trace("template.error", "warning", error=str(exc))
            body = ""
    attachments = tuple(fx.OutAttachment(a.kind, t.render(a.url), t.render(a.name) or None)
                        for a in s.attachments) if s.attachments else ()
    if not body.strip() and not buttons and not attachments and s.template is None:
        empty(t)
    else:
        state.seq += 1
        msg = fx.SendMessage(
            f"{run.id}:{s.id}:m{state.seq}", s.id, "message", body, buttons, None, attachments,
            s.template, None if s.params is None else t.value(s.params),
            s.recipients, s.channel_mode, s.channels, None, not flow.leave_unanswered,
        )
        t.effects.append(msg)
        if msg.marks_answered and state.chat_status == "unanswered":  # t.set_chat_status, inline
            state.chat_status = "answered"
            t.effects.append(fx.ChatStatus("answered"))
            chat = t.cached_context.get("chat") if t.cached_context is not None else None
            if chat is not None:
                chat["status"] = "answered"  # this turn's own dict
    if not s.waits:
        return s.next
    if s.no_answer is None:  # t.wait, inline
        run.wait = Wait("reply", s.id, {})
        return WAIT
    return wait_reply(t, s)


def empty(t: TurnContext) -> None:
    """A message whose text rendered empty (a template that failed, a missing value) and that has
    nothing else to show: not sent (a channel refuses an empty text, the live chat would show an
    empty bubble), the chat not marked answered; the flow goes on."""
    t.trace("message.empty", "warning")


def plan_message(flow: c.CompiledFlow, s: c.CMessage) -> Callable[[TurnContext, c.CMessage], Target] | None:
    """``message`` for a step whose buttons are rendered already and that has no attachments or
    template parameters (most), its constants bound once; None for any other step."""
    if s.static_buttons is None or s.attachments or s.params is not None:
        return None
    buttons, sid, template = s.static_buttons, s.id, s.template
    recipients, channel_mode, channels = s.recipients, s.channel_mode, s.channels
    marks, waits, no_answer, next_ = not flow.leave_unanswered, s.waits, s.no_answer, s.next
    text = s.text
    constant = "" if text is None else text.constant
    # only text, and not a constant that shows: not sent when it renders empty
    bare = not buttons and template is None and not (constant and constant.strip())
    render = None if text is None else text.render
    SendMessage, ChatStatus, new = fx.SendMessage, fx.ChatStatus, object.__new__  # the closure's own

    def send(t: TurnContext, s: c.CMessage) -> Target:
        state = t.state
        run = state.run
        assert run is not None
        if constant is not None:
            body = constant
        else:
            assert render is not None
            try:
                body = render(t.cached_context or t.context())
            except TemplateFailed as exc:
                t.trace("template.error", "warning", error=str(exc))
                body = ""
        if bare and not body.strip():
            empty(t)
        else:
            state.seq = seq = state.seq + 1
            effects = t.effects
            # SendMessage(…), field by field (one statement each: no tuple built and unpacked): the
            # dataclass __init__ through type() costs about as much again
            msg = new(SendMessage)
            msg.ref = f"{run.id}:{sid}:m{seq}"
            msg.step = sid
            msg.kind = "message"
            msg.text = body
            msg.buttons = buttons
            msg.list = None
            msg.attachments = ()
            msg.template = template
            msg.params = None
            msg.recipients = recipients
            msg.channel_mode = channel_mode
            msg.channels = channels
            msg.tag = None
            msg.marks_answered = marks
            effects.append(msg)
            if marks and state.chat_status == "unanswered":  # t.set_chat_status, inline
                state.chat_status = "answered"
                status = new(ChatStatus)  # ChatStatus("answered"), likewise
                status.status = "answered"
                effects.append(status)
                chat = t.cached_context.get("chat") if t.cached_context is not None else None
                if chat is not None:
                    chat["status"] = "answered"  # this turn's own dict
        if not waits:
            return next_
        if no_answer is None:  # t.wait, inline; Wait("reply", sid), likewise
            run.wait = wait = new(Wait)
            wait.kind = "reply"
            wait.step = sid
            wait.timers = {}
            wait.on = ()
            wait.token = wait.request = wait.until = wait.widget_json = None
            wait.held = ()
            return WAIT
        return wait_reply(t, s)

    return send


def wait_reply(t: TurnContext, s: c.CMessage | c.CList) -> Target:
    if s.no_answer is None:
        return t.wait("reply", s)
    timers: dict[str, str] = {}
    until = t.set_timer(timers, s.no_answer[0], "no_answer")
    return t.wait("reply", s, timers=timers, until=until)


def list_(t: TurnContext, s: c.CList) -> Target:
    flow = t.flow
    assert flow is not None
    out = fx.OutList(
        s.button, t.render(s.header) or None, t.render(s.footer) or None,
        tuple((title, tuple(fx.OutRow(r.id, r.title, r.description, r.number) for r in rows))
              for title, rows in s.sections),
    )
    t.send(fx.SendMessage(
        t.message_ref(s), s.id, "list", t.render(s.text), (), out, (), None, None,
        s.recipients, s.channel_mode, s.channels, marks_answered=not flow.leave_unanswered,
    ))
    return wait_reply(t, s)


def internal(t: TurnContext, s: c.CInternalMessage) -> Target:
    t.effects.append(fx.InternalMessage(t.render(s.text), s.to))
    return s.next


def subscribe(t: TurnContext, s: c.CSubscribe) -> Target:
    t.send(fx.SendMessage(t.message_ref(s), s.id, "subscribe", t.render(s.title), tag=s.tag))
    return s.next


def comment(t: TurnContext, s: c.CComment) -> Target:
    t.send(fx.SendMessage(t.message_ref(s), s.id, "comment", t.render(s.text)))
    return s.next


def match_reply(t: TurnContext, step: c.CMessage | c.CList, e: ev.InboundMessage) -> str | None:
    """The step a reply leads to: by payload, then by title, synonym or option number."""
    payload = e.payload
    text = normalize(e.text) if e.text else ""
    if isinstance(step, c.CList):
        for row in step.rows:
            if payload is not None and payload == row.id:
                return row.next
        for row in step.rows:
            if text and (text == normalize(row.title) or text == str(row.number)):
                return row.next
        return None
    replies = step.replies
    if payload is not None:
        for b in replies:
            if payload == b.payload:
                return b.next
    if not text:
        return None
    for b in replies:
        if text in b.keys or (not b.title.is_constant and text == normalize(t.render(b.title))):
            return b.next
    # isdecimal, not isdigit: "፩" is a digit that int() refuses.
    if text.isdecimal() and 1 <= int(text) <= len(replies):
        return replies[int(text) - 1].next
    return None
