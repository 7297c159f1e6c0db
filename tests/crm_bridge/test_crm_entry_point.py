"""A CRM backend of another package, found ONLY through the ``salesbot.crm_backends`` entry
point group: before it, docs/crm.md told a developer to add the backend to ``[crm] backend``
in ``bot/config_models.py`` and to ``crm_bridge/factory.py``, i.e. to edit this package.

A temporary distribution (``*.dist-info/entry_points.txt`` plus its module) is put on
``sys.path``; ``[crm] backend = "beep"`` then validates, ``build_backend`` builds it the way the
server does, and the CRM contract runs against what it built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bot.config import CRM_ENTRY_POINT_GROUP, ConfigError, load_config
from crm_bridge.contract import PIPELINES, CrmContract
from crm_bridge.factory import build_backend, close_backend
from tests.distributions import installed

MODULE = '''
from crm_bridge.memory import MemoryCrm


class BeepCrm(MemoryCrm):
    name = "beep"

    def __init__(self, *, pipelines, token):
        super().__init__(pipelines=pipelines)
        self.token = token
        self.closed = False

    async def lead_tasks(self, ref):
        return MemoryCrm.lead_tasks(self, ref)

    async def lead_notes(self, ref):
        return MemoryCrm.lead_notes(self, ref)

    async def aclose(self):
        self.closed = True


def create(*, config, redis):
    return BeepCrm(pipelines=config.settings["pipelines"], token=config.token.get_secret_value())


def half(*, config, redis):
    return object()


def picky(*, config, redis):
    return BeepCrm(pipelines=config.settings["no such setting"])
'''
ENTRY_POINTS = {"beep": "beep_crm_plugin:create", "half": "beep_crm_plugin:half",
                "typo": "beep_crm_plugn:create", "picky": "beep_crm_plugin:picky"}


@pytest.fixture(scope="module", autouse=True)
def beep_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with installed(tmp_path_factory.mktemp("site"), module="beep_crm_plugin", source=MODULE, dist="beep-crm-0.1",
                   group=CRM_ENTRY_POINT_GROUP, entry_points=ENTRY_POINTS):
        yield


def _config(backend: str) -> Any:
    return load_config(None, env={}, overrides={"crm": {"backend": backend, "token": "tok",
                                                        "settings": {"pipelines": PIPELINES}}})


class TestPluggedCrmContract(CrmContract):
    @pytest_asyncio.fixture
    async def crm(self, redis: Redis) -> AsyncIterator[Any]:
        backend = build_backend(_config("beep"), redis)
        yield backend
        await close_backend(backend)


async def test_the_server_builds_a_backend_found_only_through_its_entry_point(redis: Redis) -> None:
    backend: Any = build_backend(_config("beep"), redis)
    assert type(backend).__module__ == "beep_crm_plugin" and backend.token == "tok"
    await close_backend(backend)
    assert backend.closed


def test_an_unknown_backend_is_a_configuration_error_naming_the_group() -> None:
    with pytest.raises(ConfigError) as caught:
        _config("beeep")
    assert ("no CRM backend named 'beeep' (known: embedded, kommo, webhook, beep, half, picky, typo; another package "
            "adds one in the 'salesbot.crm_backends' entry point group)") in str(caught.value)


@pytest.mark.parametrize(("name", "says"), [
    ("typo", ("[crm] backend 'typo' (entry point of beep-crm: 'beep_crm_plugn:create'): cannot be loaded: "
              "ModuleNotFoundError")),
    ("half", "the factory returned a object, not a CrmBackend (missing: name, identify, snapshot, execute)"),
    ("picky", ("[crm] backend 'picky' (entry point of beep-crm: 'beep_crm_plugin:picky'): the factory failed: "
               "KeyError: 'no such setting'")),
])
async def test_a_backend_that_cannot_be_built_names_its_entry_point(redis: Redis, name: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_backend(_config(name), redis)
    assert says in str(caught.value)
