"""The CRM contract against the Kommo backend, over real HTTP on loopback to a fake Kommo API
that keeps to the documented 7 requests per second (the backend's limiter must keep up)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from crm_bridge.contract import CrmContract
from crm_bridge.kommo import KommoCrm
from tests.crm_bridge.fakes.kommo import TOKEN, FakeKommo


class TestKommoContract(CrmContract):
    unsupported = frozenset({"subscribers"})  # read-only in Kommo's API v4

    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeKommo]:
        async with FakeKommo(rate_limit=7) as fake:
            yield fake

    @pytest.fixture
    async def crm(self, fake: FakeKommo) -> AsyncIterator[KommoCrm]:
        crm = KommoCrm(fake.url, TOKEN, rate=7)
        crm.fake = fake  # type: ignore[attr-defined]
        try:
            yield crm
        finally:
            await crm.aclose()
            assert fake.rate_limited == 0, "the client-side limiter let Kommo's rate limit be hit"

    async def fail_next(self, crm: Any, status: int) -> bool:
        crm.fake.fail_next(status)
        return True
