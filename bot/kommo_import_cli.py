"""``salesbot flows import --from kommo``: the file side of bot.kommo_import.convert_in (which is pure)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any, TextIO

from .errors import ROOT

_BOT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def add_import_parser(fsub: Any) -> None:
    i = fsub.add_parser("import", help="convert a Kommo Salesbot bot (its code, or a whole export) into a flow")
    i.add_argument("file")
    i.add_argument("--from", dest="source", required=True, choices=["kommo"], help="the source language")
    i.add_argument("--id", dest="bot_id", help="the flow's id (default: from the file name)")
    i.add_argument("-o", "--output", help="write the flow here (default: standard output)")
    i.add_argument("--map", help="map.toml: our names for the Kommo ids of fields, stages, pipelines and users")
    i.add_argument("--from-account", action="store_true",
                   help="name the ids by reading the Kommo account of [crm] (as `salesbot kommo map` drafts it)")
    i.add_argument("--config", help="TOML file with [crm] backend = \"kommo\", for --from-account "
                                    "(default ./salesbot.toml)")


def default_id(path: str) -> str:
    """A flow id from a file name: ``Welcome Bot.json`` → ``welcome-bot``, ``menu.kommo.json`` → ``menu``."""
    stem = Path(path).stem.removesuffix(".kommo")
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:64]
    return slug or "kommo-bot"


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    """0, the flow, its warnings and a summary line; 1 and the problem with its pointer when the input is malformed."""
    from .kommo_cli import NoAccount, account_map, kommo_crm, read_map
    from .kommo_import.convert_in import convert
    from .kommo_import.errors import KommoMapInvalid
    from .kommo_import.result import KommoImportError

    bot_id = args.bot_id or default_id(args.file)
    if not _BOT_ID.match(bot_id):
        out.write(f"--id {bot_id!r}: a flow id is 1-64 of a-z, 0-9, _ and -, starting with a letter or digit\n")
        return 1
    try:
        doc = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except OSError as exc:
        out.write(f"{args.file}: {ROOT}: cannot read: {exc.strerror or exc}\n")
        return 1
    except (UnicodeDecodeError, ValueError) as exc:
        out.write(f"{args.file}: {ROOT}: not JSON: {exc}\n")
        return 1
    if args.from_account and args.map:
        out.write("--map and --from-account: give one (`salesbot kommo map -o map.toml` drafts a map to review)\n")
        return 1
    try:
        kommo_map = account_map(kommo_crm(args.config))[0] if args.from_account else read_map(args.map)
    except KommoMapInvalid as exc:
        out.writelines(f"{args.map}: {p}\n" for p in exc.problems)
        return 1
    except NoAccount as exc:
        out.write(f"{exc}\n")
        return 1
    try:
        result = convert(doc, bot_id=bot_id, kommo_map=kommo_map)
    except KommoImportError as exc:
        out.write(f"{args.file}: {exc}\n")
        out.write("not imported\n")
        return 1
    text = json.dumps(result.flow, ensure_ascii=False, indent=2) + "\n"
    notes = out
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        out.write(text)
        notes = sys.stderr  # the flow alone on standard output, so it can be piped
    notes.writelines(f"{args.file}: {w.pointer or ROOT}: warning: {w.message}\n" for w in result.warnings)
    where = f" to {args.output}" if args.output else ""
    notes.write(f'imported {args.file} as flow "{bot_id}"{where}: {result.summary()}\n')
    return 0
