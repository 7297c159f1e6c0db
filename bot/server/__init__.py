"""The HTTP server: the aiohttp app, its routes (API, dashboard, pages, webhooks), auth, limits.

Routes parse, authorise and hand work to ``bot.runtime``; no flow logic and no Redis keys here.
"""
