"""The automations API over real HTTP against a real Redis: versions like bots, every problem in a
422, roles, loading ``automations_dir`` at start, and hostile bodies (4xx, never 5xx)."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from tests.server.conftest import ADMIN, AUTOMATIONS, client, make_config

AUTH = {"Authorization": f"Bearer {ADMIN}"}
SUPPORT_TOKEN = "support-token-123"
SUPPORT = {"Authorization": f"Bearer {SUPPORT_TOKEN}"}
EXAMPLE: dict[str, Any] = json.loads((AUTOMATIONS / "sales.json").read_text(encoding="utf-8"))


def example(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLE)
    doc.update(changes)
    return doc


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info]


async def _validate(http: ClientSession, path: str, method: str, status: int, body: Any) -> None:
    """``body`` matches the OpenAPI document's schema of that response."""
    doc = await (await http.get("/api/openapi.json")).json()
    schema = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": doc["components"]}, cls=jsonschema.Draft202012Validator)


async def test_the_example_is_loaded_at_start_and_served(http: ClientSession) -> None:
    r = await http.get("/api/automations", headers=AUTH)
    body = await r.json()
    assert body == {"automations": [{"id": "sales", "name": "Sales pipeline", "active_version": 1, "versions": 1}]}
    await _validate(http, "/api/automations", "get", 200, body)
    r = await http.get("/api/automations/sales", headers=AUTH)
    body = await r.json()
    assert (r.status, body) == (200, {"id": "sales", "version": 1, "automations": EXAMPLE})
    await _validate(http, "/api/automations/{id}", "get", 200, body)


async def test_versions_unchanged_history_and_rollback(http: ClientSession) -> None:
    changed = example(name="Sales, v2")
    r = await http.put("/api/automations/sales", json=changed, headers=AUTH)
    body = await r.json()
    assert (r.status, body) == (201, {"id": "sales", "version": 2, "warnings": []})
    await _validate(http, "/api/automations/{id}", "put", 201, body)
    r = await http.put("/api/automations/sales", json=changed, headers=AUTH)  # the same again: no new version
    assert (r.status, (await r.json())["version"]) == (200, 2)
    r = await http.get("/api/automations/sales/versions", headers=AUTH)
    history = await r.json()
    await _validate(http, "/api/automations/{id}/versions", "get", 200, history)
    assert history["active_version"] == 2
    assert [(v["version"], v["name"], v["active"]) for v in history["versions"]] == [
        (1, "Sales pipeline", False), (2, "Sales, v2", True)]
    r = await http.post("/api/automations/sales/activate", json={"version": 1}, headers=AUTH)
    body = await r.json()
    assert (r.status, body) == (200, {"id": "sales", "version": 1, "active": True})
    await _validate(http, "/api/automations/{id}/activate", "post", 200, body)
    assert (await (await http.get("/api/automations/sales", headers=AUTH)).json())["automations"] == EXAMPLE
    r = await http.get("/api/automations/sales/versions/2", headers=AUTH)
    assert (await r.json())["automations"] == changed
    # Uploading the newest version again makes it active again (as for bots).
    r = await http.put("/api/automations/sales", json=changed, headers=AUTH)
    assert (r.status, (await r.json())["version"]) == (200, 2)
    assert (await (await http.get("/api/automations/sales", headers=AUTH)).json())["version"] == 2


async def test_warnings_are_returned_with_the_version(http: ClientSession) -> None:
    doc = example(id="quiet", pipeline="Sales")
    doc["rules"] = [{"id": "r", "stage": "Won", "on": "moved_in", "active": "working_hours",
                     "do": {"start_bot": "demo"}}]
    doc.pop("settings")
    doc["scoring"], doc["triggers"] = [], []
    await http.put("/api/automations/sales", json=example(pipeline="Other"), headers=AUTH)  # 422: frees nothing
    r = await http.put("/api/automations/quiet", json=doc, headers=AUTH)
    assert r.status == 422  # "sales" has the Sales pipeline already
    assert (await r.json())["error"]["details"] == [{
        "pointer": "/pipeline", "message": 'pipeline "Sales" already has its automations in document "sales": '
                                           "one document per pipeline"}]
    r = await http.put("/api/automations/sales", json={**doc, "id": "sales"}, headers=AUTH)
    body = await r.json()
    assert r.status == 201
    assert body["warnings"] == ['/rules/0/active: the same as "always": settings.working_hours is not set']


