"""``salesbot kommo map`` drafts map.toml from a Kommo account (the fake Kommo API on loopback),
and the draft is what ``flows export --to kommo --map`` needs."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.kommo_import import mapping
from bot.kommo_import.draft import slug
from crm_bridge.kommo.records import slug as backend_slug
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo


@pytest.fixture
async def fake() -> AsyncIterator[FakeKommo]:
    async with FakeKommo(rate_limit=None) as fake:
        yield fake


def config(tmp_path: Path, url: str, backend: str = "kommo") -> str:
    path = tmp_path / "salesbot.toml"
    path.write_text(f'[crm]\nbackend = "{backend}"\nbase_url = "{url}"\ntoken = "{TOKEN}"\n')
    return str(path)


async def run(*argv: str) -> tuple[int, str]:
    """The CLI in a thread (it runs its own event loop) while the fake serves on this one."""
    out = io.StringIO()
    code = await asyncio.to_thread(main, list(argv), out=out)
    return code, out.getvalue()


async def test_the_draft_names_fields_stages_pipelines_and_users_as_our_flows_do(
        fake: FakeKommo, tmp_path: Path) -> None:
    target = tmp_path / "map.toml"
    code, said = await run("kommo", "map", "--config", config(tmp_path, fake.url), "-o", str(target))
    assert code == 0, said
    assert said == f"drafted {target}: 12 fields, 7 stages, 2 pipelines, 2 users\n"
    text = target.read_text()
    assert '"505" = "call_back"  # lead field "Call back" (date)' in text
    assert '"401" = "phone"  # contact field "Phone" (multitext)' in text
    m = mapping.parse(text)
    assert m.name("fields", 501) == "budget" and m.name("fields", 302) == "web"
    new = fake.status_id("Sales", "New")
    assert m.name("stages", new) == "New" and m.name("stages", 142) == "Won"  # the main pipeline's name of 142
    assert m.name("stages", fake.status_id("Sales", "Incoming leads")) is None  # no bot moves a lead there
    assert m.pipelines == {1001: "Sales", 1002: "Partners"}
    assert m.users == {7: "ann@acme.test", 8: "bob@acme.test"}
    assert {r.method for r in fake.requests} == {"GET"}  # drafting reads the account, never writes

    flow = {"format": "salesbot.flow/1", "id": "t", "start": "a", "steps": {"a": {"type": "action", "actions": [
        {"do": "change_stage", "stage": "New"}, {"do": "set_field", "field": "call_back", "value": "1"},
        {"do": "change_responsible", "user": "bob@acme.test"}]}}}
    (tmp_path / "flow.json").write_text(json.dumps(flow))
    code, said = await run("flows", "export", "--to", "kommo", str(tmp_path / "flow.json"), "--map", str(target))
    assert code == 0, said
    assert [h["params"] for h in json.loads(said)[0]["question"][:3]] == [
        {"name": "change_status", "params": {"value": new}},
        {"name": "set_custom_fields", "params": {"type": 2, "value": "1", "custom_fields_id": 505}},
        {"name": "change_responsible_user", "params": {"value": 8, "type": 2}}]


async def test_an_unreachable_or_refusing_account_is_one_line_without_the_token(
        fake: FakeKommo, tmp_path: Path) -> None:
    fake.down(401)
    code, said = await run("kommo", "map", "--config", config(tmp_path, fake.url))
    assert code == 1 and said.startswith("cannot read the Kommo account: ") and said.count("\n") == 1
    assert TOKEN not in said


async def test_the_draft_needs_kommo_and_never_overwrites(fake: FakeKommo, tmp_path: Path) -> None:
    code, said = await run("kommo", "map", "--config", config(tmp_path, fake.url, backend="embedded"))
    assert code == 1 and 'backend = "embedded"' in said
    kept = tmp_path / "map.toml"
    kept.write_text("# mine\n")
    code, said = await run("kommo", "map", "--config", config(tmp_path, fake.url), "-o", str(kept))
    assert code == 1 and "never overwrites" in said and kept.read_text() == "# mine\n"
    assert fake.requests == []


def test_the_slug_is_the_backends() -> None:
    for name in ("Call back", "  E-Mail  (work) ", "Источник", "Budget 2", "already_slug"):
        assert slug(name) == backend_slug(name)


async def test_an_import_can_name_the_ids_by_reading_the_account(fake: FakeKommo, tmp_path: Path) -> None:
    new = fake.status_id("Sales", "New")
    bot = [{"question": [
        {"handler": "action", "params": {"name": "set_custom_fields",
                                         "params": {"type": 2, "value": "soon", "custom_fields_id": 505}}},
        {"handler": "action", "params": {"name": "change_status", "params": {"value": new}}},
        {"handler": "show", "params": {"type": "text", "value": "Budget {{lead.cf.501}}"}}]}]
    source = tmp_path / "bot.kommo.json"
    source.write_text(json.dumps(bot))
    cfg = config(tmp_path, fake.url)
    code, said = await run("flows", "import", "--from", "kommo", str(source), "--from-account", "--config", cfg,
                           "-o", str(tmp_path / "bot.json"))
    assert code == 0, said
    text = (tmp_path / "bot.json").read_text()
    assert '"field": "call_back"' in text and '"stage": "New"' in text and "lead.fields.budget" in text
    assert "505" not in text and str(new) not in text  # named, not kept as ids
    assert {r.method for r in fake.requests} == {"GET"}

    code, said = await run("flows", "import", "--from", "kommo", str(source), "--from-account", "--config", cfg,
                           "--map", str(tmp_path / "m.toml"))
    assert code == 1 and said.startswith("--map and --from-account: give one")
    fake.down(401)
    code, said = await run("flows", "import", "--from", "kommo", str(source), "--from-account", "--config", cfg)
    assert code == 1 and said.startswith("cannot read the Kommo account: ") and TOKEN not in said
