"""``Metrics`` makes its Prometheus metrics when one is first used, all at once (issue 14: startup)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bot.runtime.metrics import LATENESS_BUCKETS, Metrics


def test_no_metric_is_made_until_one_is_used_then_a_scrape_lists_them_all() -> None:
    metrics = Metrics()
    assert "registry" not in vars(metrics) and "duplicates" not in vars(metrics)
    metrics.duplicates.inc()
    metrics.message_in("livechat")
    text = generate_latest(metrics.registry).decode()
    assert "salesbot_duplicates_total 1.0" in text
    assert 'salesbot_messages_in_total{channel="livechat"} 1.0' in text
    for never_used in ("salesbot_step_errors_total 0.0", "salesbot_timers_fired_total 0.0",
                       "salesbot_timer_lateness_seconds_count 0.0", "# TYPE salesbot_queue_depth gauge",
                       "# TYPE salesbot_outbox_failures_total counter"):
        assert never_used in text


def test_a_scrape_first_makes_them_too_and_a_misspelt_name_is_still_an_error() -> None:
    metrics = Metrics()
    assert "salesbot_messages_out" in generate_latest(metrics.registry).decode()
    with pytest.raises(AttributeError):
        getattr(metrics, "messages")  # noqa: B009 - a name mypy rejects: the lookup is the test


def test_counts_kept_between_scrapes_are_in_the_next_one_once() -> None:
    """Messages and timers are counted as plain numbers and added to their counters when the
    registry is collected (issue 14 aim 5): each scrape shows every count so far, none twice."""
    metrics = Metrics()
    for _ in range(3):
        metrics.message_in("livechat")
    assert "registry" in vars(metrics)  # made by the first count, as by any metric's first use
    metrics.message_out("telegram")
    metrics.timer_fired()
    metrics.timer_fired(4)
    for _ in range(2):  # a second scrape with nothing new: the same figures, not doubled
        text = generate_latest(metrics.registry).decode()
        assert 'salesbot_messages_in_total{channel="livechat"} 3.0' in text
        assert 'salesbot_messages_out_total{channel="telegram"} 1.0' in text
        assert "salesbot_timers_fired_total 5.0" in text
    metrics.message_in("livechat")
    metrics.message_out("livechat")
    metrics.timer_fired(2)
    text = generate_latest(metrics.registry).decode()
    assert 'salesbot_messages_in_total{channel="livechat"} 4.0' in text
    assert 'salesbot_messages_out_total{channel="livechat"} 1.0' in text
    assert 'salesbot_messages_out_total{channel="telegram"} 1.0' in text
    assert "salesbot_timers_fired_total 7.0" in text



def test_lateness_kept_between_scrapes_is_in_the_next_one_once_in_the_buckets_observe_uses() -> None:
    """Timers' lateness is kept as counts per bucket and a sum until a scrape (issue 14 aim 5):
    the scrape shows what ``Histogram.observe`` of each value would have, none twice."""
    values = [0.0, 0.01, 0.0100001, 0.3, 1.0, 7.5, 60.0, 61.0, 0.049]
    metrics = Metrics()
    registry = CollectorRegistry()
    reference = Histogram("reference", "the same values observed", buckets=LATENESS_BUCKETS, registry=registry)
    for value in values:
        metrics.timer_late(value)
        reference.observe(value)

    def samples(text: str, name: str) -> list[str]:
        return [line.replace(name, "") for line in text.splitlines()
                if line.startswith((f"{name}_bucket", f"{name}_count", f"{name}_sum"))]

    expected = samples(generate_latest(registry).decode(), "reference")
    assert len(expected) == len(LATENESS_BUCKETS) + 3
    for _ in range(2):  # a second scrape with nothing new: the same figures, not doubled
        assert samples(generate_latest(metrics.registry).decode(), "salesbot_timer_lateness_seconds") == expected
    metrics.timer_late(0.2)
    text = generate_latest(metrics.registry).decode()
    assert 'salesbot_timer_lateness_seconds_bucket{le="0.25"} 5.0' in text
    assert f"salesbot_timer_lateness_seconds_count {len(values) + 1}.0" in text
