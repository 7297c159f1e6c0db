"""The mutation tier: would the tests notice if a guarantee broke?

Each entry of ``MUTATIONS`` (``mutation_catalog.py``) is a hand-written *semantic* mutation — one
exact snippet of a source file replaced by a plausible bug (an off-by-one, a dropped check, a
swapped comparison) — with the test files that should catch it. For every mutation, on a private copy of the tree (the
working tree is never touched), the snippet is replaced and only those test files run
(``-x -q -p no:cacheprovider`` and a per-test timeout). A failing run *kills* the mutation; a
passing one means it *survived*: the tests would let that bug through. A snippet that is no
longer found (the code moved on) is an *error*, so the list has to stay true to the code.

Run: ``python bench/mutation.py [--module NAME] [-j 2] [--only ID] [--list]``; see
docs/testing.md ("Mutation tier").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mutation_catalog import MODULES, MUTATIONS, Mutation  # bench/ is on sys.path: this script's folder

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- running
@dataclass(slots=True)
class Outcome:
    mutation: Mutation
    status: str  # killed | survived | error
    detail: str
    seconds: float


def _tree_files() -> list[str]:
    """The working tree's files (tracked and untracked, not ignored): what a copy holds."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def _copy_tree(dest: Path, files: list[str]) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


class Copy:
    """A private copy of the tree; one mutation at a time is applied to it and undone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = int(time.time()) + 10

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.write_text(text, encoding="utf-8")
        # A fresh whole-second mtime each write: a same-size edit must never reuse a stale .pyc.
        self._stamp += 2
        os.utime(target, (self._stamp, self._stamp))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.path)
        env.pop("SALESBOT_TEST_REDIS_URL", None)  # each run its own Redis: no shared state
        return env


def _pytest(copy: Copy, tests: list[str], per_test: float, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", f"timeout={per_test:g}",
           *extra, *tests]
    try:
        done = subprocess.run(cmd, cwd=copy.path, env=copy.env(), capture_output=True, text=True, check=False,
                              timeout=max(300.0, per_test * 5))
    except subprocess.TimeoutExpired:
        return -1, "the test run timed out"
    return done.returncode, done.stdout + done.stderr


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if re.match(r"(FAILED|ERROR) tests/", line):
            return line[:160]
    tail = [ln for ln in output.splitlines() if ln.strip()]
    return tail[-1][:160] if tail else ""


def run_one(copy: Copy, m: Mutation, per_test: float) -> Outcome:
    started = time.monotonic()
    source = (copy.path / m.file).read_text(encoding="utf-8")
    count = source.count(m.original)
    if count != 1:
        why = "original snippet not found" if count == 0 else f"original snippet found {count} times"
        return Outcome(m, "error", f"{m.file}: {why}", 0.0)
    mutated = source.replace(m.original, m.replacement)
    if m.file.endswith(".py"):
        try:
            compile(mutated, m.file, "exec")
        except SyntaxError as exc:
            return Outcome(m, "error", f"the mutated {m.file} does not compile: {exc}", 0.0)
    tests = [t for t in m.tests if (copy.path / t).exists()]
    if not tests:
        return Outcome(m, "error", "none of its test files exists", 0.0)
    copy.write(m.file, mutated)
    try:
        code, output = _pytest(copy, tests, per_test)
    finally:
        copy.write(m.file, source)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome(m, "survived", "every test passed", seconds)
    if code in (1, 2, -1):  # failures, a collection error (the mutant breaks an import), a hang
        return Outcome(m, "killed", _first_failure(output), seconds)
    return Outcome(m, "error", f"pytest exited {code}: {_first_failure(output)}", seconds)


def _baseline(copy: Copy, mutations: list[Mutation], per_test: float) -> str | None:
    """None if every test file involved passes unmutated (else why not): a failing test would
    count every mutation as killed."""
    probe = subprocess.run([sys.executable, "-c", "import bot; print(bot.__file__)"], cwd=copy.path,
                           env=copy.env(), capture_output=True, text=True, check=False)
    if not probe.stdout.strip().startswith(str(copy.path)):
        return f"the copy does not import its own code: {probe.stdout.strip() or probe.stderr.strip()}"
    tests = sorted({t for m in mutations for t in m.tests if (copy.path / t).exists()})
    code, output = _pytest(copy, tests, per_test)
    return None if code == 0 else f"the unmutated tests fail (exit {code}): {_first_failure(output)}"


def _table(outcomes: list[Outcome]) -> str:
    rows: list[tuple[str, ...]] = [("module", "mutants", "killed", "survived", "errors", "kill rate")]

    def row(name: str, subset: list[Outcome]) -> tuple[str, ...]:
        killed = sum(o.status == "killed" for o in subset)
        survived = sum(o.status == "survived" for o in subset)
        errors = sum(o.status == "error" for o in subset)
        rate = f"{100 * killed / (killed + survived):.1f} %" if killed + survived else "-"
        return (name, str(len(subset)), str(killed), str(survived), str(errors), rate)
    for key, name in MODULES.items():
        subset = [o for o in outcomes if o.mutation.module == key]
        if subset:
            rows.append(row(name, subset))
    rows.append(row("overall", outcomes))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", default=[],
                        help=f"only these modules (repeat or comma-separate): {', '.join(MODULES)}")
    parser.add_argument("--only", action="append", default=[],
                        help="these mutation ids (repeatable; with --module, both are run)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutations run at once (one tree copy each)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-test timeout in seconds (default 60)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 below this overall kill rate (%%)")
    args = parser.parse_args(argv)

    modules = {name.strip() for value in args.module for name in value.split(",") if name.strip()}
    unknown = modules - set(MODULES)
    if unknown:
        parser.error(f"unknown module(s) {', '.join(sorted(unknown))}; known: {', '.join(MODULES)}")
    ids = {m.id for m in MUTATIONS}
    if len(ids) != len(MUTATIONS):
        parser.error("mutation ids must be unique")
    if set(args.only) - ids:
        parser.error(f"unknown mutation id(s): {', '.join(sorted(set(args.only) - ids))}")
    chosen = [m for m in MUTATIONS if (not modules and not args.only) or m.module in modules or m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id:36} {m.module:12} {m.file:32} {m.description}")
        return 0
    if not chosen:
        parser.error("no mutation selected")

    jobs = max(1, min(args.jobs, len(chosen)))
    files = _tree_files()
    with tempfile.TemporaryDirectory(prefix="salesbot-mutation-") as tmp:
        copies: queue.Queue[Copy] = queue.Queue()
        for i in range(jobs):
            path = Path(tmp) / f"tree{i}"
            _copy_tree(path, files)
            copies.put(Copy(path))
        print(f"{len(chosen)} mutations, {jobs} at a time, per-test timeout {args.timeout:g} s", flush=True)
        if not args.no_baseline:
            copy = copies.get()
            problem = _baseline(copy, chosen, args.timeout)
            copies.put(copy)
            if problem:
                print(f"baseline: {problem}", file=sys.stderr)
                return 2
            print("baseline: the unmutated tests pass", flush=True)
        outcomes: list[Outcome] = []
        lock = threading.Lock()

        def work(m: Mutation) -> Outcome:
            copy = copies.get()
            try:
                outcome = run_one(copy, m, args.timeout)
            finally:
                copies.put(copy)
            with lock:
                outcomes.append(outcome)
                print(f"[{len(outcomes):3}/{len(chosen)}] {outcome.status:8} {m.module:12} {m.id:36} "
                      f"{outcome.seconds:5.1f} s  {outcome.detail if outcome.status != 'survived' else m.description}",
                      flush=True)
            return outcome
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            list(pool.map(work, chosen))

    order = {m.id: i for i, m in enumerate(MUTATIONS)}
    outcomes.sort(key=lambda o: order[o.mutation.id])
    print()
    print(_table(outcomes))
    survivors = [o for o in outcomes if o.status == "survived"]
    errors = [o for o in outcomes if o.status == "error"]
    if survivors:
        print("\nsurvivors (the tests let these through):")
        for o in survivors:
            print(f"  {o.mutation.module:12} {o.mutation.id:36} {o.mutation.file}: {o.mutation.description}")
    if errors:
        print("\nerrors (fix the mutation list):")
        for o in errors:
            print(f"  {o.mutation.module:12} {o.mutation.id:36} {o.detail}")
    killed = sum(o.status == "killed" for o in outcomes)
    rate = 100 * killed / max(1, killed + len(survivors))
    return 1 if errors or rate < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
