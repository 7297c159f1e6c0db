"""Flow and automation uploads a hostile operator token can send: templates nested deeper than
Jinja's parser or Python's compiler go (68 parentheses, 100 ``if`` blocks, 30 ``for`` loops)
are a 422 naming the template, never a 500; and a document's check runs off the event loop (a
200 KB template took 8 s to compile, every conversation of the process stalled meanwhile)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from jinja2 import TemplateSyntaxError

from bot.builder import validate
from bot.builder.templates import Expression, Template
from tests.live_app import running_app

NESTED = [
    "{{ " + "(" * 200 + "1" + ")" * 200 + " }}",
    "{% if 1 %}" * 120 + "x" + "{% endif %}" * 120,
    "{% for i in [1] %}" * 30 + "x" + "{% endfor %}" * 30,
    "{{ " + "1+" * 3000 + "1 }}",
    "{{ " + "-" * 3000 + "1 }}",
]


def _flow(text: str, bot: str = "deep") -> dict[str, Any]:
    return {"format": "salesbot.flow/1", "id": bot, "start": "a", "steps": {"a": {"type": "message", "text": text}}}


@pytest.mark.parametrize("source", NESTED)
def test_a_template_nested_too_deeply_is_a_syntax_error(source: str) -> None:
    with pytest.raises(TemplateSyntaxError, match="nested too deeply"):
        Template(source)


def test_an_expression_nested_too_deeply_is_a_syntax_error() -> None:
    with pytest.raises(TemplateSyntaxError, match="nested too deeply"):
        Expression("(" * 200 + "1" + ")" * 200)


@pytest.mark.parametrize("source", NESTED)
async def test_uploading_it_is_a_422_naming_the_template(redis: Any, redis_url: str, source: str) -> None:
    async with running_app(redis_url) as app:
        body = await app.api("PUT", "/api/bots/deep", 422, json=_flow(source))
        assert [d["pointer"] for d in body["error"]["details"]] == ["/steps/a/text"], body
        rules = {"format": "salesbot.automations/1", "id": "sales", "pipeline": "Sales", "rules": [
            {"id": "n", "stage": "Incoming", "on": ["created"],
             "do": {"actions": [{"do": "add_note", "text": source}]}}]}
        body = await app.api("PUT", "/api/automations/sales", 422, json=rules)
        assert any(d["pointer"].startswith("/rules/0/do/actions/0") for d in body["error"]["details"]), body


async def test_a_flows_check_runs_off_the_event_loop(redis: Any, redis_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    check = validate.check_document

    def spy(doc: Any) -> Any:
        seen.append(threading.current_thread() is threading.main_thread())
        return check(doc)

    monkeypatch.setattr(validate, "check_document", spy)
    async with running_app(redis_url) as app:
        seen.clear()  # the flows loaded at start
        await app.api("PUT", "/api/bots/big", 201, json=_flow("{{ [" + "1," * 5000 + "1] | length }}", "big"))
    assert seen == [False]
