"""Outcome part O(s) of the state reward R(s) = O(s) + C(s) (Eq. 6).

O compares the calls made so far with the ground truth:

* a terminal state (the answer is closed) scores +1 if the whole answer is correct and −1 otherwise — the
  same judgement as evaluation: ``final_check`` defaults to an order-insensitive exact match of the call
  lists (``calls.calls_match``) and can be bfcl-eval's ``ast_checker`` for examples that carry BFCL possible
  answers;
* a non-terminal state earns partial credit for a correct prefix: ``w · (#correct calls) / #gold calls`` when
  every call so far matches a distinct gold call, −1 as soon as one call is wrong (it cannot be undone) or the
  text stops being a parsable call list;
* a text (no-call) answer is on track (``w``) when the correct answer is "no call", wrong (−1) otherwise.

The self-evaluation part C(s) needs the policy and lives with the engine adapter (``policy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..calls import ToolCall, calls_match, try_parse_calls


def _calls_so_far(answer: str) -> list[ToolCall] | None:
    """Calls of a possibly unfinished call list ``[f(a=1), g(b=2),`` — None if it does not parse."""
    s = answer.strip()
    if not s.endswith("]"):
        s = s.rstrip(",").rstrip() + "]"
    calls, _ = try_parse_calls(s)
    return calls


def _is_call_list(answer: str) -> bool:
    return answer.lstrip().startswith("[")


@dataclass
class Outcome:
    gold: Sequence[ToolCall]
    final_check: Callable[[list[ToolCall]], bool] | None = None
    partial_weight: float = 0.5

    def __call__(self, answer: str, terminal: bool) -> float:
        if not answer.strip():
            return 0.0
        if not _is_call_list(answer):
            # a text answer is an abstention (BFCL: no decodable call = no call)
            if terminal:
                return 1.0 if not self.gold else -1.0
            return self.partial_weight if not self.gold else -1.0
        calls = _calls_so_far(answer)
        if calls is None:
            return -1.0
        if terminal:
            try:
                ok = self.final_check(calls) if self.final_check else calls_match(calls, list(self.gold))
            except (ValueError, TypeError, OverflowError, RecursionError):
                ok = False  # a checker crashing on an odd answer (bfcl's does on huge ints) is a wrong answer
            return 1.0 if ok else -1.0
        if not self.gold:
            return -1.0 if calls else 0.0
        remaining = list(self.gold)
        for c in calls:
            hit = next((i for i, g in enumerate(remaining) if calls_match([c], [g])), None)
            if hit is None:
                return -1.0
            remaining.pop(hit)
        return self.partial_weight * len(calls) / len(self.gold)
