"""The CRM contract runs in a third party's package, where pytest-asyncio is in its default
(strict) mode, not this repository's ``asyncio_mode = "auto"``: before its tests were marked,
every one of them errored there ("async def functions are not natively supported")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = '''
import pytest_asyncio

from crm_bridge.contract import PIPELINES, CrmContract
from crm_bridge.memory import MemoryCrm


class TestThirdPartyCrmContract(CrmContract):
    @pytest_asyncio.fixture
    async def crm(self):
        yield MemoryCrm(pipelines=PIPELINES)
'''


def test_the_crm_contract_runs_under_strict_asyncio_mode(tmp_path: Path) -> None:
    (tmp_path / "test_third_party.py").write_text(MODULE)
    ini = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(ini)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:schemathesis",
                          str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "17 passed" in run.stdout, run.stdout[-1000:]
