"""The CRM contract against the generic webhook backend and a signature-checking receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from crm_bridge.contract import CrmContract
from crm_bridge.webhook_backend import WebhookCrm
from tests.crm_bridge.fakes.webhook_receiver import SECRET, WebhookReceiver


class TestWebhookContract(CrmContract):
    @pytest.fixture
    async def crm(self) -> AsyncIterator[WebhookCrm]:
        async with WebhookReceiver() as receiver:
            crm = WebhookCrm(receiver.url, SECRET)
            crm.receiver = receiver  # type: ignore[attr-defined]
            try:
                yield crm
            finally:
                await crm.aclose()
                assert receiver.bad_signatures == 0

    async def fail_next(self, crm: Any, status: int) -> bool:
        crm.receiver.fail_next(status)
        return True