async def test_every_problem_is_in_the_422(http: ClientSession) -> None:
    doc = example()
    doc["rules"][0]["stage"] = "Incomng"
    doc["rules"][1]["do"]["start_bot"] = "ghost"
    doc["triggers"][0]["on"] = "order.payed"
    doc["scoring"][0]["add"] = 0
    doc["rules"][2]["delay"] = "soon"
    r = await http.put("/api/automations/sales", json=doc, headers=AUTH)
    body = await r.json()
    assert r.status == 422
    await _validate(http, "/api/automations/{id}", "put", 422, body)
    assert body["error"]["code"] == "invalid_automations"
    assert body["error"]["message"] == "5 problem(s) in the document"
    details = {d["pointer"]: d["message"] for d in body["error"]["details"]}
    assert set(details) == {"/rules/0/stage", "/rules/1/do/start_bot", "/triggers/0/on", "/scoring/0/add",
                            "/rules/2/delay"}
    assert '(did you mean "Incoming"?)' in details["/rules/0/stage"]
    known = 'unknown bot "ghost"; known: ab_offer, appointment, cart_nudge, demo'
    assert details["/rules/1/do/start_bot"].startswith(known)
    assert '(did you mean "order.paid"?)' in details["/triggers/0/on"]
    assert (await (await http.get("/api/automations/sales/versions", headers=AUTH)).json())["active_version"] == 1


async def test_the_id_must_match_the_url_and_unknown_ids_are_404(http: ClientSession) -> None:
    r = await http.put("/api/automations/other", json=EXAMPLE, headers=AUTH)
    assert r.status == 422
    assert (await r.json())["error"]["details"] == [
        {"pointer": "/id", "message": 'must be "other" (the id in the URL)'}]
    for path in ("/api/automations/nobody", "/api/automations/nobody/versions", "/api/automations/sales/versions/9"):
        r = await http.get(path, headers=AUTH)
        assert r.status == 404, path
        assert (await r.json())["error"]["code"] == "not_found"
    r = await http.post("/api/automations/sales/activate", json={"version": 9}, headers=AUTH)
    assert r.status == 404
    bodies: list[Any] = [{"version": "1"}, {"version": True}, [], {"v": 1}]
    for bad in bodies:
        r = await http.post("/api/automations/sales/activate", json=bad, headers=AUTH)
        assert r.status == 400, bad
    for n in ("0", "x", "1.5", "9" * 40):
        r = await http.get(f"/api/automations/sales/versions/{n}", headers=AUTH)
        assert r.status == 400, n


async def test_tokens_and_roles(redis: Redis, redis_url: str) -> None:
    config = make_config(redis_url, automations_dir=str(AUTOMATIONS),
                         tokens=[{"token": SUPPORT_TOKEN, "role": "support", "name": "sam"}])
    async with client(config) as http:
        assert (await http.get("/api/automations")).status == 401
        assert (await http.put("/api/automations/sales", json=EXAMPLE)).status == 401
        assert (await http.get("/api/automations", headers=SUPPORT)).status == 200
        assert (await http.get("/api/automations/sales/versions", headers=SUPPORT)).status == 200
        r = await http.put("/api/automations/sales", json=example(name="x"), headers=SUPPORT)
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
        r = await http.post("/api/automations/sales/activate", json={"version": 1}, headers=SUPPORT)
        assert r.status == 403


