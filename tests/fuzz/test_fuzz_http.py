"""Malformed HTTP itself: odd methods, bytes that are not UTF-8 (or not allowed) in the request
target and in header names and values, overlong lines, hostile cookies, tokens and encodings.
Never a 5xx and nothing logged at ERROR: a refused request is expected input, not a traceback.
(The other fuzz tests tolerate aiohttp's parser tracebacks so they report their own findings;
this test is where those are reported.)"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from .live import LiveServer, summarize
from .strategies import fuzz_settings, header_bytes

methods = st.one_of(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"get", b"BREW", b"G\x00T",
                                     b"GET\xff", b"PRI"]), st.binary(min_size=1, max_size=8))
paths = st.sampled_from([b"/healthz", b"/live", b"/api/bots", b"/chat/demo", b"/api/conversations",
                         b"/chat/demo/messages?session=abcdefgh1", b"/webhooks/telegram/tg",
                         b"/api/openapi.json", b"/chat/static/widget.js"])
junk = st.one_of(st.binary(max_size=20), st.sampled_from([b"\xff", b"%ff", b"%00", b"\x00", b"/../..",
                                                          b"?a=\xed\xa0\x80", b"#frag", b" HTTP/1.1",
                                                          b"x" * 9000]))
names = st.one_of(st.sampled_from([b"Cookie", b"Authorization", b"Content-Type", b"Host", b"Origin",
                                   b"X-Forwarded-For", b"Accept-Language", b"Content-Encoding",
                                   b"Transfer-Encoding", b"Upgrade", b"Connection", b"Expect"]),
                  st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
                                                         .replace(b":", b"") or b"X"))
values = st.one_of(header_bytes, st.sampled_from([
    b"Bearer \xff\xfe", b"Bearer " + b"a" * 9000, b"sb_session=\xed\xa0\x80", b"sb_session=" + b"%ff" * 50,
    b"gzip", b"chunked", b"websocket", b"100-continue", b"application/json; charset=\xff"]))


@fuzz_settings(60)
@given(method=methods, path=paths, tail=junk, headers=st.lists(st.tuples(names, values), max_size=3))
@example(method=b"GET", path=b"/healthz", tail=b"?" + b"x" * 9000, headers=[])
@example(method=b"GET", path=b"/healthz", tail=b"", headers=[(b"X-A", b"\x00")])
@example(method=b"GET", path=b"/chat/demo/messages?session=abcdefgh1", tail=b"&after=\xff", headers=[])
@example(method=b"GET", path=b"/live", tail=b"", headers=[(b"Cookie", b"sb_session=\xed\xa0\x80")])
@example(method=b"GET", path=b"/api/bots", tail=b"", headers=[(b"Authorization", b"Bearer \xff\xfe")])
@example(method=b"GET", path=b"/healthz", tail=b"", headers=[(b"Expect", b"\x80")])
def test_malformed_requests(live: LiveServer, method: bytes, path: bytes, tail: bytes,
                            headers: list[tuple[bytes, bytes]]) -> None:
    target = (path + tail).replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"") or b"/"
    mark = live.trap.mark()
    what = f"{method!r} {target[:300]!r} headers={[(k, v[:100]) for k, v in headers]}"
    r = live.no_5xx(what, lambda: live.raw(method, target, headers=list(headers), timeout=5))
    logged = live.trap.since(mark)
    assert not logged, f"{what}\n-> {r.status} {r.body[:300]!r}\nbut logged at ERROR:\n{summarize(logged)}"
