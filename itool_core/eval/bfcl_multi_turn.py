"""BFCL v3 multi-turn categories (base, miss_func, miss_param, long_context): run the conversation, score it
with bfcl-eval's ``multi_turn_checker`` — and never let model text reach ``eval``.

The conversation loop reproduces bfcl-eval's prompting-mode inference
(``BaseHandler.inference_multi_turn_prompting`` with the open-model handler's message formats):

* the system prompt carries the tool docs of the involved classes, minus the functions withheld until a later
  turn (miss_func); at a withheld turn the user message is bfcl's
  ``DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING`` with those docs (prompting mode never updates
  the system prompt);
* every model output is appended as an assistant message; if it decodes to at least one call the calls are
  executed against bfcl's simulated API classes, each result is appended as a ``tool`` message, and the model
  continues the same turn; a turn ends when the output decodes to no call;
* more than ``max_steps`` (bfcl's ``MAXIMUM_STEP_LIMIT`` = 20) executing steps in one turn force-quits the
  entry, which the checker then fails as ``multi_turn:force_terminated`` (as bfcl does).

Safety — bfcl-eval's executor (``execute_multi_turn_func_call``) and checker build call strings into
``eval``.  Here model text is only ever parsed by :func:`itool_core.calls.parse_calls` (``ast``, literal
arguments only); each call must name a public method of one of the entry's involved classes (the same set
bfcl's executor maps to instances); only then is the call re-serialised as canonical text by
:func:`itool_core.calls.format_call` (``name(k=<repr literal>, ...)``) and handed to the executor.  A call to
anything else (``open``, ``os.system``, an unknown method) is not executed: the model gets, as its tool
result, the ``NameError`` message bfcl's executor gives for a name that is not a method
(:func:`refusal_message`), and the checker receives an inert placeholder (:data:`REJECTED_CALL`, a call to an
undefined name that fails with ``NameError`` exactly like an unknown function in bfcl) so the turn still
counts as "the model made calls" as it would on the leaderboard.

Isolation — the executor caches simulator instances in its module globals under
``<model_name>_<entry id>_<class>_instance``.  Every episode gets a fresh ``itool_<uuid>`` model name, and its
instances are deleted when the episode has been scored, so state never leaks between entries or runs.

Batching — all active entries advance in lock-step: each round renders one prompt per unfinished entry and
sends them to the engine in one ``generate`` call (the transformers engine batches them; vLLM schedules
them together), then executes and appends results entry by entry.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..calls import PromptStyle, ToolCall, format_call, render_prompt, try_parse_calls
from ..data.records import Example
from ..engines.base import GenerationParams

log = logging.getLogger(__name__)

__all__ = [
    "MAXIMUM_STEP_LIMIT",
    "REJECTED_CALL",
    "allowed_methods",
    "validate_call",
    "refusal_message",
    "Episode",
    "MultiTurnResult",
    "run_multi_turn",
    "check_multi_turn",
    "cleanup_instances",
]

MAXIMUM_STEP_LIMIT = 20  # bfcl_eval.constants.default_prompts.MAXIMUM_STEP_LIMIT (a test checks they agree)
#: Stands in, for the checker, for a call that was refused: an undefined name, so bfcl's eval raises NameError.
REJECTED_CALL = "itool_rejected_call()"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names bfcl's executor refuses before eval (multi_turn_utils.execute_multi_turn_func_call).
_BFCL_BLOCKED = ("kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run")


def _bfcl():
    """bfcl-eval's executor, checker and prompt constants (pure modules: no vendor SDKs)."""
    from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    return multi_turn_utils, multi_turn_checker, DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING


@cache
def _class_methods(class_name: str) -> frozenset[str]:
    # The same set bfcl's executor maps to an instance: public bound methods of a fresh instance.
    import importlib

    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING

    if class_name not in CLASS_FILE_PATH_MAPPING:
        raise ValueError(f"unknown BFCL class {class_name!r}")
    cls = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[class_name]), class_name)
    inst = cls()
    return frozenset(n for n, _ in inspect.getmembers(inst, predicate=inspect.ismethod) if not n.startswith("_"))


def allowed_methods(involved_classes: Sequence[str]) -> frozenset[str]:
    out: set[str] = set()
    for c in involved_classes:
        out |= _class_methods(c)
    return frozenset(out)


def validate_call(call: ToolCall, allowed: frozenset[str]) -> str | None:
    """``None`` if the call may be executed, else why not (already literal-only: the parser guarantees it)."""
    if not _IDENT.match(call.name):
        return f"function {call.name!r} is not available (dotted names are not methods of the involved classes)"
    if call.name not in allowed:
        return f"function {call.name!r} is not available"
    for k in call.arguments:
        if not isinstance(k, str) or not _IDENT.match(k):
            return f"argument name {k!r} is not an identifier"
    return None