async def test_configured_pipelines_are_the_context_and_an_invalid_file_is_skipped_at_start(
        redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "automations"
    folder.mkdir()
    (folder / "sales.json").write_text(json.dumps(EXAMPLE), encoding="utf-8")  # no Sales pipeline here
    support: dict[str, Any] = {"format": "salesbot.automations/1", "id": "support", "pipeline": "Support",
               "rules": [{"id": "hello", "stage": "New", "on": "created", "do": {"start_bot": "welcome"}}]}
    (folder / "support.json").write_text(json.dumps(support), encoding="utf-8")
    (folder / "broken.json").write_text("{not json", encoding="utf-8")
    (folder / "automations.schema.json").write_text("{}", encoding="utf-8")  # a schema: not a document
    config = make_config(redis_url, automations_dir=str(folder),
                         embedded_crm={"pipelines": {"Support": ["New", "Waiting", "Done"]}})
    with caplog.at_level(logging.ERROR, logger="salesbot.automations"):
        async with client(config) as http:  # the server starts all the same
            listed = (await (await http.get("/api/automations", headers=AUTH)).json())["automations"]
            assert [a["id"] for a in listed] == ["support"]
            r = await http.put("/api/automations/sales", json=EXAMPLE, headers=AUTH)
            details = {d["pointer"]: d["message"] for d in (await r.json())["error"]["details"]}
            assert details == {"/pipeline": 'unknown pipeline "Sales"; known: Support'}
            bad = {**support, "rules": [{**support["rules"][0], "stage": "Wait"}]}
            r = await http.put("/api/automations/support", json=bad, headers=AUTH)
            assert (await r.json())["error"]["details"][0]["message"].startswith(
                'unknown stage "Wait" of pipeline "Support" (did you mean "Waiting"?)')
    failed = {r.file: r for r in caplog.records if r.getMessage() == "automations.load_failed"}  # type: ignore[attr-defined]
    assert set(failed) == {str(folder / "sales.json"), str(folder / "broken.json")}
    assert failed[str(folder / "sales.json")].problems == ['/pipeline: unknown pipeline "Sales"; known: Support']  # type: ignore[attr-defined]
    assert "not valid JSON" in failed[str(folder / "broken.json")].error  # type: ignore[attr-defined]
    assert tracebacks(caplog) == []
    # A restart with the same files adds no version.
    async with client(config) as http:
        r = await http.get("/api/automations/support/versions", headers=AUTH)
        assert [v["version"] for v in (await r.json())["versions"]] == [1]


def _deep(levels: int) -> dict[str, Any]:
    doc = example()
    node: dict[str, Any] = {"field": "lead.tags", "op": "has", "value": "x"}
    for _ in range(levels):
        node = {"not": node}
    doc["rules"][0]["if"] = node
    return doc


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", "bad_json"),
    (b'{"format": "salesbot.automations/1", "id": "sales", "pipeline": NaN}', "bad_json"),
    (b'{"id": "sales", "n": Infinity}', "bad_json"),
    (b'{"id": "sales", "n": 1' + b"0" * 30 + b"}", "bad_json"),
    (b"[" * 10_000 + b"]" * 10_000, "bad_json"),
    (b"\xff\xfe", "bad_json"),
    (json.dumps(_deep(70)).encode(), "bad_json"),  # a condition nested deeper than the parser allows
])
async def test_malformed_bodies_are_400(http: ClientSession, caplog: pytest.LogCaptureFixture,
                                        raw: bytes, code: str) -> None:
    r = await http.put("/api/automations/sales", data=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]["code"] == code
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("doc", [
    pytest.param(example(name="a\x00b\x1f"), id="control-characters-in-name"),
    pytest.param(example(**{"x-\x1b": 1}), id="control-character-in-a-key"),
    pytest.param({**example(), "rules": [{**EXAMPLE["rules"][0], "stage": "In\x00coming"}]}, id="control-in-stage"),
    pytest.param(example(colour="red", rules=[{**EXAMPLE["rules"][0], "when": 1}]), id="unknown-keys"),
    pytest.param(example(rules="all of them", triggers={"a": 1}, scoring=5), id="wrong-types"),
    pytest.param(example(rules=[None, 1, [], "x"]), id="rules-not-objects"),
    pytest.param(example(pipeline=["Sales"], settings=[]), id="pipeline-not-text"),
    pytest.param(example(rules=[copy.deepcopy(EXAMPLE["rules"][0]) for _ in range(2001)]), id="too-many-rules"),
    pytest.param(example(name="n" * 600_000), id="document-too-large"),
    pytest.param(example(scoring=[{"on": "email.opened", "add": 10**18}]), id="huge-number"),
    pytest.param([], id="not-an-object"),
    pytest.param("text", id="a-string"),
])
async def test_hostile_documents_are_422_naming_the_problem(
        http: ClientSession, caplog: pytest.LogCaptureFixture, doc: Any) -> None:
    r = await http.put("/api/automations/sales", json=doc, headers=AUTH)
    body = await r.json()
    assert r.status == 422, body
    assert body["error"]["details"], body
    assert all(d["message"] and isinstance(d["pointer"], str) for d in body["error"]["details"])
    assert tracebacks(caplog) == []


async def test_a_body_over_the_size_limit_is_413(http: ClientSession) -> None:
    r = await http.put("/api/automations/sales", data=io.BytesIO(b'{"x": "' + b"a" * (3 * 1024 * 1024) + b'"}'),
                       headers={**AUTH, "Content-Type": "application/json"})
    assert r.status == 413


async def test_automations_push_from_the_command_line(http: ClientSession, tmp_path: Path) -> None:
    from bot.cli import main

    good = tmp_path / "sales.json"
    good.write_text(json.dumps(example(name="Pushed")), encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(example(id="bad", pipeline="Nowhere")), encoding="utf-8")
    base = str(http._base_url).rstrip("/")
    out = io.StringIO()
    argv = ["automations", "push", str(good), str(bad), "--url", base, "--token", ADMIN]
    assert await asyncio.to_thread(main, argv, out=out) == 1
    assert out.getvalue().splitlines() == [f"{good}: sales version 2",
                                           f'{bad}: /pipeline: unknown pipeline "Nowhere"; known: Sales']
    out = io.StringIO()
    assert await asyncio.to_thread(main, argv[:3] + argv[4:], out=out) == 0  # the same again: unchanged
    assert out.getvalue().splitlines() == [f"{good}: sales version 2 (unchanged)"]


@pytest.mark.parametrize("doc_id", ["a%00b", "%FF%FE", "x" * 2000, "..", "a%7Bb%7D", "sales%2F1"])
async def test_odd_ids_in_the_url_are_4xx(http: ClientSession, caplog: pytest.LogCaptureFixture, doc_id: str) -> None:
    from yarl import URL

    for method, path, body in [("GET", "", None), ("GET", "/versions", None), ("GET", "/versions/1", None),
                               ("PUT", "", EXAMPLE), ("POST", "/activate", {"version": 1})]:
        url = URL(f"/api/automations/{doc_id}{path}", encoded=True)
        r = await http.request(method, url, json=body, headers=AUTH)
        assert 400 <= r.status < 500, (method, path, r.status, await r.text())
    assert tracebacks(caplog) == []


@pytest.fixture
async def server(example_server: TestServer) -> TestServer:
    """This module's servers load the example automation document at start."""
    return example_server
