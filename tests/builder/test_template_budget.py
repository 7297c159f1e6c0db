"""The rendering budget (``bot.builder.budget``): abusive templates fail fast, others render."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from jinja2 import TemplateSyntaxError

from bot.builder import check_document
from bot.builder.budget import CPU_SECONDS, MAX_OUTPUT, MAX_RANGE, MAX_SIZE
from bot.builder.templates import Expression, Template, TemplateFailed

#: Generous: each attack fails in milliseconds; without the budget each runs for minutes or
#: takes gigabytes.
FAST = 2.0


@contextmanager
def fails_fast(reason: str) -> Iterator[None]:
    started = time.process_time()
    with pytest.raises(TemplateFailed, match=reason):
        yield
    assert time.process_time() - started < FAST


def _ns(init: str, step: str, n: int = 40) -> str:
    """A loop that replaces ``ns.s`` by ``step`` of it ``n`` times (doubling it, typically)."""
    return (f"{{% set ns = namespace(s={init}) %}}{{% for i in range({n}) %}}"
            f"{{% set ns.s = {step} %}}{{% endfor %}}{{{{ ns.s|length }}}}")


ATTACKS: dict[str, tuple[str, str]] = {
    "nested loops": ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
                     "loop iterations"),
    "nested loops over a variable": (("{% for i in vars.n %}{% for j in vars.n %}{{ j }}"
                                      "{% endfor %}{% endfor %}"), "loop iterations"),
    "power tower": ("{{ (9**999)**999 }}", "larger than 10\\*\\*100"),
    "squaring": (_ns("2", "ns.s * ns.s", 30).replace("|length", ""), "larger than 10\\*\\*100"),
    "percent width": ("{{ '%0200000000d' % 1 }}", "width"),
    "percent star width": ("{{ '%*d' % (200000000, 1) }}", "width"),
    "format filter width": ("{{ '%0200000000d'|format(1) }}", "width"),
    "str.format width": ("{{ '{:>200000000}'.format(1) }}", "width"),
    "Markup.format width": ("{{ ('{:>200000000}'|safe).format(1) }}", "width"),
    "nested format width": ("{{ ('{0:{1}}'|safe).format(1, 200000000) }}", "width"),
    "center": ("{{ 'x'.center(200000000) }}", "width"),
    "ljust": ("{{ 'x'.ljust(200000000) }}", "width"),
    "center filter": ("{{ 'x'|center(200000000) }}", "width"),
    "indent filter": ("{{ 'x'|indent(200000000, true) }}", "longer than"),
    "batch filter": ("{{ [1]|batch(200000000, 'x')|list }}", "width"),
    "lipsum": ("{{ lipsum(1000000) }}", "lipsum"),
    "doubling ~": (_ns("'x'", "ns.s ~ ns.s"), "longer than"),
    "doubling +": (_ns("'x'", "ns.s + ns.s"), "longer than"),
    "doubling list +": (_ns("['x']", "ns.s + ns.s"), "longer than"),
    "doubling list literal": (_ns("['x']", "[ns.s, ns.s]"), "longer than"),
    "doubling replace": (_ns("'ab'", "ns.s.replace('a', 'aaaa')"), "longer than"),
    "doubling replace filter": (_ns("'ab'", "ns.s|replace('a', 'aaaa')"), "longer than"),
    "doubling join": (_ns("'xx'", "ns.s.join([ns.s, ns.s])"), "longer than"),
    "doubling join filter": (_ns("['x', 'x']", "[ns.s|join, ns.s|join]"), "longer than"),
    "doubling format": (_ns("'x'", "'{0}{0}'.format(ns.s)"), "longer than"),
    "doubling percent": (_ns("'x'", "'%s%s' % (ns.s, ns.s)"), "longer than"),
    "many format fields": ("{{ ('{0}' * 30000).format('x' * 100000) }}", "longer than"),
    "many percent fields": ("{{ ('%s' * 30000) % (('x' * 100000,) * 30000) }}", "longer than"),
    "wide list as text": ("{{ (['x' * 100000] * 100000)|string }}", "longer than"),
    "translate": ("{{ 'abc'.translate({97: 'x' * 100000}) }}", "longer than"),
    "exponential macro": (("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
                           "{% endmacro %}{{ f(40) }}"), "loop iterations and calls"),
    "output": ("{% set s = 'x' * 100000 %}{% for i in range(10000) %}{{ s }}{% endfor %}", "output"),
    "set block": (("{% set s = 'x' * 100000 %}{% set t %}{% for i in range(10000) %}{{ s }}"
                   "{% endfor %}{% endset %}{{ t|length }}"), "produced more than"),
    "infinity": ("{{ 1e308 * 10 }}", "out of range"),
    "cpu": (("{% set l = range(10000)|list %}{% for i in range(10000) %}"
             "{{ (l|sort(reverse=true))[0] }}{% endfor %}"), "CPU"),
}


@pytest.mark.parametrize("source", [v[0] for v in ATTACKS.values()], ids=list(ATTACKS))
def test_an_abusive_template_fails_fast(source: str) -> None:
    reason = next(r for s, r in ATTACKS.values() if s == source)
    template = Template(source)
    context = {"vars": {"n": list(range(MAX_RANGE))}}
    with fails_fast(reason):
        template.render(context)


def test_the_fast_paths_are_bounded_too() -> None:
    # Single expressions of names, constants and arithmetic skip Jinja: same limits.
    for source, reason in [("{{ '%0200000000d' % 1 }}", "width"), ("{{ vars.s + vars.s }}", "longer than"),
                           ("{{ vars.n * vars.n }}", "larger than"), ("{{ 'x' * 200000000 }}", "longer than")]:
        with fails_fast(reason):
            Template(source).value({"vars": {"s": "x" * 60_000, "n": 10**60}})
    with fails_fast("width"):
        Expression("'%0200000000d' % 1").evaluate({})
    with fails_fast("loop iterations"):
        Expression("range(10000)|map('string')|map('length')|list|sum + range(10000)|sum").evaluate({})


def test_a_literal_range_too_large_does_not_compile() -> None:
    with pytest.raises(TemplateSyntaxError, match="range"):
        Template("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}")
    with pytest.raises(TemplateSyntaxError, match="range"):
        Template("{{ range(5, 100000000)|list }}")
    assert Template("{{ range(3)|list }}").value({}) == [0, 1, 2]


def test_limits_are_exact() -> None:
    assert len(Template(f"{{{{ 'x' * {MAX_SIZE} }}}}").render({})) == MAX_SIZE
    with pytest.raises(TemplateFailed):
        Template(f"{{{{ 'x' * {MAX_SIZE + 1} }}}}").render({})
    assert Template(f"{{{{ range({MAX_RANGE})|length }}}}").render({}) == str(MAX_RANGE)
    with pytest.raises(TemplateFailed):
        Template(f"{{% for i in range({MAX_RANGE} + 1) %}}{{% endfor %}}").render({})
    exact = f"{{% for i in range({MAX_OUTPUT // 64}) %}}{{{{ 'x' * 64 }}}}{{% endfor %}}"
    assert len(Template(exact).render({})) == MAX_OUTPUT
    with pytest.raises(TemplateFailed, match="output"):
        Template(exact + "!").render({})
    assert Template("{{ 10**100 }}").value({}) == 10**100
    with pytest.raises(TemplateFailed):
        Template("{{ 10**101 }}").value({})
    assert CPU_SECONDS == 0.2


def test_ordinary_templates_render_as_before() -> None:
    context = {"contact": {"name": "Ann"}, "vars": {"items": ["a", "b"], "n": 3, "price": 1500000}}
    cases = {
        "Hi {{ contact.name | upper }}!": "Hi ANN!",
        "{% for i in vars['items'] %}{{ loop.index }}={{ i }}{% if not loop.last %}, {% endif %}"
        "{% endfor %}": "1=a, 2=b",
        "{{ contact.name ~ '!' }} {{ '%05d' % vars.n }} {{ '%s-%s' % ('a', 'b') }}": "Ann! 00003 a-b",
        "{{ '{:,}'.format(vars.price) }} {{ '%.2f'|format(2.5) }}": "1,500,000 2.50",
        "{{ contact.name.replace('A', 'a') }} {{ ', '.join(vars['items']) }}": "ann a, b",
        "{{ vars['items']|join('/') }} {{ 'x'|center(5) }}|": "a/b   x  |",
        "{{ [1, 2] + [3] }} {{ (1, 2) }} {{ {'a': 1} }}": "[1, 2, 3] (1, 2) {'a': 1}",
        "{% set a, b = 1, 2 %}{{ a + b }} {{ 2 ** 10 }} {{ 7 % 3 }}": "3 1024 1",
        "{% for k, v in {'a': 1}.items() %}{{ k }}{{ v }}{% endfor %}": "a1",
        "{{ range(3)|list }} {{ vars.n * 'ab' }}": "[0, 1, 2] ababab",
    }
    for source, expected in cases.items():
        assert Template(source).render(context) == expected, source


def test_a_tuple_is_a_tuple_on_the_fast_path_too() -> None:
    # Regression: the fast path built a list, so "%s-%s" % ('a', 'b') raised.
    assert Template("{{ '%s-%s' % ('a', 'b') }}").render({}) == "a-b"
    assert Template("{{ (1, 2) }}").render({}) == "(1, 2)"
    with fails_fast("longer than"):
        Template("{{ [vars.s, vars.s] }}").value({"vars": {"s": "x" * 60_000}})


def test_the_validator_reports_a_literal_range_too_large() -> None:
    doc = {"format": "salesbot.flow/1", "id": "bot", "start": "hi", "steps": {
        "hi": {"type": "message", "text": "{% for i in range(100000) %}{% for j in range(100000) %}"
                                          "{% endfor %}{% endfor %}"}}}
    problems, flow = check_document(doc)
    assert flow is None
    assert [(p.pointer, p.message) for p in problems if p.severity == "error"] == [
        ("/steps/hi/text", "template does not compile: range() of more than 10,000 numbers (line 1)")]
