"""The one generation protocol every backend implements (transformers on CPU, vLLM on GPU).

Evaluation, the perplexity buffer, the tree search and self-evaluation all see the policy only through these
three calls, so a backend can be swapped without touching them (every engine passes the same contract test,
``tests/test_engine_contract.py``; docs/design.md#layout-and-principles):

* :meth:`Engine.generate` — ``n`` completions per prompt, greedy (``temperature=0``) or sampled, with stop
  strings; each completion carries its token ids and per-token log-probs.  The tree search uses the
  cumulative log-prob (length-normalised) as the PUCT prior p(a|s) of a new step (prior from the engine, no
  second pass: docs/design.md#making-the-search-fast).
* :meth:`Engine.score` — per-token log-probs of given continuations (perplexity of the target,
  ``h = P(y|q,T)^(-1/n)``, Eq. 4 of the paper).
* :meth:`Engine.next_token_logprobs` — one forward pass, log-probs of a few candidate next tokens
  (self-evaluation confidence C(s): probability of the "correct" answer token).

Conventions shared by all engines (the contract test checks them):

* Prompts are complete strings (chat template already applied by :func:`itool_core.calls.render_prompt`); the
  engines tokenise them WITHOUT adding special tokens, so BOS is never doubled.
* Log-probs are those of the model's raw distribution (temperature 1, no top-p), whatever the sampling
  parameters: they are the policy's probabilities, which is what priors and perplexities need.
* The end-of-sequence token is not part of ``text``, ``token_ids`` or ``logprobs``.
* With a stop string, ``text`` ends right before it (after it with ``include_stop_str_in_output``), while
  ``token_ids``/``logprobs`` run up to the token that completed the stop string (as vLLM does): a stop string
  can end inside a token, so ids cannot always be cut exactly at the text's end.  Hence
  ``decode(token_ids)`` always starts with ``text`` and equals it when no stop string was hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

__all__ = [
    "GenerationParams",
    "GenerationRequest",
    "Completion",
    "Engine",
    "apply_stop",
    "FINISH_REASONS",
    "encode_prompt",
    "encode_prompts",
    "score_pairs",
    "candidate_token_ids",
    "replicate_greedy",
]

#: ``stop``: EOS or a stop string (``stop_reason`` says which string); ``length``: ``max_new_tokens`` reached.
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters for one :meth:`Engine.generate` call (applied to every prompt of the call)."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1  # completions per prompt
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # a single string is a common slip: treat it as one stop string
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **changes) -> GenerationParams:
        return replace(self, **changes)


#: The brief's name for the same thing.
GenerationRequest = GenerationParams


@dataclass
class Completion:
    """One generated continuation of one prompt."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # one per token id, raw-distribution log-probs
    finish_reason: str = "stop"  # see FINISH_REASONS
    stop_reason: str | None = None  # the stop string that ended the text, if any

    @property
    def cumulative_logprob(self) -> float:
        return float(sum(self.logprobs))

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class Engine(Protocol):
    """What the evaluation, the buffer and the search need from a model backend."""

    tokenizer: object  # renders chat templates (render_prompt) and counts tokens

    def generate(self, prompts: Sequence[str | Sequence[int]], params: GenerationParams) -> list[list[Completion]]:
        """``n`` completions for every prompt, in prompt order; a prompt is text or token ids (used as is)."""
        ...

    def score(self, prompts: Sequence[str], continuations: Sequence[str | Sequence[int]]) -> list[list[float]]:
        """Per-token log-probs of each continuation given its prompt (text is tokenised alone, ids are used as is)."""
        ...

    def next_token_logprobs(self, prompts: Sequence[str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        """Log-prob of each candidate as the very next token (its first token if it tokenises to several)."""
        ...


def apply_stop(text: str, stop: Sequence[str], include: bool = False) -> tuple[str, str | None, int]:
    """Cut ``text`` at the earliest stop string.

    Returns ``(text, matched stop string or None, end of the stop string in the original text or -1)``.  The
    earliest occurrence wins; on a tie the longer stop string wins (it is the more specific delimiter).
    """
    best: tuple[int, int, str] | None = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(s) > len(best[2]))):
            best = (i, -len(s), s)
    if best is None:
        return text, None, -1
    i, _, s = best
    end = i + len(s)
    return (text[:end] if include else text[:i]), s, end


def encode_prompt(tokenizer, text: str | Sequence[int]) -> list[int]:
    """A prompt as token ids: text tokenised without special tokens; token ids pass through (the tree search
    continues exactly the ids it generated).  An empty prompt is an error (nothing to condition on)."""
    ids = list(text) if not isinstance(text, str) else list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError("empty prompt: the engines need at least one prompt token to condition on")
    return [int(t) for t in ids]


def encode_prompts(tokenizer, prompts: Sequence[str | Sequence[int]]) -> list[list[int]]:
    """:func:`encode_prompt` of each prompt of a ``generate`` call (a bare string is a caller's slip: an error)."""
    if isinstance(prompts, str):
        raise TypeError("generate() takes a list of prompts")
    return [encode_prompt(tokenizer, p) for p in prompts]


def score_pairs(
    tokenizer, encode, prompts: Sequence[str], continuations: Sequence[str | Sequence[int]]
) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, continuation ids)`` of a ``score`` call: prompts through the engine's ``encode``,
    continuations tokenised without special tokens (or given as ids; an empty one scores to ``[]``)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    return [
        (
            encode(p),
            list(tokenizer(c, add_special_tokens=False)["input_ids"]) if isinstance(c, str) else [int(x) for x in c],
        )
        for p, c in zip(prompts, continuations)
    ]


def candidate_token_ids(tokenizer, candidate_tokens: Sequence[str]) -> list[int]:
    """First token id of each ``next_token_logprobs`` candidate; candidates must not share one."""
    ids = []
    for c in candidate_tokens:
        t = list(tokenizer(c, add_special_tokens=False)["input_ids"])
        if not t:
            raise ValueError(f"candidate {c!r} tokenises to nothing")
        ids.append(int(t[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"candidates {list(candidate_tokens)} share a first token: {ids}")
    return ids


def replicate_greedy(completion: Completion, n: int) -> list[Completion]:
    """``n`` greedy samples of a prompt: the one greedy completion, as ``n`` independent copies.

    vLLM (0.32, in-process and served) rejects ``n > 1`` with greedy sampling, and the ``n`` samples would be the
    same completion anyway, so the vLLM paths ask for one and copy it (a caller may edit a copy's lists).
    """
    return [completion] + [
        replace(completion, token_ids=list(completion.token_ids), logprobs=list(completion.logprobs))
        for _ in range(n - 1)
    ]
