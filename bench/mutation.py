"""The mutation tier: would the tests notice if a guarantee broke?

Each entry of ``MUTATIONS`` is a hand-written *semantic* mutation — one exact snippet of a source
file replaced by a plausible bug (an off-by-one, a dropped check, a swapped comparison) — with
the test files that should catch it. For every mutation, on a private copy of the tree (the
working tree is never touched), the snippet is replaced and only those test files run
(``-x -q -p no:cacheprovider`` and a per-test timeout). A failing run *kills* the mutation; a
passing one means it *survived*: the tests would let that bug through. A snippet that is no
longer found (the code moved on) is an *error*, so the list has to stay true to the code.

Run: ``python bench/mutation.py [--module NAME] [-j 2] [--only ID] [--list]``; see
docs/testing.md ("Mutation tier").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODULES = {
    "store": "store",
    "store-lua": "store Lua scripts",
    "loop": "conversation loop",
    "crm-outbox": "CRM outbox",
    "interpreter": "interpreter",
    "validator": "validator",
    "renderer": "renderer",
}

#: The conversation store's tests; the guarantees files may not exist yet (tolerated).
STORE_TESTS = (
    "tests/store/test_store_guarantees.py", "tests/store/test_store_machine.py",
    "tests/runtime/test_conversations.py", "tests/runtime/test_prefetch.py",
    "tests/store/test_outbox.py", "tests/store/test_timers.py", "tests/runtime/test_parking.py",
    "tests/runtime/test_loop_guarantees.py",
)
LOOP_TESTS = ("tests/runtime/test_loop_guarantees.py",) + STORE_TESTS[:-1] + ("tests/simulation/test_simulator.py",)
CRM_TESTS = ("tests/crm_bridge/test_outbox_guarantees.py", "tests/crm_bridge/test_outbox.py")
INTERPRETER_TESTS = (
    "tests/engine/test_interpreter_limits.py", "tests/engine/test_takeover.py",
    "tests/engine/test_interpreter_branching.py", "tests/engine/test_interpreter_pauses.py",
    "tests/engine/test_interpreter_subbots.py", "tests/engine/test_interpreter_control.py",
    "tests/engine/test_interpreter_actions.py", "tests/engine/test_interpreter_widgets.py",
    "tests/engine/test_interpreter_messages.py",
)
VALIDATOR_TESTS = (
    "tests/builder/test_validate_limits.py", "tests/builder/test_validate.py", "tests/builder/test_validate_loops.py",
    "tests/builder/test_validate_warnings.py", "tests/builder/test_validate_document.py",
    "tests/builder/test_compile.py",
)
RENDERER_TESTS = ("tests/channels/test_render.py",)

STORE = "bot/store/conversations.py"
LOOP = "bot/runtime/service.py"
OUTBOX = "crm_bridge/outbox.py"
SCRIPTS = "bot/store/scripts.py"
INTERPRETER = "bot/engine/interpreter.py"
STEP_CONTROL = "bot/engine/steps/control.py"
STEP_ACTIONS = "bot/engine/steps/actions.py"
VALIDATE = "bot/builder/validate.py"
RENDER = "bot/channels/render.py"


@dataclass(frozen=True, slots=True)
class Mutation:
    id: str
    module: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    description: str


def _m(id: str, module: str, file: str, original: str, replacement: str, tests: tuple[str, ...],
       description: str) -> Mutation:
    return Mutation(id, module, file, original, replacement, tests, description)


MUTATIONS: list[Mutation] = [
    # ------------------------------------------------------------------ store: Lua scripts
    _m("save-no-owner-check", "store-lua", STORE,
       "if redis.call('GET', KEYS[3]) ~= ARGV[1] then return {-1, 0, 0} end\n", "", STORE_TESTS,
       "the save script skips the lock-owner check"),
    _m("extend-ignores-token", "store-lua", STORE,
       "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end",
       "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end", STORE_TESTS,
       "extend renews a lock whatever its token"),
    _m("load-no-renewal", "store-lua", STORE,
       "redis.call('PEXPIRE', KEYS[2], ARGV[3])\nlocal batch = tonumber(ARGV[2])",
       "local batch = tonumber(ARGV[2])", STORE_TESTS,
       "_LOAD does not renew the lock"),
    _m("load-no-token-check", "store-lua", STORE,
       "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {-1} end\n", "", STORE_TESTS,
       "_LOAD hands out events without checking the lock token"),
    _m("save-no-pexpire-when-more", "store-lua", STORE,
       "redis.call('PEXPIRE', KEYS[3], ARGV[4])\nreturn {1, first, last}", "return {1, first, last}",
       STORE_TESTS, "_SAVE does not renew the lock when more events wait"),
    _m("save-releases-with-events", "store-lua", STORE,
       "if redis.call('LLEN', KEYS[2]) == 0 then\n  redis.call('DEL', KEYS[3])",
       "redis.call('DEL', KEYS[3])\nif redis.call('LLEN', KEYS[2]) == 0 then", STORE_TESTS,
       "_SAVE releases the lock while events remain"),
    _m("save-ltrim-off-by-one", "store-lua", STORE,
       "redis.call('LTRIM', KEYS[2], n, -1)", "redis.call('LTRIM', KEYS[2], n - 1, -1)", STORE_TESTS,
       "_SAVE leaves the last processed event in the inbox"),
    _m("acquire-no-empty-guard", "store-lua", STORE,
       "if redis.call('LLEN', KEYS[1]) == 0 then return {0} end\n", "", STORE_TESTS,
       "acquire's empty-inbox guard removed"),
    _m("acquire-steals-lock", "store-lua", STORE,
       "redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])",
       "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])", STORE_TESTS,
       "acquire takes a lock another process holds"),
    _m("push-lock-without-nx", "store-lua", STORE,
       "redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[5])",
       "redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])", STORE_TESTS,
       "push takes the lock even when another process holds it"),
    _m("push-keeps-duplicates", "store-lua", STORE,
       "if redis.call('ZADD', KEYS[3], 'NX', now, ARGV[2]) == 0 then return {-1} end",
       "redis.call('ZADD', KEYS[3], 'NX', now, ARGV[2])", STORE_TESTS,
       "push queues a platform message id already seen"),
    _m("push-no-meta-expire", "store-lua", STORE,
       "  redis.call('EXPIRE', KEYS[5], ARGV[9 + nmeta * 2])\n", "", STORE_TESTS,
       "push does not refresh the metadata TTL when it takes the lock"),
    _m("forget-if-no-score-check", "store-lua", STORE,
       "if score and tonumber(score) <= tonumber(ARGV[2]) then", "if score then", STORE_TESTS,
       "_FORGET_IF removes a pending entry whatever its score"),
    _m("forget-if-strict", "store-lua", STORE,
       "if score and tonumber(score) <= tonumber(ARGV[2]) then",
       "if score and tonumber(score) < tonumber(ARGV[2]) then", STORE_TESTS,
       "_FORGET_IF keeps an entry whose score is exactly the one seen"),
    # ------------------------------------------------------------------ store: Python side
    _m("seen-ttl-600", "store", STORE, "SEEN_TTL = 7 * 86400", "SEEN_TTL = 600", STORE_TESTS,
       "platform message ids are remembered 10 minutes"),
    _m("seen-ttl-86400", "store", STORE, "SEEN_TTL = 7 * 86400", "SEEN_TTL = 86400", STORE_TESTS,
       "platform message ids are remembered one day"),
    _m("pending-score-now", "store", STORE,
       "(now_ms + self.lock_ttl_ms) / 1000, cid)", "now_ms / 1000, cid)", STORE_TESTS,
       "the recovery entry is due now instead of after the lock TTL"),
    _m("outbox-zadd-without-nx", "store", STORE,
       '("ZADD", k.outbox_queue_key(req.outbox_account), "NX", ', '("ZADD", k.outbox_queue_key(req.outbox_account), ',
       STORE_TESTS,
       "save reschedules the outbox queue of a conversation already waiting (NX dropped)"),
    _m("save-no-timer-cancel", "store", STORE,
       "if req.timers_cancel:", "if False:", STORE_TESTS,
       "save does not remove cancelled timers"),
    _m("push-duplicate-not-reported", "store", STORE,
       "return PushResult(duplicate=True)", "return PushResult()", STORE_TESTS,
       "a duplicate push is not reported as one"),
    _m("lock-ttl-tenth", "store", STORE,
       "self.lock_ttl_ms = int(lock_ttl * 1000)", "self.lock_ttl_ms = int(lock_ttl * 100)", STORE_TESTS,
       "the lock TTL is a tenth of the configured one"),
    # ------------------------------------------------------------------ conversation loop
    _m("loop-stops-after-one-batch", "loop", LOOP,
       "            if status != 1:\n                return True\n", "            return True\n", LOOP_TESTS,
       "the processor stops after one batch even when more events wait"),
    _m("loop-parked-processed", "loop", LOOP,
       'if batch.meta.get("parked"):', "if False:", LOOP_TESTS,
       "a parked conversation's new events are processed (and fail) again"),
    _m("loop-outage-counts", "loop", LOOP,
       "                if _outage(exc):\n                    raise\n", "", LOOP_TESTS,
       "a CRM or Redis outage counts towards parking instead of waiting for recovery"),
    _m("store-fail-never-parks", "store-lua", STORE,
       "if n >= tonumber(ARGV[4]) then", "if false then", STORE_TESTS,
       "a conversation that keeps failing is retried forever"),
    _m("store-fail-keeps-lock", "store-lua", STORE,
       "redis.call('DEL', KEYS[1])\nreturn n", "return n", STORE_TESTS,
       "a failed batch keeps the lock until its TTL (slow retries)"),
    _m("store-fail-without-lock", "store-lua", STORE,
       "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\nlocal n", "local n", STORE_TESTS,
       "a processor that lost its lock still counts a failure (and may park a conversation another holds)"),
    _m("store-set-aside-drops-unparked", "store", STORE,
       "            await self.redis.zadd(pending, {cid: self.clock()})\n        return bool(parked)",
       "            pass\n        return bool(parked)", STORE_TESTS,
       "a conversation unparked while a push set it aside is left out of recovery (stuck)"),
    _m("store-recovery-no-postpone", "store", "bot/runtime/worker.py",
       "await store.postpone_pending(cid, now + store.lock_ttl_ms / 1000)", "pass", STORE_TESTS,
       "recovery leaves a busy conversation at the front of its page (starvation)"),
    _m("loop-renews-too-rarely", "loop", LOOP,
       "max(0.05, self.store.lock_ttl_ms / 3000)", "max(0.05, self.store.lock_ttl_ms / 300)", LOOP_TESTS,
       "the lock is renewed every 3⅓ TTLs instead of every third"),
    _m("loop-no-renewal", "loop", LOOP,
       "if now - since >= every / 2 and key not in self._renewing_keys:",
       "if False and key not in self._renewing_keys:", LOOP_TESTS,
       "a long batch never renews its lock"),
    _m("loop-stale-state-cache", "loop", LOOP,
       "if batch.state and cached is not None and cached[0] == batch.state:",
       "if batch.state and cached is not None:", LOOP_TESTS,
       "the cached state is reused after another process wrote"),
    _m("loop-processed-one", "loop", LOOP,
       "req = SaveRequest(state=None, processed=len(batch.events))",
       "req = SaveRequest(state=None, processed=1)", LOOP_TESTS,
       "only one event of a batch is marked processed"),
    _m("loop-meta-inverted", "loop", LOOP,
       "if meta.get(name) != value}  # what changed", "if meta.get(name) == value}  # what changed",
       LOOP_TESTS, "save writes the unchanged metadata instead of the changed"),
    _m("loop-identity-pending-runs", "loop", LOOP,
       "raise IdentityPending(str(exc)) from exc", "return None", LOOP_TESTS,
       "the turn runs without its lead when the CRM cannot identify it yet"),
    _m("loop-outbox-not-scheduled", "loop", LOOP,
       'req.out.append(codec.pack({"ref": e.ref, "message": entry, "attempts": 0}))\n'
       "                    req.outbox_account = state.account",
       'req.out.append(codec.pack({"ref": e.ref, "message": entry, "attempts": 0}))', LOOP_TESTS,
       "a bot message is queued but its outbox is not scheduled"),
    _m("loop-channel-filter-inverted", "loop", LOOP,
       "if e.channels is not None and state.channel not in e.channels:",
       "if e.channels is not None and state.channel in e.channels:", LOOP_TESTS,
       "a message for other channels is sent, one for this channel dropped"),
    _m("loop-crashed-turn-stops-batch", "loop", LOOP,
       'req.add_log(system_entry("internal error while handling an event", now, event="error"))\n'
       "                continue",
       'req.add_log(system_entry("internal error while handling an event", now, event="error"))\n'
       "                break", LOOP_TESTS,
       "a crashing event drops the rest of its batch"),
    # ------------------------------------------------------------------ CRM outbox
    _m("crm-claim-lease-now", "crm-outbox", OUTBOX,
       "args=[now, self.concurrency, now + self.lease]", "args=[now, self.concurrency, now]", CRM_TESTS,
       "the claim lease is `now` (instead of now + lease)"),
    _m("crm-no-renewal", "crm-outbox", OUTBOX,
       "await self.redis.zadd(DUE_KEY, {member: self.clock() + self.lease}, xx=True)", "pass", CRM_TESTS,
       "the claim is not renewed before each command"),
    _m("crm-new-command-resets-backoff", "crm-outbox", OUTBOX,
       "pipe.zadd(DUE_KEY, {member: due}, nx=True)", "pipe.zadd(DUE_KEY, {member: due})", CRM_TESTS,
       "a new command resets the lead's backoff"),
    _m("crm-open-circuit-no-hold", "crm-outbox", OUTBOX,
       "                    self._hold(exc.retry_after)\n", "", CRM_TESTS,
       "an open circuit met by the worker no longer holds new commands back"),
    _m("crm-direct-circuit-no-hold", "crm-outbox", OUTBOX,
       "            self._hold(delay)\n            await self._enqueue(member, item, self.clock() + delay)\n",
       "            if tried:\n                self._hold(delay)\n"
       "            await self._enqueue(member, item, self.clock() + delay)\n", CRM_TESTS,
       "an open circuit on the direct path no longer holds new commands back"),
    _m("crm-success-keeps-hold", "crm-outbox", OUTBOX,
       "await self._pop(keys=[key], args=[head])\n                self._hold_until = 0.0\n",
       "await self._pop(keys=[key], args=[head])\n", CRM_TESTS,
       "a success no longer clears the hold"),
    _m("crm-no-recheck-after-zrem", "crm-outbox", OUTBOX,
       "        if await self.redis.llen(key):\n            await self.redis.zadd(DUE_KEY, {member: self.clock()})\n",
       "", CRM_TESTS, "the re-check after ZREM is gone (a command can be stranded)"),
    _m("crm-more-rounds-not-due", "crm-outbox", OUTBOX,
       "await self.redis.zadd(DUE_KEY, {member: self.clock()})  # more than one round's worth",
       "pass  # more than one round's worth", CRM_TESTS,
       "a lead with more than one round of commands waits for its lease to end"),
    _m("crm-backoff-doubled", "crm-outbox", OUTBOX,
       "self.base_delay * 2 ** max(0, attempts - 1)", "self.base_delay * 2 ** max(0, attempts)", CRM_TESTS,
       "backoff one step too long"),
    _m("crm-ignores-retry-after", "crm-outbox", OUTBOX,
       "return max(floor, self.backoff(attempts))", "return self.backoff(attempts)", CRM_TESTS,
       "the CRM's retry_after is ignored"),
    _m("crm-give-up-late", "crm-outbox", OUTBOX,
       'if item["attempts"] >= self.max_attempts:', 'if item["attempts"] > self.max_attempts:', CRM_TESTS,
       "one attempt more than max_attempts"),
    _m("crm-holding-inclusive", "crm-outbox", OUTBOX,
       "return self.clock() < self._hold_until", "return self.clock() <= self._hold_until", CRM_TESTS,
       "the hold lasts up to and including its end"),
    _m("crm-no-queue-behind", "crm-outbox", OUTBOX,
       "if self.holding or await self.redis.llen(self.queue_key(member)):", "if self.holding:", CRM_TESTS,
       "a new command skips the lead's waiting ones"),
    _m("crm-circuit-counts-attempt", "crm-outbox", OUTBOX,
       "tried = not isinstance(exc, CircuitOpen)", "tried = True", CRM_TESTS,
       "a command the backend did not try counts as an attempt"),
    _m("crm-circuit-counted-done", "crm-outbox", OUTBOX,
       "return done - 1", "return done", CRM_TESTS,
       "an untried command counts as attempted in the round"),
    _m("crm-rejected-stops-round", "crm-outbox", OUTBOX,
       "await self._drop(key, head, item, str(exc))\n                    continue",
       "await self._drop(key, head, item, str(exc))\n                    break", CRM_TESTS,
       "a rejected command stops its lead's round"),
    _m("crm-claim-no-lease", "crm-outbox", SCRIPTS,
       "for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], m) end\n", "", CRM_TESTS,
       "CLAIM_DUE does not lease what it claims"),
    _m("crm-claim-no-limit", "crm-outbox", SCRIPTS,
       "redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])",
       "redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])", CRM_TESTS,
       "CLAIM_DUE claims every due lead, not at most the limit"),
    _m("crm-pop-any-head", "crm-outbox", SCRIPTS,
       "if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) end",
       "redis.call('LPOP', KEYS[1])", CRM_TESTS,
       "POP_HEAD pops whatever is at the head"),
    _m("crm-replace-any-head", "crm-outbox", SCRIPTS,
       "if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LSET', KEYS[1], 0, ARGV[2]) return 1 end",
       "redis.call('LSET', KEYS[1], 0, ARGV[2]) if true then return 1 end", CRM_TESTS,
       "REPLACE_HEAD replaces whatever is at the head"),
    # ------------------------------------------------------------------ interpreter
    _m("call-depth-off-by-one", "interpreter", STEP_CONTROL,
       "if len(run.callers) >= MAX_CALL_DEPTH:", "if len(run.callers) > MAX_CALL_DEPTH:", INTERPRETER_TESTS,
       "one nested start_bot call more than the limit"),
    _m("call-depth-11", "interpreter", STEP_CONTROL,
       "MAX_CALL_DEPTH = 10", "MAX_CALL_DEPTH = 11", INTERPRETER_TESTS,
       "the call depth limit is 11"),
    _m("held-latest-first", "interpreter", INTERPRETER,
       "wait.until = at if wait.until is None else min(wait.until, at)",
       "wait.until = at if wait.until is None else max(wait.until, at)", INTERPRETER_TESTS,
       "after a hand-back the wait is due at the latest held timer"),
    _m("held-not-cleared", "interpreter", INTERPRETER,
       "        wait.held = ()\n", "", INTERPRETER_TESTS,
       "held timers are re-armed at every hand-back"),
    _m("held-timer-dropped", "interpreter", INTERPRETER,
       "wait.held = (*wait.held, purpose)", "pass", INTERPRETER_TESTS,
       "a timer falling due during a takeover is lost"),
    _m("timer-fires-during-takeover", "interpreter", INTERPRETER,
       'if self.state.owner != "bot":\n            # The person who took over decides',
       'if False:\n            # The person who took over decides', INTERPRETER_TESTS,
       "a timer moves the bot while a person has the conversation"),
    _m("release-ignores-held", "interpreter", INTERPRETER,
       "        if e.step is None:\n            self.continue_held()\n",
       "        if e.step is None:\n", INTERPRETER_TESTS,
       "a hand-back without a step forgets what fell due"),
    _m("pause-until-latest", "interpreter", STEP_CONTROL,
       "until = min(t.timer_times(timers), default=None)",
       "until = max(t.timer_times(timers), default=None)", INTERPRETER_TESTS,
       "a pause's wait is due at its latest timer"),
    _m("action-failed-branch-on-temporary", "interpreter", STEP_ACTIONS,
       "if not e.ok and e.permanent:", "if not e.ok:", INTERPRETER_TESTS,
       "a temporary failure takes an action step's failed branch"),
    _m("action-index-skips", "interpreter", STEP_ACTIONS,
       "run.action_index += 1\n    return action(t, s)",
       "run.action_index += 2\n    return action(t, s)", INTERPRETER_TESTS,
       "an action step skips the action after a requested one"),
    _m("release-at-step-of-ended-run", "interpreter", INTERPRETER,
       'if not run.active:\n            run.status, run.error = "running", None\n        self.resume(e.step)',
       "self.resume(e.step)", INTERPRETER_TESTS,
       "releasing at a step does not restart an ended run"),
    # ------------------------------------------------------------------ validator
    _m("doc-limit-512000", "validator", VALIDATE,
       "MAX_DOCUMENT_BYTES = 512 * 1024", "MAX_DOCUMENT_BYTES = 512 * 1000", VALIDATOR_TESTS,
       "the document limit is 512 000 bytes"),
    _m("doc-limit-inclusive", "validator", VALIDATE,
       "if size > MAX_DOCUMENT_BYTES:", "if size >= MAX_DOCUMENT_BYTES:", VALIDATOR_TESTS,
       "a document of exactly the limit is refused"),
    _m("doc-size-in-characters", "validator", VALIDATE,
       "size = len(json.dumps(doc, ensure_ascii=False).encode())",
       "size = len(json.dumps(doc, ensure_ascii=False))", VALIDATOR_TESTS,
       "the size counts characters, not bytes"),
    _m("problems-not-deduplicated", "validator", VALIDATE,
       "if key not in seen:", "if True:", VALIDATOR_TESTS,
       "a problem found twice is reported twice"),
    _m("manual-field-not-crm", "validator", VALIDATE,
       'getattr(a, "from_", None) == "manual"', 'getattr(a, "from_", None) == "never"', VALIDATOR_TESTS,
       "set_field from: manual does not count as a CRM use"),
    _m("problems-warnings-first", "validator", VALIDATE,
       'key=lambda p: (p.severity != "error", p.pointer)', 'key=lambda p: (p.severity == "error", p.pointer)',
       VALIDATOR_TESTS, "warnings are listed before errors"),
    _m("row-ids-not-checked", "validator", VALIDATE,
       "if ids.index(rid) != i:", "if ids.index(rid) > i:", VALIDATOR_TESTS,
       "a list's duplicate row ids are accepted"),
    _m("unreachable-ignores-broken-steps", "validator", VALIDATE,
       "[e for e in edges if e.target in raw_steps] + raw_edges)", "[e for e in edges if e.target in raw_steps])",
       VALIDATOR_TESTS, "steps reached only through an invalid step are called unreachable"),
    _m("start-checked-without-steps", "validator", VALIDATE,
       "if isinstance(start, str) and raw_steps and start not in raw_steps:",
       "if isinstance(start, str) and start not in raw_steps:", VALIDATOR_TESTS,
       "an empty flow also reports its start as unknown"),
    # ------------------------------------------------------------------ renderer
    _m("split-stop-goes-next", "renderer", RENDER,
       "cut = pos + len(sep)", "cut = pos", RENDERER_TESTS,
       "a split leaves a sentence's full stop at the start of the next part"),
    _m("split-tiny-fragments", "renderer", RENDER,
       "if pos > limit // 3:", "if pos > 0:", RENDERER_TESTS,
       "a split may cut off a tiny first part"),
    _m("split-half-window", "renderer", RENDER,
       "if pos > limit // 3:", "if pos > limit // 2:", RENDERER_TESTS,
       "a boundary in the second third of the window is ignored"),
    _m("split-words-first", "renderer", RENDER,
       'for sep in ("\\n\\n", "\\n", ". ", "! ", "? ", " "):',
       'for sep in (" ", "\\n\\n", "\\n", ". ", "! ", "? "):', RENDERER_TESTS,
       "a split prefers any space to a paragraph or sentence"),
    _m("split-hard-cut-short", "renderer", RENDER,
       "            cut = limit\n", "            cut = limit - 1\n", RENDERER_TESTS,
       "a text without boundaries is cut one character short"),
    _m("cut-title-at-limit", "renderer", RENDER,
       'return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"',
       'return text if len(text) < limit else text[: max(1, limit - 1)] + "…"', RENDERER_TESTS,
       "a title of exactly the limit is cut"),
    _m("buttons-fit-strict", "renderer", RENDER,
       "fits = len(replies) <= caps.max_buttons", "fits = len(replies) < caps.max_buttons", RENDERER_TESTS,
       "exactly max_buttons replies are not sent as buttons"),
    _m("list-rows-fit-strict", "renderer", RENDER,
       "if caps.lists and len(rows) <= caps.max_list_rows:", "if caps.lists and len(rows) < caps.max_list_rows:",
       RENDERER_TESTS, "a list of exactly max_list_rows rows is not a native list"),
    _m("buttons-on-first-part", "renderer", RENDER,
       "out = [Rendered(p) for p in parts[:-1]]\n    out.append(Rendered(parts[-1], buttons,",
       "out = [Rendered(p, buttons) for p in parts[:-1]]\n    out.append(Rendered(parts[-1], buttons,",
       RENDERER_TESTS, "the buttons go with every part of a split text"),
]


# ---------------------------------------------------------------------- running
@dataclass(slots=True)
class Outcome:
    mutation: Mutation
    status: str  # killed | survived | error
    detail: str
    seconds: float


def _tree_files() -> list[str]:
    """The working tree's files (tracked and untracked, not ignored): what a copy holds."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def _copy_tree(dest: Path, files: list[str]) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


