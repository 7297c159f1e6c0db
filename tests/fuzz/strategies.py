"""Hostile inputs for the fuzz tier, and its hypothesis settings.

Values a visitor, a platform or a careless operator can send: control characters and NUL, lone
surrogates (as JSON ``\\ud800`` escapes, or as CESU bytes that are not UTF-8), bytes that are not
UTF-8 at all, NaN/Infinity/1e400 and 10**400 in JSON, 10,000 levels of nesting, strings around
every documented limit and over the 2 MiB body limit, wrong types.

Settings: by default every test runs a small fixed number of examples, derandomized (the same
examples on every run, so CI is reproducible) with no deadline and no example database.
``SALESBOT_FUZZ_EXAMPLES=N`` runs N examples per test from a random seed instead (a deeper
local run; hypothesis prints ``@reproduce_failure`` for what it finds). A failing ``@example``
stops hypothesis before it generates anything: ``SALESBOT_FUZZ_EXPLICIT=0`` skips the explicit
examples to see what generation finds besides.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

_DEEP = os.environ.get("SALESBOT_FUZZ_EXAMPLES")
_PHASES = [p for p in Phase if p is not Phase.explain
           and (p is not Phase.explicit or os.environ.get("SALESBOT_FUZZ_EXPLICIT") != "0")]


def fuzz_settings(examples: int) -> settings:
    """``examples`` per test in CI (derandomized); ``SALESBOT_FUZZ_EXAMPLES`` overrides."""
    return settings(
        max_examples=int(_DEEP) if _DEEP else examples, derandomize=not _DEEP,
        print_blob=bool(_DEEP), deadline=None, database=None, phases=_PHASES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much, HealthCheck.large_base_example,
                               HealthCheck.function_scoped_fixture])


class Raw(str):
    """A JSON fragment written as is (1e400, NaN, a 10,000-level nesting)."""


def dump(value: Any, *, ascii_only: bool = True) -> bytes:
    """JSON text of ``value`` with ``Raw`` fragments verbatim; lone surrogates become ``\\udXXX``
    escapes (``ascii_only``) or their CESU-8 bytes (not UTF-8)."""
    def enc(v: Any) -> str:
        if isinstance(v, Raw):
            return str(v)
        if isinstance(v, dict):
            return "{" + ",".join(f"{enc(str(k))}:{enc(x)}" for k, x in v.items()) + "}"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(enc(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=ascii_only)

    return enc(value).encode("utf-8", "surrogatepass")


DEPTH = 10_000
#: Fragments json.dumps cannot write, and the shapes parsers choke on.
RAW_JSON = [Raw("NaN"), Raw("-Infinity"), Raw("Infinity"), Raw("1e400"), Raw("-1e400"),
            Raw("1" * 5000), Raw("1e-400"), Raw("-0"), Raw("[" * DEPTH + "]" * DEPTH),
            Raw('{"a":' * DEPTH + "1" + "}" * DEPTH), Raw("[" * 999 + "]" * 999)]

SPECIAL_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "\udfff", "x\udcff", "\ufeff", "\u202e",
                "\r\n\r\nX-Injected: 1", "{{ 7*7 }}", "{% for x in range(10**9) %}x{% endfor %}",
                "<script>alert(1)</script>", "../../etc/passwd", "%00", "%ff", "NaN", "Infinity",
                "1e400", "-1", "9" * 30, "0x10", "１２", "\u0661", "true", "null", "[]", "{}",
                "🙂" * 5, "\U0010ffff", "ǅ" * 3, "\x7f\x1b[2J", "*", "?", "\\", "'\"", "a" * 4096,
                "a" * 4097]
SIZES = [256, 257, 4096, 4097, 65_536, 1_000_000, 2_200_000]

control_text = st.text(st.characters(codec=None, categories=["Cc", "Cs", "Co", "Cn", "Zl", "Zp"]),
                       max_size=20)
huge_text = st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "🙂", "\x00", "\ud800"]),
                      st.sampled_from(SIZES))
short_text = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=40), control_text)
text = st.one_of(short_text, huge_text)
numbers = st.one_of(st.sampled_from(RAW_JSON[:8]), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 2**31, 2**63, 2**64, 10**30]))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(text, inner, max_size=4)), max_leaves=8)
hostile = st.one_of(scalars, st.sampled_from(RAW_JSON), json_values)
#: The same without the huge strings (where size is beside the point: URLs, socket frames).
small_json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, short_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(short_text, inner, max_size=4)), max_leaves=8)

#: Bodies that are not (quite) JSON.
garbage_bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"\xff\xfe\x00", b'{"text": "\xff"}', b'{"text": "\xed\xa0\x80"}', b"{",
                     b'{"a":1,}', b"\x00" * 10, b"[" * DEPTH + b"]" * DEPTH, b"NaN",
                     b'{"session": "abcdefgh1", "text": "hi"' + b" " * 2_200_000 + b"}",
                     "\ufeff{}".encode(), b'{"a": 1, "a": 2}', b"\x1f\x8b\x08\x00"]))


def _paths(v: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Every path into a JSON document (the root is ``()``)."""
    out = [path]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*path, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*path, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, doc: Any, most: int = 3) -> Any:
    """``doc`` with up to ``most`` of its values replaced by hostile ones, keys removed, values
    wrapped in a list or given a hostile sibling key."""
    out = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(0, most))):
        paths = _paths(out, ())
        path = draw(st.sampled_from(paths))
        if not path:
            return draw(hostile)
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "replace", "delete", "wrap", "sibling"]))
        if action == "replace":
            parent[key] = draw(hostile)
        elif action == "delete":
            del parent[key]
        elif action == "wrap":
            parent[key] = [parent[key]]
        elif isinstance(parent, dict):
            parent[draw(text)] = draw(hostile)
        else:
            parent.append(draw(hostile))
    return out


#: A valid live chat session id, or something that is not one.
valid_sessions = st.from_regex(r"\A[A-Za-z0-9_-]{8,64}\Z")
sessions = st.one_of(valid_sessions, valid_sessions, short_text, st.just("a" * 65),
                    st.sampled_from(RAW_JSON[:4]))
#: Header values: any bytes but CR/LF (which would end the header).
header_bytes = st.one_of(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                         st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\x7f",
                                          "é".encode("latin-1"), b"x" * 9000]))
content_types = st.one_of(
    st.sampled_from([b"application/json", b"application/json; charset=utf-8",
                     b"application/json; charset=latin-1", b"application/json; charset=nonsense",
                     b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data",
                     b"application/json; charset=\xff"]), header_bytes)
