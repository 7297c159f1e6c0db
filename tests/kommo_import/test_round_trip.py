"""Import → export → import gives the same flow for every Kommo fixture (through the commands), and a
hand-written flow exported to Kommo and imported back behaves as before (its conversation tests)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from bot.cli import main
from bot.kommo_import import mapping
from bot.kommo_import.convert_in import convert
from bot.kommo_import.convert_out import export
from bot.simulation.convtest import run_test_file

FIXTURES = Path(__file__).parent / "fixtures"
BOTS = sorted(FIXTURES.glob("*.kommo.json"))
OURS = FIXTURES / "ours"


def run(*argv: str) -> str:
    out = io.StringIO()
    assert main(list(argv), out=out) == 0, out.getvalue()
    return out.getvalue()


def map_args(name: str) -> list[str]:
    found = FIXTURES / f"{name}.map.toml"
    return ["--map", str(found)] if found.exists() else []


@pytest.mark.parametrize("bot", BOTS, ids=lambda p: p.name)
def test_import_export_import_gives_the_same_flow(bot: Path, tmp_path: Path) -> None:
    name = bot.name.removesuffix(".kommo.json")
    first, kommo, second = tmp_path / "first.json", tmp_path / "kommo.json", tmp_path / "second.json"
    run("flows", "import", "--from", "kommo", str(bot), "--id", "t", "-o", str(first), *map_args(name))
    said = run("flows", "export", "--to", "kommo", str(first), "-o", str(kommo), *map_args(name))
    assert said.startswith("exported ")
    run("flows", "import", "--from", "kommo", str(kommo), "--id", "t", "-o", str(second), *map_args(name))
    assert json.loads(second.read_text()) == json.loads(first.read_text())


@pytest.mark.parametrize("bot", BOTS, ids=lambda p: p.name)
def test_the_export_of_an_imported_bot_is_its_kommo_code(bot: Path) -> None:
    """Where the source wrote no jump Kommo makes anyway, the export writes none either: the code is
    the source's but for what import reads the same (``send_message`` as ``show``, key order, …)."""
    name = bot.name.removesuffix(".kommo.json")
    found = FIXTURES / f"{name}.map.toml"
    kommo_map = mapping.parse(found.read_text()) if found.exists() else mapping.EMPTY
    source = json.loads(bot.read_text())
    exported = export(convert(source, bot_id="t", kommo_map=kommo_map).flow, kommo_map)
    steps = exported if isinstance(exported, list) else [v for k, v in exported.items() if k.isdigit()]
    original = source if isinstance(source, list) else [v for k, v in source.items() if k.isdigit()]
    assert len(steps) == len(original)
    assert [sorted(s) for s in steps] == [sorted(k for k in s if k != "block_uuid") for s in original]


@pytest.mark.parametrize("test", sorted(OURS.glob("*.test.yaml")), ids=lambda p: p.name)
def test_a_flow_of_ours_behaves_the_same_after_a_trip_through_kommo(test: Path, tmp_path: Path) -> None:
    original = OURS / "shop.json"
    kommo = tmp_path / "shop.kommo.json"
    run("flows", "export", "--to", "kommo", str(original), "-o", str(kommo))
    run("flows", "import", "--from", "kommo", str(kommo), "--id", "shop", "-o", str(tmp_path / "shop.json"))
    assert json.loads((tmp_path / "shop.json").read_text()) != json.loads(original.read_text())  # Kommo's shape
    shutil.copy(test, tmp_path / test.name)
    for folder in (OURS, tmp_path):
        outcome = run_test_file(folder / test.name)
        assert outcome.passed, outcome.report()
