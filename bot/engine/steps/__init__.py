"""The step handlers, one module per kind of step; the turn loop (``bot.engine.interpreter``) dispatches to them.

Each handler is ``handler(turn, step) -> Target``: the id of the next step, ``None`` (the bot
ends) or ``WAIT``. A step that asks the shell for something has a ``result`` handler too, called
with the ``RequestResult`` when the answer comes.
"""
