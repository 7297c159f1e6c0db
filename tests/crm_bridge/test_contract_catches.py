"""The CRM contract fails a backend that replaces a contact's tags instead of adding to them:
it checked that only for the lead's (one tag added to a contact passed either way)."""

from __future__ import annotations

from typing import Any

from crm_bridge.contract import PIPELINES, CrmContract
from crm_bridge.interface import CommandResult, CrmRef
from crm_bridge.memory import MemoryCrm


class ReplacesContactTags(MemoryCrm):
    async def execute(self, ref: CrmRef, command: dict[str, Any]) -> CommandResult:
        if command.get("do") == "tags" and command.get("entity") == "contact":
            self.contacts[ref.contact_id]["tags"] = [str(t) for t in command.get("add") or []]
            return CommandResult()
        return await super().execute(ref, command)


async def test_the_contract_fails_a_backend_that_replaces_a_contacts_tags() -> None:
    contract = CrmContract()
    await contract.test_tags_are_added_and_removed_without_replacing_the_others(MemoryCrm(pipelines=PIPELINES))
    broken = ReplacesContactTags(pipelines=PIPELINES)
    try:
        await contract.test_tags_are_added_and_removed_without_replacing_the_others(broken)
    except AssertionError as exc:
        assert "a contact's tags were replaced" in str(exc)
    else:
        raise AssertionError("the contract passed a backend that replaces a contact's tags")
