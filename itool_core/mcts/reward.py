"""The state reward R(s) = O(s) + C(s) (Eq. 6–7) and the edge reward r(s, a) = R(s') − R(s) of the search.

Each part is one function: :class:`Outcome` computes O(s), :func:`self_evaluation` turns the policy's two
answer-token log-probs into C(s) (Eq. 7), :func:`state_reward` adds them (Eq. 6), :func:`edge_reward` credits a
step with the change it makes (the r of Eq. 8).  ``search.py`` applies them to the nodes; ``policy.py`` reads
the log-probs.

O compares the calls made so far with the ground truth:

* a terminal state (the answer is closed) scores +1 if the whole answer is correct and −1 otherwise — the
  same judgement as evaluation: ``final_check`` defaults to an order-insensitive exact match of the call
  lists (``calls.calls_match``) and can be bfcl-eval's ``ast_checker`` for examples that carry BFCL possible
  answers;
* a non-terminal state earns partial credit for a correct prefix: ``w · (#correct calls) / #gold calls`` when
  every call so far matches a distinct gold call, −1 as soon as one call is wrong (it cannot be undone) or the
  text stops being a parsable call list;
* a text (no-call) answer is on track (``w``) when the correct answer is "no call", wrong (−1) otherwise.

C(s) is the policy's own probability that the partial answer is correct, read from one forward pass under an
evaluation prompt (``policy.py`` builds it): the answer token "B" (correct) against "A" (incorrect).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    """O(s) of Eq. 6 against the ground truth ``gold`` (rules in the module docstring): ``outcome(answer, terminal)``.

    The ground truth is known for every searched example, so O is exact where the policy's C is only an
    estimate; the partial credit makes a correct first call of a two-call answer worth more than nothing."""

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


def self_evaluation(logprob_incorrect: float, logprob_correct: float) -> float:
    """C(s) (Eq. 7): ``P(B) / (P(A) + P(B))`` from the next-token log-probs of "A" (incorrect) and "B" (correct).

    Normalising over the two answer tokens ignores whatever mass the policy puts elsewhere, so C is a
    probability in [0, 1] even for a small model that would rather start a sentence; 0.5 (no opinion) when
    both probabilities underflow.  The authors' release samples tokens and substring-matches instead
    (docs/design.md#the-authors-release-differs-from-the-paper)."""
    a, b = math.exp(logprob_incorrect), math.exp(logprob_correct)
    return b / (a + b) if a + b > 0 else 0.5


def state_reward(outcome: float, confidence: float) -> float:
    """Eq. 6: ``R(s) = O(s) + C(s)`` — correctness against the ground truth plus the policy's own confidence.

    ``confidence`` is C as the search stores it, already scaled by ``MCTSConfig.confidence_weight`` (1 = the
    paper)."""
    return outcome + confidence


def edge_reward(child_reward: float, parent_reward: float) -> float:
    """``r(s, a) = R(s') − R(s)``, the r of Eq. 8: a step is credited with the change of the state reward it makes,
    so a wrong call costs the step that made it, not every later step of the same answer."""
    return child_reward - parent_reward
