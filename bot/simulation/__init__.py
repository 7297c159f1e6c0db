"""Operator tools that run flows on a virtual clock: the simulator, ``salesbot chat``, and
conversation tests (``*.test.yaml``). In-process only: no Redis, no network.
"""
