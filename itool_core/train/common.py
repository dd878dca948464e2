"""Helpers shared by the trainers (SFT, preference): quiet progress bars and peak memory."""

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


def peak_rss_mb() -> float:
    # ru_maxrss is the process's peak resident set (KiB on Linux): a high-water mark, never decreasing.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
