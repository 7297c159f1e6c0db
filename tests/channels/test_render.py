"""The one renderer, against channel-like capabilities: WhatsApp (3 buttons, a native list for
4–10 options, numbered beyond), Instagram (13 quick replies), SMS (numbered text only),
Telegram (inline keyboards); long texts split at the limit; link buttons. And the round trip:
a number or title typed in answer to a rendered menu reaches the same branch in the real
interpreter."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.builder.validate import compile_document
from bot.channels.base import Capabilities
from bot.channels.render import Button, Link, ListMenu, Rendered, render, split_text
from bot.channels.telegram import CAPABILITIES as TELEGRAM
from bot.engine import effects as fx
from bot.engine.transcript import outbound_entry
from bot.simulation.simulator import Simulator

from ..engine.helpers import NOW

WHATSAPP = Capabilities(max_buttons=3, button_title_max=20, lists=True, max_list_rows=10, list_title_max=24,
                        list_description_max=72, list_button_max=20, text_max=4096, templates=True)
#: A channel with one link button that cannot share a message with reply buttons (WhatsApp's cta_url).
CTA = Capabilities(max_buttons=3, button_title_max=20, lists=True, max_list_rows=10, url_buttons=True,
                   mixed_buttons=False)
INSTAGRAM = Capabilities(max_buttons=13, button_title_max=20, quick_replies=True, url_buttons=True,
                         mixed_buttons=False, text_max=1000)
SMS = Capabilities(max_buttons=0, button_title_max=0, text_max=1600, attachments=frozenset())


def buttons(n: int, *, title: str = "Option {i}") -> dict[str, Any]:
    return {"text": "Pick one", "buttons": [{"title": title.format(i=i), "payload": f"p{i}", "url": None, "number": i}
                                            for i in range(1, n + 1)]}


def a_list(rows: int, *, footer: str | None = None) -> dict[str, Any]:
    mk = lambda i: {"id": f"r{i}", "title": f"Row {i}", "description": f"About {i}", "number": i}  # noqa: E731
    half = (rows + 1) // 2
    return {"text": "Choose", "list": {"button": "See rows", "header": "Head", "footer": footer,
                                       "sections": [{"title": "A", "rows": [mk(i) for i in range(1, half + 1)]},
                                                    {"title": "B",
                                                     "rows": [mk(i) for i in range(half + 1, rows + 1)]}]}}


def numbered(text: str) -> list[tuple[int, str]]:
    return [(int(n), t) for n, t in re.findall(r"(?m)^(\d+)\. (.+)$", text)]


# ---------------------------------------------------------------------- WhatsApp-like
def test_whatsapp_three_buttons_stay_buttons_with_titles_cut() -> None:
    entry = buttons(3)
    entry["buttons"][2]["title"] = "A title far longer than twenty characters"
    [out] = render(entry, WHATSAPP)
    assert out.text == "Pick one" and out.menu is None
    assert [b.payload for b in out.buttons] == ["p1", "p2", "p3"]
    assert out.buttons[2].title == "A title far longer …" and len(out.buttons[2].title) == 20


@pytest.mark.parametrize("title, shown", [
    ("Exactly twenty chars", "Exactly twenty chars"),  # the limit itself fits
    ("Exactly twenty chars!", "Exactly twenty char…"),  # one over: cut, with the ellipsis
])
def test_a_button_title_is_cut_only_beyond_the_limit(title: str, shown: str) -> None:
    entry = buttons(1)
    entry["buttons"][0]["title"] = title
    [out] = render(entry, WHATSAPP)
    assert [b.title for b in out.buttons] == [shown]


@pytest.mark.parametrize("count", [4, 7, 10])
def test_whatsapp_four_to_ten_options_become_a_native_list(count: int) -> None:
    [out] = render(buttons(count), WHATSAPP)
    assert out.buttons == () and out.menu is not None
    rows = [r for _, section in out.menu.sections for r in section]
    assert [(r.id, r.title) for r in rows] == [(f"p{i}", f"Option {i}") for i in range(1, count + 1)]
    assert out.text == "Pick one"


@pytest.mark.parametrize("count", [11, 13])
def test_whatsapp_beyond_ten_options_is_a_numbered_menu(count: int) -> None:
    [out] = render(buttons(count), WHATSAPP)
    assert out.buttons == () and out.menu is None
    assert out.text.startswith("Pick one\n\n1. Option 1\n")
    assert numbered(out.text) == [(i, f"Option {i}") for i in range(1, count + 1)]


def test_whatsapp_list_step_native_up_to_ten_rows_then_numbered() -> None:
    [native] = render(a_list(10), WHATSAPP)
    assert native.menu is not None and native.menu.button == "See rows" and native.menu.header == "Head"
    assert [r.id for _, s in native.menu.sections for r in s] == [f"r{i}" for i in range(1, 11)]
    assert native.menu.sections[0][1][0].description == "About 1"
    [menu] = render(a_list(11, footer="Prices include VAT"), WHATSAPP)
    assert menu.menu is None
    assert numbered(menu.text) == [(i, f"Row {i}") for i in range(1, 12)]
    assert menu.text.endswith("Prices include VAT")


def test_whatsapp_link_buttons_become_text_lines() -> None:
    entry = buttons(2)
    entry["buttons"].append({"title": "Website", "payload": None, "url": "https://example.com", "number": None})
    [out] = render(entry, WHATSAPP)
    assert [b.title for b in out.buttons] == ["Option 1", "Option 2"]
    assert out.links == () and out.text == "Pick one\nWebsite: https://example.com"


@pytest.mark.parametrize("count", [2, 5])
def test_a_link_button_that_cannot_join_reply_options_becomes_text(count: int) -> None:
    entry = buttons(count)
    entry["buttons"].append({"title": "Website", "payload": None, "url": "https://example.com", "number": None})
    [out] = render(entry, CTA)
    assert len(out.buttons) == count or (out.menu is not None and count > 3)
    assert out.links == () and out.text.endswith("Website: https://example.com")
    [alone] = render({"text": "See", "buttons": [{"title": "Website", "payload": None, "url": "https://example.com"}]},
                     CTA)
    assert alone.links == (Link("Website", "https://example.com"),) and alone.text == "See"


# ---------------------------------------------------------------------- Instagram, SMS, Telegram
def test_instagram_shows_thirteen_quick_replies() -> None:
    [out] = render(buttons(13), INSTAGRAM)
    assert len(out.buttons) == 13 and out.menu is None and out.text == "Pick one"
    [beyond] = render(buttons(14), INSTAGRAM)
    assert beyond.buttons == () and len(numbered(beyond.text)) == 14


def test_sms_is_numbered_text_with_links_inline() -> None:
    entry = buttons(3)
    entry["buttons"].insert(1, {"title": "Website", "payload": None, "url": "https://example.com", "number": None})
    entry["attachments"] = [{"kind": "image", "url": "https://example.com/a.jpg", "name": "photo"}]
    [out] = render(entry, SMS)
    assert out.buttons == () and out.links == () and out.attachments == ()
    assert numbered(out.text) == [(1, "Option 1"), (2, "Option 2"), (3, "Option 3")]  # link buttons are not numbered
    assert "Website: https://example.com" in out.text and "photo: https://example.com/a.jpg" in out.text
    [listed] = render(a_list(4), SMS)
    assert numbered(listed.text) == [(i, f"Row {i}") for i in range(1, 5)]


def test_telegram_keeps_every_option_clickable() -> None:
    [three] = render(buttons(3), TELEGRAM)
    assert len(three.buttons) == 3
    [thirteen] = render(buttons(13), TELEGRAM)  # beyond max_buttons: the inline-keyboard "list"
    assert thirteen.menu is not None and len([r for _, s in thirteen.menu.sections for r in s]) == 13
    entry = buttons(1)
    entry["buttons"].append({"title": "Website", "payload": None, "url": "https://example.com", "number": None})
    [mixed] = render(entry, TELEGRAM)
    assert mixed.buttons == (Button("Option 1", "p1"),) and mixed.links == (Link("Website", "https://example.com"),)


# ---------------------------------------------------------------------- long text
def test_long_text_is_split_at_paragraphs_and_the_buttons_go_last() -> None:
    paragraph = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12).strip()
    text = "\n\n".join([paragraph] * 8)  # about 5.5k characters
    entry = {**buttons(2), "text": text}
    parts = render(entry, WHATSAPP)
    assert len(parts) == 2
    assert all(len(p.text) <= 4096 for p in parts)
    assert parts[0].buttons == () and len(parts[1].buttons) == 2
    assert parts[0].text.endswith("elit.")  # cut at a paragraph boundary, not mid-word
    assert " ".join(p.text for p in parts).split() == text.split()
    sms = render({"text": text}, SMS)
    assert len(sms) == 4 and all(len(p.text) <= 1600 for p in sms)


def test_a_text_without_spaces_is_cut_hard() -> None:
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .!?\n"), max_size=600), st.integers(min_value=1, max_value=120))
def test_split_text_keeps_every_character_within_the_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(len(p) <= limit for p in parts)
    assert re.sub(r"\s", "", "".join(parts)) == re.sub(r"\s", "", text)


# ---------------------------------------------------------------------- the round trip
def _menu_flow() -> Any:
    titles = ["Sofas", "Beds", "Tables", "Chairs", "Lamps", "Rugs", "Curtains", "Mirrors", "Shelves",
              "Desks", "Wardrobes", "Cushions"]  # + a link: 13 buttons, the most a step has
    steps: dict[str, Any] = {"menu": {"type": "message", "text": "What are you looking for?",
                                      "buttons": [{"title": t, "next": f"s{i}"} for i, t in enumerate(titles)],
                                      "other_answer": "other"},
                             "other": {"type": "message", "text": "other", "next": "done"},
                             "done": {"type": "stop"}}
    steps["menu"]["buttons"].insert(4, {"title": "Website", "url": "https://example.com"})
    for i, t in enumerate(titles):
        steps[f"s{i}"] = {"type": "message", "text": f"chose {t}", "next": "done"}
    return compile_document({"format": "salesbot.flow/1", "id": "menu", "start": "menu", "steps": steps},
                            version=1)


class _Recorder(Simulator):
    """The simulator, keeping the transcript entries the outbox would render."""

    entries: list[dict[str, Any]]

    def _apply(self, effect: fx.Effect) -> None:
        if isinstance(effect, fx.SendMessage):
            self.entries = [*getattr(self, "entries", []), outbound_entry(effect, 0.0, bot=None)]
        super()._apply(effect)


async def _answer(flow: Any, reply: str, payload: str | None = None) -> str:
    sim = _Recorder(flow, channel="sms", now=NOW)
    await sim.say("hi")
    lines = await sim.say(reply, payload=payload, kind="button" if payload else "text")
    return next(line.text for line in lines if line.role == "bot")


@pytest.mark.parametrize("caps", [SMS, WHATSAPP], ids=["sms", "whatsapp"])
async def test_a_typed_number_or_title_reaches_the_same_branch(caps: Capabilities) -> None:
    flow = _menu_flow()
    sim = _Recorder(flow, channel="sms", now=NOW)
    await sim.say("hi")
    [out] = render(sim.entries[-1], caps)
    menu = numbered(out.text)
    assert len(menu) == 12 and "Website: https://example.com" in out.text
    for number, title in menu:
        assert await _answer(flow, str(number)) == f"chose {title}"
    assert await _answer(flow, "  wardrobes ") == "chose Wardrobes"


async def test_a_click_on_a_rendered_option_reaches_its_branch() -> None:
    flow = _menu_flow()
    sim = _Recorder(flow, channel="telegram", now=NOW)
    await sim.say("hi")
    [out] = render(sim.entries[-1], TELEGRAM)
    assert isinstance(out, Rendered) and isinstance(out.menu, ListMenu)
    rows = [r for _, s in out.menu.sections for r in s]
    for row in rows:
        assert await _answer(flow, row.title, payload=row.id) == f"chose {row.title}"


# ---------------------------------------------------------------------- exact cut points
@pytest.mark.parametrize("text, limit, parts", [
    # a sentence boundary: the full stop stays with its sentence
    ("Hello there. This is a longer second sentence that goes on.", 30,
     ["Hello there.", "This is a longer second", "sentence that goes on."]),
    # "!" and "?" end sentences too
    ("Wow! Is that true? Yes it is, really and truly so.", 24,
     ["Wow! Is that true?", "Yes it is, really and", "truly so."]),
    # a boundary in the first third would leave a tiny part: cut at a later word instead
    ("Hi. Then a rather long sentence with words", 30, ["Hi. Then a rather long", "sentence with words"]),
    # a paragraph beats a sentence, a line beats a word
    ("Para one. Still para one.\n\nPara two is here", 35, ["Para one. Still para one.", "Para two is here"]),
    ("One line only here\nsecond line is a bit longer", 30, ["One line only here", "second line is a bit longer"]),
    # the limit itself fits
    ("abcde fghij", 11, ["abcde fghij"]),
    ("abcde fghijk", 11, ["abcde", "fghijk"]),
])
def test_split_text_cuts_at_exact_points(text: str, limit: int, parts: list[str]) -> None:
    assert split_text(text, limit) == parts
