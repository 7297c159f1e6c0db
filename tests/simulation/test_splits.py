"""Split tests played through the simulator over many contacts (one simulator each, sharing the
CRM and the split counts as a server's conversations share Redis): the share of each path, the
same path for the same contact, and the winner by goal rate."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.builder.validate import compile_document
from bot.engine.splits import SplitRecord, best_path, choose, draw, due, pick
from bot.simulation.simulator import Simulator
from bot.simulation.splitbook import SplitBook
from crm_bridge import MemoryCrm

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _flow(weights: tuple[int, ...] = (50, 50), winner: dict[str, Any] | None = None) -> Any:
    names = "abcdefgh"[: len(weights)]
    paths = [{"id": n, "weight": w, "next": f"say_{n}"} for n, w in zip(names, weights, strict=True)]
    split: dict[str, Any] = {"type": "split", "goal": "purchased", "paths": paths}
    if winner is not None:
        split["winner"] = winner
    steps: dict[str, Any] = {"offer": split, **{f"say_{n}": {"type": "message", "text": n, "next": "hold"}
                                                 for n in names},
                             "hold": {"type": "pause", "until": [{"on": "timer", "after": "30d"}]},
                             "thanks": {"type": "message", "text": "thanks"}}
    return compile_document({"format": "salesbot.flow/1", "id": "shop", "start": "offer", "steps": steps,
                             "goals": {"purchased": {"on": "order.paid", "next": "thanks"}}}, version=1)


async def _contact(flow: Any, crm: MemoryCrm, book: SplitBook, now: datetime = NOW) -> Simulator:
    sim = Simulator(flow, now=now, crm=crm, splits=book)
    await sim.say("hi")
    return sim


async def test_fifty_fifty_over_two_thousand_contacts_is_within_five_percent() -> None:
    flow, crm, book = _flow(), MemoryCrm(), SplitBook()
    for _ in range(2000):
        await _contact(flow, crm, book)
    entries = book.record("shop", "offer").entries
    assert sum(entries.values()) == 2000
    assert abs(entries["a"] / 2000 - 0.5) <= 0.05, entries
    assert abs(entries["b"] / 2000 - 0.5) <= 0.05, entries


async def test_uneven_weights_share_the_contacts_by_weight() -> None:
    flow, crm, book = _flow((20, 30, 50)), MemoryCrm(), SplitBook()
    for _ in range(2000):
        await _contact(flow, crm, book)
    entries = book.record("shop", "offer").entries
    for path, share in (("a", 0.2), ("b", 0.3), ("c", 0.5)):
        assert abs(entries[path] / 2000 - share) <= 0.05, entries


def test_the_draw_is_even_and_independent_of_the_step() -> None:
    """Over 20,000 contacts: each tenth of [0, 1) gets its share, and a contact's draws at two
    steps do not go together (else every test would send the same people down path a)."""
    draws = [draw(f"contact:{i}", "shop", "offer") for i in range(20_000)]
    deciles = [0] * 10
    for x in draws:
        deciles[int(x * 10)] += 1
    assert all(abs(n - 2000) <= 200 for n in deciles), deciles
    same = sum(pick([1, 1], x) == pick([1, 1], draw(f"contact:{i}", "shop", "other"))
               for i, x in enumerate(draws))
    assert abs(same / 20_000 - 0.5) <= 0.02


async def test_the_same_contact_takes_the_same_path_in_every_conversation() -> None:
    flow, crm, book = _flow(), MemoryCrm(), SplitBook()
    paths = []
    for _ in range(5):  # five conversations, one contact: the CRM finds the same contact each time
        sim = Simulator(flow, now=NOW, crm=crm, splits=book)
        first = paths[0][1] if paths else None
        if first is not None:
            sim.ref = first  # the contact and lead of the first conversation
        await sim.say("hi")
        paths.append((sim.transcript[-1].text, sim.ref))
    assert len({text for text, _ in paths}) == 1


async def test_the_winner_is_the_best_goal_rate_and_every_later_entry_takes_it() -> None:
    flow = _flow(winner={"after_entries": 400})
    crm, book, rng = MemoryCrm(), SplitBook(), random.Random(13)
    rates = {"a": 0.05, "b": 0.20}
    for _ in range(400):
        sim = await _contact(flow, crm, book)
        path = sim.transcript[-1].text
        if rng.random() < rates[path]:
            await sim.event("order.paid", {})
            assert sim.transcript[-1].text == "thanks"
    record = book.record("shop", "offer")
    assert record.winner is None and sum(record.entries.values()) == 400
    assert record.goals["b"] / record.entries["b"] > record.goals["a"] / record.entries["a"]
    later = [(await _contact(flow, crm, book)).transcript[-1].text for _ in range(50)]
    assert record.winner == "b" and record.winner_by == "auto"
    assert later == ["b"] * 50
    assert record.entries["b"] + record.entries["a"] == 450


async def test_or_after_chooses_the_winner_once_that_long_has_passed_since_the_first_entry() -> None:
    flow = _flow(winner={"after_entries": 10_000, "or_after": "7d"})
    crm, book = MemoryCrm(), SplitBook()
    sims = [await _contact(flow, crm, book) for _ in range(40)]
    for sim in sims:
        if sim.transcript[-1].text == "a":
            await sim.event("order.paid", {})
    late = [(await _contact(flow, crm, book, NOW + timedelta(days=6, hours=23))).transcript[-1].text
            for _ in range(20)]
    assert set(late) == {"a", "b"} and book.record("shop", "offer").winner is None
    after = await _contact(flow, crm, book, NOW + timedelta(days=7))
    assert after.transcript[-1].text == "a" and book.record("shop", "offer").winner == "a"


async def test_a_reset_starts_the_counts_again_and_late_goals_of_the_old_test_are_not_counted() -> None:
    flow, crm, book = _flow(), MemoryCrm(), SplitBook()
    old = await _contact(flow, crm, book)
    book.reset("shop", "offer")
    await old.event("order.paid", {})
    record = book.record("shop", "offer")
    assert record.generation == 1 and record.entries == {} and record.goals == {}


def test_ties_go_to_more_goals_then_to_the_first_path() -> None:
    assert best_path(["a", "b"], {"a": 10, "b": 20}, {"a": 1, "b": 2}) == "b"  # same rate, more goals
    assert best_path(["a", "b"], {}, {}) == "a"
    assert best_path(["a", "b", "c"], {"a": 10, "b": 10, "c": 10}, {"c": 1}) == "c"


def test_the_rule_needs_entries_or_time_and_a_known_winner_is_kept() -> None:
    assert not due(None, None, 10**9, 0.0, 10**9)
    assert due(5, None, 5, None, 0) and not due(5, None, 4, None, 0)
    assert due(None, 60, 0, 100.0, 160.0) and not due(None, 60, 0, None, 160.0)
    request = {"paths": ["a", "b"], "pick": 1, "after_entries": 1, "or_after": None}
    assert choose(request, SplitRecord(winner="a"), 0) == (0, None)  # already chosen
    gone = SplitRecord(winner="gone", entries={"a": 1, "b": 1}, goals={"b": 1})  # a path since removed
    assert choose(request, gone, 0) == (1, "b")
    assert choose({**request, "after_entries": None}, SplitRecord(), 0) == (1, None)
