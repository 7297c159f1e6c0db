"""The shop service (``services.shop``): the catalogue as a customer sees it, placing and changing
orders, and what follows each (the customer's status, lead events, the live signal).

Whoever places an order (a person through ``POST /api/orders``, the quick-order page, an
integration) comes here: prices are always the catalogue's, in the customer's currency and after
their personal discount (``bot.shop.prices``). After an order is made or changed its id is
published on ``sb:orders:changed`` (the dashboard shows it live) and each event of the change
(``bot.shop.orders``) goes onto the order's lead queue, where automations (``on: order.paid``)
and flows' goals hear it. An order's lead: the one named, else the customer's newest open lead,
else a new one (``CrmDirectory.open_lead``, as ``POST /api/events`` finds it: one
lead for orders at once). The customer card (currency, language,
discount, status) is the embedded CRM's; on another CRM a customer has no card (the defaults
apply) and only an order naming its lead emits events.

What follows a change (the customer becoming current, its events, the live signal) is recorded
with the order by the same script (``bot.store.shop``: an outbox) and cleared once done; a crash,
a Redis or CRM outage in between leaves it recorded, and the worker's ``sweep`` does it after
``UNSENT_GRACE`` seconds. Doing it twice is harmless (event ids are stable, the lead queue drops
a duplicate), so the follow-up is at least once and its events exactly once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from crm_bridge.directory import CrmDirectory

from ..automations.events import ID_PATTERN
from ..errors import ShopRejected
from ..shop import orders as rules
from ..shop.prices import to_major, unit_price
from ..shop.products import check_product, localised, product_json
from ..store.shop import ALL, ShopStore, Unsent, index_key
from .leads import LeadService

log = logging.getLogger("salesbot.shop")
#: Redis channel: the id of every order made or changed (views15's live Orders view listens).
ORDERS_CHANNEL = "sb:orders:changed"
#: Tries of a change that met another change of the same order (compare and set).
CHANGE_TRIES = 8
#: Ids a filtered list reads at most for one page (the rest: the next page, ``next_before``).
SCAN_LIMIT = 2000
#: Seconds a change's follow-up is left to its writer before the sweeper does it.
UNSENT_GRACE = 30.0
#: Follow-ups one sweep takes at most (the rest: the next round).
SWEEP_LIMIT = 100
_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    sku: str
    name: str
    description: str | None
    image_url: str | None
    base_price: int  # minor units of the catalogue's currency
    unit_price: int  # after the customer's discount


@dataclass(frozen=True, slots=True)
class CustomerCatalogue:
    """The active products as one customer sees them: their currency, language and discount."""

    customer: str
    currency: str | None  # None: nothing on sale
    language: str
    discount: float
    products: list[CatalogueItem] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Prices in major units, as the API shows money."""
        cur = self.currency or "XXX"
        return {"customer": self.customer, "currency": self.currency, "language": self.language,
                "discount": self.discount,
                "products": [{"sku": p.sku, "name": p.name, "description": p.description, "image_url": p.image_url,
                              "base_price": to_major(p.base_price, cur), "unit_price": to_major(p.unit_price, cur)}
                             for p in self.products]}


