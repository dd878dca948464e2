"""Helpers shared by the trainers (SFT, preference): quiet progress bars, peak memory, and the few
process-group questions a trainer asks when it runs as one rank of ``accelerate launch`` (train/launch.py):
which rank am I, how many are there, wait for the others, add up a count.  Outside a launched group they
answer for a single process (rank 0 of 1), so the in-process path is unchanged."""

from __future__ import annotations

import contextlib
import resource


@contextlib.contextmanager
def quiet_progress():
    """Silence datasets'/transformers' progress bars for the block (metrics leave through the callback only)."""
    import datasets
    from transformers.utils import logging as hf_logging

    ds_on, tf_on = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if ds_on:
            datasets.enable_progress_bars()
        if tf_on:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def label_positions_only():
    """Make trl's fused LM head score only the positions that carry a label on CPU too, for the block.

    trl (≥ 1.x, ``trainer/utils.add_fused_lm_head``) projects every position of the batch through the LM head
    unless ``_use_triton(device)`` says it runs on CUDA/XPU — elsewhere it avoids data-dependent tile shapes, which
    matter to XLA-style compilers, not to eager CPU kernels.  A preference pair's prompt (~700 tokens) has no
    label and its completions ~20–40: scoring them all cost ≈ 40 % of a DPO step on this 49k-word vocabulary.  The
    log-probs are the same (tests/test_preference.py compares the losses); docs/notebook/RESULTS.md has the
    timing.  A trl without that hook leaves this a no-op, and the test fails to say so."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a dependency
        yield
        return
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def peak_rss_mb() -> float:
    # ru_maxrss is the process's peak resident set (KiB on Linux): a high-water mark, never decreasing.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    if not _group():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def world_size() -> int:
    """Processes training together (1 outside a process group)."""
    if not _group():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def is_main() -> bool:
    """Rank 0: the one process that writes artifacts (adapters, markers, results), so that no two ranks write
    one file and a reader never sees another rank's copy half-written."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process): the other ranks must not read what rank 0 is
    still writing, nor finish before it has."""
    if _group():
        import torch.distributed as dist

        dist.barrier()


def all_sum(value: int) -> int:
    """``value`` summed over the ranks (a per-rank count, e.g. tokens seen)."""
    if not _group():
        return int(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(value)], dtype=torch.long)
    if "nccl" in str(dist.get_backend()):  # NCCL reduces GPU tensors only
        t = t.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(t)
    return int(t.item())
