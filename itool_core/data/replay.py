"""The perplexity replay buffer of the iterative stage (§4.3 of the paper, Eq. 4).

Before each iteration the current policy scores every example of the reinforcement pool by the generation
perplexity of its ground-truth answer,

    h(x) = P(y | q, T)^(-1/n) = exp( -(1/n) Σ_t log p(y_t | q, T, y_<t) )               (Eq. 4)

where n is the number of answer tokens.  A high h means the policy finds the correct answer unlikely: those
are the examples it has not learnt yet.  The top α (default 20 %, the paper's best) by h are handed to the
step-level tree search, so search effort goes where the policy is weakest, and the buffer is refreshed every
iteration because the policy changes.

"Answer tokens" are exactly the tokens the warm-up SFT trains on (``data.tokenise.sft_pair`` + ``tokenize_pair``):
the rendered call list — or the no-call sentence — and the end-of-turn token, after the prompt ids the policy
sees at generation time.
So log h(x) equals the per-example SFT loss, and the two stages can never disagree about what "the answer" is.

Computation: one forward pass per batch, right padding with an attention mask (positions stay 0..n−1 per row),
bf16 autocast on CPU (AMX: about 2× faster than fp32, docs/design.md#speed-facts), log-softmax in fp32 on the
answer positions only.  Examples are grouped by length to waste little padding, and results come back in input order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Literal, overload

import pyarrow as pa

from ..calls import PromptStyle
from ..config import BufferConfig
from ..schemas import EXAMPLES, TableSchema, register
from .records import Example
from .tokenise import sft_pair, tokenize_pair

__all__ = [
    "REPLAY_BUFFER",
    "answer_spans",
    "perplexity",
    "target_perplexity",
    "refresh_buffer",
    "select_hardest",
    "select_for_search",
    "selection_size",
    "selection_counts",
    "buffer_examples",
    "h_summary",
]

#: The pool with its current h: every ``examples`` column (so a selected row is a complete example, no join
#: needed) plus the score, the answer length it was averaged over, the call/no-call flag and the iteration.
REPLAY_BUFFER = register(
    TableSchema(
        "replay_buffer",
        1,
        pa.schema(
            list(EXAMPLES.schema)
            + [
                pa.field("h", pa.float64(), nullable=False),  # Eq. 4 perplexity of the target under the policy
                pa.field("n_answer_tokens", pa.int32(), nullable=False),
                pa.field("is_no_call", pa.bool_(), nullable=False),  # target is [] (the right answer is no call)
                pa.field("iteration", pa.int32(), nullable=False),  # iteration of the policy that scored it
            ]
        ),
        doc="reinforcement pool scored by the current policy (Eq. 4)",
    )
)


def perplexity(answer_logprobs: Any) -> float:
    """Eq. 4: ``h = exp(−(1/n) Σ_t log p(y_t | q, T, y_<t))`` from the n answer tokens' log-probs.

    The n-th root of the answer's probability, inverted: a per-token measure, so long and short answers are
    comparable, and exactly ``exp`` of the per-example SFT loss.  ``answer_logprobs``: a 1-D tensor (its mean
    is taken in its own dtype, fp32 here) or a sequence of floats."""
    n = len(answer_logprobs)
    if n == 0:
        raise ValueError("perplexity of an empty answer")
    mean = answer_logprobs.mean().item() if hasattr(answer_logprobs, "mean") else math.fsum(answer_logprobs) / n
    return math.exp(-mean)


def answer_spans(
    tokenizer, examples: Sequence[Example], style: PromptStyle = PromptStyle()
) -> list[tuple[list[int], int]]:
    """``(input_ids, answer_start)`` per example: the same ids the warm-up SFT trains on
    (``data.tokenise.tokenize_pair``: prompt ids as the engines encode them, then the answer + end-token ids)."""
    out = []
    for ex in examples:
        p_ids, c_ids = tokenize_pair(tokenizer, *sft_pair(tokenizer, ex, style))
        if not p_ids or not c_ids:
            raise ValueError(f"example {ex.id!r}: empty prompt or answer after tokenisation")
        out.append((p_ids + c_ids, len(p_ids)))
    return out


def _autocast(dtype: Any, device: str):
    import torch

    from ..models import resolve_dtype

    if dtype == "auto":
        dtype = resolve_dtype(dtype, device)
    if dtype in ("bfloat16", "bf16", torch.bfloat16):
        return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    if dtype in ("float32", "fp32", torch.float32, None):
        return nullcontext()
    raise ValueError(f"unsupported perplexity dtype {dtype!r} (auto|bfloat16|float32)")


@overload
def target_perplexity(
    model,
    tokenizer,
    examples: Sequence[Example],
    style: PromptStyle = ...,
    batch_size: int = ...,
    dtype: Any = ...,
    *,
    return_lengths: Literal[False] = ...,
) -> list[float]: ...


@overload
def target_perplexity(
    model,
    tokenizer,
    examples: Sequence[Example],
    style: PromptStyle = ...,
    batch_size: int = ...,
    dtype: Any = ...,
    *,
    return_lengths: Literal[True],
) -> tuple[list[float], list[int]]: ...


def target_perplexity(
    model,
    tokenizer,
    examples: Sequence[Example],
    style: PromptStyle = PromptStyle(),
    batch_size: int = 4,
    dtype: Any = "auto",
    *,
    return_lengths: bool = False,
) -> list[float] | tuple[list[float], list[int]]:
    """h = exp(mean NLL of the answer tokens) per example (Eq. 4), in input order.

    ``dtype="bfloat16"`` runs the forward under bf16 autocast (weights untouched); ``"float32"`` is exact; ``"auto"``
    (default) is bfloat16 where the device does bf16 natively, else float32.
    With ``return_lengths`` also returns the number of answer tokens each h averages over.
    """
    import torch

    spans = answer_spans(tokenizer, examples, style)
    device = str(next(model.parameters()).device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Longest first: similar lengths share a batch (little padding), and a too-long batch fails on the first one.
    order = sorted(range(len(spans)), key=lambda i: -len(spans[i][0]))
    h = [math.nan] * len(spans)
    was_training = model.training
    model.eval()
    try:
        for b0 in range(0, len(order), batch_size):
            idx = order[b0 : b0 + batch_size]
            width = max(len(spans[i][0]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids = spans[i][0]
                input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[r, : len(ids)] = 1
            # token t is predicted by the logits at t−1; only the answer positions count (Eq. 4), so only they
            # go through the LM head (the prompt is ~95 % of a row)
            keep = sorted({t for i in idx for t in range(spans[i][1] - 1, len(spans[i][0]) - 1)})
            column = {t: j for j, t in enumerate(keep)}
            with torch.inference_mode(), _autocast(dtype, device):
                logits = model(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    logits_to_keep=torch.tensor(keep, dtype=torch.long, device=device),
                ).logits
            for r, i in enumerate(idx):
                ids, start = spans[i]
                cols = [column[t] for t in range(start - 1, len(ids) - 1)]
                lp = torch.log_softmax(logits[r, cols].float(), dim=-1)
                target = torch.tensor(ids[start:], dtype=torch.long, device=lp.device)
                h[i] = perplexity(lp.gather(1, target[:, None]).squeeze(1))
            del logits
    finally:
        model.train(was_training)
    if return_lengths:
        return h, [len(ids) - start for ids, start in spans]
    return h


def refresh_buffer(
    model, tokenizer, pool_examples: Sequence[Example], cfg: BufferConfig = BufferConfig(), iteration: int = 0
) -> pa.Table:
    """Score the whole pool with the current policy: a ``replay_buffer/1`` table (write it with
    ``artifacts.write_table(table, path, REPLAY_BUFFER)``)."""
    h, lengths = target_perplexity(
        model, tokenizer, pool_examples, PromptStyle(cfg.tools_style), cfg.batch_size, cfg.dtype, return_lengths=True
    )
    rows = []
    for ex, hi, n in zip(pool_examples, h, lengths):
        row = ex.to_row()
        row.update(h=float(hi), n_answer_tokens=int(n), is_no_call=not ex.target, iteration=int(iteration))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=REPLAY_BUFFER.with_metadata())


def _rows(buffer_rows: pa.Table | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(buffer_rows, pa.Table):
        return buffer_rows.to_pylist()
    return [dict(r) for r in buffer_rows]


def _round_half_up(x: float) -> int:
    # alpha · N like 0.2 · 35 = 7.000000000000001 must not become 8, nor 0.1 · 25 = 2.5 become 2.
    return int(math.floor(x + 0.5 + 1e-9))


def selection_size(n: int, alpha: float) -> int:
    """Rows taken from a buffer of ``n``: ``round_half_up(α · n)``, at least 1 when ``n > 0`` (a small pool
    still gets searched), at most ``n``."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha is a fraction in (0, 1], got {alpha!r} (20 % is 0.2)")
    return 0 if n == 0 else min(n, max(1, _round_half_up(alpha * n)))