class Shop:
    def __init__(self, *, redis: Redis, directory: CrmDirectory | None, leads: LeadService | None,
                 default_currency: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.store = ShopStore(redis)
        self.directory = directory
        self.leads = leads
        self.default_currency = default_currency
        self.clock = clock

    # ------------------------------------------------------------------ the catalogue
    async def put_product(self, sku: str, body: object) -> tuple[dict[str, Any], bool]:
        """Create or replace a product; (its JSON, whether it is new)."""
        product = check_product(sku, body, self.clock())
        created = await self.store.put_product(product)
        return product_json(product), created

    async def product(self, sku: str) -> dict[str, Any]:
        found = await self.store.product(sku)
        if found is None:
            raise rules.missing("product", sku)
        return product_json(found)

    async def products(self, *, active: bool | None = None) -> list[dict[str, Any]]:
        return [product_json(p) for p in await self.store.all_products() if active is None or p["active"] is active]

    async def delete_product(self, sku: str) -> None:
        if not await self.store.delete_product(sku):
            raise rules.missing("product", sku)

    async def catalogue_for(self, customer_id: str) -> CustomerCatalogue:
        """The active products in the customer's currency (card, else ``[shop] default_currency``,
        else the first product's first currency) and language (card, else en); products without
        a price in that currency are left out."""
        card = await self._card(customer_id)
        products = [p for p in await self.store.all_products() if p["active"]]
        currency = self._currency(card, products)
        language = str(card.get("language") or "en")
        discount = card.get("discount") or 0
        items = [CatalogueItem(sku=p["sku"], name=localised(p["name"], language) or p["sku"],
                               description=localised(p["description"], language), image_url=p.get("image_url"),
                               base_price=p["prices"][currency], unit_price=unit_price(p["prices"][currency], discount))
                 for p in products if currency in p["prices"]]
        return CustomerCatalogue(customer_id, currency if products else None, language, discount, items)

    def _currency(self, card: Mapping[str, Any], products: Sequence[Mapping[str, Any]]) -> str:
        if card.get("currency"):
            return str(card["currency"])
        if self.default_currency:
            return self.default_currency
        return next((c for p in products for c in p["prices"]), "XXX")

    async def _card(self, customer_id: str) -> dict[str, Any]:
        """The customer's contact record (card fields included); {} on a CRM without cards."""
        if not isinstance(customer_id, str) or not _ID.match(customer_id):
            raise rules.missing("customer", str(customer_id))
        if self.directory is None:
            return {}
        record = await self.directory.get("contact", customer_id)
        if record is None:
            raise rules.missing("customer", customer_id)
        return record

    # ------------------------------------------------------------------ orders
    async def place_order(self, customer_id: str, items: list[tuple[str, int]], *, source: str,
                          lead_id: str | None = None, key: str | None = None, by: str | None = None,
                          shown: tuple[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
        """Make an order at the customer's prices now; the order as the API shows it. With
        ``key`` (an idempotency key of this customer, kept 7 days) a retry returns the same order.
        ``shown``: the currency and unit prices (minor units) the customer saw; ``PricesChanged``
        when the order's differ (checked against the very prices the order is made with)."""
        if key is not None:
            known = await self.store.keyed(customer_id, key)
            if known is not None:  # a retry: what followed the first try is in the outbox until done
                return rules.order_json(known)
        lines_wanted = rules.check_items(items)
        card = await self._card(customer_id)
        products = await self.store.products([sku for sku, _ in lines_wanted])
        active = [p for p in await self.store.all_products() if p["active"]] if not card.get("currency") else []
        currency = self._currency(card, active)
        language = str(card.get("language") or "en")
        discount = card.get("discount") or 0
        lines = rules.price_lines(lines_wanted, products, currency, discount, language)
        if shown is not None:
            rules.check_shown(lines, currency, *shown)
        lead = await self._lead_for(customer_id, lead_id)
        number = await self.store.next_number()
        order = rules.new_order(id_=str(number), number=number, customer=customer_id, lead=lead, lines=lines,
                                currency=currency, discount=discount, source=source, by=by or source,
                                now=self.clock())
        unsent = self._unsent(order, [rules.OrderEvent("order.created", rules.event_data(order))], 1,
                              current=self.directory is not None and card.get("status") != "current")
        stored, created = await self.store.create(order, key, now=self.clock(), unsent=unsent)
        if created:
            log.info("shop.order_created", extra={"order": stored["id"], "customer": customer_id, "source": source})
            await self._follow_up(unsent)
        return rules.order_json(stored)

    async def _lead_for(self, customer_id: str, lead_id: str | None) -> str | None:
        directory = self.directory
        if lead_id is not None and (not isinstance(lead_id, str) or not _ID.match(lead_id)):
            raise rules.missing("lead", str(lead_id))
        if directory is None:
            return lead_id
        if lead_id is not None:
            lead = await directory.get("lead", lead_id)
            if lead is None:
                raise rules.missing("lead", lead_id)
            if customer_id not in [str(c) for c in lead.get("contacts") or []]:
                raise ShopRejected(f"lead {lead_id} is not a lead of customer {customer_id}")
            return lead_id
        return await directory.open_lead(customer_id)  # two first orders at once: one new lead

    async def order(self, order_id: str) -> dict[str, Any]:
        found = await self.store.order(order_id) if _ID.match(order_id) else None
        if found is None:
            raise rules.missing("order", order_id)
        return rules.order_json(found)

    async def change_order(self, order_id: str, patch: object, *, by: str) -> dict[str, Any]:
        """Move the status, mark paid, set tracking (``bot.shop.orders.change``); each change
        emits its events. Concurrent changes of one order are applied one after the other."""
        wanted = rules.check_patch(patch)
        for _ in range(CHANGE_TRIES):
            raw = await self.store.order_raw(order_id) if _ID.match(order_id) else None
            if raw is None:
                raise rules.missing("order", order_id)
            old = rules.load(raw)
            new, events = rules.change(old, wanted, by=by, now=self.clock())
            if new == old:
                return rules.order_json(old)
            unsent = self._unsent(new, events, rules.revision(new), current=False)
            if await self.store.replace(raw, old, new, now=self.clock(), unsent=unsent):
                log.info("shop.order_changed", extra={"order": order_id, "by": by,
                                                      "events": [e.type for e in events]})
                await self._follow_up(unsent)
                return rules.order_json(new)
        raise ShopRejected("the order is being changed by others right now; send the change again")

    # ------------------------------------------------------------------ what follows a change
    def _unsent(self, order: Mapping[str, Any], events: Sequence[rules.OrderEvent], step: int, *,
                current: bool) -> Unsent:
        """A change's follow-up, recorded with the order (field ``<order id>:<step>``): the events
        that reach a lead queue (ids made of the order and its revision: a redelivered change is a
        duplicate, every new change a new event) and whether the customer becomes current."""
        emitted = [[e.type, e.data] for e in events] if self.leads is not None and order.get("lead") else []
        return f"{order['id']}:{step}", {"order": str(order["id"]), "step": step, "lead": order.get("lead"),
                                         "customer": str(order["customer"]), "current": current, "events": emitted}

    async def _follow_up(self, unsent: Unsent) -> None:
        """Do a change's follow-up now; on a failure it stays recorded and the sweeper does it
        (the order is made or changed either way: the caller gets it)."""
        try:
            await self._carry_out(*unsent)
        except Exception:
            log.exception("shop.follow_up_delayed", extra={"order": unsent[1]["order"], "unsent": unsent[0]})

    async def _carry_out(self, name: str, work: Mapping[str, Any]) -> None:
        order_id = str(work["order"])
        if work.get("current") and self.directory is not None:
            await self.directory.update_contact(str(work["customer"]), {"status": "current"})
        if self.leads is not None and work.get("lead"):
            for type_, data in work.get("events") or []:
                lead_event = self.leads.event(type_, str(work["lead"]), data=data,
                                              id_=f"order-{order_id}-{work['step']}-{type_}",
                                              contact_id=str(work["customer"]), source="shop")
                await self.leads.deliver(lead_event, dedupe=True, background=True)
        await self.redis.publish(ORDERS_CHANNEL, order_id)
        await self.store.sent(name)

    async def sweep(self, *, grace: float = UNSENT_GRACE, limit: int = SWEEP_LIMIT) -> int:
        """Do the follow-ups left undone for ``grace`` seconds (their writer crashed or met an
        outage); how many were done. A worker loop (``bot.runtime.worker``): one script call when
        there are none. One that fails again is retried a grace later."""
        now = self.clock()
        done = 0
        for name, work in await self.store.claim_unsent(now - grace, now, limit):
            try:
                await self._carry_out(name, work)
            except Exception:
                log.exception("shop.unsent_failed", extra={"order": work.get("order"), "unsent": name})
                continue
            log.warning("shop.unsent_recovered", extra={"order": work.get("order"), "unsent": name})
            done += 1
        return done

    async def list_orders(self, *, status: str | None = None, payment: str | None = None,
                          customer: str | None = None, before: int | None = None,
                          limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
        """Orders newest first, filtered; (page, the ``before`` of the next page or None)."""
        if status is not None and status not in rules.STATUSES:
            raise ShopRejected(f"status is one of {', '.join(rules.STATUSES)}")
        if payment is not None and payment not in rules.PAYMENTS:
            raise ShopRejected("payment is unpaid or paid")
        if customer is not None and not _ID.match(customer):
            return [], None
        index = (index_key("c", customer) if customer is not None else index_key("s", status) if status
                 else index_key("p", payment) if payment else ALL)
        out: list[dict[str, Any]] = []
        scanned, cursor = 0, before
        while len(out) < limit and scanned < SCAN_LIMIT:
            ids = await self.store.page(index, before=cursor, count=min(limit * 2, 500))
            if not ids:
                return out, None
            scanned += len(ids)
            cursor = int(ids[-1])  # an order's id is its number
            for order in await self.store.orders(ids):
                if (status is None or order["status"] == status) and (payment is None or order["payment"] == payment):
                    out.append(rules.order_json(order))
                    if len(out) == limit:
                        cursor = order["number"]
                        break
        return out, cursor

    async def customer_names(self, customer_ids: Sequence[str]) -> dict[str, str | None]:
        """Each customer's name for a list of orders, read in one pipeline (not a request per
        row); None for a customer who is gone or on a CRM without cards."""
        ids = list(dict.fromkeys(customer_ids))
        found = {} if self.directory is None else {
            str(r["id"]): r.get("name") or None for r in await self.directory.get_many("contact", ids)}
        return {cid: found.get(cid) for cid in ids}

    async def order_counts(self, customer_ids: list[str]) -> dict[str, int]:
        """How many orders each customer has made (cancelled ones included)."""
        return await self.store.counts(customer_ids)
