"""The CRM contract against the in-memory CRM (``salesbot test`` and ``salesbot chat``)."""

from __future__ import annotations

import pytest

from crm_bridge import MemoryCrm
from crm_bridge.contract import PIPELINES, CrmContract


class TestMemoryContract(CrmContract):
    @pytest.fixture
    async def crm(self) -> MemoryCrm:
        return MemoryCrm(pipelines=PIPELINES)
