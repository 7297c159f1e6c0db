"""The ``salesbot`` command line: flows validate / push / graph, automations validate / push, chat, test."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import ROOT, ConversationTestError, FlowInvalid, FlowLoadError, Problem

if TYPE_CHECKING:
    from .automations.compiled import CompiledAutomations
    from .automations.validate import AutomationContext

# Each command imports what it needs when it runs: ``salesbot serve`` starts without the
# builder's and the automations' tooling (issue 14, bench/startup.py).


def _cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from .builder.validate import check_document

    return _validate_files(args.files, lambda doc, repeated: check_document(doc, repeated=repeated)[0], "flow",
                           json_output=args.json, out=out)


def _validate_files(files: Sequence[str], check: Callable[[Any, list[str]], list[Problem]], noun: str, *,
                    json_output: bool, out: TextIO) -> int:
    """One line per problem (or a JSON report) for documents of one format; 1 when any has an error."""
    from .builder.loader import read_document

    failed = False
    report: list[dict[str, Any]] = []
    for name in files:
        repeated: list[str] = []
        try:
            doc = read_document(name, repeated)
        except FlowLoadError as exc:
            failed = True
            report.append({"file": name, "pointer": "", "message": str(exc).split(": ", 1)[-1], "severity": "error"})
            continue
        if isinstance(doc, dict) and "$schema" in doc and "format" not in doc:
            report.append({"file": name, "pointer": "", "message": f"skipped: a JSON Schema, not a {noun}",
                           "severity": "note"})
            continue
        problems = check(doc, repeated)
        failed |= any(p.severity == "error" for p in problems)
        report += [{"file": name, **p.as_dict()} for p in problems]
    if json_output:
        out.write(json.dumps({"valid": not failed, "problems": report}, ensure_ascii=False, indent=2) + "\n")
    else:
        for r in report:
            tag = {"error": "", "warning": "warning: "}.get(r["severity"], "")
            out.write(f"{r['file']}: {r['pointer'] or ROOT}: {tag}{r['message']}\n")
        if not failed:
            skipped = sum(1 for r in report if r["severity"] == "note")
            out.write(f"{len(files) - skipped} {noun}(s) valid\n")
    return 1 if failed else 0


def _cmd_graph(args: argparse.Namespace, out: TextIO) -> int:
    from .builder.graph import to_mermaid
    from .builder.loader import read_document
    from .builder.validate import check_document, parse_flow_model

    repeated: list[str] = []
    try:
        doc = read_document(args.file, repeated)
        problems, flow = check_document(doc, repeated=repeated)
    except FlowLoadError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    if flow is None:
        for p in problems:
            if p.severity == "error":
                sys.stderr.write(f"{args.file}: {p}\n")
        return 1
    out.write(to_mermaid(parse_flow_model(doc), highlight=args.highlight))
    return 0


def _cmd_push(args: argparse.Namespace, out: TextIO, collection: str = "bots") -> int:
    """Upload documents to a running server (PUT /api/bots/{id}, or /api/automations/{id}); print
    the version or every problem."""
    import urllib.error
    import urllib.request

    from .builder.loader import read_document

    failed = False
    for name in args.files:
        try:
            doc = read_document(name)
        except FlowLoadError as exc:
            out.write(f"{exc}\n")
            failed = True
            continue
        if isinstance(doc, dict) and "$schema" in doc and "format" not in doc:  # as ``validate`` skips it
            out.write(f"{name}: skipped: a JSON Schema, not a document to push\n")
            continue
        bot = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(bot, str):
            out.write(f"{name}: /id: required\n")
            failed = True
            continue
        req = urllib.request.Request(
            f"{args.server.rstrip('/')}/api/{collection}/{bot}", data=json.dumps(doc).encode(), method="PUT",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {args.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = json.loads(resp.read())
            unchanged = " (unchanged)" if resp.status == 200 else ""
            out.write(f"{name}: {bot} version {body['version']}{unchanged}\n")
            out.writelines(f"{name}: warning: {w}\n" for w in body.get("warnings", []))
        except urllib.error.HTTPError as exc:
            failed = True
            try:
                err = json.loads(exc.read())["error"]
            except (ValueError, KeyError):
                err = {"message": f"HTTP {exc.code}"}
            details = err.get("details") or []
            if not details:
                out.write(f"{name}: {err.get('message')}\n")
            out.writelines(f"{name}: {d.get('pointer') or ROOT}: {d.get('message')}\n" for d in details)
        except OSError as exc:
            out.write(f"{name}: cannot reach {args.server}: {exc}\n")
            failed = True
    return 1 if failed else 0


def _automation_context(config_path: str | None) -> AutomationContext:
    """What ``automations validate`` checks against, from the configuration (``--config``, else
    ./salesbot.toml when present): the embedded CRM's pipelines (the default ``Sales`` pipeline
    when none is configured; not checked with another CRM backend) and the bots of ``flows_dir``
    (not checked when the folder does not exist)."""
    from crm_bridge.memory import DEFAULT_PIPELINE, DEFAULT_STAGES

    from .automations.validate import AutomationContext
    from .builder.loader import read_document
    from .config import load_config

    config = load_config(config_path)
    pipelines: dict[str, list[str]] = {}
    if config.crm.backend == "embedded":
        pipelines = dict(config.embedded_crm.pipelines) or {DEFAULT_PIPELINE: list(DEFAULT_STAGES)}
    bots = None
    if config.flows_dir.is_dir():
        bots = set()
        for path in config.flows_dir.glob("*.json"):
            try:
                doc = read_document(path)
            except FlowLoadError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("id"), str) and "format" in doc:
                bots.add(doc["id"])
    return AutomationContext(pipelines, bots=bots)


def _cmd_automations(args: argparse.Namespace, out: TextIO) -> int:
    if args.automations_command == "push":
        return _cmd_push(args, out, "automations")
    from .automations.validate import validate_automations
    from .config import ConfigError

    try:
        context = _automation_context(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    from .builder.problems import repeated_key_problems, sorted_problems

    return _validate_files(
        args.files, lambda doc, repeated: sorted_problems(validate_automations(doc, context)
                                                          + repeated_key_problems(repeated)),
        "document", json_output=args.json, out=out)


def _cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    from .simulation.convtest import discover, run_test_file

    files = discover(args.paths)
    if not files:
        out.write("no *.test.yaml files found\n")
        return 1
    channels = _channels()
    results = [run_test_file(f, channels) for f in files]
    for r in results:
        if not r.passed or args.verbose:
            out.write(r.report() + "\n")
    failed = sum(not r.passed for r in results)
    broken = sum(r.broken for r in results)
    out.write(f"{len(results) - failed} passed, {failed} failed" + (f" ({broken} broken)" if broken else "") + "\n")
    return 1 if failed else 0


def _channels() -> list[str]:
    """The channels a chat can be rendered for: the live chat and every registered adapter's."""
    from .channels.registry import ChannelRegistry

    return ["livechat", *sorted(set(ChannelRegistry().names()) - {"livechat"})]


