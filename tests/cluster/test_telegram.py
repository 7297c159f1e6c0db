"""A Telegram conversation through the fake Bot API (webhook, polling, redelivery, 429s), on the cluster."""

from tests.channels.test_telegram import *  # noqa: F403 - the same test bodies, on the cluster
