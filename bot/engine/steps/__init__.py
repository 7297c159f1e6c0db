"""The step handlers by kind of step, apart from the turn loop (``interpreter``) that dispatches to them.

Each handler is ``handler(turn, step) -> Target``: the id of the next step, ``None`` (the bot
ends) or ``WAIT``. A step that asks the shell for something has a ``result`` handler too, called
with the ``RequestResult`` when the answer comes.
"""
