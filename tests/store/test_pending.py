"""Which pushes write the recovery entry (bot/store/pending.py): the window and the bound."""

from __future__ import annotations

from bot.store.pending import REMEMBERED, RecentEntries


def test_a_push_writes_the_entry_unless_its_process_wrote_it_less_than_half_a_lock_ttl_ago() -> None:
    recent = RecentEntries(lock_ttl=30.0)
    assert recent.needed("a", 100.0)
    assert recent.needed("a", 100.0)  # not written yet (Redis may not have answered)
    recent.wrote("a", 100.0)
    assert not recent.needed("a", 100.0) and not recent.needed("a", 114.999)
    assert recent.needed("a", 115.0)
    recent.wrote("a", 115.0)
    assert recent.needed("a", 114.0)  # a clock set back
    recent.wrote("a", 120.0)
    recent.forget("a")
    assert recent.needed("a", 121.0)
    assert recent.needed("b", 121.0)


def test_a_full_memory_keeps_the_entries_still_in_their_window_if_few_else_none() -> None:
    recent = RecentEntries(lock_ttl=30.0)
    for n in range(REMEMBERED - 10):
        recent.wrote(f"old{n}", 0.0)
    for n in range(10):
        recent.wrote(f"new{n}", 20.0)
    recent.wrote("last", 20.0)  # full: the old ones (20 s ago) go, the new ones stay
    assert all(not recent.needed(f"new{n}", 21.0) for n in range(10)) and not recent.needed("last", 21.0)
    assert recent.needed("old0", 21.0) and len(recent._at) == 11
    for n in range(REMEMBERED):
        recent.wrote(f"busy{n}", 30.0)
    # full of recent ones: all forgotten (the pushes write their entries: only more commands)
    assert recent.needed("busy0", 31.0) and not recent.needed(f"busy{REMEMBERED - 1}", 31.0)
    assert len(recent._at) < REMEMBERED // 2
