"""Prefix sharing for the DPO family: a pair's two steps in one row, its shared state encoded once.

A step-level pair (§4.3, Eq. 10) is ``(x, a_w, a_l)`` with a long shared state ``x`` (system prompt, tool schemas,
the steps taken so far: ~600–700 tokens here) and two short steps (~20–40 tokens).  trl's ``DPOTrainer`` runs
``[x a_w]`` and ``[x a_l]`` as two rows, for the policy and again for the reference, so ``x`` is encoded four times
per pair and dominates the step's cost.  Here each pair becomes one row

    x[:-1] | x[-1] a_w | x[-1] a_l

with a 4-D attention mask under which each branch sees the shared part and itself, never the other branch, and
position ids that restart the second branch where the first began.  Every token so attends to exactly the keys,
at exactly the positions, it had in its own row: the log-probs are the same function of the weights, and so are
the gradients (the shared part's activations collect both branches' gradients, as the two rows' copies did).
The last token of ``x`` is repeated so that each branch's first step token is predicted from a position of its
own (one hidden state carries one label).  The idea is Wang et al. 2024, "Accelerating Direct Preference
Optimization with Prefix Sharing"; the rows, the loss and trl's metrics are untouched — only the model call that
turns trl's padded ``[chosen; rejected]`` batch into per-token log-probs is replaced, and its output is scattered
back into the layout trl expects (``tests/test_preference.py`` compares the two on a real model).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

__all__ = ["PackedPairs", "pack_pairs", "shared_prefix_forward"]

#: The per-token fields of trl's ``FusedCausalLMOutput`` (trl 1.16; each zero where the label is -100).
_PER_TOKEN = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


@dataclass
class PackedPairs:
    """One row per pair, built from trl's ``[chosen rows; rejected rows]`` batch."""

    input_ids: Any  # (pairs, T) long
    position_ids: Any  # (pairs, T) long
    attention_mask: Any  # (pairs, 1, T, T) bool: True = may attend
    shift_labels: Any  # (pairs, T) long; -100 where the hidden state predicts nothing
    chosen_mask: Any  # (pairs, T) bool: positions whose label is a chosen-step token
    rejected_mask: Any  # (pairs, T) bool: same for the rejected step
    tokens: int  # real (unpadded) tokens of the packed rows


def _split_row(ids, attention, completion) -> tuple[list[int], list[int]] | None:
    """``(prompt, completion)`` of one trl row, or None unless it reads prompt-then-completion, right-padded."""
    n = int(attention.sum())
    if n == 0 or not bool(attention[:n].all()):
        return None
    comp = completion[:n].tolist()
    p = comp.index(1) if 1 in comp else n
    if p == 0 or any(comp[:p]) or not all(comp[p:]):
        return None
    row = ids[:n].tolist()
    return row[:p], row[p:]


def pack_pairs(input_ids, attention_mask, completion_mask) -> PackedPairs | None:
    """Pack trl's preference batch (rows ``i`` and ``i + B`` = pair ``i``'s chosen and rejected) into one row per
    pair; None when the batch is not such a layout (odd rows, prompts that differ), so the caller runs it as is."""
    import torch

    rows = input_ids.size(0)
    if rows % 2:
        return None
    half = rows // 2
    packed: list[tuple[list[int], list[int], list[int], list[int]]] = []
    for i in range(half):
        a = _split_row(input_ids[i], attention_mask[i], completion_mask[i])
        b = _split_row(input_ids[i + half], attention_mask[i + half], completion_mask[i + half])
        if a is None or b is None or a[0] != b[0] or not a[1] or not b[1]:
            return None
        (prompt, chosen), (_, rejected) = a, b
        p, c, r = len(prompt), len(chosen), len(rejected)
        ids = prompt + chosen + [prompt[-1]] + rejected
        pos = list(range(p + c)) + list(range(p - 1, p + r))
        # segment of each position: 0 = shared x[:-1], 1 = x[-1] a_w, 2 = the repeated x[-1] a_l
        seg = [0] * (p - 1) + [1] * (c + 1) + [2] * (r + 1)
        labels = [-100] * (p - 1) + chosen + [-100] + rejected + [-100]
        packed.append((ids, pos, seg, labels))

    width = max(len(t[0]) for t in packed)
    device = input_ids.device
    out_ids = torch.zeros(half, width, dtype=torch.long)
    out_pos = torch.zeros(half, width, dtype=torch.long)
    out_seg = torch.full((half, width), -1, dtype=torch.long)
    out_lab = torch.full((half, width), -100, dtype=torch.long)
    for i, (ids, pos, seg, labels) in enumerate(packed):
        n = len(ids)
        out_ids[i, :n] = torch.tensor(ids)
        out_pos[i, :n] = torch.tensor(pos)
        out_seg[i, :n] = torch.tensor(seg)
        out_lab[i, :n] = torch.tensor(labels)
    q_seg, k_seg = out_seg[:, :, None], out_seg[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same_branch = (k_seg == 0) | (k_seg == q_seg)
    mask = causal & same_branch & (k_seg >= 0) & (q_seg >= 0)
    mask |= torch.eye(width, dtype=torch.bool)  # a padding row attends to itself: no all-masked softmax (NaN)
    return PackedPairs(
        input_ids=out_ids.to(device),
        position_ids=out_pos.to(device),
        attention_mask=mask[:, None].to(device),
        shift_labels=out_lab.to(device),
        chosen_mask=((out_seg == 1) & (out_lab != -100)).to(device),
        rejected_mask=((out_seg == 2) & (out_lab != -100)).to(device),
        tokens=sum(len(t[0]) for t in packed),
    )


@contextlib.contextmanager
def shared_prefix_forward(models, batch: dict[str, Any]):
    """For the block, a fused-LM-head call of any of ``models`` (the modules trl's ``add_fused_lm_head``
    patched, under any PEFT/DDP wrapper) on exactly ``batch``'s ``input_ids`` runs packed (:func:`pack_pairs`)
    and returns trl's ``FusedCausalLMOutput`` in the unpacked layout.  Any other call runs unchanged.  Yields the
    :class:`PackedPairs`, or None when the batch does not pack (then every call runs unchanged)."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    packed = pack_pairs(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    if packed is None:
        yield None
        return
    expect = batch["input_ids"]

    def wrap(original):
        def forward(*args, fused_lm_head=False, labels=None, shift_labels=None, **kwargs):
            input_ids = kwargs.get("input_ids")
            if args or not fused_lm_head or shift_labels is not None or labels is None or input_ids is not expect:
                return original(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels, **kwargs)
            kwargs.update(
                input_ids=packed.input_ids,
                attention_mask=packed.attention_mask,
                position_ids=packed.position_ids,
                use_cache=False,
            )
            out = original(fused_lm_head=True, shift_labels=packed.shift_labels, **kwargs)
            target = labels[:, 1:] != -100

            def unpack(x):  # a per-token field (zero where there is no label) back into trl's layout
                if x is None:
                    return None
                values = torch.cat([x[packed.chosen_mask], x[packed.rejected_mask]])
                return x.new_zeros(target.shape).masked_scatter(target, values)

            fields = {k: unpack(getattr(out, k, None)) for k in _PER_TOKEN}
            return FusedCausalLMOutput(
                loss=-fields["log_probs"].sum() / target.sum().clamp(min=1),
                label_mask=target,
                aux_loss=getattr(out, "aux_loss", None),
                **fields,
            )

        return forward

    patched = [(m, m.forward) for m in dict.fromkeys(models)]
    for m, original in patched:
        m.forward = wrap(original)
    try:
        yield packed
    finally:
        for m, original in patched:
            m.forward = original
