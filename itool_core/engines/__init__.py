"""Generation backends behind one protocol (:mod:`itool_core.engines.base`), looked up by name in
:data:`itool_core.registry.ENGINES`.

``make_engine("hf", model=...)`` is the transformers engine (CPU and tests); ``make_engine("vllm", model=...)``
the vLLM engine (GPU; vLLM is imported only when that engine is built).  Both take either a loaded
``model`` + ``tokenizer`` pair (hf only) or a name/path and an optional LoRA ``adapter`` folder.  Every engine
class also has ``build(model, *, tokenizer, adapter, batch_size, num_threads, reuse_prefixes)``: the options the
pipeline passes to any engine, which each maps onto its own knobs.  Adding an engine = a module with such a
class, one ``ENGINES.register`` line, and the contract suite (tests/test_engine_contract.py) run against it.
"""

from __future__ import annotations

from typing import Any

from ..registry import ENGINES
from .base import Completion, Engine, GenerationParams, GenerationRequest, apply_stop

__all__ = [
    "make_engine",
    "policy_engine",
    "Engine",
    "Completion",
    "GenerationParams",
    "GenerationRequest",
    "apply_stop",
]


def make_engine(kind: str = "hf", model: Any = None, tokenizer: Any = None, **kwargs: Any) -> Engine:
    """Build an engine of ``kind`` (a name of :data:`~itool_core.registry.ENGINES`) with its own keyword arguments."""
    return ENGINES.load(kind)(model, tokenizer=tokenizer, **kwargs)


def policy_engine(kind: str, model_path: str, *, batch_size: int = 32, num_threads: int | None = None) -> Engine:
    """The engine the tree search generates with: ``RunConfig.engine`` on a model folder, keeping the K/V of
    the prompts the search revisits (tree, leaf and self-evaluation prompts) across calls."""
    return ENGINES.load(kind).build(model_path, batch_size=batch_size, num_threads=num_threads, reuse_prefixes=True)
