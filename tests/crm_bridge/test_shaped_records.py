"""The records' shaped form (``crm_bridge/codec.py``, issue 14 aim 3): a record whose keys are a
shape's reads back exactly (keys, order, values, types) from a few bytes, its id from the field
it is stored under; the forms written before stay readable."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from crm_bridge import RedisCrm, records
from crm_bridge.codec import _NAMES, SHAPED, SHAPES, pack, pack_record, unpack, unpack_record
from crm_bridge.contract import PIPELINES
from crm_bridge.directory import CrmDirectory
from crm_bridge.interface import ChannelIdentity
from crm_bridge.open_leads import newest_open_watched

CONTACT = {"id": "17", "name": "", "first_name": None, "phone": None, "email": None, "fields": {}, "tags": [],
           "responsible": None}
LEAD = {"id": "256", "name": "Lead #256", "price": 0, "pipeline": "Sales", "stage": "Incoming", "responsible": None,
        "fields": {}, "tags": [], "contacts": ["255"], "company": None, "subscribers": [],
        "stage_since": 1796537725.123}


def _exactly(record: dict[str, Any]) -> bytes:
    """The record's keys, order, values and types, as bytes (``==`` takes 0 for False and 0.0)."""
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


def test_a_contact_at_its_defaults_stored_under_its_id_is_three_bytes() -> None:
    raw = pack_record(CONTACT, "17")
    assert raw == SHAPED + b"\x00"
    assert _exactly(unpack_record(raw, "17")) == _exactly(CONTACT)


def test_an_unnamed_lead_keeps_only_its_pipeline_stage_and_time() -> None:
    raw = pack_record(LEAD, "256")
    assert raw.startswith(SHAPED) and len(raw) == 31  # 45 in the compact form
    assert b"256" not in raw and b"255" not in raw and b"Lead" not in raw
    assert _exactly(unpack_record(raw, "256")) == _exactly(LEAD)


def test_a_shaped_record_is_not_read_without_the_id_it_left_out() -> None:
    with pytest.raises(ValueError, match="unpack_record"):
        unpack(pack_record(CONTACT, "17"))
    assert unpack(pack_record(CONTACT)) == CONTACT  # no id given: kept in the bytes
    assert unpack_record(pack_record(CONTACT, "18"), "18") == CONTACT  # another id: kept too


def test_implied_defaults_are_read_back_as_new_objects() -> None:
    raw = pack_record(CONTACT, "17")
    first, second = unpack_record(raw, "17"), unpack_record(raw, "17")
    first["tags"].append("vip")
    first["fields"]["x"] = 1
    assert second == CONTACT


def test_the_forms_written_before_stay_readable() -> None:
    compact_contact = bytes.fromhex("c1728800a2") + b"17" + bytes.fromhex("fec0fdc0fcc0fbc0fac0f9c0f8c0")
    compact_lead = (bytes.fromhex("c1728c00a3") + b"256" + bytes.fromhex("fec3f7c009a5") + b"Sales"
                    + bytes.fromhex("0aa8") + b"Incoming" + bytes.fromhex("f8c0fac0f9c00b91a3") + b"255"
                    + bytes.fromhex("f3c0f2c00ecb") + msgpack.packb(1796537725.123)[1:])
    assert _exactly(unpack_record(compact_contact, "17")) == _exactly(CONTACT)
    assert _exactly(unpack_record(compact_lead, "256")) == _exactly(LEAD)
    assert _exactly(unpack_record(pack(LEAD), "256")) == _exactly(LEAD)  # plain msgpack


def test_a_record_whose_keys_fit_no_shape_is_written_compact() -> None:
    record = {"tags": ["a"], "id": "3", "name": "x"}  # the id after another shape key
    raw = pack_record(record, "3")
    assert not raw.startswith(SHAPED)
    assert list(unpack_record(raw, "3").items()) == list(record.items())


_IDS = st.sampled_from(["17", "256", "1", "0", "007", "x9", ""])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