def refusal_message(call: ToolCall) -> str:
    """What the model is told about a refused call: the text bfcl's executor produces for a name that is not
    a method (``eval`` raises ``NameError`` on the first component of the name), so that the conversation is
    the leaderboard's.  The one deliberate difference: bfcl would really run a Python builtin (``open``,
    ``print``...); here it is refused like any other unknown name."""
    parts = call.name.split(".")
    # bfcl first refuses a few names outright (its check looks at the second component of a dotted name).
    checked = parts[1] if len(parts) > 1 else parts[0]
    if checked in _BFCL_BLOCKED:
        return f"Error during execution: Function call {checked} is not allowed."
    return f"Error during execution: name '{parts[0]}' is not defined"


def cleanup_instances(model_name: str) -> int:
    """Delete the executor's cached simulator instances of ``model_name`` (inference, eval and ground truth)."""
    utils, _, _ = _bfcl()
    prefix = re.sub(r"[-./:]", "_", model_name + "_")
    g = vars(utils)
    keys = [k for k in g if k.startswith(prefix) and k.endswith("_instance")]
    for k in keys:
        del g[k]
    return len(keys)


# ------------------------------------------------------------------------------------------------ episodes


@dataclass
class MultiTurnResult:
    example: Example
    outputs: list[list[str]]  # raw model text per turn per step
    executed: list[list[list[str]]]  # per turn, per executing step: canonical call strings (checker input)
    prompts: list[str]  # first prompt of each turn
    valid: bool = False
    error: str = ""
    error_type: str = ""
    rejected: list[dict[str, Any]] = field(default_factory=list)  # calls refused, with the reason
    force_quit: bool = False
    steps: int = 0


class Episode:
    """One multi-turn entry in progress (see the module docstring for the protocol it follows)."""

    def __init__(self, ex: Example, tokenizer, style: PromptStyle = PromptStyle(), max_steps: int = MAXIMUM_STEP_LIMIT):
        meta = ex.meta
        self.ex = ex
        self.tokenizer = tokenizer
        self.style = style
        self.max_steps = max_steps
        self.turns: list[list[dict]] = meta["turns"]
        self.classes: list[str] = list(meta["involved_classes"])
        self.allowed = allowed_methods(self.classes)
        self.model_name = f"itool_{uuid.uuid4().hex[:16]}"
        self.long_context = bool(meta.get("long_context", "long_context" in (meta.get("bfcl_category") or ex.category)))
        self.messages: list[dict] = []
        self.outputs: list[list[str]] = []
        self.executed: list[list[list[str]]] = []
        self.turn_prompts: list[str] = []
        self.rejected: list[dict[str, Any]] = []
        self.turn = -1
        self.step = 0
        self.total_steps = 0
        self.force_quit = False
        self.done = False
        self._start_turn(0)

    def _withheld_docs(self, turn: int) -> list[dict] | None:
        # {turn: [doc, ...]} (turn as a string or an int), or one flat list of docs
        docs: dict[Any, list[dict]] | list[dict] = self.ex.meta.get("missed_function_docs") or {}
        missed = self.ex.meta.get("missed_function") or {}
        if str(turn) not in missed and turn not in missed:
            return None
        if isinstance(docs, dict):
            return list(docs.get(str(turn), docs.get(turn, [])))
        names = set(missed.get(str(turn), missed.get(turn, [])))  # a flat list of docs: pick this turn's
        return [d for d in docs if d.get("name") in names]

    def _start_turn(self, t: int) -> None:
        if t >= len(self.turns):
            self.done = True
            return
        msgs = copy.deepcopy(self.turns[t])
        withheld = self._withheld_docs(t)
        if withheld is not None:
            _, _, prompt = _bfcl()
            # bfcl formats the Python list of doc dicts with str.format, i.e. its repr: reproduced as is.
            msgs = [{"role": "user", "content": prompt.format(functions=withheld)}]
        self.messages.extend(msgs)
        self.turn, self.step = t, 0
        self.outputs.append([])
        self.executed.append([])
        self.turn_prompts.append("")

    def prompt(self) -> str:
        p = render_prompt(self.tokenizer, self.ex.tools, self.messages, self.style)
        if self.step == 0 and not self.turn_prompts[self.turn]:
            self.turn_prompts[self.turn] = p
        return p

    def feed(self, text: str) -> None:
        """Take the model's output for the current step and advance the conversation."""
        if self.done:
            raise RuntimeError(f"{self.ex.id}: episode already finished")
        self.outputs[self.turn].append(text)
        self.messages.append({"role": "assistant", "content": text})
        calls, _ = try_parse_calls(text)
        if not calls:  # no decodable call (or "[]"): the turn is over, as in bfcl
            self._start_turn(self.turn + 1)
            return
        strings, results = self._execute(calls)
        self.executed[self.turn].append(strings)
        for s, r in zip(strings, results):
            self.messages.append({"role": "tool", "name": s, "content": r})
        self.step += 1
        self.total_steps += 1
        if self.step > self.max_steps:
            self.force_quit = True
            self.done = True

    def _execute(self, calls: list[ToolCall]) -> tuple[list[str], list[str]]:
        utils, _, _ = _bfcl()
        strings: list[str] = []
        results: list[str | None] = []
        runnable: list[str] = []
        for c in calls:
            why = validate_call(c, self.allowed)
            if why is None:
                s = format_call(c)  # canonical text rebuilt from the parsed literals: the only thing eval sees
                strings.append(s)
                runnable.append(s)
                results.append(None)
            else:
                self.rejected.append({"turn": self.turn, "call": c.to_json(), "reason": why})
                strings.append(REJECTED_CALL)
                results.append(refusal_message(c))
        if runnable:
            out, _ = utils.execute_multi_turn_func_call(
                runnable,
                self.ex.meta.get("initial_config") or {},
                self.classes,
                self.model_name,
                self.ex.meta.get("bfcl_id") or self.ex.id,
                long_context=self.long_context,
                is_evaL_run=False,
            )
            it = iter(out)
            results = [next(it) if r is None else r for r in results]
        return strings, [str(r) for r in results]

    def result(self) -> MultiTurnResult:
        return MultiTurnResult(
            example=self.ex,
            outputs=self.outputs,
            executed=self.executed,
            prompts=self.turn_prompts,
            rejected=self.rejected,
            force_quit=self.force_quit,
            steps=self.total_steps,
        )


