"""``salesbot flows export --to kommo`` and ``salesbot kommo map``: the file and account side of
bot.kommo_import (which is pure), kept out of bot/cli.py so each command's parser is a few lines there."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import ROOT, FlowLoadError, Problem, SalesbotError

if TYPE_CHECKING:
    from .config import CrmConfig
    from .kommo_import.mapping import KommoMap, Table


def add_export_parser(fsub: Any) -> None:
    e = fsub.add_parser("export", help="write a flow as Kommo Salesbot code (refused, with every problem listed, "
                                       "when it uses what Kommo cannot express)")
    e.add_argument("file")
    e.add_argument("--to", required=True, choices=["kommo"], help="the target language")
    e.add_argument("-o", "--output", help="write the Kommo JSON here (default: standard output)")
    e.add_argument("--map", help="map.toml: Kommo ids of our field, stage, pipeline and user names")


def add_kommo_parser(sub: Any) -> None:
    k = sub.add_parser("kommo", help="tools for moving between Kommo and salesbot")
    ksub = k.add_subparsers(dest="kommo_command", required=True)
    m = ksub.add_parser("map", help="draft map.toml from the Kommo account of [crm] (fields, stages, users)")
    m.add_argument("--config", help="TOML file with [crm] backend = \"kommo\" (default ./salesbot.toml)")
    m.add_argument("-o", "--output", help="write the map here (default: standard output); never overwrites")


def _problems(out: TextIO, name: str, problems: list[Problem]) -> None:
    out.writelines(f"{name}: {p}\n" for p in problems)


def read_map(path: str | None) -> KommoMap:
    """The map of ``--map`` (empty without one); ``KommoImportError`` when it cannot be read or is malformed."""
    from .kommo_import import mapping
    from .kommo_import.errors import KommoMapInvalid

    if path is None:
        return mapping.EMPTY
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KommoMapInvalid("", f"cannot read the map: {getattr(exc, 'strerror', None) or exc}") from None
    return mapping.parse(text)


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    """0 and the Kommo JSON; 1 and one line per problem (the flow's, the map's or what Kommo lacks)."""
    from .builder.loader import read_document
    from .builder.validate import check_document
    from .kommo_import.convert_out import export
    from .kommo_import.errors import KommoExportRefused, KommoMapInvalid
    from .kommo_import.result import KommoImportError

    try:
        doc = read_document(args.file)
    except FlowLoadError as exc:
        out.write(f"{args.file}: {ROOT}: {str(exc).split(': ', 1)[-1]}\n")
        return 1
    errors = [p for p in check_document(doc)[0] if p.severity == "error"]
    if errors:
        _problems(out, args.file, errors)
        out.write("not exported: the flow is not valid\n")
        return 1
    try:
        kommo_map = read_map(args.map)
        steps = export(doc, kommo_map)
    except KommoMapInvalid as exc:
        _problems(out, args.map, exc.problems)
        return 1
    except KommoExportRefused as exc:
        _problems(out, args.file, exc.problems)
        out.write(f"not exported: {len(exc.problems)} thing(s) Kommo cannot express\n")
        return 1
    except KommoImportError as exc:
        out.write(f"{args.file}: {exc}\n")
        return 1
    text = json.dumps(steps, ensure_ascii=False, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        out.write(f"exported {len(steps)} step(s) to {args.output}\n")
    else:
        out.write(text)
    return 0


async def draft_from_account(crm: CrmConfig) -> tuple[KommoMap, dict[tuple[Table, int], str]]:
    """Read the account's custom fields, pipelines with stages and users (GET only) and draft the map."""
    from crm_bridge.kommo.account import KommoAccount
    from crm_bridge.kommo.client import KommoClient

    from .kommo_import.draft import ENTITIES, draft

    assert crm.base_url is not None and crm.token is not None
    client = KommoClient(crm.base_url, crm.token.get_secret_value(), rate=crm.rate_limit, timeout=crm.timeout)
    try:
        account = KommoAccount(client)
        fields = {entity: await account.fields(entity) for entity in ENTITIES}
        return draft(fields, await account.pipelines(), await account.users())
    finally:
        await client.aclose()


class NoAccount(SalesbotError):
    """The Kommo account of ``[crm]`` cannot be read: no Kommo configured, or it did not answer."""


def kommo_crm(config: str | None) -> CrmConfig:
    """``[crm]`` of the configuration, which must name a Kommo account; ``NoAccount`` otherwise."""
    from .config import ConfigError, load_config

    try:
        crm = load_config(config).crm
    except ConfigError as exc:
        raise NoAccount(str(exc)) from None
    if crm.backend != "kommo":
        raise NoAccount('the Kommo account is the one of [crm] backend = "kommo" (with base_url and token); '
                        f'this configuration has backend = "{crm.backend}"')
    return crm


def account_map(crm: CrmConfig) -> tuple[KommoMap, dict[tuple[Table, int], str]]:
    """The map drafted from the account (``NoAccount`` saying why not; never the token)."""
    try:
        return asyncio.run(draft_from_account(crm))
    except NoAccount:
        raise
    except SalesbotError as exc:  # CrmError: unreachable, token refused, …
        raise NoAccount(f"cannot read the Kommo account: {exc}") from None


def cmd_map(args: argparse.Namespace, out: TextIO) -> int:
    """0 and the drafted map; 1 with one line saying why not (no Kommo in [crm], Kommo unreachable)."""
    from .kommo_import.mapping import dump

    try:
        crm = kommo_crm(args.config)
        if args.output and Path(args.output).exists():
            out.write(f"{args.output} exists: the draft never overwrites a map (move it away or pick another -o)\n")
            return 1
        kommo_map, notes = account_map(crm)
    except NoAccount as exc:
        out.write(f"{exc}\n")
        return 1
    text = dump(kommo_map, notes, header=[f"Drafted from {crm.base_url} by salesbot kommo map: review the names",
                                          "(a flow uses them) before importing or exporting with --map."])
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        counts = ", ".join(f"{len(kommo_map.table(t))} {t}" for t in ("fields", "stages", "pipelines", "users"))
        out.write(f"drafted {args.output}: {counts}\n")
    else:
        out.write(text)
    return 0
