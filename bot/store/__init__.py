"""Everything that talks to Redis: conversation queue and state, timers, outbox, indexes, bots.

Also the codec (msgpack), key names, Lua scripts, the lean RESP client, the live hub and the
embedded ``redis-server``. No flow logic here (that is ``bot.engine``) and no HTTP.
"""
