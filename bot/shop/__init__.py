"""The seller's catalogue and orders: prices, statuses, order rules — pure.

``prices``: money in the minor unit of each currency (cents, kuruş, fils; yen have none), a
customer's unit price after the personal discount, totals and formatting. ``products``: what a
product is and how it reads in a customer's language. ``orders``: an order's lines, statuses,
payment and the events each change emits. Storage is bot.store.shop, the service bot.runtime.shop.
"""