def check_multi_turn(res: MultiTurnResult, model_name: str | None = None) -> MultiTurnResult:
    """Score a finished episode with bfcl's ``multi_turn_checker`` (as ``_evaluate_single_multi_turn_entry``)."""
    _, checker, _ = _bfcl()
    ex = res.example
    gt = ex.meta["ground_truth"]
    if len(res.outputs) != len(gt):
        res.valid = False
        res.error_type = "multi_turn:force_terminated"
        res.error = (
            f"Model was force-terminated during inference phase. The length of the model result turns "
            f"({len(res.outputs)}) does not match the length of the ground truth turns ({len(gt)})."
        )
        return res
    name = model_name or f"itool_{uuid.uuid4().hex[:16]}"
    entry = {
        "id": ex.meta.get("bfcl_id") or ex.id,
        "initial_config": ex.meta.get("initial_config") or {},
        "involved_classes": list(ex.meta["involved_classes"]),
    }
    try:
        out = checker(res.executed, gt, entry, ex.meta.get("bfcl_category") or ex.category, name)
    except Exception as e:  # a checker assertion on odd state is this entry's failure, not the run's
        out = {
            "valid": False,
            "error_message": f"checker raised {type(e).__name__}: {e}",
            "error_type": "checker:exception",
        }
    finally:
        cleanup_instances(name)
    res.valid = bool(out.get("valid"))
    if not res.valid:
        res.error = str(out.get("error_message", ""))
        res.error_type = str(out.get("error_type", ""))
    return res


def run_multi_turn(
    engine,
    examples: Sequence[Example],
    params: GenerationParams = GenerationParams(max_new_tokens=256),
    *,
    style: PromptStyle = PromptStyle(),
    max_steps: int = MAXIMUM_STEP_LIMIT,
    progress: bool = False,
    max_rounds: int | None = None,
) -> list[MultiTurnResult]:
    """Run every entry to the end in lock-step rounds, then score each with bfcl's checker."""
    params = params.with_(n=1)
    episodes = [Episode(ex, engine.tokenizer, style, max_steps) for ex in examples]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(episodes), desc="multi-turn", unit="entry")
    rounds = 0
    try:
        while True:
            active = [e for e in episodes if not e.done]
            if not active:
                break
            if max_rounds is not None and rounds >= max_rounds:  # safety net: never loop forever
                for e in active:
                    e.force_quit, e.done = True, True
                break
            outs = engine.generate([e.prompt() for e in active], params)
            for e, o in zip(active, outs):
                e.feed(o[0].text if o else "")
                if e.done and bar is not None:
                    bar.update(1)
            rounds += 1
        results = []
        for e in episodes:
            results.append(check_multi_turn(e.result()))
        return results
    finally:
        for e in episodes:
            cleanup_instances(e.model_name)
        if bar is not None:
            bar.close()