class Copy:
    """A private copy of the tree; one mutation at a time is applied to it and undone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = int(time.time()) + 10

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.write_text(text, encoding="utf-8")
        # A fresh whole-second mtime each write: a same-size edit must never reuse a stale .pyc.
        self._stamp += 2
        os.utime(target, (self._stamp, self._stamp))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.path)
        env.pop("SALESBOT_TEST_REDIS_URL", None)  # each run its own Redis: no shared state
        return env


def _pytest(copy: Copy, tests: list[str], per_test: float, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", f"timeout={per_test:g}",
           *extra, *tests]
    try:
        done = subprocess.run(cmd, cwd=copy.path, env=copy.env(), capture_output=True, text=True, check=False,
                              timeout=max(300.0, per_test * 5))
    except subprocess.TimeoutExpired:
        return -1, "the test run timed out"
    return done.returncode, done.stdout + done.stderr


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if re.match(r"(FAILED|ERROR) tests/", line):
            return line[:160]
    tail = [ln for ln in output.splitlines() if ln.strip()]
    return tail[-1][:160] if tail else ""


def run_one(copy: Copy, m: Mutation, per_test: float) -> Outcome:
    started = time.monotonic()
    source = (copy.path / m.file).read_text(encoding="utf-8")
    count = source.count(m.original)
    if count != 1:
        why = "original snippet not found" if count == 0 else f"original snippet found {count} times"
        return Outcome(m, "error", f"{m.file}: {why}", 0.0)
    mutated = source.replace(m.original, m.replacement)
    if m.file.endswith(".py"):
        try:
            compile(mutated, m.file, "exec")
        except SyntaxError as exc:
            return Outcome(m, "error", f"the mutated {m.file} does not compile: {exc}", 0.0)
    tests = [t for t in m.tests if (copy.path / t).exists()]
    if not tests:
        return Outcome(m, "error", "none of its test files exists", 0.0)
    copy.write(m.file, mutated)
    try:
        code, output = _pytest(copy, tests, per_test)
    finally:
        copy.write(m.file, source)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome(m, "survived", "every test passed", seconds)
    if code in (1, 2, -1):  # failures, a collection error (the mutant breaks an import), a hang
        return Outcome(m, "killed", _first_failure(output), seconds)
    return Outcome(m, "error", f"pytest exited {code}: {_first_failure(output)}", seconds)


def _baseline(copy: Copy, mutations: list[Mutation], per_test: float) -> str | None:
    """None if every test file involved passes unmutated (else why not): a failing test would
    count every mutation as killed."""
    probe = subprocess.run([sys.executable, "-c", "import bot; print(bot.__file__)"], cwd=copy.path,
                           env=copy.env(), capture_output=True, text=True, check=False)
    if not probe.stdout.strip().startswith(str(copy.path)):
        return f"the copy does not import its own code: {probe.stdout.strip() or probe.stderr.strip()}"
    tests = sorted({t for m in mutations for t in m.tests if (copy.path / t).exists()})
    code, output = _pytest(copy, tests, per_test)
    return None if code == 0 else f"the unmutated tests fail (exit {code}): {_first_failure(output)}"


def _table(outcomes: list[Outcome]) -> str:
    rows: list[tuple[str, ...]] = [("module", "mutants", "killed", "survived", "errors", "kill rate")]

    def row(name: str, subset: list[Outcome]) -> tuple[str, ...]:
        killed = sum(o.status == "killed" for o in subset)
        survived = sum(o.status == "survived" for o in subset)
        errors = sum(o.status == "error" for o in subset)
        rate = f"{100 * killed / (killed + survived):.1f} %" if killed + survived else "-"
        return (name, str(len(subset)), str(killed), str(survived), str(errors), rate)
    for key, name in MODULES.items():
        subset = [o for o in outcomes if o.mutation.module == key]
        if subset:
            rows.append(row(name, subset))
    rows.append(row("overall", outcomes))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", default=[],
                        help=f"only these modules (repeat or comma-separate): {', '.join(MODULES)}")
    parser.add_argument("--only", action="append", default=[],
                        help="these mutation ids (repeatable; with --module, both are run)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutations run at once (one tree copy each)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-test timeout in seconds (default 60)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 below this overall kill rate (%%)")
    args = parser.parse_args(argv)

    modules = {name.strip() for value in args.module for name in value.split(",") if name.strip()}
    unknown = modules - set(MODULES)
    if unknown:
        parser.error(f"unknown module(s) {', '.join(sorted(unknown))}; known: {', '.join(MODULES)}")
    ids = {m.id for m in MUTATIONS}
    if len(ids) != len(MUTATIONS):
        parser.error("mutation ids must be unique")
    if set(args.only) - ids:
        parser.error(f"unknown mutation id(s): {', '.join(sorted(set(args.only) - ids))}")
    chosen = [m for m in MUTATIONS if (not modules and not args.only) or m.module in modules or m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id:36} {m.module:12} {m.file:32} {m.description}")
        return 0
    if not chosen:
        parser.error("no mutation selected")

    jobs = max(1, min(args.jobs, len(chosen)))
    files = _tree_files()
    with tempfile.TemporaryDirectory(prefix="salesbot-mutation-") as tmp:
        copies: queue.Queue[Copy] = queue.Queue()
        for i in range(jobs):
            path = Path(tmp) / f"tree{i}"
            _copy_tree(path, files)
            copies.put(Copy(path))
        print(f"{len(chosen)} mutations, {jobs} at a time, per-test timeout {args.timeout:g} s", flush=True)
        if not args.no_baseline:
            copy = copies.get()
            problem = _baseline(copy, chosen, args.timeout)
            copies.put(copy)
            if problem:
                print(f"baseline: {problem}", file=sys.stderr)
                return 2
            print("baseline: the unmutated tests pass", flush=True)
        outcomes: list[Outcome] = []
        lock = threading.Lock()

        def work(m: Mutation) -> Outcome:
            copy = copies.get()
            try:
                outcome = run_one(copy, m, args.timeout)
            finally:
                copies.put(copy)
            with lock:
                outcomes.append(outcome)
                print(f"[{len(outcomes):3}/{len(chosen)}] {outcome.status:8} {m.module:12} {m.id:36} "
                      f"{outcome.seconds:5.1f} s  {outcome.detail if outcome.status != 'survived' else m.description}",
                      flush=True)
            return outcome
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            list(pool.map(work, chosen))

    order = {m.id: i for i, m in enumerate(MUTATIONS)}
    outcomes.sort(key=lambda o: order[o.mutation.id])
    print()
    print(_table(outcomes))
    survivors = [o for o in outcomes if o.status == "survived"]
    errors = [o for o in outcomes if o.status == "error"]
    if survivors:
        print("\nsurvivors (the tests let these through):")
        for o in survivors:
            print(f"  {o.mutation.module:12} {o.mutation.id:36} {o.mutation.file}: {o.mutation.description}")
    if errors:
        print("\nerrors (fix the mutation list):")
        for o in errors:
            print(f"  {o.mutation.module:12} {o.mutation.id:36} {o.detail}")
    killed = sum(o.status == "killed" for o in outcomes)
    rate = 100 * killed / max(1, killed + len(survivors))
    return 1 if errors or rate < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
