"""Kommo placeholders ↔ our templates: every documented placeholder, rendering, and the round trip."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.builder.templates import Template
from bot.kommo_import.placeholders import FieldNames, to_kommo, to_template

CONTEXT = {
    "contact": {"id": 7, "name": "Ayşe Yılmaz", "first_name": "Ayşe", "fields": {"cf_3574": "+905551112233"}},
    "lead": {"id": 42, "name": "Deal", "price": 2000, "stage": "Won", "pipeline": "Sales", "responsible": "5",
             "fields": {"budget": 900}},
    "company": {"id": 3, "name": "Acme", "fields": {}},
    "message": {"text": "hi me@x.io"},
    "chat": {"channel": "telegram", "origin": "message"},
    "json": {"status": "ok", "items": [{"id": "a-1"}], "x-y": 3},
    "last_validation_result": "+905551112233",
    "vars": {},
    "now": datetime(2026, 12, 6, 12, 0, tzinfo=UTC),
}


def render(text: str, names: dict[int, str] | None = None) -> str:
    return Template(to_template(text, FieldNames(names or {})).text).render(CONTEXT)


@pytest.mark.parametrize(("kommo", "expected"), [
    ("Hi {{contact.name}}!", "Hi Ayşe Yılmaz!"),
    ("Hi {{name}}!", "Hi Ayşe Yılmaz!"),
    ("{{contact.first_name}}/{{contact.id}}/{{lead.id}}/{{lead.name}}/{{lead.price}}", "Ayşe/7/42/Deal/2000"),
    ("{{company.name}} {{company.id}}", "Acme 3"),
    ("you said: {{message_text}}", "you said: hi me@x.io"),
    ("from {{origin}} / {{ chat.origin }}", "from telegram / telegram"),
    ("{{last_validation_result}}", "+905551112233"),
    ("{{json.status}} {{json.items.0.id}} {{json.x-y}}", "ok a-1 3"),
    ("phone {{contact.cf.3574}}", "phone +905551112233"),
    ("budget {{lead.cf.555}}", "budget 900"),
    ("stage {{lead.status_id}} by {{lead.responsible_user_id}}", "stage Won by 5"),
    ("{{current_date}}", "06.12.2026"),
    ("found {{founded_id}} {{contact_double.name}}.", "found  ."),
    ("literal {% if %} and {# not #} and {{ }}", "literal {% if %} and {# not #} and {{ }}"),
])
def test_kommo_text_renders_as_kommo_would(kommo: str, expected: str) -> None:
    assert render(kommo, {555: "budget"}) == expected


def test_random_placeholders_give_four_digits() -> None:
    for name in ("rand", "short_rand", "short_rand_num"):
        assert 1111 <= int(render("{{" + name + "}}")) <= 9999


def test_notes_say_what_differs_and_what_is_missing() -> None:
    r = to_template("{{lead.status_id}} {{message_text.email}} {{founded_id}} {{contact.cf.1.is_checked}}",
                    FieldNames({}))
    assert len(r.approximations) == 3 and "stage name" in r.approximations[0]
    assert r.unknown == ["Kommo placeholder {{founded_id}} has no equivalent here; it renders empty"]


def test_unmapped_fields_are_named_and_recorded() -> None:
    names = FieldNames({4242: "participation"})
    r = to_template("{{lead.cf.4242}} {{contact.cf.77}} {{company.cf.78.9}}", names)
    assert r.text == "{{ lead.fields.participation }} {{ contact.fields.cf_77 }} {{ company.fields.cf_78 }}"
    assert names.unmapped == {77, 78}


@pytest.mark.parametrize("kommo", [
    "Hi {{contact.name}}, {{contact.first_name}} ({{contact.id}}) lead {{lead.id}} {{lead.name}} {{lead.price}}",
    "{{message_text}} {{origin}} {{last_validation_result}} {{json.status}} {{json.a.0.b-c}}",
    "{{lead.cf.4242}} {{contact.cf.77}} {{company.cf.5}} {{lead.status_id}} {{lead.pipeline_id}}",
    "{{lead.responsible_user_id}} {{current_date}} {{short_rand_num}} {{founded_id}} {{external_lead.cf.3}}",
    "plain {% raw %} text {# x #} {{ }}",
])
def test_round_trip_restores_the_kommo_text(kommo: str) -> None:
    names = FieldNames({4242: "participation"})
    back = to_kommo(to_template(kommo, names).text, names)
    assert back.problems == []
    assert back.text == kommo


def test_export_lists_what_kommo_cannot_express() -> None:
    r = to_kommo("{{ vars.attempts + 1 }} {{ lead.fields.unknown_name }} {% if x %}y{% endif %} {{ lead.tags }}",
                 FieldNames({}))
    assert r.problems == [
        "Kommo has no placeholder for {{ vars.attempts + 1 }} (only plain paths Kommo knows can be exported)",
        'Kommo has no field named "unknown_name": add its id to [fields] in the map (or name it cf_<id>)',
        "Kommo has no placeholder for {{ lead.tags }} (only plain paths Kommo knows can be exported)",
        "Kommo has no statements or comments ({% … %}, {# … #}) in texts",
    ]


def test_mapped_field_names_export_to_their_ids() -> None:
    names = FieldNames({4242: "participation", 9: "Full name"})
    assert to_kommo('{{ lead.fields.participation }} {{ contact.fields["Full name"] }}', names).text == (
        "{{lead.cf.4242}} {{contact.cf.9}}")


def test_an_imported_formula_exports_back() -> None:
    names = FieldNames({1: "seats"})
    expr = "{{ (lead.fields.seats | float)*(lead.fields.cf_2 | float) + 10 }}"
    assert to_kommo(expr, names).text == "{{lead.cf.1}}*{{lead.cf.2}} + 10"
    assert to_kommo("{{ (lead.tags | float) * 2 }}", names).problems != []
