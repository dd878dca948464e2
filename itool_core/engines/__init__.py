"""Generation backends behind one protocol (:mod:`itool_core.engines.base`), looked up by name in
:data:`itool_core.registry.ENGINES`.

``make_engine("hf", model=...)`` is the transformers engine (CPU and tests); ``make_engine("vllm", model=...)``
the in-process vLLM engine (GPU; vLLM is imported only when that engine is built); ``make_engine("openai",
base_url=..., tokenizer=...)`` the served engine on a running OpenAI-compatible server (:mod:`.openai`: vLLM's
``vllm serve`` or llama.cpp's ``llama-server``).

Every engine class also has ``build(model, *, tokenizer, adapter, batch_size, num_threads, reuse_prefixes,
progress, serve)``: the options the pipeline passes to any engine, which each maps onto its own knobs.  For the
served engine ``build`` starts a server for the model folder (vLLM where installed, else llama.cpp) or
connects to ``serve.url`` / ``$ITOOL_ENGINE_URL`` (:mod:`.serve`), and the engine's ``close()`` stops what it
started: the generating stages use ``with closing(policy_engine(...)) as engine:`` (:func:`closing` works for
every engine).  Adding an engine = a module with such a class, one ``ENGINES.register`` line, and the contract
suite (tests/test_engine_contract.py) run against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..registry import ENGINES
from .base import Completion, Engine, GenerationParams, GenerationRequest, apply_stop

__all__ = [
    "make_engine",
    "policy_engine",
    "closing",
    "Engine",
    "Completion",
    "GenerationParams",
    "GenerationRequest",
    "apply_stop",
]


def make_engine(kind: str = "hf", model: Any = None, tokenizer: Any = None, **kwargs: Any) -> Engine:
    """Build an engine of ``kind`` (a name of :data:`~itool_core.registry.ENGINES`) with its own keyword arguments."""
    return ENGINES.load(kind)(model, tokenizer=tokenizer, **kwargs)


def policy_engine(
    kind: str,
    model_path: str,
    *,
    batch_size: int = 32,
    num_threads: int | None = None,
    serve: Any = None,
    log_dir: str | None = None,
) -> Engine:
    """The engine the tree search generates with: ``RunConfig.engine`` on a model folder, keeping the K/V of
    the prompts the search revisits (tree, leaf and self-evaluation prompts) across calls.  ``serve``
    (:class:`~itool_core.config.ServeConfig`) and ``log_dir`` (where a started server logs) matter to the
    served engine only.  Close it (:func:`closing`): a served engine stops the server it started."""
    return ENGINES.load(kind).build(
        model_path, batch_size=batch_size, num_threads=num_threads, reuse_prefixes=True, serve=serve, log_dir=log_dir
    )


@contextlib.contextmanager
def closing(engine: Engine) -> Iterator[Engine]:
    """``with closing(policy_engine(...)) as engine:`` — calls ``engine.close()`` on exit where the engine has one
    (the served engine stops its server; in-process engines have nothing to release)."""
    try:
        yield engine
    finally:
        close = getattr(engine, "close", None)
        if callable(close):
            close()
