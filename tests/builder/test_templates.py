"""Templates: compiled once, rendered in a sandbox, typed values for single expressions."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import TemplateSyntaxError

from bot.builder.templates import Expression, Template, TemplateFailed, compile_value, evaluate_value

CTX: dict[str, Any] = {
    "contact": {"name": "Ayşe Yılmaz", "first_name": None, "phone": "+905551112233", "tags": ["new"]},
    "lead": {"name": "Sofa", "price": 1500, "tags": ["vip", "instagram"], "fields": {"budget": "2000"}},
    "vars": {"attempts": 2, "discount": 10},
    "message": {"text": "hello"},
}


@pytest.mark.parametrize(("source", "text"), [
    ("Hi {{ contact.name }}!", "Hi Ayşe Yılmaz!"),
    ("Plain text, no markers", "Plain text, no markers"),
    ("{{ lead.fields.budget }} TL", "2000 TL"),
    ("{{ vars.attempts + 1 }}", "3"),
    ("{{ lead.tags | join(', ') }}", "vip, instagram"),
    ("{% for t in lead.tags %}#{{ t }} {% endfor %}", "#vip #instagram "),
    ("{{ vars.discount }}% off for {{ contact.name }}", "10% off for Ayşe Yılmaz"),
    ("{{ lead.price > 1000 }}", "True"),
    ("{# a comment #}ok", "ok"),
    ("line\n", "line\n"),
])
def test_render(source: str, text: str) -> None:
    assert Template(source).render(CTX) == text


@pytest.mark.parametrize("source", [
    "{{ contact.email }}", "{{ company.name }}", "{{ contact.missing.deeper.still }}", "{{ json.items[3] }}",
    "{{ contact.first_name }}",  # None
])
def test_missing_values_and_none_render_empty(source: str) -> None:
    assert Template(source).render(CTX) == ""
    assert Template(f"[{source}]").render(CTX) == "[]"


@pytest.mark.parametrize("source", [
    "{{ contact.email }}{% if true %}{% endif %}",  # full Jinja path
    "{{ contact.first_name }}{% if true %}{% endif %}",
])
def test_missing_and_none_render_empty_in_full_jinja_templates(source: str) -> None:
    assert Template(source).render(CTX) == ""


@pytest.mark.parametrize(("source", "text"), [
    ("Hi {{ contact.first_name | default('there') }}!", "Hi there!"),   # None counts as missing
    ("Hi {{ contact.nickname | default('there') }}!", "Hi there!"),     # missing
    ("Hi {{ contact.name | default('there') }}!", "Hi Ayşe Yılmaz!"),
    ("{{ vars.empty | d('x') }}", "x"),
    ("{{ '' | default('x', true) }}", "x"),
    ("{{ '' | default('x') }}", ""),
])
def test_default_filter_treats_none_as_missing(source: str, text: str) -> None:
    assert Template(source).render(CTX) == text


@pytest.mark.parametrize("source", [
    "{{ contact.first_name | default('there', true) }}", "{{ contact.name | d('x') }}",
    "{{ vars.nope | default(vars.attempts + 1) }}", "{{ '' | default(boolean=true, default_value='b') }}",
    "{{ 0 | default('zero', true) }}", "{{ 0 | default('zero') }}", "{{ lead.tags | default([]) }}",
    "{{ contact.missing.deeper | default('deep') }}", "{{ contact.first_name | default }}",
])
def test_the_default_filter_without_jinja_agrees_with_jinja(source: str) -> None:
    t = Template(source)
    assert t._fast is not None  # the fast path is taken for these
    assert t.render(CTX) == str(t._jinja.render(CTX))


def test_the_default_filters_arguments_are_evaluated_as_jinja_does() -> None:
    # The fallback is evaluated even when the value is there: an error in it is an error.
    for source in ("{{ contact.name | default(vars.nope + 1) }}", "Hi {{ contact.name | default(vars.nope + 1) }}"):
        with pytest.raises(TemplateFailed):
            Template(source).render(CTX)


@pytest.mark.parametrize(("source", "value"), [
    ("{{ vars.attempts + 1 }}", 3),
    ("{{ vars.attempts }}", 2),
    ("{{ lead.tags }}", ["vip", "instagram"]),
    ("  {{ lead.price > 1000 }}  ", True),
    ("{{ lead.price * vars.discount / 100 }}", 150.0),
    ("{{ [vars.attempts, 'x'] }}", [2, "x"]),
    ("{{ contact.first_name }}", None),
    ("{{ contact.nope }}", ""),
    ("{{ lead.tags | length }}", 2),
    ("{{ vars.attempts }} times", "2 times"),       # not a single expression: text
    ("{{ vars.attempts }}{{ vars.attempts }}", "22"),
    ("plain", "plain"),
])
def test_single_expression_keeps_its_type(source: str, value: Any) -> None:
    got = Template(source).value(CTX)
    assert got == value
    assert type(got) is type(value)


def test_value_of_attempts_plus_one_when_attempts_is_zero() -> None:
    assert Template("{{ vars.attempts + 1 }}").value({"vars": {"attempts": 0}}) == 1


@pytest.mark.parametrize("source", [
    "{{ ().__class__.__bases__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ contact.name.__class__ }}",
    "{{ lead.price.__class__.__name__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "x{{ ().__class__.__bases__ }}{% if true %}{% endif %}",
])
def test_sandbox_hides_private_attributes(source: str) -> None:
    assert Template(source).render(CTX).removeprefix("x") == ""
    assert Template(source).value(CTX) in ("", "x")


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ lead.tags.append('x') }}",   # immutable sandbox: no mutation of the context
    "{{ lead.fields.update({'a': 1}) }}",
])
def test_sandbox_refuses_calls_it_considers_unsafe(source: str) -> None:
    with pytest.raises(TemplateFailed):
        Template(source).render(CTX)
    with pytest.raises(TemplateFailed):
        Template(source).value(CTX)
    assert CTX["lead"]["tags"] == ["vip", "instagram"]
    assert CTX["lead"]["fields"] == {"budget": "2000"}


def test_huge_results_are_refused() -> None:
    with pytest.raises(TemplateFailed):
        Template("{{ 'a' * 10000000 }}").render(CTX)


def test_arithmetic_on_a_missing_value_fails_instead_of_inventing_a_number() -> None:
    with pytest.raises(TemplateFailed):
        Template("{{ vars.nope + 1 }}").value(CTX)


@pytest.mark.parametrize("source", ["Hi {{ contact.name }", "{% if %}", "{{ 1 + }}", "{% for %}", "{{ }}"])
def test_syntax_errors_raise_at_compile_time(source: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        Template(source)


def test_is_constant() -> None:
    assert Template("Catalog").is_constant
    assert not Template("{{ x }}").is_constant


def test_expression() -> None:
    assert Expression("lead.price > 1000").evaluate(CTX) is True
    assert Expression("'vip' in lead.tags and vars.attempts < 3").evaluate(CTX) is True
    assert Expression("contact.nope").evaluate(CTX) is None
    with pytest.raises(TemplateSyntaxError):
        Expression("lead.price >")


def test_compile_and_evaluate_nested_values() -> None:
    compiled = compile_value({"a": ["{{ vars.attempts }}", 3, {"b": "Hi {{ contact.name }}"}], "n": None})
    assert isinstance(compiled["a"][0], Template)
    assert evaluate_value(compiled, CTX) == {"a": [2, 3, {"b": "Hi Ayşe Yılmaz"}], "n": None}


# The renderers of one or two two-part names (``contact.name``) read the context's dicts inline;
# where the root is not a dict (or is missing) they fall back to the getter, as Jinja would render.
_ODD_ROOTS: list[Any] = [{"x": "s"}, {"x": 7}, {"x": 1.5}, {"x": None}, {"x": True}, {"x": [1]}, {}, None,
                         [1, 2], "text", 3]


@pytest.mark.parametrize("source", ["{{ a.x }}", "<{{ a.x }}>", "{{ a.x }}{{ b.x }}", "[{{ a.x }}|{{ b.x }}]",
                                    "{{ a.x }} and {{ a.x }}!"])
@pytest.mark.parametrize("a", _ODD_ROOTS)
@pytest.mark.parametrize("b", [{"x": "y"}, None, [3]])
def test_dotted_names_render_as_jinja_does_whatever_the_root(source: str, a: Any, b: Any) -> None:
    t = Template(source)
    assert t.render.__name__ in ("one_pair", "two_pairs")
    ctx = {"a": a, "b": b}
    assert t.render(ctx) == str(t._jinja.render(ctx))
    assert Template(source).render({}) == str(t._jinja.render({}))  # the roots missing


@pytest.mark.parametrize(("vars_", "value"), [({"n": 2}, 3), ({"n": 2.5}, 3.5), ({"n": "a"}, None), ({}, None)])
def test_a_name_plus_a_constant_adds_or_fails_as_before(vars_: dict[str, Any], value: Any) -> None:
    t = Template("{{ vars.n + 1 }}")
    if value is None:
        with pytest.raises(TemplateFailed):
            t.value({"vars": vars_})
    else:
        assert t.value({"vars": vars_}) == value
    assert Template("{{ vars.n + 1 }}").fast is not None and Template("Hi").fast is None
