"""Start real ``salesbot`` processes for tests and stop them cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def stop_process(popen: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Signal a child and wait for it; kill it if it does not end within ``timeout``."""
    if popen.poll() is None:
        popen.send_signal(sig)
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    return int(popen.returncode)


def post_json(url: str, body: dict[str, Any]) -> int:
    """POST a JSON body; the status (an error status raises ``urllib.error.HTTPError``)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The checkout under test: the children import its code whatever their working directory.
ROOT = Path(__file__).resolve().parents[1]


class Proc:
    """A child in an empty working directory of its own: it reads no ``./salesbot.toml`` and no
    ``./automations`` of the directory pytest was started from (the repo's example rules would act
    on every lead of the test and add background work to what it waits for)."""

    def __init__(self, args: list[str], env: dict[str, str], port: int | None, log: Path) -> None:
        self.port = port
        self.log_path = log
        cwd = log.with_suffix(".cwd")
        cwd.mkdir()
        env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)}
        self._log = open(log, "wb")  # noqa: SIM115 - open for the child's whole life, closed in stop()
        self.popen = subprocess.Popen([sys.executable, "-m", "bot.cli", *args], env=env, cwd=cwd,
                                      stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until the child answers ``/healthz`` (or logs that it runs); a bound, not a check of how
        fast it starts: on a loaded 2-core machine a worker took over 15 s to get there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"salesbot exited with {self.popen.returncode}:\n{self.output()}")
            if self.port is None:
                if b"salesbot is running" in self.log_path.read_bytes():
                    return
            else:
                try:
                    with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.05)  # polling a readiness probe, bounded
        raise RuntimeError(f"salesbot did not become ready within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = stop_process(self.popen, sig)
        self._log.close()
        return code


@contextmanager
def salesbot(args: list[str], *, tmp: Path, env: dict[str, str], name: str, port: int | None = None) -> Iterator[Proc]:
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    proc = Proc(args + (["--port", str(port)] if port else []), full_env, port, tmp / f"{name}.log")
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()