def _cmd_chat(args: argparse.Namespace, out: TextIO, inp: TextIO) -> int:
    from .builder.loader import load_flow
    from .config import ConfigError
    from .simulation.chat import ChatSession

    try:
        flow = load_flow(args.file)
        bots = [load_flow(b) for b in args.bot or []]
    except (FlowLoadError, FlowInvalid) as exc:
        sys.stderr.write(f"{exc}\n")
        for p in getattr(exc, "problems", []):
            sys.stderr.write(f"  {p}\n")
        return 1
    known = _channels()
    if args.channel not in known:
        sys.stderr.write(f"--channel {args.channel!r}: not a channel (channels: {', '.join(known)})\n")
        return 2
    try:
        now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC).replace(microsecond=0)
    except ValueError:
        sys.stderr.write(f"--now {args.now!r}: not an ISO 8601 time (e.g. 2026-12-05T10:00:00+03:00)\n")
        return 2
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    automations, pipelines, lead = None, None, None
    if args.automations:
        try:
            automations, pipelines, lead = _chat_automations(args)
        except (ConfigError, ConversationTestError) as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
    session = ChatSession(flow, bots=bots, channel=args.channel, now=now, out=out, automations=automations,
                          pipelines=pipelines, lead=lead)
    return asyncio.run(session.repl(inp))


def _chat_automations(args: argparse.Namespace) -> tuple[CompiledAutomations, dict[str, list[str]], dict[str, Any]]:
    """The document ``salesbot chat --automations`` runs, compiled against the pipelines of the
    configuration (as ``automations validate`` reads them), and the chat's lead in its pipeline
    (in ``--stage``, else the first stage)."""
    from .simulation.convtest import load_automations

    pipelines = {k: list(v) for k, v in _automation_context(args.config).pipelines.items()}
    automations = load_automations(Path(args.automations), pipelines or None)
    stages = pipelines.get(automations.pipeline) or list(automations.stages)
    if args.stage and args.stage not in stages:
        raise ConversationTestError(f"--stage {args.stage}: not a stage of {automations.pipeline} "
                                    f"({', '.join(stages)})")
    pipelines = {**pipelines, automations.pipeline: stages}
    return automations, pipelines, {"pipeline": automations.pipeline, "stage": args.stage or stages[0]}


def _cmd_serve(args: argparse.Namespace, out: TextIO, *, role: str | None = None) -> int:
    # No cyclic collection while start-up imports some 580 modules and builds the app: none of it
    # is garbage, yet Python's default thresholds had the collector walk it a few dozen times
    # (~4 % of start-up's instructions). bot.server.run turns it back on with serving's thresholds
    # a second after it listens (``_settle``); ``finally``: when serving ends before that.
    gc.disable()
    try:
        from .server.run import serve

        return serve(config_path=args.config, host=getattr(args, "host", None), port=getattr(args, "port", None),
                     data_dir=args.data_dir, role=role or args.role, out=out)
    finally:
        gc.enable()


