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
    out.write(f"ratio: {fmt(results['ratio'], '.2f')} (aim >= 0.7)   salesbot round trips/msg: "
              f"{fmt(results['salesbot'].get('round_trips', {}).get('rts_per_msg'))} (aim <= 3)\n")


def finite(value: Any) -> Any:
    """The results with infinities (never-completed requests) as null, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
