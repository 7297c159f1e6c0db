"""What ``salesbot serve`` imports before it answers: a live-chat-only server loads no channel
SDK, no e-mail or phone library, no flow or automation validator (issue 14: startup; the
time itself is measured by bench/startup.py, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Imported on first use only: by a channel account of that kind, a validation step, an e-mail,
#: a Kommo widget, a flow or automation document being checked, the flow graph.
NOT_AT_START = (
    "telegram", "twilio", "aiogram", "playwright", "phonenumbers", "email_validator", "aiosmtplib", "jwt",
    "bot.builder.validate", "bot.builder.models", "bot.builder.graph",
    "bot.automations.models", "bot.automations.validate", "bot.automations.compiled", "bot.automations.engine",
)
PROGRAM = """
import json, sys
import bot.cli, bot.server.run
from bot.config import load_config
from bot.server.app import create_app
create_app(load_config(None), role="all")
json.dump(sorted(sys.modules), sys.stdout)
"""


def test_a_live_chat_only_server_starts_without_what_it_does_not_use(tmp_path: Path) -> None:
    # An empty folder: no salesbot.toml, no flows/ — the live chat only, as bench/startup.py runs it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    env["PYTHONPATH"] = str(ROOT)
    env["SALESBOT_REDIS_URL"] = "redis://127.0.0.1:1/0"  # not connected to: the app is only built
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout))
    assert "bot.server.app" in modules and "aiohttp" in modules  # the program did build the app
    loaded = sorted(name for name in modules if name.split(".")[0] in NOT_AT_START or name in NOT_AT_START)
    assert loaded == []