def selection_counts(n_call: int, n_no_call: int, alpha: float) -> tuple[int, int]:
    """``(k_call, k_no_call)`` taken by :func:`select_hardest` when it keeps the call/no-call proportion.

    Rounding: ``k = selection_size(N, α)``; the no-call share is ``round_half_up(k · N_no_call / N)`` and the
    call share is the rest, ``k − k_no_call``.  So the parts always add up to k, each is within half a row of
    its exact proportional share, and a group present in the buffer gets no row only if its exact share is at
    most one half.
    """
    n = n_call + n_no_call
    k = selection_size(n, alpha)
    if k == 0:
        return 0, 0
    k_no = min(n_no_call, _round_half_up(k * n_no_call / n))
    return min(n_call, k - k_no), k_no


def _window(n: int, k: int, skip_hardest: float) -> slice:
    # Start below the skipped hardest rows; shift up when fewer than k rows remain, so k rows are still taken.
    start = min(_round_half_up(skip_hardest * n), n - k)
    return slice(max(start, 0), max(start, 0) + k)


def select_hardest(
    buffer_rows: pa.Table | Iterable[Mapping[str, Any]],
    alpha: float = 0.2,
    keep_call_proportion: bool = True,
    skip_hardest: float = 0.0,
) -> list[dict[str, Any]]:
    """The top α of the buffer by h, hardest first.

    ``skip_hardest`` (a fraction, default 0 = the paper) first passes over that share of the hardest rows of
    each group and takes the next α: a band of h instead of the very top.  A policy far from solving its
    hardest examples gets only wrong siblings there and therefore no preference pair (docs/notebook/RESULTS.md,
    quick run on SmolLM2-135M); the band keeps the search where some sibling can succeed.  When fewer than the selection
    size remain below the skipped share the window moves up, so the number of rows never changes.

    With ``keep_call_proportion`` the hardest ``k_call`` tool-call rows and the hardest ``k_no_call`` no-call
    rows are taken (:func:`selection_counts` gives the rounding), so the search sees abstention examples in
    the proportion the data has them — selecting by h alone could drop them all, and the policy would unlearn
    saying "no call" (irrelevance collapses without no-call examples:
    docs/design.md#what-sft-on-the-embedded-data-does).  Without it, the top ``selection_size(N, α)`` rows.  Ties
    in h are broken by id, so the choice is deterministic.
    """
    if not 0.0 <= skip_hardest < 1.0:
        raise ValueError(f"skip_hardest is a fraction in [0, 1), got {skip_hardest!r}")
    rows = _rows(buffer_rows)
    ranked = sorted(rows, key=lambda r: (-float(r["h"]), str(r["id"])))
    if not keep_call_proportion:
        return ranked[_window(len(ranked), selection_size(len(ranked), alpha), skip_hardest)]
    calls = [r for r in ranked if not r["is_no_call"]]
    no_calls = [r for r in ranked if r["is_no_call"]]
    k_call, k_no = selection_counts(len(calls), len(no_calls), alpha)
    calls = calls[_window(len(calls), k_call, skip_hardest)]
    no_calls = no_calls[_window(len(no_calls), k_no, skip_hardest)]
    return sorted(calls + no_calls, key=lambda r: (-float(r["h"]), str(r["id"])))