def _add_flows(sub: Any) -> None:
    from . import kommo_cli, kommo_import_cli

    flows = sub.add_parser("flows", help="validate and draw flow files")
    fsub = flows.add_subparsers(dest="flows_command", required=True)
    v = fsub.add_parser("validate", help="check flow files; one line per problem")
    v.add_argument("files", nargs="+")
    v.add_argument("--json", action="store_true", help="print the problems as JSON")
    p = fsub.add_parser("push", help="upload flows to a running server")
    p.add_argument("files", nargs="+")
    p.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8080")
    p.add_argument("--token", required=True, help="an admin or operator token")
    g = fsub.add_parser("graph", help="print the flow as a Mermaid flowchart")
    g.add_argument("file")
    g.add_argument("--highlight", help="a step id to highlight")
    kommo_cli.add_export_parser(fsub)
    kommo_import_cli.add_import_parser(fsub)


def _add_kommo(sub: Any) -> None:
    from . import kommo_cli

    kommo_cli.add_kommo_parser(sub)


def _add_automations(sub: Any) -> None:
    autos = sub.add_parser("automations", help="validate and upload automation documents")
    asub = autos.add_subparsers(dest="automations_command", required=True)
    av = asub.add_parser("validate", help="check automation documents against salesbot.toml's pipelines and "
                                          "the flows of flows_dir; one line per problem")
    av.add_argument("files", nargs="+")
    av.add_argument("--json", action="store_true", help="print the problems as JSON")
    av.add_argument("--config", help="TOML file (default ./salesbot.toml when present)")
    ap = asub.add_parser("push", help="upload automation documents to a running server")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--server", "--url", required=True, help="e.g. http://127.0.0.1:8080")
    ap.add_argument("--token", required=True, help="an admin or operator token")


def _add_test(sub: Any) -> None:
    t = sub.add_parser("test", help="run conversation tests (*.test.yaml)")
    t.add_argument("paths", nargs="+")
    t.add_argument("-v", "--verbose", action="store_true", help="also list the tests that pass")


def _add_chat(sub: Any) -> None:
    c = sub.add_parser("chat", help="talk to a flow in the terminal, on a virtual clock")
    c.add_argument("file")
    c.add_argument("--channel", default="livechat")
    c.add_argument("--bot", action="append", help="another flow that start_bot may call (repeatable)")
    c.add_argument("--now", help="virtual clock start, ISO 8601 (default: now)")
    c.add_argument("--automations", metavar="FILE", help="also run this automation document on the chat's lead")
    c.add_argument("--stage", help="with --automations: the stage the lead starts in (default: the first)")
    c.add_argument("--config", help="with --automations: TOML file whose pipelines the document is checked "
                                    "against (default ./salesbot.toml when present)")


def _add_serve(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the server (embedded Redis unless a Redis URL is configured)")
    s.add_argument("--config", help="TOML file (default ./salesbot.toml when present)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--data-dir")
    s.add_argument("--role", choices=["all", "web", "worker"], default="all")


def _add_worker(sub: Any) -> None:
    w = sub.add_parser("worker", help="timers, outbound delivery and CRM outbox only")
    w.add_argument("--config")
    w.add_argument("--data-dir")


#: Each command's parser, in the order ``salesbot --help`` lists them.
_PARSERS: dict[str, Callable[[Any], None]] = {
    "flows": _add_flows, "kommo": _add_kommo, "automations": _add_automations, "test": _add_test,
    "chat": _add_chat, "serve": _add_serve, "worker": _add_worker,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``command`` (one of ``_PARSERS``) that command's only: what
    it accepts, prints for ``--help`` and rejects reads the same, and ``salesbot serve`` starts
    without building the other commands' dozen parsers (~20 M instructions, issue 14: startup)."""
    parser = argparse.ArgumentParser(prog="salesbot", description="Run Salesbot-style chatbot flows.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add in _PARSERS.items():
        if command is None or name == command:
            add(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, inp: TextIO | None = None) -> int:
    out = out or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv and argv[0] in _PARSERS else None).parse_args(argv)
    if args.command == "flows":
        if args.flows_command == "push":
            return _cmd_push(args, out)
        if args.flows_command == "export":
            from . import kommo_cli

            return kommo_cli.cmd_export(args, out)
        if args.flows_command == "import":
            from . import kommo_import_cli

            return kommo_import_cli.cmd_import(args, out)
        return _cmd_validate(args, out) if args.flows_command == "validate" else _cmd_graph(args, out)
    if args.command == "automations":
        return _cmd_automations(args, out)
    if args.command == "test":
        return _cmd_test(args, out)
    if args.command == "kommo":
        from . import kommo_cli

        return kommo_cli.cmd_map(args, out)
    if args.command == "chat":
        return _cmd_chat(args, out, inp or sys.stdin)
    if args.command == "serve":
        return _cmd_serve(args, out)
    if args.command == "worker":
        return _cmd_serve(args, out, role="worker")
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
