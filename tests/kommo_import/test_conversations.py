"""Real-shaped Kommo bots (fixtures/*.kommo.json, written from the documented shapes) imported with
``salesbot flows import`` and run through the simulator by their conversation tests: the imported
behaviour is the Kommo bot's behaviour."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from bot.builder import check_document, read_document
from bot.cli import main
from bot.simulation.convtest import run_test_file

FIXTURES = Path(__file__).parent / "fixtures"
BOTS = sorted(FIXTURES.glob("*.kommo.json"))
TESTS = sorted(FIXTURES.glob("*.test.yaml"))


def imported(name: str, folder: Path) -> Path:
    """``salesbot flows import --from kommo`` of fixture ``name`` (with its map when it has one) into ``folder``."""
    source = FIXTURES / f"{name}.kommo.json"
    target = folder / f"{name}.json"
    argv = ["flows", "import", "--from", "kommo", str(source), "--id", name.replace("_", "-"), "-o", str(target)]
    if (FIXTURES / f"{name}.map.toml").exists():
        argv += ["--map", str(FIXTURES / f"{name}.map.toml")]
    out = io.StringIO()
    assert main(argv, out=out) == 0, out.getvalue()
    assert f'as flow "{name.replace("_", "-")}"' in out.getvalue().splitlines()[-1]
    return target


def test_every_bot_has_a_conversation_test() -> None:
    assert len(BOTS) >= 5
    for bot in BOTS:
        name = bot.name.removesuffix(".kommo.json")
        assert any(t.name.startswith(name + ".") for t in TESTS), f"{bot.name} has no test"


@pytest.mark.parametrize("bot", BOTS, ids=lambda p: p.name)
def test_the_imported_flow_is_valid(bot: Path, tmp_path: Path) -> None:
    flow = imported(bot.name.removesuffix(".kommo.json"), tmp_path)
    problems, compiled = check_document(read_document(flow))
    assert compiled is not None and [str(p) for p in problems if p.severity == "error"] == []


@pytest.mark.parametrize("test", TESTS, ids=lambda p: p.name)
def test_the_imported_flow_behaves_as_the_kommo_bot(test: Path, tmp_path: Path) -> None:
    imported(test.name.split(".")[0], tmp_path)
    shutil.copy(test, tmp_path / test.name)
    outcome = run_test_file(tmp_path / test.name)
    assert outcome.passed, outcome.report()