@st.composite
def _records(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """A record as one of the shapes builds it, with keys dropped, moved or added, and values at
    their default, implied by the id, or anything; and the id it is stored under (or none)."""
    shape = draw(st.sampled_from(SHAPES))
    rid = draw(_IDS)
    keys = [k for k in shape if draw(st.integers(0, 9)) > 0]
    keys += draw(st.lists(st.sampled_from([*_NAMES, "score", "custom", "0"]), max_size=4))
    keys = list(dict.fromkeys(keys))
    if draw(st.integers(0, 4)) == 0:
        keys = draw(st.permutations(keys))
    implied = {"id": rid, "name": f"Lead #{rid}", "contacts": [str(int(rid) - 1)] if rid.isdigit() else [],
               "price": 0, "status": "potential", "unsubscribed": False, "discount": 0, "fields": {}, "tags": []}
    record: dict[str, Any] = {}
    for key in keys:
        record[key] = draw(st.sampled_from([implied.get(key), None, "", 0, 0.0, False, [], {}]) | _VALUES)
    stored_under = draw(st.sampled_from([rid, None, "5"]))
    return record, stored_under


@settings(max_examples=600, deadline=None)
@given(_records())
def test_every_record_reads_back_exactly(case: tuple[dict[str, Any], str | None]) -> None:
    record, rid = case
    raw = pack_record(record, rid)
    back = unpack_record(raw, rid) if rid is not None else unpack(raw)
    assert _exactly(back) == _exactly(record)


async def test_records_written_and_read_through_the_crm_have_their_ids(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    directory = CrmDirectory(crm)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1"))
    contact = await redis.hget(*records.at("contact", ref.contact_id))
    lead = await redis.hget(*records.at("lead", ref.lead_id))
    assert contact == SHAPED + b"\x00"  # the id is the bucket's field
    assert lead.startswith(SHAPED) and len(lead) <= 32 and ref.lead_id.encode() not in lead
    snapshot = await crm.snapshot(ref)
    assert snapshot["contact"]["id"] == ref.contact_id and snapshot["lead"]["id"] == ref.lead_id
    assert snapshot["lead"]["name"] == f"Lead #{ref.lead_id}"
    assert (await directory.get("lead", ref.lead_id) or {})["contacts"] == [ref.contact_id]
    assert [c["id"] for c in await directory.get_many("contact", [ref.contact_id])] == [ref.contact_id]
    pipe = redis.pipeline()
    await pipe.watch("sb:crm:nothing")
    assert await newest_open_watched(pipe, ref.contact_id) == ref.lead_id
    await pipe.reset()
    company = await crm.execute(ref, {"do": "set_field", "entity": "company", "field": "name", "value": "Acme"})
    assert company is not None
    lead_after = await directory.get("lead", ref.lead_id) or {}
    company_id = lead_after["company"]
    assert (await directory.get("company", company_id) or {})["id"] == company_id
    assert (await crm.snapshot(ref))["company"]["id"] == company_id


@pytest.mark.parametrize(("rid", "changes"), [
    ("007", {"id": "007", "name": "Lead #007", "contacts": ["006"]}),  # zero-padded: no contact implied
    ("007", {"id": "007", "contacts": ["6"]}),
    ("1", {"id": "1", "name": "Lead #1", "contacts": ["0"]}),  # implied: the id before
    ("5", {"id": "5", "contacts": [4]}),  # an int contact stays an int
    ("5", {"id": 5, "name": "Lead #5", "contacts": ["4"]}),  # an int id: nothing derived from it
    ("5", {"id": "5", "price": False}), ("5", {"id": "5", "price": 0.0}), ("5", {"id": "5", "price": -0.0}),
    ("5", {"id": "5", "price": float("nan")}), ("5", {"id": "5", "company": False, "subscribers": [None]}),
    ("5", {"id": "5", "unsubscribed": 0}), ("5", {"id": "5", "unsubscribed": False, "discount": False}),
    ("x9", {"id": "x9", "name": "Lead #x9", "contacts": ["x8"]}),
])
def test_values_equal_to_an_implied_one_only_in_python_read_back_as_written(rid: str,
                                                                            changes: dict[str, Any]) -> None:
    record = {**LEAD, **changes}
    raw = pack_record(record, rid)
    assert raw.startswith(SHAPED)
    assert _exactly(unpack_record(raw, rid)) == _exactly(record)