def select_for_search(buffer_rows: pa.Table | Iterable[Mapping[str, Any]], cfg: BufferConfig) -> list[dict[str, Any]]:
    """:func:`select_hardest` with the selection settings of a :class:`BufferConfig` (α, proportion, band)."""
    return select_hardest(buffer_rows, cfg.alpha, cfg.keep_call_proportion, cfg.skip_hardest)


def buffer_examples(rows: pa.Table | Iterable[Mapping[str, Any]]) -> list[Example]:
    """Buffer rows back to :class:`Example` objects (the buffer carries every example column)."""
    return [Example.from_row(r) for r in _rows(rows)]


def h_summary(rows: pa.Table | Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Distribution of h (count, mean, quantiles), overall and for call / no-call examples."""

    def stats(values: list[float]) -> dict[str, float]:
        if not values:
            return {"n": 0}
        v = sorted(values)

        def q(p: float) -> float:
            x = p * (len(v) - 1)
            lo, hi = int(math.floor(x)), int(math.ceil(x))
            return v[lo] + (v[hi] - v[lo]) * (x - lo)

        return {
            "n": len(v),
            "mean": sum(v) / len(v),
            "min": v[0],
            "p25": q(0.25),
            "median": q(0.5),
            "p75": q(0.75),
            "p90": q(0.9),
            "max": v[-1],
        }

    rs = _rows(rows)
    return {
        "all": stats([r["h"] for r in rs]),
        "call": stats([r["h"] for r in rs if not r["is_no_call"]]),
        "no_call": stats([r["h"] for r in rs if r["is_no_call"]]),
    }
