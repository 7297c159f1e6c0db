"""The webhook bench's report: the results table and strict JSON (infinities as null)."""

from __future__ import annotations

import math
from typing import Any


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isinf(v)) else format(v, spec)


def print_table(results: dict[str, Any], out: Any) -> None:
    cols = [("server", "", 9, "<"), ("max rate", "p99<50ms", 9, ">"), ("p50", "ms", 6, ">"), ("p99", "ms", 6, ">"),
            ("server", "cpu µs/msg", 10, ">"), ("redis", "cpu µs/msg", 10, ">"), ("redis", "cmds/msg", 8, ">"),
            ("client", "cmds/msg", 8, ">"), ("RT", "/msg", 5, ">"), ("other load", "cores", 10, ">")]
    for row in (0, 1):
        out.write(" ".join(f"{c[row]:{a}{w}}" for *c, w, a in cols).rstrip() + "\n")
    for kind in ("salesbot", "baseline"):
        r = results[kind]
        best = r.get("best") or {}
        rt = r.get("round_trips") or {}
        values = [kind, fmt(best.get("rate"), ".0f"), fmt(best.get("p50_ms")), fmt(best.get("p99_ms")),
                  fmt(best.get("cpu_us_per_msg"), ".0f"), fmt(best.get("redis_cpu_us_per_msg"), ".0f"),
                  fmt(r["redis"]["commands_per_msg"]), fmt(rt.get("client_cmds_per_msg")), fmt(rt.get("rts_per_msg")),
                  fmt(r.get("others_cores_during_search"), ".2f")]
        out.write(" ".join(f"{v:{a}{w}}" for v, (*_, w, a) in zip(values, cols, strict=True)) + "\n")
    out.write(f"ratio: {fmt(results['ratio'], '.2f')} (aim >= 1.0)\n")


def print_counts(results: dict[str, Any], out: Any) -> None:
    """Redis work per message of each kind: commands as Redis counts them (INFO commandstats,
    a script's inner calls included), commands the client sent, and round trips."""
    out.write(f"{'per message':<25} {'redis cmds':>10} {'client cmds':>11} {'round trips':>11} {'+ started':>9}\n")
    for kind in ("salesbot", "baseline"):
        redis, rt = results[kind].get("redis") or {}, results[kind].get("round_trips") or {}
        for part, label in (("first", "first message"), ("follow_up", "follow-up"), ("duplicate", "duplicate"),
                            (None, "mix")):
            r, t = (redis.get(part) or {}, rt.get(part) or {}) if part else (redis, rt)
            out.write(f"{kind + ' ' + label:<25} {fmt(r.get('commands_per_msg')):>10} "
                      f"{fmt(t.get('client_cmds_per_msg')):>11} {fmt(t.get('rts_per_msg')):>11} "
                      f"{fmt(t.get('spawned_rts_per_msg')):>9}\n")
    out.write("redis cmds: as Redis counts them (INFO commandstats, a script's inner calls included, the work\n"
              "the message started too); client cmds and round trips: those the request waits for; + started:\n"
              "round trips of the tasks it started (a new lead's automations), not waited for.\n"
              "aim (salesbot): follow-up <= 12 redis cmds and <= 2 round trips; first message <= 3 round trips\n")


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def finite(value: Any) -> Any:
    """The results with infinities (never-completed requests) as null, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
