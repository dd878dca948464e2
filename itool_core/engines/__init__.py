"""Generation backends behind one protocol (:mod:`itool_core.engines.base`).

``make_engine("hf", model=...)`` is the transformers engine (CPU and tests); ``make_engine("vllm", model=...)``
the vLLM engine (GPU; vLLM is imported only when that engine is built).  Both take either a loaded
``model`` + ``tokenizer`` pair (hf only) or a name/path and an optional LoRA ``adapter`` folder.
"""

from __future__ import annotations

from typing import Any

from .base import Completion, Engine, GenerationParams, GenerationRequest, apply_stop

__all__ = ["make_engine", "policy_engine", "Engine", "Completion", "GenerationParams", "GenerationRequest", "apply_stop", "KINDS"]

KINDS = ("hf", "vllm")


def make_engine(kind: str = "hf", model: Any = None, tokenizer: Any = None, **kwargs: Any) -> Engine:
    """Build an engine of ``kind``; extra keyword arguments go to its constructor."""
    if kind == "hf":
        from .hf import HFEngine

        return HFEngine(model, tokenizer, **kwargs)
    if kind == "vllm":
        from .vllm import VLLMEngine

        if tokenizer is not None:
            kwargs.setdefault("tokenizer", tokenizer)
        return VLLMEngine(model, **kwargs)
    raise ValueError(f"unknown engine kind {kind!r} (known: {', '.join(KINDS)})")


#: K/V the transformers engine keeps across the search's calls (about 22k prompt tokens of SmolLM2-135M in fp32,
#: several rounds of a batch of 8 trees: tree prompts, leaf prompts and self-evaluation prompts).
POLICY_PREFIX_CACHE_MB = 1024


def policy_engine(kind: str, model_path: str, *, batch_size: int = 32, num_threads: int | None = None) -> Engine:
    """The engine the tree search generates with: ``RunConfig.engine`` on a model folder.  The CPU knobs
    (sequences per batch, torch threads, one prefill per shared prefix, prefixes kept across calls) apply to
    the transformers engine; vLLM schedules its own batches and caches prefixes itself."""
    if kind == "hf":
        return make_engine("hf", model=model_path, batch_size=batch_size, num_threads=num_threads, progress=False,
                           share_prefixes=True, prefix_cache_mb=POLICY_PREFIX_CACHE_MB)
    return make_engine(kind, model=model_path)
