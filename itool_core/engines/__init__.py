"""Generation backends behind one protocol (:mod:`itool_core.engines.base`).

``make_engine("hf", model=...)`` is the transformers engine (CPU and tests); ``make_engine("vllm", model=...)``
the vLLM engine (GPU; vLLM is imported only when that engine is built).  Both take either a loaded
``model`` + ``tokenizer`` pair (hf only) or a name/path and an optional LoRA ``adapter`` folder.
"""

from __future__ import annotations

from typing import Any

from .base import Completion, Engine, GenerationParams, GenerationRequest, apply_stop

__all__ = ["make_engine", "Engine", "Completion", "GenerationParams", "GenerationRequest", "apply_stop", "KINDS"]

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
