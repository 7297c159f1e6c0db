"""The error tree of salesbot.

Every error the project raises on purpose derives from ``SalesbotError``::

    SalesbotError
    ├── FlowError                  (bot.builder, bot.automations)
    │   ├── DocumentInvalid        a document failed validation; carries every Problem
    │   │   ├── FlowInvalid        … a flow
    │   │   └── AutomationsInvalid … an automation document (salesbot.automations/1)
    │   └── FlowLoadError          a file could not be read or is not JSON
    ├── RuntimeFault               (bot.runtime)
    │   ├── UnknownBot             start_bot / API named a bot that is not loaded
    │   └── StepBudgetExceeded     one event ran more steps than the flow's step_budget
    ├── ConversationTestError      (bot.runtime.testing) a *.test.yaml file is malformed
    ├── KommoImportError           (bot.kommo_import) a Kommo document, a flow or a map cannot be
    │                              converted; carries the JSON pointer (subclasses: errors.py there)
    ├── CrmError                   (crm_bridge)
    │   ├── CrmRejected            permanent: the CRM refused the command
    │   └── CrmTemporary           retry later
    │       ├── CrmUnavailable
    │       └── CrmRateLimited     carries retry_after (seconds)
    ├── ActionFailed               (bot.outward.actions) an outward action failed: the step's `failed`
    │   └── ActionRefused          the target is not allowed (private address, not configured, …)
    ├── StoreFull                  (bot.store.memoryguard) Redis is near maxmemory: no new
    │                              conversations for now; carries retry_after (seconds)
    └── ShopError                  (bot.shop, bot.runtime.shop) the catalogue and orders
        └── ShopRejected           a product, order or change is not valid: the message says what to fix
            └── ShopNotFound       … it names a product, order or customer that does not exist

Errors carry structured fields so callers never parse messages.
"""

from __future__ import annotations

from dataclasses import dataclass


class SalesbotError(Exception):
    """Root of every error raised by salesbot on purpose."""


#: How a message names the whole document, whose JSON pointer (RFC 6901) is "" ("/" would be
#: the key "" of the document).
ROOT = "(document)"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of a document's validation (flows, automations): where (JSON pointer) and what to fix."""

    pointer: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.pointer or ROOT}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message, "severity": self.severity}


class FlowError(SalesbotError):
    """Something is wrong with a flow document."""


class DocumentInvalid(FlowError):
    """A document failed validation; ``problems`` lists every error and warning."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{len(errors)} problem(s): " + "; ".join(str(p) for p in errors[:5]))


class FlowInvalid(DocumentInvalid):
    """A flow document failed validation."""


class AutomationsInvalid(DocumentInvalid):
    """An automation document failed validation (``bot.automations.validate``)."""


class FlowLoadError(FlowError):
    """A flow file could not be read or parsed as JSON."""


class RuntimeFault(SalesbotError):
    """The interpreter could not go on with a run."""


class UnknownBot(RuntimeFault):
    def __init__(self, bot_id: str) -> None:
        self.bot_id = bot_id
        super().__init__(f"unknown bot {bot_id!r}")


class StepBudgetExceeded(RuntimeFault):
    def __init__(self, budget: int, step: str) -> None:
        self.budget = budget
        self.step = step
        super().__init__(f"step budget of {budget} exhausted at step {step!r}")


class ConversationTestError(SalesbotError):
    """A conversation test file is malformed (not a failing test: a broken one)."""


class CrmError(SalesbotError):
    """A CRM backend could not carry out a command."""


class CrmRejected(CrmError):
    """Permanent: the CRM refused the command (bad field, unknown stage, …)."""


class CrmTemporary(CrmError):
    """Temporary: the command may succeed later."""


class CrmUnavailable(CrmTemporary):
    """The CRM could not be reached or answered with a server error."""


class CrmRateLimited(CrmTemporary):
    def __init__(self, message: str = "rate limited", *, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ActionFailed(SalesbotError):
    """An outward action (send_webhook, send_email, create_form, meta_conversion) failed.

    Outward actions are not retried by the runtime: the flow takes the step's ``failed`` branch.
    """


class ActionRefused(ActionFailed):
    """The action may not run: a private webhook address, nobody to e-mail, not configured."""


class OrderLinkRejected(SalesbotError):
    """A quick-order link cannot be made as asked (bad customer id, expiry out of range, too many
    working links); the message says what to change."""


class StoreFull(SalesbotError):
    """Redis is close to its ``maxmemory``: new conversations are refused for now (HTTP 503)."""

    def __init__(self, message: str = "the store is nearly full: no new conversations for now", *,
                 retry_after: int = 5) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ShopError(SalesbotError):
    """The catalogue or the orders could not do what was asked."""


class ShopRejected(ShopError):
    """A product, an order or a change of one is not valid; the message says what to fix."""


class ShopNotFound(ShopRejected):
    """The product, order or customer named does not exist (HTTP 404)."""


class PricesChanged(ShopRejected):
    """The prices (or the currency) a customer was shown are not the catalogue's any more: nothing
    is ordered at a price they did not see (the quick-order page shows the new ones)."""
