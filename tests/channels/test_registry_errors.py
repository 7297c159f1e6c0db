"""A channel that cannot be built says which channel, which entry point of which distribution
and which account: before, a typo in an entry point was a bare ``ModuleNotFoundError`` or
``AttributeError: module … has no attribute ''`` from deep in the server's start, and a factory
missing a credential a bare ``KeyError: 'secret'``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bot.channels.base import ChannelError
from bot.channels.registry import ENTRY_POINT_GROUP, ChannelRegistry
from bot.config import AccountConfig
from tests.distributions import installed

MODULE = '''
class HalfAdapter:
    name = "half"
    def parse(self, request): return []

def create(**kwargs):
    return HalfAdapter()

def needs_secret(*, account, config, http, public_url):
    return config.credentials["secret"]

NOT_A_FACTORY = 3
'''
ENTRY_POINTS = {"typo_module": "registry_err_chanel:create", "typo_factory": "registry_err_channel:craete",
                "no_factory": "registry_err_channel", "not_callable": "registry_err_channel:NOT_A_FACTORY",
                "half": "registry_err_channel:create", "needs_secret": "registry_err_channel:needs_secret"}


@pytest.fixture(scope="module", autouse=True)
def broken_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with installed(tmp_path_factory.mktemp("site"), module="registry_err_channel", source=MODULE,
                   dist="registry-err-0.1", group=ENTRY_POINT_GROUP, entry_points=ENTRY_POINTS):
        yield


def _error(name: str, **kwargs: Any) -> str:
    with pytest.raises(ChannelError) as caught:
        ChannelRegistry().create(name, **{"account": "shop", "config": AccountConfig(channel=name), "http": None,
                                          "public_url": "https://bot.example.com", **kwargs})
    return str(caught.value)


@pytest.mark.parametrize(("name", "says"), [
    ("typo_module", ("channel 'typo_module' (entry point of registry-err: 'registry_err_chanel:create'): "
                     "cannot import 'registry_err_chanel'")),
    ("typo_factory", "module 'registry_err_channel' has no 'craete'"),
    ("no_factory", "name the factory as 'module:function'"),
    ("not_callable", "'NOT_A_FACTORY' is a int, not a channel adapter factory"),
    ("half", ("channel 'half', account 'shop': the factory returned a HalfAdapter, not a ChannelAdapter "
              "(missing: capabilities, handshake, verify, send, acknowledge, close)")),
    ("needs_secret", "channel 'needs_secret', account 'shop': the adapter factory failed: KeyError: 'secret'"),
])
def test_a_channel_that_cannot_be_built_names_its_entry_point(name: str, says: str) -> None:
    assert says in _error(name)
