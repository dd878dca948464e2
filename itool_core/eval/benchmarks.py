"""The benchmarks the evaluation runs (BFCL v3 — paper Table 1; API-Bank L1/L2 — Table 2), behind one protocol.

A benchmark is an object with

* ``name`` (its key in ``summary.json`` and the ``benchmark`` column of ``samples.parquet``);
* ``load(categories, data_dir)`` → its examples of those categories (all of them for ``None``);
* ``answer(engine, examples, params, cfg, style, progress, timing)`` → one :class:`Scored` per example: the
  model's answers and the checker's verdicts (and it adds its generation time to ``timing``);
* ``summarise(scored)`` → its section of the summary (accuracy, n and the Wilson 95 % interval per category).

Registered in :data:`itool_core.registry.BENCHMARKS` with the categories it owns; ``eval.runner.evaluate``
runs each benchmark whose categories the evaluation config names.  A new benchmark = a module with such an
object, one registration line, a test.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calls import PromptStyle, calls_to_json
from ..data.records import Example
from ..engines.base import GenerationParams
from . import apibank as ab
from . import bfcl as bf
from .stats import wilson

__all__ = ["Scored", "BFCL", "APIBANK", "sample_row"]


@dataclass
class Scored:
    """One evaluated item: its ``eval_samples`` row (what the model saw and said, the verdict) and, for
    single-turn BFCL, what kind of answer it was (call / no call / broken call)."""

    row: dict[str, Any]
    answer_kind: str | None = None

    @property
    def category(self) -> str:
        return self.row["category"]

    @property
    def valid(self) -> bool:
        return bool(self.row["valid"])


def sample_row(ex: Example, bench: str, prompt: str, output: str, s: bf.SampleScore) -> dict[str, Any]:
    return {
        "id": ex.id,
        "benchmark": bench,
        "category": ex.category,
        "prompt": prompt,
        "output": output,
        "calls": calls_to_json(s.calls) if s.calls is not None else "null",
        "valid": bool(s.valid),
        "error": s.error or "",
        "error_type": s.error_type or "",
    }


def _generate_texts(engine: Any, prompts: list[str], params: GenerationParams) -> list[str]:
    if not prompts:
        return []
    return [c[0].text if c else "" for c in engine.generate(prompts, params)]


def _timed(timing: dict[str, dict[str, float]], key: str, t0: float, n: int) -> None:
    dt = time.time() - t0
    timing[key] = {"seconds": round(dt, 3), "items": n, "seconds_per_item": round(dt / n, 4) if n else 0.0}


def _counts(scored: Sequence[Scored]) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = defaultdict(lambda: {"correct": 0, "total": 0})
    for s in scored:
        stats[s.category]["total"] += 1
        stats[s.category]["correct"] += int(s.valid)
    return dict(stats)


class _BFCL:
    """BFCL v3: single-turn items scored by bfcl-eval's AST checker / relevance rule (``eval.bfcl``), multi-turn
    conversations run against its simulators and ``multi_turn_checker`` (``eval.bfcl_multi_turn``)."""

    name = "bfcl"

    def load(self, categories: Sequence[str] | None, data_dir: str | Path | None = None) -> list[Example]:
        from ..data.bfcl import load_bfcl

        return _logged(lambda reports: load_bfcl(categories, report_list=reports, data_dir=data_dir))

    def answer(
        self,
        engine: Any,
        examples: Sequence[Example],
        params: GenerationParams,
        cfg: Any,
        style: PromptStyle,
        progress: bool,
        timing: dict[str, dict[str, float]],
    ) -> list[Scored]:
        single = [ex for ex in examples if ex.category not in bf.MULTI_TURN_CATEGORIES]
        multi = [ex for ex in examples if ex.category in bf.MULTI_TURN_CATEGORIES]
        out: list[Scored] = []
        if single:
            t0 = time.time()
            prompts = bf.single_turn_prompts(engine.tokenizer, single, style)
            for ex, p, t in zip(single, prompts, _generate_texts(engine, prompts, params)):
                out.append(Scored(sample_row(ex, self.name, p, t, bf.score_single_turn(ex, t)), bf.answer_kind(t)))
            _timed(timing, "bfcl_single_turn", t0, len(single))
        if multi:
            from .bfcl_multi_turn import run_multi_turn

            t0 = time.time()
            for r in run_multi_turn(engine, multi, params, style=style, max_steps=cfg.max_steps, progress=progress):
                s = bf.SampleScore(r.valid, None, r.error, r.error_type)
                row = sample_row(
                    r.example,
                    self.name,
                    r.prompts[0] if r.prompts else "",
                    json.dumps(r.outputs, ensure_ascii=False),
                    s,
                )
                row["calls"] = json.dumps(r.executed, ensure_ascii=False)
                if r.rejected and not row["error"]:
                    row["error"] = f"{len(r.rejected)} call(s) refused (not methods of the involved classes)"
                out.append(Scored(row))
            _timed(timing, "bfcl_multi_turn", t0, len(multi))
        return out

    def summarise(self, scored: Sequence[Scored]) -> dict[str, Any]:
        summary = bf.summarise(_counts(scored))
        for v in summary["categories"].values():
            v["ci95"] = list(wilson(v["correct"], v["total"]))
        # call / no_call / broken_call per single-turn category: an irrelevance score can be made of broken
        # call lists (BFCL counts them as no call), which is not abstention.
        kinds: dict[str, dict[str, int]] = {}
        for s in scored:
            if s.answer_kind is not None:
                kinds.setdefault(s.category, dict.fromkeys(bf.ANSWER_KINDS, 0))[s.answer_kind] += 1
        summary["answer_kinds"] = kinds
        return summary


class _APIBank:
    """API-Bank level-1 / level-2: one API request per item, scored by call accuracy (``eval.apibank``)."""

    name = "apibank"

    def load(self, categories: Sequence[str] | None, data_dir: str | Path | None = None) -> list[Example]:
        from ..data.apibank import EVAL_CATEGORIES, load_source

        levels = [int(c[-1]) for c in (categories or EVAL_CATEGORIES)]
        return _logged(lambda reports: load_source(data_dir, level=levels, report_list=reports))

    def answer(
        self,
        engine: Any,
        examples: Sequence[Example],
        params: GenerationParams,
        cfg: Any,
        style: PromptStyle,
        progress: bool,
        timing: dict[str, dict[str, float]],
    ) -> list[Scored]:
        t0 = time.time()
        prompts = ab.apibank_prompts(engine.tokenizer, list(examples), cfg.apibank_prompt, style)
        out = [
            Scored(sample_row(ex, self.name, p, t, ab.score_apibank(ex, t)))
            for ex, p, t in zip(examples, prompts, _generate_texts(engine, prompts, params))
        ]
        _timed(timing, "apibank", t0, len(out))
        return out

    def summarise(self, scored: Sequence[Scored]) -> dict[str, Any]:
        return {
            c.replace("apibank_", ""): {
                "accuracy": v["correct"] / v["total"],
                **v,
                "ci95": list(wilson(v["correct"], v["total"])),
            }
            for c, v in sorted(_counts(scored).items())
            if v["total"]
        }


def _logged(load: Any) -> list[Example]:
    import logging

    reports: list[Any] = []
    out = load(reports)
    for r in reports:
        if r.skipped:  # skipped benchmark rows are reported (file, row, field), never dropped silently
            logging.getLogger(__name__).warning("%s", r.summary())
    return out


BFCL = _BFCL()
APIBANK = _APIBank()
